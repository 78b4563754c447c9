"""core/data.py: folders, formats, balanced sampling, reproducible and resumable order, loaders."""
import gc
import os

import numpy as np
import pytest
import torch
from PIL import Image

from core.errors import UserError
from core.datasets.folders import IMG_EXTENSIONS, check_dataset, list_domains, list_images
from core.datasets.loaders import InputFetcher, get_eval_loader, get_test_loader, get_train_loader
from core.datasets.order import BalancedSampler
from core.io.images import load_rgb
from helpers import make_dataset

S = 16  # image size used by the tests


def solid(path, rgb, size=S, mode='RGB'):
    """A one-colour image: crops, flips and resizes leave its pixels unchanged."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.new('RGB', (size, size), tuple(rgb)).convert(mode).save(path)


def noise(path, seed, size=S):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    arr = np.random.RandomState(seed).randint(0, 256, (size, size, 3), dtype=np.uint8)
    Image.fromarray(arr).save(path)


def coded_dataset(root, counts):
    """Image i of the d-th domain in SORTED name order -> colour (40 + 60 d, i, 7).

    Pixels tell domain and image apart; folders are created in the given (unsorted) order.
    """
    order = sorted(counts)
    for name, n in counts.items():
        d = order.index(name)
        for i in range(n):
            solid(os.path.join(root, name, f'{i:03d}.png'), (40 + 60 * d, i, 7))
    return str(root)


def decode(x):
    """(domain, image id) of each solid image in a [-1, 1] batch."""
    rgb = torch.round((x[:, :, 0, 0] + 1) * 127.5).long()
    return [((int(r) - 40) // 60, int(g)) for r, g, _ in rgb]


def noise_dataset(root, counts, size=S):
    k = 0
    for name, n in counts.items():
        for i in range(n):
            noise(os.path.join(root, name, f'{i:03d}.png'), k, size)
            k += 1
    return str(root)


def take(fetcher, n):
    return [next(fetcher) for _ in range(n)]


def same_batches(a, b):
    assert len(a) == len(b)
    for p, q in zip(a, b):
        assert p.keys() == q.keys()
        for k in p:
            assert torch.equal(p[k], q[k]), k


def one_line_error(fn, *needles):
    with pytest.raises(UserError) as e:
        fn()
    msg = str(e.value)
    assert '\n' not in msg and msg.strip() == msg and msg
    for s in needles:
        assert s in msg, (s, msg)
    return msg


# ----------------------------------------------------------------------------- files

def test_list_domains_and_images(tmp_path):
    for name in ['zebra', 'apple', 'mango', '.hidden']:
        (tmp_path / name).mkdir()
    (tmp_path / 'notes.txt').write_text('x')
    assert list_domains(str(tmp_path)) == ['apple', 'mango', 'zebra']
    d = tmp_path / 'apple'
    for f in ['b.png', 'a.JPG', 'c.jpeg', 'd.webp', 'e.BMP', 'f.Png', 'g.txt', '.h.png']:
        (d / f).write_bytes(b'')
    (d / 'sub').mkdir()
    (d / 'sub' / 'z.jpg').write_bytes(b'')
    names = [os.path.relpath(p, d) for p in list_images(str(d))]
    assert names == ['a.JPG', 'b.png', 'c.jpeg', 'd.webp', 'e.BMP', 'f.Png', os.path.join('sub', 'z.jpg')]
    assert {'png', 'jpg', 'jpeg', 'webp', 'bmp'} <= {e.lower() for e in IMG_EXTENSIONS}


def test_list_errors(tmp_path):
    one_line_error(lambda: list_domains(str(tmp_path / 'missing')), 'missing', 'does not exist')
    f = tmp_path / 'file.png'
    f.write_bytes(b'')
    one_line_error(lambda: list_domains(str(f)), 'file.png', 'not a folder')
    one_line_error(lambda: list_images(str(tmp_path / 'missing')), 'does not exist')


def test_image_formats_become_rgb(tmp_path):
    rgb = (200, 100, 50)
    base = Image.new('RGB', (S, S), rgb)
    paths = {}
    for ext in ['png', 'jpg', 'webp', 'bmp']:
        paths[ext] = tmp_path / f'a.{ext}'
        base.save(paths[ext], **({'lossless': True} if ext == 'webp' else {}))
    paths['gray'] = tmp_path / 'gray.png'
    Image.new('L', (S, S), 128).save(paths['gray'])
    paths['palette'] = tmp_path / 'pal.png'
    base.convert('P', palette=Image.ADAPTIVE).save(paths['palette'], transparency=0)
    paths['rgba'] = tmp_path / 'rgba.png'
    Image.new('RGBA', (S, S), rgb + (90,)).save(paths['rgba'])
    paths['cmyk'] = tmp_path / 'cmyk.jpg'
    base.convert('CMYK').save(paths['cmyk'], quality=100)
    paths['gray16'] = tmp_path / 'g16.png'
    Image.fromarray(np.full((S, S), 65535, np.uint16)).save(paths['gray16'])
    for kind, p in paths.items():
        img = load_rgb(str(p))
        assert img.mode == 'RGB' and img.size == (S, S), kind
        px = np.asarray(img)[S // 2, S // 2].astype(int)
        if kind == 'gray':
            assert px.tolist() == [128, 128, 128]
        elif kind in ('gray16', 'palette'):  # palette: its one colour is the transparent one -> white
            assert px.tolist() == [255, 255, 255]
        elif kind == 'rgba':  # alpha 90 of 255 over white
            assert np.abs(px - (np.array(rgb) * 90 + 255 * 165) / 255).max() <= 1, px
        else:  # lossy formats within a few levels
            assert np.abs(px - rgb).max() <= 6, (kind, px)


def test_mixed_formats_in_a_loader(tmp_path):
    makers = [('png', 'RGB'), ('jpg', 'RGB'), ('webp', 'RGB'), ('bmp', 'RGB'),
              ('png', 'L'), ('png', 'P'), ('png', 'RGBA'), ('JPG', 'CMYK')]
    for d in range(2):
        for i, (ext, mode) in enumerate(makers):
            solid(str(tmp_path / f'dom{d}' / f'{i}.{ext}'), (30 + 150 * d,) * 3, mode=mode)
    loader = get_train_loader(str(tmp_path), img_size=S, batch_size=4, prob=0.5, num_workers=0, seed=1)
    n = 0
    for x, y in loader:
        assert x.shape == (4, 3, S, S) and x.dtype == torch.float32
        assert y.dtype == torch.int64
        for xi, yi in zip(x, y):  # grey level tells the domain, whatever the file format
            assert abs((xi.mean().item() + 1) * 127.5 - (30 + 150 * yi.item())) < 8
        n += 1
    assert n == 16 // 4


# ----------------------------------------------------------------------------- loaders

def test_source_loader_shapes_range_labels(tmp_path):
    root = coded_dataset(tmp_path, {'zebra': 5, 'apple': 6, 'mango': 7})  # sorted: apple, mango, zebra
    loader = get_train_loader(root, 'source', img_size=S, batch_size=4, prob=0.5, num_workers=0, seed=3)
    assert len(loader) == 18 // 4
    seen = set()
    for x, y in loader:
        assert x.shape == (4, 3, S, S) and y.shape == (4,)
        assert x.min() >= -1 and x.max() <= 1
        for (d, i), label in zip(decode(x), y.tolist()):
            assert d == label  # colour of the folder the image came from
            seen.add(label)
    assert seen == {0, 1, 2}
    # labels follow the sorted folder names, not the creation order
    x, y = next(iter(get_test_loader(root, img_size=S, batch_size=18, shuffle=False, num_workers=0)))
    assert y.tolist() == [0] * 6 + [1] * 7 + [2] * 5
    red = torch.round((x[:, 0, 0, 0] + 1) * 127.5).long().tolist()
    assert red == [40] * 6 + [100] * 7 + [160] * 5  # apple, mango, zebra


def test_values_are_normalised_pixels(tmp_path):
    solid(str(tmp_path / 'a' / '0.png'), (0, 255, 51))
    solid(str(tmp_path / 'b' / '0.png'), (0, 255, 51))
    x, _ = next(iter(get_train_loader(str(tmp_path), img_size=8, batch_size=2, num_workers=0, seed=0)))
    assert x.shape == (2, 3, 8, 8)
    assert torch.allclose(x[:, 0], torch.tensor(-1.0))
    assert torch.allclose(x[:, 1], torch.tensor(1.0))
    assert torch.allclose(x[:, 2], torch.tensor(51 / 127.5 - 1))


def test_balanced_sampling_on_imbalanced_set(tmp_path):
    root = coded_dataset(tmp_path, {'few': 10, 'many': 90})
    loader = get_train_loader(root, img_size=8, batch_size=10, prob=0.0, num_workers=0, seed=5)
    labels = torch.cat([y for _ in range(10) for x, y in loader])  # 10 epochs, 1000 draws
    assert labels.numel() == 1000
    frac = labels.float().mean().item()
    assert 0.42 < frac < 0.58, frac  # uniform file sampling would give 0.9
    # the sampler itself over many epochs
    sampler = BalancedSampler([0] * 10 + [1] * 90, seed=11)
    idx = torch.cat([sampler.plan(e)[0] for e in range(100)])
    frac = (idx >= 10).float().mean().item()
    assert abs(frac - 0.5) < 0.02, frac
    assert sampler.replacement and sampler.num_samples == 100


def test_reference_pairs_share_domain(tmp_path):
    root = coded_dataset(tmp_path, {'a': 4, 'b': 5, 'c': 1})
    loader = get_train_loader(root, 'reference', img_size=S, batch_size=5, prob=0.5, num_workers=0, seed=2)
    different = 0
    for _ in range(6):
        for x_ref, x_ref2, y in loader:
            assert x_ref.shape == x_ref2.shape == (5, 3, S, S)
            for (d1, i1), (d2, i2), label in zip(decode(x_ref), decode(x_ref2), y.tolist()):
                assert d1 == d2 == label
                if label == 2:
                    assert i1 == i2 == 0  # a one-image domain pairs the image with itself
                else:
                    assert i1 != i2  # otherwise another image of the same domain
                    different += 1
    assert different > 0


def test_same_seed_same_batches_other_seed_other_batches(tmp_path):
    root = noise_dataset(tmp_path, {'a': 6, 'b': 6})

    def batches(seed, which):
        loader = get_train_loader(root, which, img_size=12, batch_size=4, prob=0.5, num_workers=0, seed=seed)
        return [torch.cat([t.flatten().float() for t in b]) for _ in range(2) for b in loader]

    for which in ('source', 'reference'):
        a, b, c = batches(7, which), batches(7, which), batches(8, which)
        assert all(torch.equal(p, q) for p, q in zip(a, b))
        assert not all(torch.equal(p, q) for p, q in zip(a, c))
    # the augmentation really is random: crops and flips vary between epochs
    loader = get_train_loader(root, img_size=12, batch_size=12, prob=1.0, num_workers=0, seed=7)
    loader.sampler.set_epoch(0)
    e0 = next(iter(loader))[0]
    loader.sampler.set_epoch(1)
    e1 = next(iter(loader))[0]
    assert not torch.equal(e0, e1)


def test_seed_from_generator_or_torch_seed(tmp_path):
    root = noise_dataset(tmp_path, {'a': 4, 'b': 4})
    mk = lambda **kw: next(iter(get_train_loader(root, img_size=S, batch_size=4, num_workers=0, **kw)))[0]
    assert torch.equal(mk(generator=torch.Generator().manual_seed(1)),
                       mk(generator=torch.Generator().manual_seed(1)))
    torch.manual_seed(123)
    a = mk()
    torch.manual_seed(123)
    assert torch.equal(a, mk())


def test_loading_leaves_global_rng_alone(tmp_path):
    root = noise_dataset(tmp_path, {'a': 4, 'b': 4})
    torch.manual_seed(0)
    state = torch.get_rng_state()
    loader = get_train_loader(root, 'reference', img_size=S, batch_size=4, prob=0.5, num_workers=0, seed=1)
    for _ in range(2):
        for _ in loader:
            pass
    assert torch.equal(state, torch.get_rng_state())


def test_workers_do_not_change_batches(tmp_path):
    root = noise_dataset(tmp_path, {'a': 5, 'b': 5})

    def run(workers):
        src = get_train_loader(root, 'source', img_size=S, batch_size=3, prob=0.5, num_workers=workers, seed=9)
        ref = get_train_loader(root, 'reference', img_size=S, batch_size=3, prob=0.5, num_workers=workers, seed=9)
        return take(InputFetcher(src, ref, latent_dim=4, mode='train', device='cpu', seed=9), 4)

    same_batches(run(0), run(2))


def _train_fetcher(root, seed=4, epoch=0, start=0, ref_epoch=0, ref_start=0, rank=0, world_size=1, workers=0):
    kw = dict(img_size=S, batch_size=4, prob=0.5, num_workers=workers, seed=seed)
    src = get_train_loader(root, 'source', epoch=epoch, start=start, **kw)
    ref = get_train_loader(root, 'reference', epoch=ref_epoch, start=ref_start, **kw)
    return InputFetcher(src, ref, latent_dim=5, mode='train', device='cpu', seed=seed, rank=rank, world_size=world_size)


def test_train_fetcher_contents(tmp_path):
    root = noise_dataset(tmp_path, {'a': 5, 'b': 6, 'c': 3})
    f = _train_fetcher(root)
    b = next(f)
    assert set(b) == {'x_src', 'y_src', 'x_ref', 'x_ref2', 'y_ref', 'z_trg', 'z_trg2'}
    assert b.x_src.shape == b.x_ref.shape == b.x_ref2.shape == (4, 3, S, S)
    assert b.z_trg.shape == b.z_trg2.shape == (4, 5)
    assert not torch.equal(b.z_trg, b.z_trg2)
    assert all(t.device.type == 'cpu' for t in b.values())
    # sources and references are drawn independently although given the same seed
    assert not torch.equal(b.y_src, b.y_ref) or not torch.equal(b.x_src, b.x_ref)


def test_resume_at_any_position_is_bitwise(tmp_path):
    root = noise_dataset(tmp_path, {'a': 5, 'b': 6, 'c': 3})  # 14 images: 3 batches of 4 per epoch
    full = take(_train_fetcher(root), 8)  # crosses two epoch boundaries
    for k in (1, 3, 5):
        # a fetcher run for k batches, saved, and restored into freshly built loaders
        first = _train_fetcher(root)
        take(first, k)
        state = first.state_dict()
        assert (state['src']['epoch'], state['src']['batch']) == (k // 3, k % 3)
        resumed = _train_fetcher(root)
        resumed.load_state_dict(state)
        same_batches(full[k:], take(resumed, 8 - k))
    # loaders created directly at (epoch, start) give the same image batches
    direct = _train_fetcher(root, epoch=1, start=1, ref_epoch=1, ref_start=1)
    rest = take(direct, 4)
    for a, b in zip(full[4:], rest):
        for key in ('x_src', 'y_src', 'x_ref', 'x_ref2', 'y_ref'):
            assert torch.equal(a[key], b[key]), key


def test_resume_restores_saved_seed(tmp_path):
    root = noise_dataset(tmp_path, {'a': 4, 'b': 4})
    first = _train_fetcher(root, seed=1)
    take(first, 2)
    state = first.state_dict()
    expected = take(first, 3)
    other = _train_fetcher(root, seed=2)  # e.g. --seed changed between runs
    other.load_state_dict(state)
    same_batches(expected, take(other, 3))


def test_resume_with_other_batch_size_or_data_is_refused(tmp_path):
    root = noise_dataset(tmp_path, {'a': 4, 'b': 4})
    first = _train_fetcher(root)
    take(first, 1)
    state = first.state_dict()
    kw = dict(img_size=S, prob=0.5, num_workers=0, seed=4)
    src = get_train_loader(root, 'source', batch_size=2, **kw)
    ref = get_train_loader(root, 'reference', batch_size=2, **kw)
    other = InputFetcher(src, ref, latent_dim=5, mode='train', device='cpu')
    one_line_error(lambda: other.load_state_dict(state), 'batch size 4', '--batch_size 4')
    noise(os.path.join(root, 'b', 'extra.png'), 99)
    grown = _train_fetcher(root)
    one_line_error(lambda: grown.load_state_dict(state), '8 images', 'holds 9')
    grown.load_state_dict(state, strict=False)  # allowed on request
    assert next(grown).x_src.shape == (4, 3, S, S)


# ---------------------------------------------------------------- one process's share of each global batch

@pytest.fixture
def reads(monkeypatch):
    """The image files the loaders open (in this process: num_workers 0), in order."""
    import core.datasets.loaders
    import core.io.images
    opened = []
    real = core.io.images.load_rgb
    monkeypatch.setattr(core.datasets.loaders, 'load_rgb', lambda path, *a, **k: opened.append(path) or real(path, *a, **k))
    return opened


def take_reads(fetcher, n, opened):
    """``n`` batches of ``fetcher`` and the files opened for each."""
    batches, files = [], []
    for _ in range(n):
        del opened[:]
        batches.append(next(fetcher))
        files.append(list(opened))
    return batches, files


def rows(batch, rank, world_size):
    local = batch.x_src.size(0) // world_size
    return {k: v[rank * local:(rank + 1) * local] for k, v in batch.items()}


@pytest.mark.parametrize('world_size', [2, 4])
def test_each_process_reads_only_its_rows_of_the_one_process_stream(tmp_path, reads, world_size):
    """Process r of N opens only the images of its rows of each global batch (three per row:
    source, reference, second reference): 1/N of what one process opens, and the N processes
    together open exactly what one process opens, batch by batch, across epoch boundaries.
    Every value (images, transforms, labels, latent codes) is the one process's."""
    from collections import Counter
    root = noise_dataset(tmp_path, {'a': 5, 'b': 6, 'c': 3})  # 14 images: 3 batches of 4 per epoch
    single, single_reads = take_reads(_train_fetcher(root), 7, reads)
    shares = [take_reads(_train_fetcher(root, rank=r, world_size=world_size), 7, reads) for r in range(world_size)]
    for k in range(7):
        assert len(single_reads[k]) == 3 * 4
        for r, (batches, files) in enumerate(shares):
            assert len(files[k]) == 3 * 4 // world_size
            expected = rows(single[k], r, world_size)
            assert batches[k].keys() == expected.keys()
            for key in expected:
                assert torch.equal(batches[k][key], expected[key]), (k, r, key)
        assert Counter(f for _, files in shares for f in files[k]) == Counter(single_reads[k])


