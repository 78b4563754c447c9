"""A small multi-domain image set made on the spot, so that the demo needs no download.

Domains are shapes (circle, square, triangle); the style is the colours: each image has
a random foreground colour on a random background colour (clearly distinct), and the
shape a random size (50-80 % of the image side, the side of its bounding box) and
position (near the centre: within 15 % of the room the size leaves on each side).
Translating to another domain must change the shape and keep the colours;
reference-guided translation must take the reference's colours.

::

    make_shapes_dataset('expr/demo/data', img_size=32)
    # expr/demo/data/train/{circle,square,triangle}/00000.png ...
    # expr/demo/data/val/{circle,square,triangle}/00000.png ...

Each image comes from its own random stream, derived from (seed, split, domain, index):
the set is the same on every machine for a seed, and a larger set starts with the
images of a smaller one. ``manifest.json`` is written last; when it is there with the
same settings, nothing is redone. Runs started together on one folder (several seeds) take
turns: the first writes the set, the others find it complete.

``bench/shape_classifier.py`` recovers the shape and colours from an image with no learned
model (``bench/demo_quality.py`` scores a trained demo model with it).
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, TypedDict

import numpy as np
import numpy.typing as npt
from PIL import Image

from core.errors import UserError
from core.io.files import StrPath
from core.io.run_folder import lock_file, unlock_file

__all__ = ['SHAPES', 'make_shapes_dataset', 'render_shape', 'random_params', 'MANIFEST', 'DemoDataset']

SHAPES = ('circle', 'square', 'triangle')
SPLITS = ('train', 'val')
MANIFEST = 'manifest.json'
FORMAT_VERSION = 2            # 1: sizes 35-70 %, anywhere inside
SIZE_RANGE = (0.50, 0.80)     # shape size as a fraction of the image side
# Centre offset as a fraction of the room the size leaves (1 = anywhere inside): the shapes
# stay near the centre, an easier task for the demo's minutes (the demo's wide generator was
# trained only on this set; with full freedom it is untested).
POSITION_JITTER = 0.15
MIN_COLOUR_DISTANCE = 130.0   # RGB distance between foreground and background (max 441)
SUPERSAMPLE = 4               # anti-aliasing: rendered at 4x, then box-averaged


# ---------------------------------------------------------------------------- rendering

def _inside(domain, x, y, cx, cy, size):
    """Boolean mask of the points (x, y) inside the shape (bounding box size x size)."""
    h = size / 2.0
    if domain == 'circle':
        return (x - cx) ** 2 + (y - cy) ** 2 <= h * h
    if domain == 'square':
        return (np.abs(x - cx) <= h) & (np.abs(y - cy) <= h)
    if domain == 'triangle':  # apex up, base at the bottom: height = base = size
        t = (y - (cy - h)) / size  # 0 at the apex, 1 at the base
        return (t >= 0) & (t <= 1) & (np.abs(x - cx) <= t * h)
    raise UserError(f"unknown shape '{domain}'; the demo shapes are {', '.join(SHAPES)}")


def render_shape(domain: str, fg: npt.ArrayLike, bg: npt.ArrayLike, center: Sequence[float], size: float,
                 img_size: int) -> npt.NDArray[np.uint8]:
    """(img_size, img_size, 3) uint8 image: the shape ``domain`` in colour ``fg`` on ``bg``.

    ``center`` (x, y) and ``size`` (side of the bounding box) are in pixels, floats
    allowed; pixel (i, j) covers [j, j+1) x [i, i+1). Edges are anti-aliased.
    """
    k = SUPERSAMPLE
    n = img_size * k
    coords = (np.arange(n) + 0.5) / k
    x, y = np.meshgrid(coords, coords)
    cover = _inside(domain, x, y, float(center[0]), float(center[1]), float(size)).astype(np.float64)
    cover = cover.reshape(img_size, k, img_size, k).mean(axis=(1, 3))[..., None]
    fg = np.asarray(fg, dtype=np.float64).reshape(1, 1, 3)
    bg = np.asarray(bg, dtype=np.float64).reshape(1, 1, 3)
    return np.clip(np.rint(cover * fg + (1 - cover) * bg), 0, 255).astype(np.uint8)


def random_params(rng: np.random.Generator, img_size: int
                  ) -> tuple[tuple[int, ...], tuple[int, ...], tuple[float, ...], float]:
    """Random (fg, bg, center, size) of one image, from the numpy Generator ``rng``."""
    while True:
        fg = rng.integers(0, 256, 3)
        bg = rng.integers(0, 256, 3)
        if np.linalg.norm(fg.astype(float) - bg) >= MIN_COLOUR_DISTANCE:
            break
    size = rng.uniform(*SIZE_RANGE) * img_size
    margin = 1.0  # keeps the shape (and its anti-aliased edge) off the border
    room = (img_size - size) / 2 - margin  # the most the centre may move from the middle
    offset = POSITION_JITTER * room
    center = tuple(img_size / 2 + rng.uniform(-offset, offset) for _ in range(2))
    return tuple(int(c) for c in fg), tuple(int(c) for c in bg), center, size


def _image_seed(seed, split, domain, index):
    # a stable derivation (Python's hash() of strings changes between runs)
    key = [int(seed), SPLITS.index(split), SHAPES.index(domain), int(index)]
    return np.random.SeedSequence(key)


# ---------------------------------------------------------------------------- dataset

class DemoDataset(TypedDict):
    """What :func:`make_shapes_dataset` returns (a plain dict)."""
    train: str        # the folder of the training split
    val: str          # the folder of the validation split
    generated: bool   # False when the complete set was already there


def _settings(img_size, n_train, n_val, seed, domains):
    return {'format': FORMAT_VERSION, 'img_size': int(img_size), 'n_train': int(n_train),
            'n_val': int(n_val), 'seed': int(seed), 'domains': list(domains)}


def _read_manifest(root):
    path = os.path.join(root, MANIFEST)
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding='utf-8') as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _complete(root, settings):
    """True when ``root`` holds every image the settings call for."""
    for split in SPLITS:
        count = settings['n_' + split]
        for domain in settings['domains']:
            folder = os.path.join(root, split, domain)
            if not os.path.isdir(folder):
                return False
            names = set(os.listdir(folder))
            if any(f'{i:05d}.png' not in names for i in range(count)):
                return False
    return True


@contextlib.contextmanager
def _exclusive(root: str) -> Iterator[None]:
    """Holds a lock on ``root`` (``core.io.run_folder.lock_file``: POSIX and Windows): runs started
    together wait for the one writing."""
    try:
        f = open(os.path.join(root, '.lock'), 'a')
    except OSError:  # a read-only folder: a complete set is read, nothing written
        yield
        return
    with f:
        try:
            lock_file(f.fileno(), wait=True)
        except OSError:  # no locks here (a file system or platform without them): one run at a time
            yield
            return
        try:
            yield
        finally:
            unlock_file(f.fileno())


def make_shapes_dataset(root: StrPath, img_size: int = 32, n_train: int = 500, n_val: int = 50, seed: int = 0,
                        domains: Iterable[str] = SHAPES) -> DemoDataset:
    """Writes ``root/{train,val}/<domain>/NNNNN.png`` (``n_train`` / ``n_val`` per domain).

    Returns a dict with ``train`` and ``val`` (the two folders) and ``generated``
    (False when the complete set was already there). A folder holding a demo set made
    with other settings, or other data, is never overwritten: UserError.
    """
    domains = tuple(domains)
    unknown = [d for d in domains if d not in SHAPES]
    if unknown or not domains or len(set(domains)) != len(domains):
        raise UserError(f"demo domains must be distinct names among {', '.join(SHAPES)}; got {', '.join(domains) or 'none'}")
    if int(img_size) < 8:
        raise UserError(f'demo images must be at least 8 pixels, not {img_size}')
    if n_train < 1 or n_val < 1:
        raise UserError(f'the demo set needs at least one image per split and domain (n_train={n_train}, n_val={n_val})')
    root = os.fspath(root)
    settings = _settings(img_size, n_train, n_val, seed, domains)
    os.makedirs(root, exist_ok=True)
    with _exclusive(root):
        return _make(root, settings)


def _make(root: str, settings: dict[str, Any]) -> DemoDataset:
    """make_shapes_dataset's work, under the folder's lock."""
    domains, seed, img_size = settings['domains'], settings['seed'], settings['img_size']
    result: DemoDataset = {'train': os.path.join(root, 'train'), 'val': os.path.join(root, 'val'), 'generated': False}
    found = _read_manifest(root)
    if found is not None:
        if found == settings and _complete(root, settings):
            return result
        if found != settings:
            raise UserError(f"'{root}' holds a demo dataset made with other settings "
                            f"({', '.join(f'{k}={v}' for k, v in found.items() if settings.get(k) != v)}); "
                            f"delete it or choose another folder")
    # no (valid) manifest: the splits must not exist yet (they may be someone's data)
    for split in SPLITS:
        path = os.path.join(root, split)
        if os.path.exists(path):
            raise UserError(f"'{path}' exists but '{root}' has no complete demo dataset "
                            f"({MANIFEST} missing or incomplete); delete '{root}' or choose another folder")

    tmp = os.path.join(root, f'.partial-{uuid.uuid4().hex[:12]}')
    try:
        for split in SPLITS:
            for domain in domains:
                folder = os.path.join(tmp, split, domain)
                os.makedirs(folder)
                for i in range(settings['n_' + split]):
                    rng = np.random.default_rng(_image_seed(seed, split, domain, i))
                    fg, bg, center, size = random_params(rng, img_size)
                    img = render_shape(domain, fg, bg, center, size, img_size)
                    Image.fromarray(img).save(os.path.join(folder, f'{i:05d}.png'))
        for split in SPLITS:  # move into place; the manifest goes last
            os.replace(os.path.join(tmp, split), os.path.join(root, split))
        with open(os.path.join(tmp, MANIFEST), 'w', encoding='utf-8') as f:
            json.dump(settings, f, indent=1)
        os.replace(os.path.join(tmp, MANIFEST), os.path.join(root, MANIFEST))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    result['generated'] = True
    return result
