"""Fast CPU tests of metrics/: FID, LPIPS and the eval protocol (offline, name-filled weights)."""
import json
import math
import os
import subprocess
import sys

import lpips as lpips_pkg
import numpy as np
import pytest
import torch
from munch import Munch

import metrics as metrics_pkg
from PIL import Image
from torchvision import models

from helpers import ROOT
from metrics import MissingWeightsError
from metrics import eval as meval
from metrics import fid, lpips
from weights_by_name import value_for

INCEPTION_FILE = os.path.basename(models.Inception_V3_Weights.IMAGENET1K_V1.url)
ALEXNET_FILE = os.path.basename(models.AlexNet_Weights.IMAGENET1K_V1.url)


def named_state(net):
    return {k: value_for(k, v, gain=2 ** 0.5) for k, v in net.state_dict().items()}


@pytest.fixture(scope='module')
def torch_home(tmp_path_factory):
    """A TORCH_HOME whose hub cache holds name-filled Inception v3 and AlexNet weights."""
    home = tmp_path_factory.mktemp('torch_home')
    ckpt = home / 'hub' / 'checkpoints'
    ckpt.mkdir(parents=True)
    torch.save(named_state(models.inception_v3(weights=None, aux_logits=True, init_weights=False)),
               ckpt / INCEPTION_FILE)
    torch.save(named_state(models.alexnet(weights=None)), ckpt / ALEXNET_FILE)
    return home


@pytest.fixture
def offline_home(torch_home, monkeypatch):
    monkeypatch.setenv('TORCH_HOME', str(torch_home))
    return torch_home


@pytest.fixture
def inception(offline_home):
    return fid.build_inception(None, 'cpu')


def write_pngs(folder, images, start=0):
    os.makedirs(folder, exist_ok=True)
    for i, img in enumerate(images):
        Image.fromarray(img).save(os.path.join(folder, f'{start + i:03d}.png'))


def random_uint8(n, size, seed):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def no_download(monkeypatch):
    def refuse(*a, **k):
        raise OSError('offline')
    monkeypatch.setattr(torch.hub, 'download_url_to_file', refuse)


# ------------------------------------------------------------------ Frechet distance
def test_frechet_of_identical_statistics_is_zero():
    actvs = np.random.default_rng(0).normal(size=(40, 6)).astype(np.float32)
    mu, cov = fid.statistics(actvs)
    assert mu.dtype == cov.dtype == np.float64
    assert abs(fid.frechet_distance(mu, cov, mu, cov)) < 1e-8 * np.trace(cov)


def test_frechet_matches_closed_form_for_commuting_covariances():
    # C1 = Q diag(a) Q^T, C2 = Q diag(b) Q^T: d = |mu1 - mu2|^2 + sum (sqrt a - sqrt b)^2
    rng = np.random.default_rng(1)
    q, _ = np.linalg.qr(rng.normal(size=(4, 4)))
    a, b = np.array([1.0, 2.0, 0.5, 3.0]), np.array([4.0, 0.25, 0.5, 1.0])
    mu1, mu2 = np.array([0.0, 1.0, 2.0, 3.0]), np.array([1.0, 1.0, 0.0, 3.0])
    expected = 1 + 4 + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    got = fid.frechet_distance(mu1, q @ np.diag(a) @ q.T, mu2, q @ np.diag(b) @ q.T)
    assert got == pytest.approx(expected, rel=1e-10)
    # 1-D Gaussians N(0, 4) and N(3, 1): 9 + (2 - 1)^2
    assert fid.frechet_distance([0.0], [[4.0]], [3.0], [[1.0]]) == pytest.approx(10.0, rel=1e-12)


def test_frechet_matches_the_symmetric_form_for_non_commuting_covariances():
    rng = np.random.default_rng(2)
    m1, m2 = rng.normal(size=(3, 3)), rng.normal(size=(3, 3))
    c1, c2 = m1 @ m1.T + np.eye(3), m2 @ m2.T + np.eye(3)
    s1 = np.real(fid.linalg.sqrtm(c1))
    cross = np.real(fid.linalg.sqrtm(s1 @ c2 @ s1))     # tr sqrtm(C1 C2) = tr sqrtm(C1^1/2 C2 C1^1/2)
    expected = np.trace(c1) + np.trace(c2) - 2 * np.trace(cross)
    assert fid.frechet_distance(np.zeros(3), c1, np.zeros(3), c2) == pytest.approx(expected, rel=1e-9)
    assert fid.frechet_distance(np.zeros(3), c1, np.zeros(3), c2) == \
        pytest.approx(fid.frechet_distance(np.zeros(3), c2, np.zeros(3), c1), rel=1e-9)