def test_the_data_position_moves_between_process_counts(tmp_path):
    """A position saved by 2 processes continues in 1, and one saved by 1 continues in 2,
    with exactly the batches (rows) of an uninterrupted one-process stream; the saved
    positions of every process equal the one process's."""
    root = noise_dataset(tmp_path, {'a': 5, 'b': 6, 'c': 3})
    full = take(_train_fetcher(root), 8)
    for k in (2, 4):
        one = _train_fetcher(root)
        take(one, k)
        pair = [_train_fetcher(root, rank=r, world_size=2) for r in (0, 1)]
        for f in pair:
            take(f, k)
        states = [f.state_dict() for f in pair]
        for state in states:
            assert state['src'] == one.state_dict()['src'] and state['ref'] == one.state_dict()['ref']
            assert torch.equal(state['generator'], one.state_dict()['generator'])
        from_two = _train_fetcher(root)
        from_two.load_state_dict(states[1])
        same_batches(full[k:], take(from_two, 8 - k))
        for r in (0, 1):
            from_one = _train_fetcher(root, rank=r, world_size=2)
            from_one.load_state_dict(one.state_dict())
            same_batches([rows(b, r, 2) for b in full[k:]], take(from_one, 8 - k))


def test_training_stream_runs_on_across_epochs_as_the_per_epoch_loaders(tmp_path):
    """The training fetcher's stream never ends (its workers neither stop nor refill at an
    epoch boundary) and is, batch for batch, what the per-epoch loader gives epoch after
    epoch (incomplete last batches dropped)."""
    root = noise_dataset(tmp_path, {'a': 5, 'b': 6, 'c': 3})
    kw = dict(img_size=S, batch_size=4, prob=0.5, num_workers=0, seed=4)
    src = get_train_loader(root, 'source', **kw)
    expected = []
    for epoch in range(3):
        src.sampler.set_epoch(epoch)
        expected += [x for x, _ in src]
    assert len(expected) == 9
    fetcher = _train_fetcher(root, workers=1)
    first = next(fetcher)
    iterator = fetcher.src._it
    got = [first] + take(fetcher, 8)
    assert fetcher.src._it is iterator  # one iterator, one worker, for all three epochs
    for a, b in zip(expected, got):
        assert torch.equal(a, b.x_src)
    assert (fetcher.state_dict()['src']['epoch'], fetcher.state_dict()['src']['batch']) == (3, 0)


