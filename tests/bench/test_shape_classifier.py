"""bench/shape_classifier.py: the analytic shape classifier the demo is scored with."""
import os

import numpy as np
import pytest
from PIL import Image

from bench.shape_classifier import classify_shape, segment, shape_colours
from core.datasets.demo_shapes import SHAPES, make_shapes_dataset, render_shape

pytestmark = pytest.mark.usefixtures('one_thread')


def _pngs(folder):
    return sorted(f for f in os.listdir(folder) if f.endswith('.png'))



@pytest.mark.parametrize('img_size', [32, 64])
def test_classifier_recovers_generated_shapes(tmp_path, img_size):
    make_shapes_dataset(tmp_path, img_size=img_size, n_train=40, n_val=1, seed=5)
    hits = total = 0
    for d in SHAPES:
        folder = tmp_path / 'train' / d
        for f in _pngs(folder):
            hits += classify_shape(np.asarray(Image.open(folder / f))) == d
            total += 1
    assert hits / total > 0.95


def test_classifier_restricted_candidates_and_blank_image():
    img = render_shape('circle', (250, 250, 0), (0, 0, 90), (16, 16), 20, 32)
    assert classify_shape(img) == 'circle'
    assert classify_shape(img, candidates=('square', 'triangle')) == 'square'  # nearest of the two
    assert classify_shape(np.full((32, 32, 3), 77, np.uint8)) is None


def test_segment_and_colours_survive_noise():
    rng = np.random.default_rng(0)
    img = render_shape('triangle', (240, 30, 30), (20, 90, 200), (15, 17), 18, 32).astype(float)
    noisy = np.clip(img + rng.normal(0, 12, img.shape), 0, 255).astype(np.uint8)
    mask, bg = segment(noisy)
    assert abs(mask.sum() - 18 * 18 / 2) < 25
    assert np.abs(bg - [20, 90, 200]).max() < 10
    fg, bg = shape_colours(noisy)
    assert np.abs(fg - [240, 30, 30]).max() < 15
    assert classify_shape(noisy) == 'triangle'