def test_statistics_need_two_images():
    with pytest.raises(fid.MetricsError, match='at least 2'):
        fid.statistics(np.zeros((1, 5), np.float32))


# ------------------------------------------------------------------ Inception features
def test_inception_is_built_once_and_has_the_pool3_shape(inception):
    assert fid.build_inception(None, 'cpu') is inception
    assert not inception.training
    with torch.no_grad():
        out = inception(torch.zeros(1, 3, 299, 299))
    assert out.shape == (1, 2048)


def test_in_memory_images_give_the_same_features_as_png_files(inception, tmp_path):
    images = random_uint8(3, 40, seed=3)
    write_pngs(tmp_path / 'imgs', images)
    files = sorted(str(p) for p in (tmp_path / 'imgs').iterdir())
    from_files = fid.activations_from_paths(files, 32, 2, inception)
    from_memory = fid.activations_from_uint8(images, 32, 2, inception)
    assert from_files.shape == (3, 2048) and from_files.dtype == np.float32
    assert np.array_equal(from_files, from_memory)
    assert not np.allclose(from_files[0], from_files[1])   # the images really differ


def test_folder_statistics_are_cached_and_invalidated(inception, tmp_path, monkeypatch):
    folder, cache = tmp_path / 'real', tmp_path / 'cache'
    write_pngs(folder, random_uint8(3, 32, seed=4))
    calls = []
    compute = fid.activations_from_paths

    def counting(paths, *a, **k):
        calls.append(len(paths))
        return compute(paths, *a, **k)

    monkeypatch.setattr(fid, 'activations_from_paths', counting)
    mu, cov = fid.stats_from_folder(str(folder), 32, 2, inception, cache_dir=str(cache))
    assert calls == [3] and len(list(cache.iterdir())) == 1
    mu2, cov2 = fid.stats_from_folder(str(folder), 32, 2, inception, cache_dir=str(cache))
    assert calls == [3]                                   # hit: nothing recomputed
    assert np.array_equal(mu, mu2) and np.array_equal(cov, cov2)
    fid.stats_from_folder(str(folder), 48, 2, inception, cache_dir=str(cache))
    assert calls == [3, 3]                                # another img_size is another entry
    write_pngs(folder, random_uint8(1, 32, seed=5), start=1)   # one file changes
    mu3, _ = fid.stats_from_folder(str(folder), 32, 2, inception, cache_dir=str(cache))
    assert calls == [3, 3, 3] and not np.array_equal(mu, mu3)


@pytest.mark.slow  # a 2048-d sqrtm: ~10 s idle, minutes on a busy machine
def test_fid_of_a_folder_with_itself_is_zero(inception, tmp_path):
    # each 2048-d FID costs one scipy sqrtm (~10 s on CPU): tests keep them few
    images = random_uint8(4, 32, seed=6)
    write_pngs(tmp_path / 'a', images)
    d_self = fid.calculate_fid_given_paths([str(tmp_path / 'a'), images], 32, 4, device='cpu')
    _, cov = fid.stats_from_folder(str(tmp_path / 'a'), 32, 4, inception)
    assert abs(d_self) < 1e-5 * np.trace(cov)   # sqrtm of a singular product: ~1e-6, not 0


@pytest.mark.slow  # Inception three times plus 2048-d statistics: 40 s on the busy machine
def test_fid_sources_folder_array_and_statistics_agree(inception, tmp_path, monkeypatch):
    images = random_uint8(4, 32, seed=7)
    write_pngs(tmp_path / 'a', images)
    seen = []
    monkeypatch.setattr(fid, 'frechet_distance', lambda *stats: seen.append(stats) or 1.0)
    precomputed = fid.statistics(fid.activations_from_uint8(images, 32, 4, inception))
    for source in (str(tmp_path / 'a'), images, precomputed):
        fid.calculate_fid_given_paths([source, source], 32, 2, device='cpu')
    for mu1, cov1, mu2, cov2 in seen:
        np.testing.assert_allclose(mu1, precomputed[0], rtol=1e-12)
        np.testing.assert_allclose(cov2, precomputed[1], rtol=1e-9, atol=1e-12)
    assert len(seen) == 3 and cov1.shape == (2048, 2048)