def test_a_stream_started_past_an_epochs_last_batch_is_at_the_next_epoch(tmp_path):
    root = noise_dataset(tmp_path, {'a': 5, 'b': 6, 'c': 3})  # 3 batches of 4 an epoch
    full = take(_train_fetcher(root), 6)
    late = _train_fetcher(root, epoch=0, start=3, ref_epoch=0, ref_start=3)
    state = late.state_dict()
    assert (state['src']['epoch'], state['src']['batch']) == (state['ref']['epoch'], state['ref']['batch']) == (1, 0)
    for a, b in zip(full[3:], take(late, 3)):
        for key in ('x_src', 'y_src', 'x_ref', 'x_ref2', 'y_ref'):
            assert torch.equal(a[key], b[key]), key
    assert (late.state_dict()['src']['epoch'], late.state_dict()['src']['batch']) == (2, 0)


def test_a_short_last_batch_of_another_kind_of_loader_gets_latent_codes_of_its_size(tmp_path):
    from torch.utils import data as tud
    from core.datasets.loaders import DomainDataset, TrainTransform
    root = noise_dataset(tmp_path, {'a': 3, 'b': 2})
    src = tud.DataLoader(DomainDataset(root, TrainTransform(S, 0.0)), batch_size=4)  # batches of 4, then 1
    ref = tud.DataLoader(DomainDataset(root, TrainTransform(S, 0.0), pair=True), batch_size=4)
    fetcher = InputFetcher(src, ref, latent_dim=5, mode='train', device='cpu', seed=1)
    sizes = [(b.x_src.size(0), b.z_trg.size(0), b.z_trg2.size(0)) for b in take(fetcher, 2)]
    assert sizes == [(4, 4, 4), (1, 1, 1)]


