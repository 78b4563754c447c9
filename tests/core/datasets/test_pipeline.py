"""core/datasets/pipeline.py: datasets, loaders and the fetcher: batches, resume, each process's share, bad input."""
import gc
import os

import pytest
import torch
from helpers import DATA_SIZE as S
from helpers import coded_dataset, decode, make_dataset, noise, noise_dataset, one_line_error, solid
from PIL import Image

from core.datasets.pipeline import InputFetcher, get_eval_loader, get_test_loader, get_train_loader
from core.io.images import load_rgb


def take(fetcher, n):
    return [next(fetcher) for _ in range(n)]


def same_batches(a, b):
    assert len(a) == len(b)
    for p, q in zip(a, b):
        assert p.keys() == q.keys()
        for k in p:
            assert torch.equal(p[k], q[k]), k


# ----------------------------------------------------------------------------- loaders

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
    import core.datasets.pipeline
    import core.io.images
    opened = []
    real = core.io.images.load_rgb
    monkeypatch.setattr(core.datasets.pipeline, 'load_rgb', lambda path, *a, **k: opened.append(path) or real(path, *a, **k))
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

    from core.datasets.pipeline import DomainDataset, TrainTransform
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

    from core.datasets.order import Share
    from core.datasets.pipeline import DomainDataset, TrainTransform, share_loader
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
    from core.datasets.pipeline import TrainTransform, unit_range
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
    from core.datasets.pipeline import without_workers
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


@pytest.mark.parametrize('workers', [0, 1])
def test_an_image_damaged_after_the_check_is_one_line_from_every_loader(tmp_path, workers):
    """Test, evaluation and training loaders (their workers' errors come back as the text of a
    traceback) and the fetcher all fail with the one-line ImageReadError of the file, its type kept."""
    from core.io.images import ImageReadError
    root = coded_dataset(tmp_path, {'cat': 2, 'dog': 2})
    bad = tmp_path / 'dog' / '000.png'
    builds = [lambda: get_test_loader(root, img_size=S, batch_size=4, shuffle=False, num_workers=workers),
              lambda: get_eval_loader(os.path.join(root, 'dog'), img_size=S, batch_size=2, num_workers=workers)]
    for build in builds:
        solid(str(bad), (1, 2, 3))
        loader = build()
        bad.write_bytes(b'this is not a png')
        with pytest.raises(ImageReadError) as e:
            list(loader)
        assert str(e.value) == (f"cannot read image '{bad}' (not a PNG, JPEG, WebP or BMP image, the formats read); "
                                f"replace or delete the file")
        del loader, e
        gc.collect()  # the worker stops now, not in a later test
    solid(str(bad), (1, 2, 3))
    kw = dict(img_size=S, batch_size=4, num_workers=workers, seed=0)
    fetcher = InputFetcher(get_train_loader(root, 'source', **kw), get_train_loader(root, 'reference', **kw),
                           latent_dim=4, mode='train', device='cpu', seed=0)
    bad.write_bytes(b'this is not a png')
    with pytest.raises(ImageReadError) as e:
        next(fetcher)
    assert '\n' not in str(e.value) and str(e.value).startswith(f"cannot read image '{bad}'")
    del fetcher, e
    gc.collect()


def test_the_loaders_of_one_dataset_check_each_image_once(tmp_path, monkeypatch):
    """Training's source and reference loaders given one ``CheckedImages`` read each image once
    for the up-front check; without it, each loader checks the whole dataset."""
    import core.io.images as images
    root = coded_dataset(tmp_path, {'cat': 2, 'dog': 3})
    read = []
    real = images.unreadable_reason
    monkeypatch.setattr(images, 'unreadable_reason', lambda path: read.append(path) or real(path))
    kw = dict(img_size=S, batch_size=2, num_workers=0, seed=0)
    checked = images.CheckedImages()
    get_train_loader(root, 'source', checked=checked, **kw)
    get_train_loader(root, 'reference', checked=checked, **kw)
    assert len(read) == 5 and len(set(read)) == 5
    del read[:]
    get_train_loader(root, 'source', **kw)
    get_train_loader(root, 'reference', **kw)
    assert len(read) == 10


# ---------------------------------------------------------------- loaders and the device

def test_loaders_follow_the_device_and_keep_workers(tmp_path):
    from core.datasets.pipeline import get_test_loader, get_train_loader
    data = make_dataset(tmp_path / 'data', n=2)
    cpu = get_train_loader(str(data / 'train'), img_size=32, batch_size=2, num_workers=0, seed=0, device='cpu')
    assert not cpu.pin_memory and not cpu.persistent_workers
    workers = get_test_loader(str(data / 'val'), img_size=32, batch_size=2, num_workers=1, seed=0, device='cpu')
    assert workers.persistent_workers and not workers.pin_memory