# ------------------------------------------------------------------ missing / bad weights
def test_missing_weights_raise_one_line_errors(tmp_path, monkeypatch):
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'empty_home'))
    no_download(monkeypatch)
    with pytest.raises(MissingWeightsError) as e:
        fid.build_inception(None, 'cpu')
    msg = str(e.value)
    assert '\n' not in msg and INCEPTION_FILE in msg and '--inception_path' in msg
    assert os.path.join(str(tmp_path / 'empty_home'), 'hub', 'checkpoints') in msg
    with pytest.raises(MissingWeightsError) as e:
        lpips.build_lpips(None, 'cpu')
    msg = str(e.value)
    assert '\n' not in msg and ALEXNET_FILE in msg and '--alexnet_path' in msg
    with pytest.raises(MissingWeightsError) as e:
        fid.build_inception(str(tmp_path / 'nope.pth'), 'cpu')
    assert '\n' not in str(e.value) and 'nope.pth' in str(e.value)


def test_wrong_or_corrupt_weight_files_raise_one_line_errors(torch_home, tmp_path):
    alex = str(torch_home / 'hub' / 'checkpoints' / ALEXNET_FILE)
    with pytest.raises(MissingWeightsError) as e:
        fid.build_inception(alex, 'cpu')
    assert '\n' not in str(e.value) and 'inception_v3' in str(e.value) and '--inception_path' in str(e.value)
    junk = tmp_path / 'junk.pth'
    junk.write_bytes(b'not a checkpoint')
    with pytest.raises(MissingWeightsError) as e:
        lpips.build_lpips(str(junk), 'cpu')
    assert '\n' not in str(e.value) and 'junk.pth' in str(e.value)