def test_loaders_of_another_kind_are_read_whole_and_sliced(tmp_path):
    """A training loader built outside ``get_train_loader`` (a script's own DataLoader): each
    process keeps its rows of the batch it reads, still the one process's values."""
    from torch.utils import data as tud
    from core.datasets.loaders import DomainDataset, TrainTransform, share_loader
    from core.datasets.order import Share
    root = noise_dataset(tmp_path, {'a': 3, 'b': 3})

    def fetcher(rank, world_size):
        torch.manual_seed(0)  # such a loader's flips come from the global generator
        src = tud.DataLoader(DomainDataset(root, TrainTransform(S, 0.0)), batch_size=4, drop_last=True)
        ref = tud.DataLoader(DomainDataset(root, TrainTransform(S, 0.0), pair=True), batch_size=4, drop_last=True)
        assert share_loader(src, Share(4, rank, world_size)) is None
        return InputFetcher(src, ref, latent_dim=5, mode='train', device='cpu', seed=1, rank=rank, world_size=world_size)

    one = take(fetcher(0, 1), 3)
    for r in (0, 1):
        same_batches([rows(b, r, 2) for b in one], take(fetcher(r, 2), 3))


def test_uint8_pixels_from_the_workers_become_the_same_values_on_the_device(tmp_path):
    """Training loaders pass uint8 pixels (a quarter of the bytes); the fetcher's conversion on
    the device gives exactly ToTensor + Normalize's values, crops and flips included."""
    from core.datasets.loaders import TrainTransform, unit_range
    root = noise_dataset(tmp_path, {'a': 5, 'b': 6}, size=24)  # 24 px -> 16: every image resized
    kw = dict(img_size=S, batch_size=4, prob=0.5, num_workers=0, seed=3)

    def fetcher(uint8):
        src = get_train_loader(root, 'source', uint8=uint8, **kw)
        ref = get_train_loader(root, 'reference', uint8=uint8, **kw)
        return InputFetcher(src, ref, latent_dim=5, mode='train', device='cpu', seed=3)

    raw = next(iter(get_train_loader(root, 'source', uint8=True, **kw)))[0]
    assert raw.dtype == torch.uint8 and raw.shape == (4, 3, S, S)
    same_batches(take(fetcher(False), 4), take(fetcher(True), 4))
    every = torch.arange(256, dtype=torch.uint8).reshape(1, 16, 16).expand(3, 16, 16)
    reference = TrainTransform(S, 0.0)(Image.fromarray(every.permute(1, 2, 0).numpy()), seed=0)
    pixels = TrainTransform(S, 0.0, uint8=True)(Image.fromarray(every.permute(1, 2, 0).numpy()), seed=0)
    assert torch.equal(unit_range(pixels), reference)  # all 256 values, flipped or not alike


