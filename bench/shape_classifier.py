"""The shape and colours of a demo image (``core/datasets/demo_shapes.py``), with no learned model.

:func:`classify_shape` segments the foreground and compares its bounding-box fill ratio and
top/bottom balance with the ideal circle, square and triangle; :func:`shape_colours` gives
the foreground and background colours. ``bench/demo_quality.py`` scores a trained demo
model with them; they are benchmark tools, not part of the model.
"""
import numpy as np

from core.datasets.demo_shapes import SHAPES

__all__ = ['classify_shape', 'segment', 'shape_features', 'shape_colours']

# bounding-box fill ratio and top-half / bottom-half area ratio of the ideal shapes
_PROTOTYPES = {'circle': (np.pi / 4, 1.0), 'square': (1.0, 1.0), 'triangle': (0.5, 1.0 / 3.0)}


def _border(img):
    return np.concatenate([img[0], img[-1], img[1:-1, 0], img[1:-1, -1]], axis=0)


def _otsu(values, bins=64):
    """Threshold maximising the between-class variance of ``values`` (1-D)."""
    hist, edges = np.histogram(values, bins=bins)
    mids = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * mids)
    mean0 = m0 / np.maximum(w0, 1)
    mean1 = (m0[-1] - m0) / np.maximum(w1, 1)
    between = w0 * w1 * (mean0 - mean1) ** 2
    return edges[int(np.argmax(between)) + 1]


def _largest_component(mask):
    """The largest 4-connected component of a boolean mask (same shape)."""
    h, w = mask.shape
    labels = np.zeros((h, w), dtype=np.int32)
    best, best_size, current = 0, 0, 0
    for i0, j0 in zip(*np.nonzero(mask)):
        if labels[i0, j0]:
            continue
        current += 1
        labels[i0, j0] = current
        stack, size = [(i0, j0)], 0
        while stack:
            i, j = stack.pop()
            size += 1
            for a, b in ((i - 1, j), (i + 1, j), (i, j - 1), (i, j + 1)):
                if 0 <= a < h and 0 <= b < w and mask[a, b] and not labels[a, b]:
                    labels[a, b] = current
                    stack.append((a, b))
        if size > best_size:
            best, best_size = current, size
    return labels == best if best else np.zeros_like(mask)


def _as_image(img):
    img = np.asarray(img)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f'expected an (H, W, 3) image, got shape {img.shape}')
    return img.astype(np.float64)


def segment(img, min_contrast=30.0):
    """Foreground mask and background colour of an (H, W, 3) RGB image.

    The background is the median colour of the border pixels; foreground pixels are
    those farther from it than a threshold (Otsu on the colour distances, at least
    ``min_contrast``); only the largest connected region is kept. Returns
    ``(mask, bg)``; ``mask`` is all False when nothing stands out.
    """
    img = _as_image(img)
    bg = np.median(_border(img), axis=0)
    dist = np.linalg.norm(img - bg, axis=2)
    if dist.max() < min_contrast:
        return np.zeros(dist.shape, dtype=bool), bg
    threshold = max(_otsu(dist.ravel()), min_contrast)
    return _largest_component(dist > threshold), bg


def shape_features(mask):
    """(bounding-box fill ratio, top-half / bottom-half area) of a foreground mask, or None."""
    rows, cols = np.nonzero(mask)
    if rows.size < 4:
        return None
    top, bottom, left, right = rows.min(), rows.max(), cols.min(), cols.max()
    box = mask[top:bottom + 1, left:right + 1].astype(np.float64)
    fill = box.mean()
    hgt = box.shape[0]
    upper = box[:hgt // 2].sum() + (box[hgt // 2].sum() / 2 if hgt % 2 else 0)
    lower = box.sum() - upper
    return fill, upper / max(lower, 1e-9)


def classify_shape(img, candidates=SHAPES):
    """The shape in an (H, W, 3) uint8 image, among ``candidates``; None when no shape
    stands out from the background.

    Analytic: segment the foreground (:func:`segment`), then compare its bounding-box
    fill ratio (circle pi/4, square 1, triangle 1/2) and the ratio of its areas above and
    below the box's middle (1, 1, 1/3 for an apex-up triangle) with the ideal shapes'.
    """
    mask, _ = segment(img)
    feats = shape_features(mask)
    if feats is None:
        return None
    fill, balance = feats
    balance = min(balance, 3.0)

    def distance(name):
        pf, pb = _PROTOTYPES[name]
        return ((fill - pf) / 0.1) ** 2 + ((balance - pb) / 0.3) ** 2

    return min(candidates, key=distance)


def shape_colours(img):
    """(foreground, background) colours of an image as float RGB arrays; foreground is
    None when no shape stands out. Foreground = median colour of the segmented region
    after dropping its edge pixels (anti-aliased mixtures) when enough remain."""
    mask, bg = segment(img)
    if not mask.any():
        return None, bg
    inner = mask.copy()
    inner[1:, :] &= mask[:-1, :]
    inner[:-1, :] &= mask[1:, :]
    inner[:, 1:] &= mask[:, :-1]
    inner[:, :-1] &= mask[:, 1:]
    region = inner if inner.sum() >= 4 else mask
    return np.median(_as_image(img)[region], axis=0), bg
