"""core/datasets/demo_shapes.py: the demo's generated shapes dataset (how the demo scores it: tests/bench/)."""
import hashlib
import json
import multiprocessing
import os

import numpy as np
import pytest
from PIL import Image

from core.datasets.demo_shapes import (
    MANIFEST,
    POSITION_JITTER,
    SHAPES,
    SIZE_RANGE,
    make_shapes_dataset,
    random_params,
    render_shape,
)
from core.errors import UserError

pytestmark = pytest.mark.usefixtures('one_thread')


def _tree_digest(root):
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in sorted(os.walk(root)):
        dirnames.sort()
        for f in sorted(filenames):
            p = os.path.join(dirpath, f)
            h.update(os.path.relpath(p, root).encode())
            with open(p, 'rb') as fh:
                h.update(fh.read())
    return h.hexdigest()


def _pngs(folder):
    return sorted(f for f in os.listdir(folder) if f.endswith('.png'))


# ---------------------------------------------------------------------------- dataset
def test_counts_layout_and_image_format(tmp_path):
    info = make_shapes_dataset(tmp_path / 'd', img_size=24, n_train=7, n_val=3, seed=1)
    assert info['generated'] is True
    for split, n in (('train', 7), ('val', 3)):
        assert sorted(os.listdir(tmp_path / 'd' / split)) == sorted(SHAPES)
        for d in SHAPES:
            names = _pngs(tmp_path / 'd' / split / d)
            assert names == [f'{i:05d}.png' for i in range(n)]
            img = Image.open(tmp_path / 'd' / split / d / names[0])
            assert img.mode == 'RGB' and img.size == (24, 24)
    assert json.loads((tmp_path / 'd' / MANIFEST).read_text())['n_train'] == 7
    assert [f for f in os.listdir(tmp_path / 'd') if f.startswith('.')] == ['.lock']  # no temp folder left


def test_subset_of_domains(tmp_path):
    make_shapes_dataset(tmp_path, img_size=16, n_train=2, n_val=1, domains=('square', 'circle'))
    assert sorted(os.listdir(tmp_path / 'train')) == ['circle', 'square']


def test_deterministic_per_seed_and_prefix_stable(tmp_path):
    a = make_shapes_dataset(tmp_path / 'a', img_size=16, n_train=4, n_val=2, seed=3)
    make_shapes_dataset(tmp_path / 'b', img_size=16, n_train=4, n_val=2, seed=3)
    make_shapes_dataset(tmp_path / 'c', img_size=16, n_train=4, n_val=2, seed=4)
    make_shapes_dataset(tmp_path / 'e', img_size=16, n_train=6, n_val=2, seed=3)
    assert _tree_digest(tmp_path / 'a') == _tree_digest(tmp_path / 'b')
    assert _tree_digest(tmp_path / 'a' / 'train') != _tree_digest(tmp_path / 'c' / 'train')
    # a larger set begins with the same images
    for i in range(4):
        same = (tmp_path / 'a' / 'train' / 'circle' / f'{i:05d}.png').read_bytes()
        assert same == (tmp_path / 'e' / 'train' / 'circle' / f'{i:05d}.png').read_bytes()
    assert a['train'] == os.path.join(str(tmp_path / 'a'), 'train')


def test_second_call_skips_complete_dataset(tmp_path):
    make_shapes_dataset(tmp_path, img_size=16, n_train=3, n_val=2)
    marker = tmp_path / 'train' / 'circle' / '00000.png'
    before = marker.stat().st_mtime_ns
    info = make_shapes_dataset(tmp_path, img_size=16, n_train=3, n_val=2)
    assert info['generated'] is False
    assert marker.stat().st_mtime_ns == before


def _make_after(barrier, root, results):
    barrier.wait()
    try:
        results.put(make_shapes_dataset(root, img_size=16, n_train=40, n_val=5)['generated'])
    except BaseException as e:  # reported to the test, which fails naming it
        results.put(repr(e))