def test_a_loader_read_once_leaves_no_workers(tmp_path):
    from core.datasets.loaders import without_workers
    root = coded_dataset(tmp_path, {'a': 3, 'b': 4})
    val = get_test_loader(root, img_size=S, batch_size=2, shuffle=True, num_workers=2, seed=0)
    plain = without_workers(val)
    assert plain.num_workers == 0 and val.num_workers == 2
    a = next(InputFetcher(val, None, latent_dim=4, mode='val', device='cpu', seed=0))
    b = next(InputFetcher(plain, None, latent_dim=4, mode='val', device='cpu', seed=0))
    same_batches([a], [b])


def test_val_and_test_fetchers(tmp_path):
    root = coded_dataset(tmp_path, {'a': 3, 'b': 4})
    val = get_test_loader(root, img_size=S, batch_size=2, shuffle=True, num_workers=0, seed=0)
    ref = get_test_loader(root, img_size=S, batch_size=2, shuffle=True, num_workers=0, seed=1)
    b = next(InputFetcher(val, ref, latent_dim=4, mode='val', device='cpu'))
    assert set(b) == {'x_src', 'y_src', 'x_ref', 'y_ref'}
    assert [d for d, _ in decode(b.x_ref)] == b.y_ref.tolist()
    b = next(InputFetcher(val, None, latent_dim=4, mode='val', device='cpu'))
    assert set(b) == {'x_src', 'y_src', 'x_ref', 'y_ref'}
    f = InputFetcher(val, mode='test', device='cpu')
    seen = [next(f) for _ in range(8)]  # 4 batches per epoch (the last one has 1 image), 2 epochs
    assert set(seen[0]) == {'x', 'y'}
    assert [len(s.y) for s in seen] == [2, 2, 2, 1, 2, 2, 2, 1]
    ids = sorted(p for s in seen[:4] for p in decode(s.x))
    assert ids == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2), (1, 3)]  # each image once


def test_test_loader_order(tmp_path):
    root = coded_dataset(tmp_path, {'a': 3, 'b': 4})
    plain = get_test_loader(root, img_size=S, batch_size=7, shuffle=False, num_workers=0)
    x, y = next(iter(plain))
    assert decode(x) == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2), (1, 3)]
    shuffled = get_test_loader(root, img_size=S, batch_size=7, shuffle=True, num_workers=0, seed=3)
    xs, ys = next(iter(shuffled))
    assert sorted(decode(xs)) == decode(x) and decode(xs) != decode(x)
    assert [d for d, _ in decode(xs)] == ys.tolist()


def test_eval_loader(tmp_path):
    for i in range(5):
        solid(str(tmp_path / 'imgs' / f'{i}.png'), (255, 0, 128), size=24)
    solid(str(tmp_path / 'imgs' / 'deeper' / 'x.jpg'), (255, 0, 128), size=24)
    loader = get_eval_loader(str(tmp_path / 'imgs'), img_size=8, batch_size=4, num_workers=0)
    xs = list(loader)
    assert [tuple(x.shape) for x in xs] == [(4, 3, 299, 299), (2, 3, 299, 299)]  # no drop_last
    mean = torch.tensor([0.485, 0.456, 0.406])
    std = torch.tensor([0.229, 0.224, 0.225])
    expect = (torch.tensor([255, 0, 128]) / 255.0 - mean) / std
    assert torch.allclose(xs[0][:, :, 100, 100], expect.expand(4, 3), atol=1e-5)
    loader = get_eval_loader(str(tmp_path / 'imgs'), img_size=8, batch_size=4,
                             imagenet_normalize=False, num_workers=0, drop_last=True)
    xs = list(loader)
    assert len(xs) == 1 and xs[0].shape == (4, 3, 8, 8)
    assert xs[0].min() >= -1 and xs[0].max() <= 1


# ----------------------------------------------------------------------------- bad input

def test_error_missing_folder(tmp_path):
    missing = str(tmp_path / 'nope')
    one_line_error(lambda: get_train_loader(missing, img_size=S, num_workers=0), missing, 'does not exist')
    one_line_error(lambda: get_test_loader(missing, img_size=S, num_workers=0), missing)
    one_line_error(lambda: get_eval_loader(missing, img_size=S, num_workers=0), missing)


def test_error_no_domain_folders(tmp_path):
    solid(str(tmp_path / 'x.png'), (1, 2, 3))
    one_line_error(lambda: check_dataset(str(tmp_path), 2, 1), str(tmp_path), 'no domain sub-folders')


def test_error_wrong_number_of_domains(tmp_path):
    root = coded_dataset(tmp_path, {'cat': 2, 'dog': 2, 'wild': 2})
    msg = one_line_error(lambda: check_dataset(root, num_domains=2, batch_size=1),
                         root, '3 domain sub-folders', '--num_domains is 2', 'cat, dog, wild')
    assert '--num_domains 3' in msg  # names the fix
    one_line_error(lambda: get_train_loader(root, img_size=S, batch_size=1, num_workers=0,
                                            num_domains=2), '--num_domains is 2')
    assert check_dataset(root, 3, 6) == ['cat', 'dog', 'wild']


