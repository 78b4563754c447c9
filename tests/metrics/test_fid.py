"""metrics/fid.py: the Frechet distance, Inception features from files and arrays, cached
statistics, the command line (offline, name-filled weights: tests/metrics/conftest.py)."""
import subprocess
import sys

import numpy as np
import pytest
import torch
from helpers import ROOT, random_uint8, write_pngs

from metrics import fid


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


# ------------------------------------------------------------------ command line
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