@pytest.mark.slow
def test_cli_prints_one_line_error_without_traceback(tmp_path):
    r = subprocess.run([sys.executable, '-m', 'metrics.fid', '--paths', str(tmp_path), str(tmp_path),
                        '--inception_path', str(tmp_path / 'missing.pth')],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2
    assert r.stderr.strip().count('\n') == 0 and r.stderr.startswith('error: ')
    assert 'missing.pth' in r.stderr and 'Traceback' not in r.stderr


def test_cli_prints_the_fid_on_its_last_line(offline_home, inception, tmp_path, monkeypatch, capsys):
    write_pngs(tmp_path / 'real', random_uint8(3, 32, seed=8))
    write_pngs(tmp_path / 'fake', random_uint8(2, 32, seed=9))
    seen = []
    monkeypatch.setattr(fid, 'frechet_distance', lambda *stats: seen.append(stats) or 123.25)
    assert fid.main(['--paths', str(tmp_path / 'real'), str(tmp_path / 'fake'), '--img_size', '32',
                     '--batch_size', '2', '--cache_dir', str(tmp_path / 'cache'), '--device', 'cpu']) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == '123.25'
    (mu1, cov1, mu2, cov2), = seen
    real = fid.stats_from_folder(str(tmp_path / 'real'), 32, 2, inception)
    fake = fid.stats_from_folder(str(tmp_path / 'fake'), 32, 2, inception)
    assert np.array_equal(mu1, real[0]) and np.array_equal(cov2, fake[1])
    assert len(list((tmp_path / 'cache').iterdir())) == 1   # the real folder's statistics


# ------------------------------------------------------------------ LPIPS
def package_lpips_with(alexnet_file):
    """The lpips package's own module, trunk filled from a torchvision AlexNet state_dict."""
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        pkg = lpips_pkg.LPIPS(net='alex', version='0.1', pnet_rand=True, verbose=False)
    state = torch.load(alexnet_file, weights_only=True)
    trunk = {}
    for name in pkg.net.state_dict():            # sliceK.N.weight <- features.N.weight
        _, index, kind = name.split('.')
        trunk[name] = state[f'features.{index}.{kind}']
    pkg.net.load_state_dict(trunk)
    return pkg.eval()


def test_lpips_agrees_with_the_package_and_is_pairwise(offline_home):
    net = lpips.build_lpips(None, 'cpu')
    assert lpips.build_lpips(None, 'cpu') is net
    g = torch.Generator().manual_seed(0)
    group = [torch.rand(2, 3, 32, 32, generator=g) * 2 - 1 for _ in range(3)]
    pkg = package_lpips_with(str(offline_home / 'hub' / 'checkpoints' / ALEXNET_FILE))
    with torch.no_grad():
        pairs = [(i, j) for i in range(3) for j in range(i + 1, 3)]
        ours = [net(group[i], group[j]).item() for i, j in pairs]
        theirs = [pkg(group[i], group[j]).mean().item() for i, j in pairs]
        assert net(group[0], group[0]).item() == 0.0
    assert ours == pytest.approx(theirs, rel=1e-5)       # only the epsilon placement differs
    assert min(ours) > 0
    assert lpips.calculate_lpips_given_images(group) == pytest.approx(np.mean(ours), rel=1e-6)


def test_lpips_group_errors():
    x = torch.zeros(1, 3, 16, 16)
    with pytest.raises(lpips.MetricsError, match='at least 2'):
        lpips.calculate_lpips_given_images([x])
    with pytest.raises(lpips.MetricsError, match='same shape'):
        lpips.calculate_lpips_given_images([x, torch.zeros(2, 3, 16, 16)])


# ------------------------------------------------------------------ evaluation protocol
def test_to_uint8_matches_torchvision_save_image(tmp_path):
    from torchvision.utils import save_image
    x = torch.linspace(-1.2, 1.2, 3 * 8 * 8).reshape(1, 3, 8, 8)
    save_image((x[0] + 1) / 2, tmp_path / 'a.png')   # the official (x + 1) / 2, clamp, save
    assert np.array_equal(meval.to_uint8(x)[0], np.asarray(Image.open(tmp_path / 'a.png')))


def tiny_nets(w_hpf=0):
    from core.networks import Generator, MappingNetwork, StyleEncoder
    torch.manual_seed(0)
    return Munch(generator=Generator(img_size=32, style_dim=16, max_conv_dim=32, w_hpf=w_hpf, dim_in=8),
                 mapping_network=MappingNetwork(latent_dim=8, style_dim=16, num_domains=2),
                 style_encoder=StyleEncoder(img_size=32, style_dim=16, num_domains=2,
                                            max_conv_dim=32, dim_in=8))


def tiny_dataset(root):
    for split, seed in (('train', 10), ('val', 20)):
        for k, domain in enumerate(('cat', 'dog')):
            write_pngs(root / split / domain, random_uint8(4, 32, seed=seed + k))


def tiny_args(root, **kw):
    args = Munch(img_size=32, num_domains=2, latent_dim=8, val_batch_size=3, num_outs_per_domain=2,
                 w_hpf=0, train_img_dir=str(root / 'train'), val_img_dir=str(root / 'val'),
                 eval_dir=str(root / 'eval'), seed=7, inception_path=None, alexnet_path=None,
                 save_eval_images=False, num_workers=0)
    args.update(kw)
    return args


def test_reference_and_masks_reach_the_networks(tmp_path):
    tiny_dataset(tmp_path)
    nets = tiny_nets(w_hpf=1)
    seen = Munch(refs=[], masks=[])
    encoder = nets.style_encoder

    def style_encoder(x, y):
        seen.refs.append((x.shape[0], y.tolist()))
        return encoder(x, y)

    def get_heatmap(x):
        return torch.ones(x.size(0), 1, 256, 256), torch.ones(x.size(0), 1, 256, 256) * 0.5

    generator = nets.generator

    def spy_generator(x, s, masks=None):
        seen.masks.append(masks)
        return generator(x, s, masks=masks)

    spy = Munch(generator=spy_generator, mapping_network=nets.mapping_network,
                style_encoder=style_encoder, fan=Munch(get_heatmap=get_heatmap))
    args = tiny_args(tmp_path, w_hpf=1)
    task = meval.Task(args, 'reference', 'cat', 'dog', 1)
    sizes = []
    for x in task.sources:
        outs = meval.translate_batch(spy, args, task, x)
        assert len(outs) == 2 and all(o.shape == x.shape for o in outs)
        sizes.append(x.size(0))
    assert sizes == [3, 1]                                    # val_batch_size 3, last batch kept
    assert seen.refs == [(3, [1, 1, 1])] * 2 + [(1, [1])] * 2  # refs cut to the source batch
    assert all(m is not None and len(m) == 2 for m in seen.masks)


def check_result_files(eval_dir, step, mode, fid_values, lpips_values, tasks=('dog2cat', 'cat2dog')):
    """JSON files hold the returned values, keys in task order (target outer, source inner) + mean."""
    for kind, values in (('FID', fid_values), ('LPIPS', lpips_values)):
        with open(os.path.join(eval_dir, f'{kind}_{step:05d}_{mode}.json')) as f:
            on_disk = json.load(f)
        assert list(on_disk) == [f'{kind}_{mode}/{t}' for t in tasks] + [f'{kind}_{mode}/mean']
        assert on_disk == values
        per_task = [values[f'{kind}_{mode}/{t}'] for t in tasks]
        assert all(math.isfinite(v) and v > 0 for v in per_task)
        assert values[f'{kind}_{mode}/mean'] == pytest.approx(np.mean(per_task), rel=1e-12)


@pytest.mark.slow  # Inception on every output: minutes on a busy 2-core machine
def test_calculate_metrics_end_to_end_latent(offline_home, tmp_path, monkeypatch):
    tiny_dataset(tmp_path)
    args = tiny_args(tmp_path)
    builds = []
    make = fid.models.inception_v3
    monkeypatch.setattr(fid.models, 'inception_v3', lambda **k: builds.append(1) or make(**k))
    metrics_pkg._BUILT.clear()
    fid_values, lpips_values = meval.calculate_metrics(tiny_nets(), args, step=12, mode='latent',
                                                       verbose=False)
    assert len(builds) == 1                                   # one Inception for all tasks
    check_result_files(args.eval_dir, 12, 'latent', fid_values, lpips_values)
    line = json.loads((tmp_path / 'eval' / 'metrics.jsonl').read_text())
    assert line == {'step': 12, 'mode': 'latent', **fid_values, **lpips_values}
    assert len(os.listdir(tmp_path / 'eval' / 'fid_stats')) == 2    # real statistics, per target
    assert not os.path.exists(tmp_path / 'eval' / 'cat2dog')          # nothing written by default


@pytest.mark.slow
def test_calculate_metrics_reference_mode_is_deterministic_and_png_faithful(offline_home, tmp_path,
                                                                               monkeypatch):
    # FID's own math is tested above and against the golden; here a cheap stand-in records its inputs
    seen = []

    def recording_distance(mu1, cov1, mu2, cov2):
        seen.append((mu1, cov1, mu2, cov2))
        return float(np.sum((mu1 - mu2) ** 2)) + 1.0

    monkeypatch.setattr(meval, 'frechet_distance', recording_distance)
    tiny_dataset(tmp_path)
    nets = tiny_nets()
    args = tiny_args(tmp_path, save_eval_images=True)
    fid_values, lpips_values = meval.calculate_metrics(nets, args, step=3, mode='reference',
                                                       verbose=False)
    check_result_files(args.eval_dir, 3, 'reference', fid_values, lpips_values)

    # the saved PNGs hold exactly the outputs whose statistics were used
    pngs = sorted(os.listdir(tmp_path / 'eval' / 'cat2dog'))
    assert len(pngs) == 4 * 2 and pngs[:2] == ['0001_01.png', '0001_02.png']
    inception = fid.build_inception(None, 'cpu')
    mu_files, cov_files = fid.stats_from_folder(str(tmp_path / 'eval' / 'cat2dog'), 32, 3, inception)
    mu_real, cov_real = fid.stats_from_folder(str(tmp_path / 'train' / 'dog'), 32, 3, inception)
    mu1, cov1, mu2, cov2 = seen[1]                            # task 2: cat2dog
    np.testing.assert_allclose(mu2, mu_files, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(cov2, cov_files, rtol=1e-6, atol=1e-9)
    assert np.array_equal(mu1, mu_real) and np.array_equal(cov1, cov_real)

    # same seed, same numbers (real statistics now from the cache)
    again = meval.calculate_metrics(nets, tiny_args(tmp_path), step=4, mode='reference', verbose=False)
    assert again == (fid_values, lpips_values)
    lines = (tmp_path / 'eval' / 'metrics.jsonl').read_text().splitlines()
    assert [json.loads(ln)['step'] for ln in lines] == [3, 4]


@pytest.mark.parametrize('mode', meval.MODES)
def test_the_seed_fixes_sources_and_styles(tmp_path, mode):
    tiny_dataset(tmp_path)
    nets = tiny_nets()

    def first_outputs(seed):
        task = meval.Task(tiny_args(tmp_path, seed=seed), mode, 'cat', 'dog', 1)
        x = next(iter(task.sources))
        return [x] + meval.translate_batch(nets, tiny_args(tmp_path), task, x)

    a, b, c = first_outputs(7), first_outputs(7), first_outputs(8)
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    assert not all(torch.equal(u, v) for u, v in zip(a, c))
    assert not torch.equal(a[1], a[2])                      # the outputs of one source differ


def test_calculate_metrics_rejects_bad_setups(offline_home, tmp_path):
    tiny_dataset(tmp_path)
    with pytest.raises(meval.MetricsError, match='latent'):
        meval.calculate_metrics(tiny_nets(), tiny_args(tmp_path), 0, 'style')
    with pytest.raises(meval.MetricsError, match='num_domains'):
        meval.calculate_metrics(tiny_nets(), tiny_args(tmp_path, num_domains=3), 0, 'latent')
    with pytest.raises(meval.MetricsError, match='val_batch_size'):
        meval.calculate_metrics(tiny_nets(), tiny_args(tmp_path, val_batch_size=5), 0, 'reference')