def test_error_empty_domain(tmp_path):
    root = coded_dataset(tmp_path, {'cat': 2, 'dog': 2})
    (tmp_path / 'wild').mkdir()
    (tmp_path / 'wild' / 'readme.txt').write_text('no images here')
    one_line_error(lambda: get_train_loader(root, img_size=S, batch_size=2, num_workers=0),
                   "domain 'wild'", 'no images')


def test_error_fewer_images_than_batch(tmp_path):
    root = coded_dataset(tmp_path, {'cat': 2, 'dog': 3})
    one_line_error(lambda: get_train_loader(root, img_size=S, batch_size=8, num_workers=0),
                   '5 images', 'batch size 8', '--batch_size')
    get_train_loader(root, img_size=S, batch_size=5, num_workers=0)  # exactly enough is fine


def test_unreadable_images_all_named_before_any_loading(tmp_path):
    root = coded_dataset(tmp_path, {'cat': 3, 'dog': 3})
    (tmp_path / 'dog' / 'broken.jpg').write_bytes(b'this is not a jpeg')
    cut = tmp_path / 'cat' / 'cut.png'
    noise(str(cut), 0, size=64)
    cut.write_bytes(cut.read_bytes()[:5000])  # the end is missing: the header still opens
    for build in (lambda: get_train_loader(root, img_size=S, batch_size=2, num_workers=0),
                  lambda: get_test_loader(root, img_size=S, num_workers=0),
                  lambda: check_dataset(root)):
        msg = one_line_error(build, '2 unreadable image files', os.path.join('dog', 'broken.jpg'),
                             os.path.join('cat', 'cut.png'), 'truncated', 'replace or delete them')
    assert msg.index('cut.png') < msg.index('broken.jpg')  # in folder order
    cut.unlink()
    (tmp_path / 'dog' / 'broken.jpg').unlink()
    assert check_dataset(root) == ['cat', 'dog']


def test_unreadable_images_message_names_a_few_and_counts_all(tmp_path):
    root = coded_dataset(tmp_path, {'cat': 1, 'dog': 1})
    for i in range(8):
        (tmp_path / 'dog' / f'junk{i}.png').write_bytes(b'')
    msg = one_line_error(lambda: check_dataset(root), '8 unreadable image files', 'and 3 more')
    assert sum(f'junk{i}.png' in msg for i in range(8)) == 5