def test_runs_started_together_share_one_dataset(tmp_path):
    # several seeds launched at once on one folder: one run writes the set, the others wait
    # for it and use it (before the lock, a second run's move failed: "Directory not empty")
    ctx = multiprocessing.get_context('fork')
    barrier, results = ctx.Barrier(3), ctx.Queue()
    procs = [ctx.Process(target=_make_after, args=(barrier, tmp_path / 'd', results)) for _ in range(3)]
    for p in procs:
        p.start()
    outcomes = sorted(str(results.get(timeout=60)) for _ in procs)
    for p in procs:
        p.join(timeout=60)
    assert outcomes == ['False', 'False', 'True']
    alone = make_shapes_dataset(tmp_path / 'alone', img_size=16, n_train=40, n_val=5)
    assert alone['generated'] is True
    assert _tree_digest(tmp_path / 'd' / 'train') == _tree_digest(tmp_path / 'alone' / 'train')
    assert not [f for f in os.listdir(tmp_path / 'd') if f.startswith('.partial')]


def test_a_folder_where_the_lock_cannot_be_made_is_still_read(tmp_path):
    # a complete set in a folder nobody may write (a shared, read-only copy) is used as it is;
    # the lock file's place taken by a folder makes open() fail for root too
    make_shapes_dataset(tmp_path / 'd', img_size=16, n_train=3, n_val=2)
    os.remove(tmp_path / 'd' / '.lock')
    (tmp_path / 'd' / '.lock').mkdir()
    assert make_shapes_dataset(tmp_path / 'd', img_size=16, n_train=3, n_val=2)['generated'] is False


def test_refuses_other_settings_and_foreign_folders(tmp_path):
    make_shapes_dataset(tmp_path / 'd', img_size=16, n_train=3, n_val=2)
    with pytest.raises(UserError, match='other settings.*n_train=3'):
        make_shapes_dataset(tmp_path / 'd', img_size=16, n_train=5, n_val=2)
    # someone's data, no manifest: never overwritten
    (tmp_path / 'mine' / 'train' / 'cats').mkdir(parents=True)
    with pytest.raises(UserError, match='no complete demo dataset'):
        make_shapes_dataset(tmp_path / 'mine', img_size=16, n_train=3, n_val=2)
    assert os.listdir(tmp_path / 'mine' / 'train') == ['cats']
    # an incomplete set (file deleted) is not silently accepted
    os.remove(tmp_path / 'd' / 'val' / 'square' / '00001.png')
    with pytest.raises(UserError, match='delete'):
        make_shapes_dataset(tmp_path / 'd', img_size=16, n_train=3, n_val=2)


@pytest.mark.parametrize('kwargs, pattern', [
    (dict(domains=('circle', 'hexagon')), 'demo domains'),
    (dict(domains=('circle', 'circle')), 'demo domains'),
    (dict(img_size=4), 'at least 8 pixels'),
    (dict(n_val=0), 'at least one image'),
])
def test_bad_arguments_are_user_errors(tmp_path, kwargs, pattern):
    with pytest.raises(UserError, match=pattern):
        make_shapes_dataset(tmp_path, **{'n_train': 2, 'n_val': 1, **kwargs})


def test_random_params_respect_the_spec():
    rng = np.random.default_rng(0)
    for _ in range(300):
        fg, bg, (cx, cy), size = random_params(rng, 32)
        assert SIZE_RANGE[0] * 32 <= size <= SIZE_RANGE[1] * 32
        assert np.linalg.norm(np.subtract(fg, bg)) >= 130
        for c in (cx, cy):
            assert size / 2 <= c <= 32 - size / 2  # fully inside
            assert abs(c - 16) <= POSITION_JITTER * (32 - size) / 2  # near the middle


def test_render_shape_geometry():
    img = render_shape('square', (255, 0, 0), (0, 0, 255), center=(16, 16), size=16, img_size=32)
    assert img.shape == (32, 32, 3) and img.dtype == np.uint8
    assert (img[8:24, 8:24] == [255, 0, 0]).all()       # exactly the 16x16 box
    assert (img[:8] == [0, 0, 255]).all() and (img[24:] == [0, 0, 255]).all()
    tri = render_shape('triangle', (255, 255, 255), (0, 0, 0), center=(16, 16), size=16, img_size=32)
    cover = tri[..., 0] / 255.0
    assert abs(cover.sum() - 16 * 16 / 2) < 2            # area of base 16, height 16
    assert cover[8:16].sum() < cover[16:24].sum() / 2    # apex up
    circ = render_shape('circle', (255, 255, 255), (0, 0, 0), center=(16, 16), size=16, img_size=32)
    assert abs(circ[..., 0].sum() / 255.0 - np.pi * 64) < 2
    with pytest.raises(UserError, match='unknown shape'):
        render_shape('star', (0, 0, 0), (255, 255, 255), (16, 16), 10, 32)