def test_image_check_agrees_with_decoding(tmp_path):
    """Every format: whole files pass, cut ones fail exactly when decoding them fails, and
    bytes after a file's end (some cameras write them) are no error."""
    from core.io.images import unreadable_reason
    arr = np.random.RandomState(0).randint(0, 256, (32, 32, 3), dtype=np.uint8)
    for ext, options in (('png', {}), ('jpg', {}), ('webp', {'lossless': True}), ('bmp', {})):
        whole = tmp_path / f'whole.{ext}'
        Image.fromarray(arr).save(whole, **options)
        data = whole.read_bytes()
        assert unreadable_reason(str(whole)) is None, ext
        for name, content in (('half', data[:len(data) // 2]), ('head', data[:60]),
                              ('trailing', data + bytes(50))):
            path = tmp_path / f'{name}.{ext}'
            path.write_bytes(content)
            try:
                load_rgb(str(path))
                decodes = True
            except UserError:
                decodes = False
            assert (unreadable_reason(str(path)) is None) == decodes, (ext, name)
            assert decodes == (name == 'trailing'), (ext, name)


@pytest.mark.parametrize('workers', [0, 1])
def test_error_corrupt_image(tmp_path, workers):
    """A file broken after the up-front check (while training) stops with one line too."""
    root = coded_dataset(tmp_path, {'cat': 2, 'dog': 2})
    bad = tmp_path / 'dog' / 'broken.jpg'
    solid(str(bad), (1, 2, 3))
    loader = get_train_loader(root, img_size=S, batch_size=5, num_workers=workers, seed=0)
    bad.write_bytes(b'this is not a jpeg')
    one_line_error(lambda: [b for _ in range(3) for b in loader], str(bad), 'cannot read image')
    # the worker's iterator is held in the error's reference cycle: shut it down now (0.2 s); left
    # to a later garbage collection, in whichever test, it waited 5 s for its worker
    gc.collect()
    truncated = tmp_path / 'cat' / 'cut.png'
    solid(str(truncated), (1, 2, 3), size=64)
    truncated.write_bytes(truncated.read_bytes()[:60])
    one_line_error(lambda: load_rgb(str(truncated)), str(truncated))


# ---------------------------------------------------------------- images as viewers show them (issue 19, item 8)

UPRIGHT = np.random.RandomState(5).randint(0, 256, (6, 10, 3), dtype=np.uint8)  # 10 wide, 6 high
UPRIGHT[0, 0] = [255, 0, 0]  # a red top-left corner

# EXIF orientation -> how the stored pixels relate to the upright picture (TIFF/EXIF 2.3, tag 0x0112)
STORED = {1: lambda a: a,
          2: lambda a: a[:, ::-1],                      # mirrored left-right
          3: lambda a: a[::-1, ::-1],                   # upside down
          4: lambda a: a[::-1],                         # mirrored top-bottom
          5: lambda a: a.transpose(1, 0, 2),            # mirrored along the main diagonal
          6: lambda a: np.rot90(a, 1),                  # shown after a quarter turn clockwise
          7: lambda a: np.rot90(a, 2).transpose(1, 0, 2),
          8: lambda a: np.rot90(a, -1)}                 # shown after a quarter turn anticlockwise


def with_orientation(path, orientation):
    img = Image.fromarray(np.ascontiguousarray(STORED[orientation](UPRIGHT)))
    exif = Image.Exif()
    exif[0x0112] = orientation
    img.save(path, exif=exif)
    return path


@pytest.mark.parametrize('orientation', sorted(STORED))
def test_exif_orientation_is_applied(tmp_path, orientation):
    path = with_orientation(tmp_path / 'photo.png', orientation)
    assert np.array_equal(np.asarray(load_rgb(str(path))), UPRIGHT)


def test_every_reader_sees_the_upright_image(tmp_path):
    from metrics.fid import _open_rgb
    (tmp_path / 'd' / 'cat').mkdir(parents=True)
    with_orientation(tmp_path / 'd' / 'cat' / 'a.png', 6)
    loader = get_test_loader(str(tmp_path / 'd'), img_size=S, batch_size=1, shuffle=False, num_workers=0)
    x = next(iter(loader))[0][0]
    upright = np.asarray(Image.fromarray(UPRIGHT).resize((S, S), Image.BILINEAR), np.float64) / 127.5 - 1
    np.testing.assert_allclose(x.permute(1, 2, 0).numpy(), upright, atol=1e-6)
    assert np.array_equal(np.asarray(_open_rgb(str(tmp_path / 'd' / 'cat' / 'a.png'))), UPRIGHT)  # FID


@pytest.mark.parametrize('mode', ['RGBA', 'LA', 'P', 'RGB-tRNS', 'L-tRNS'])
def test_transparent_pixels_are_white(tmp_path, mode):
    path = tmp_path / 'a.png'
    opaque, hidden = (30, 60, 90), (0, 0, 0)  # hidden pixels store black, as many programs write them
    arr = np.zeros((4, 4, 3), np.uint8) + np.array(hidden, np.uint8)
    arr[:, :2] = opaque
    alpha = np.where(np.arange(4) < 2, 255, 0).astype(np.uint8)[None].repeat(4, 0)
    if mode in ('RGBA', 'LA'):
        img = Image.fromarray(np.dstack([arr, alpha]), 'RGBA').convert(mode)
        img.save(path)
    elif mode == 'P':
        img = Image.fromarray(arr).convert('P', palette=Image.ADAPTIVE, colors=4)
        img.save(path, transparency=img.getpixel((3, 0)))
    elif mode == 'RGB-tRNS':
        Image.fromarray(arr).save(path, transparency=hidden)
    else:
        Image.fromarray(arr).convert('L').save(path, transparency=0)
    got = np.asarray(load_rgb(str(path))).astype(int)
    want_opaque = np.asarray(Image.fromarray(arr).convert('L' if mode in ('LA', 'L-tRNS') else 'RGB').convert('RGB'))[0, 0]
    assert (got[:, 2:] == 255).all()  # the transparent half: white, not the black it stores
    assert np.abs(got[:, :2] - want_opaque).max() <= 1  # the opaque half as stored


def test_too_many_pixels_refused_before_decoding(tmp_path):
    from core.io.images import ImageTooLargeError
    path = tmp_path / 'big.png'
    Image.new('RGB', (300, 200)).save(path)
    path.write_bytes(path.read_bytes()[:80])  # header only: decoding it would fail
    with pytest.raises(ImageTooLargeError, match=r'300 x 200 pixels, more than 59,999'):
        load_rgb(str(path), max_pixels=59_999)
    with pytest.raises(UserError, match='cannot read image'):
        load_rgb(str(path), max_pixels=60_000)


# ---------------------------------------------------------------- symbolic links in domain folders (issue 19, item 8)

def linked_dataset(root, outside):
    """cat: 2 images, a loop to the dataset root, a link to its own sub-folder, links into dog
    (folder and file), two links to one outside folder; dog: 3 images."""
    for i in range(2):
        noise(str(root / 'cat' / 'sub' / f'c{i}.png'), i)
    for i in range(3):
        noise(str(root / 'dog' / f'd{i}.png'), 10 + i)
    for i in range(2):
        noise(str(outside / f'e{i}.png'), 20 + i)
    os.symlink(root, root / 'cat' / 'loop_to_root')
    os.symlink('..', root / 'cat' / 'sub' / 'loop_to_parent')
    os.symlink(root / 'cat' / 'sub', root / 'cat' / 'again')
    os.symlink(root / 'dog', root / 'cat' / 'dogs')
    os.symlink(root / 'dog' / 'd0.png', root / 'cat' / 'a_dog.png')
    os.symlink(outside, root / 'cat' / 'ext1')
    os.symlink(outside, root / 'cat' / 'ext2')
    os.symlink(outside / 'e0.png', root / 'cat' / 'e0_link.png')
    return root


def test_links_followed_once_without_loops_never_into_another_domain(tmp_path):
    from core.datasets.folders import list_domain_images
    from core.datasets.loaders import DomainDataset
    root = linked_dataset(tmp_path / 'data', tmp_path / 'outside')
    found = list_domain_images(str(root))
    cat = [os.path.relpath(p, root / 'cat') for p in found['cat']]
    assert cat == ['ext1/e0.png', 'ext1/e1.png', 'sub/c0.png', 'sub/c1.png']  # each real file once
    assert [os.path.relpath(p, root) for p in found['dog']] == ['dog/d0.png', 'dog/d1.png', 'dog/d2.png']
    dataset = DomainDataset(str(root), lambda img: img)
    assert [y for _, y in dataset.samples] == [0] * 4 + [1] * 3
    assert check_dataset(str(root), num_domains=2) == ['cat', 'dog']


def test_hard_links_stay_separate_images(tmp_path):
    """Two names of one file (a hard link, as `cp -al` or a de-duplicating copy makes) are two
    images, as they always were: the image count, and so the data order, of such a dataset
    does not change."""
    from core.datasets.folders import list_domain_images
    root = tmp_path / 'train'
    solid(str(root / 'cat' / 'a.png'), (1, 0, 0))
    solid(str(root / 'dog' / 'b.png'), (2, 0, 0))
    os.link(root / 'cat' / 'a.png', root / 'cat' / 'a_again.png')
    found = list_domain_images(str(root), ['cat', 'dog'])
    assert found['cat'] == [str(root / 'cat' / 'a.png'), str(root / 'cat' / 'a_again.png')]


def test_links_are_compared_by_folder_not_by_spelling(tmp_path, monkeypatch):
    """A case-insensitive disk (macOS, Windows), simulated: 'DATA' is the folder 'data' (here a
    link that realpath keeps as spelled, as realpath keeps the case typed there). A link into
    another domain, or back into its own folder, spelled in another case is still seen as one."""
    from core.datasets.folders import list_domain_images
    root = tmp_path / 'data' / 'train'
    for d in ('cat', 'dog'):
        for i in range(2):
            solid(str(root / d / f'{i}.png'), (i, 0, 0))
    os.symlink('data', tmp_path / 'DATA')
    os.symlink(tmp_path / 'DATA' / 'train' / 'cat', root / 'dog' / 'more')  # into the other domain
    os.symlink(tmp_path / 'DATA' / 'train' / 'cat', root / 'cat' / 'loop')  # back into itself
    real_realpath = os.path.realpath

    def case_keeping_realpath(path, **kw):
        parts, out = os.path.abspath(path).split(os.sep)[1:], os.sep
        while parts:
            nxt = os.path.normpath(os.path.join(out, parts.pop(0)))
            if os.path.islink(nxt) and os.path.basename(nxt) != 'DATA':
                parts = os.path.normpath(os.path.join(out, os.readlink(nxt))).split(os.sep)[1:] + parts
                out = os.sep
                continue
            out = nxt
        return out
    monkeypatch.setattr(os.path, 'realpath', case_keeping_realpath)
    assert os.path.realpath(root / 'dog' / 'more') == str(tmp_path / 'DATA' / 'train' / 'cat')
    assert real_realpath(root / 'dog' / 'more') == real_realpath(root / 'cat')
    found = list_domain_images(str(root), ['cat', 'dog'])
    assert found == {'cat': [str(root / 'cat' / '0.png'), str(root / 'cat' / '1.png')],
                     'dog': [str(root / 'dog' / '0.png'), str(root / 'dog' / '1.png')]}


def test_a_domain_folder_may_itself_be_a_link(tmp_path):
    from core.datasets.folders import list_domain_images
    for i in range(2):
        noise(str(tmp_path / 'store' / 'cats' / f'{i}.png'), i)
        noise(str(tmp_path / 'data' / 'dog' / f'{i}.png'), i + 5)
    os.symlink(tmp_path / 'store' / 'cats', tmp_path / 'data' / 'cat')
    os.symlink(tmp_path / 'data' / 'dog', tmp_path / 'store' / 'cats' / 'dogs')  # leads into the other domain
    found = list_domain_images(str(tmp_path / 'data'))
    assert [os.path.basename(p) for p in found['cat']] == ['0.png', '1.png']
    os.symlink(tmp_path / 'store' / 'cats', tmp_path / 'data' / 'kitten')  # two domains, one folder
    one_line_error(lambda: check_dataset(str(tmp_path / 'data')), "'cat' and 'kitten'", 'one folder')


def test_a_link_loop_in_an_eval_folder_lists_each_file_once(tmp_path):
    noise(str(tmp_path / 'imgs' / 'a' / '0.png'), 0)
    os.symlink(tmp_path / 'imgs', tmp_path / 'imgs' / 'a' / 'up')
    os.symlink(tmp_path / 'imgs' / 'a' / '0.png', tmp_path / 'imgs' / 'same.png')
    assert list_images(str(tmp_path / 'imgs')) == [str(tmp_path / 'imgs' / 'a' / '0.png')]


# ---------------------------------------------------------------- loaders and the device
def test_loaders_follow_the_device_and_keep_workers(tmp_path):
    from core.datasets.loaders import get_test_loader, get_train_loader
    data = make_dataset(tmp_path / 'data', n=2)
    cpu = get_train_loader(str(data / 'train'), img_size=32, batch_size=2, num_workers=0, seed=0, device='cpu')
    assert not cpu.pin_memory and not cpu.persistent_workers
    workers = get_test_loader(str(data / 'val'), img_size=32, batch_size=2, num_workers=1, seed=0, device='cpu')
    assert workers.persistent_workers and not workers.pin_memory


# ----------------------------------------------------------------------------- one allow-list of formats

def test_a_file_of_another_format_is_refused_before_any_decoder(eps_as_png):
    msg = one_line_error(lambda: load_rgb(eps_as_png), f"cannot read image '{eps_as_png}'")
    from core.io.images import FORMATS_TEXT, IMAGE_FORMATS, unreadable_reason
    assert set(IMAGE_FORMATS) == {'PNG', 'JPEG', 'WEBP', 'BMP'}
    assert f'(not a {FORMATS_TEXT} image' in msg and FORMATS_TEXT == 'PNG, JPEG, WebP or BMP'
    assert FORMATS_TEXT in unreadable_reason(eps_as_png)
    root = eps_as_png.parent.parent  # the up-front check of a dataset (training, evaluation)
    solid(str(root / 'dog' / 'a.png'), (1, 2, 3))
    one_line_error(lambda: check_dataset(root), '1 unreadable image file', os.path.join('cat', 'photo.png'), FORMATS_TEXT)


def test_every_accepted_format_is_read(tmp_path):
    """The formats of IMG_EXTENSIONS, under any of these names, and a camera's JPEG with a second
    picture (PIL: MPO)."""
    from core.io.images import unreadable_reason
    img, other = Image.new('RGB', (S, S), (200, 100, 50)), Image.new('RGB', (S, S), (0, 0, 0))
    saved = {'a.png': 'PNG', 'b.jpg': 'JPEG', 'c.webp': 'WEBP', 'd.bmp': 'BMP', 'e.jpeg': 'JPEG'}
    for name, fmt in saved.items():
        img.save(tmp_path / name, format=fmt, **({'lossless': True} if fmt == 'WEBP' else {}))
    img.save(tmp_path / 'camera.jpg', format='MPO', save_all=True, append_images=[other])
    with Image.open(tmp_path / 'camera.jpg') as im:
        assert im.format == 'MPO'
    for name in [*saved, 'camera.jpg']:
        assert unreadable_reason(tmp_path / name) is None
        pixel = load_rgb(tmp_path / name).getpixel((S // 2, S // 2))
        assert max(abs(a - b) for a, b in zip(pixel, (200, 100, 50))) <= 3, (name, pixel)
    img.save(tmp_path / 'f.png', format='TIFF')  # a format PIL reads but the readers do not
    assert 'not a PNG, JPEG, WebP or BMP image' in unreadable_reason(tmp_path / 'f.png')
