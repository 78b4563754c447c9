"""Frechet Inception Distance as the official StarGAN v2 evaluation computes it.

Features: torchvision's Inception v3 (ImageNet weights) run block by block up to
the 2048-d global average pool (torchvision's ``transform_input`` is never
applied). Images: PIL, RGB, resized to ``img_size`` then to 299 (both with
torchvision's ``Resize``), ImageNet mean/std. Statistics: mean and ``np.cov`` in
float64 of the float32 features. Distance:
``|mu1 - mu2|^2 + tr(C1 + C2 - 2 sqrtm(C1 C2))``, real part.

    python -m metrics.fid --paths REAL FAKE [--img_size 256] [--batch_size 50]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import TypeAlias

import numpy as np
import numpy.typing as npt
import torch
import torch.nn as nn
from PIL import Image
from scipy import linalg
from torchvision import models

from core.datasets.pipeline import plain_transform
from core.device import DeviceLike, as_device, exact_fp32
from core.errors import UserError
from core.io.files import StrPath, atomic_write
from core.io.images import load_rgb
from metrics import MetricsError, build_cached, file_fingerprint, load_into, read_state_dict, resolve_weights

DEFAULT_CACHE_DIR = os.path.join(os.path.expanduser('~'), '.cache', 'stargan-v2')

Features: TypeAlias = npt.NDArray[np.float32]  # (N, 2048) Inception activations
Stats: TypeAlias = tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]  # (mu, cov)
# an image source of calculate_fid_given_paths: a folder, uint8 images (N, H, W, 3) or precomputed (mu, cov)
Source: TypeAlias = StrPath | npt.NDArray[np.uint8] | Stats


# ---------------------------------------------------------------- network
class InceptionPool3(nn.Module):
    """Inception v3 up to the pooled 2048-d features, in the four official blocks."""

    def __init__(self, net: models.Inception3) -> None:
        super().__init__()
        self.block1 = nn.Sequential(net.Conv2d_1a_3x3, net.Conv2d_2a_3x3, net.Conv2d_2b_3x3,
                                    nn.MaxPool2d(kernel_size=3, stride=2))
        self.block2 = nn.Sequential(net.Conv2d_3b_1x1, net.Conv2d_4a_3x3,
                                    nn.MaxPool2d(kernel_size=3, stride=2))
        self.block3 = nn.Sequential(net.Mixed_5b, net.Mixed_5c, net.Mixed_5d, net.Mixed_6a,
                                    net.Mixed_6b, net.Mixed_6c, net.Mixed_6d, net.Mixed_6e)
        self.block4 = nn.Sequential(net.Mixed_7a, net.Mixed_7b, net.Mixed_7c,
                                    nn.AdaptiveAvgPool2d(output_size=(1, 1)))
        self.fingerprint: str | None = None   # identity of the weights, set by build_inception

    @exact_fp32()  # features in float32, not TF32 (Ampere and later)
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block4(self.block3(self.block2(self.block1(x))))
        return x.flatten(1)


INCEPTION_WEIGHTS = models.Inception_V3_Weights.IMAGENET1K_V1


def _inception_v3(state: dict[str, torch.Tensor], file: str) -> models.Inception3:
    net = models.inception_v3(weights=None, aux_logits=True, init_weights=False)
    load_into(net, state, file, 'inception_v3', '--inception_path')
    return net


class InceptionV3(InceptionPool3):
    """The official name: pool3 features with ImageNet weights from ``inception_path`` or
    torchvision's cache (no download flag needed; a missing file is a one-line error)."""

    def __init__(self, inception_path: StrPath | None = None) -> None:
        file = resolve_weights(INCEPTION_WEIGHTS, inception_path, '--inception_path')
        super().__init__(_inception_v3(read_state_dict(file, INCEPTION_WEIGHTS), file))
        self.fingerprint = file_fingerprint(file)


def build_inception(path: StrPath | None = None, device: DeviceLike = None, cache: bool = True) -> InceptionPool3:
    """Inception features in eval mode, with ImageNet weights from ``path`` or torchvision's cache.

    Built once per (weights file, device) and reused (``cache=False`` forces a fresh build).
    """
    device = as_device(device)  # None: the project's one device decision

    def make(state: dict[str, torch.Tensor], file: str) -> InceptionPool3:
        inception = InceptionPool3(_inception_v3(state, file)).eval().requires_grad_(False).to(device)
        inception.fingerprint = file_fingerprint(file)
        return inception
    return build_cached('inception', INCEPTION_WEIGHTS, path, '--inception_path',
                        device, make, cache)


# ---------------------------------------------------------------- images -> features
def image_transform(img_size: int) -> Callable[[Image.Image], torch.Tensor]:
    """The official FID pre-processing of a PIL image (resize to img_size, then 299, ImageNet mean/std)."""
    return plain_transform(img_size, imagenet_normalize=True)


def _open_rgb(path: str) -> Image.Image:
    """An image file as every mode reads it (``core.io.images.load_rgb``: upright by its EXIF
    orientation, transparency on white)."""
    try:
        return load_rgb(path)
    except UserError as e:
        raise MetricsError(str(e)) from None


def _uint8_to_pil(image: npt.ArrayLike) -> Image.Image:
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise MetricsError(f'expected uint8 images of shape (H, W, 3), got {image.dtype} '
                           f'{tuple(image.shape)}; quantise with core.io.images.to_uint8')
    return Image.fromarray(image, 'RGB')


@torch.no_grad()
def _activations(items, to_pil, img_size, batch_size, inception):
    if batch_size < 1:
        raise MetricsError(f'batch_size must be >= 1, got {batch_size}')
    device = next(inception.parameters()).device
    tf = image_transform(img_size)
    out = []
    for i in range(0, len(items), batch_size):
        x = torch.stack([tf(to_pil(item)) for item in items[i:i + batch_size]])
        out.append(inception(x.to(device)).cpu())
    if not out:
        return np.zeros((0, 2048), np.float32)
    return torch.cat(out).numpy()


def activations_from_paths(paths: Iterable[str], img_size: int, batch_size: int, inception: nn.Module) -> Features:
    """(N, 2048) float32 features of the image files ``paths``."""
    return _activations(list(paths), _open_rgb, img_size, batch_size, inception)


def activations_from_uint8(images: Iterable[npt.NDArray[np.uint8]], img_size: int, batch_size: int,
                           inception: nn.Module) -> Features:
    """(N, 2048) float32 features of in-memory uint8 images (N, H, W, 3).

    Same PIL pipeline as for files: a PNG written from these arrays gives the same numbers.
    """
    return _activations(list(images), _uint8_to_pil, img_size, batch_size, inception)


# ---------------------------------------------------------------- statistics
def statistics(actvs: npt.ArrayLike) -> Stats:
    """(mu, cov) in float64 of (N, D) activations."""
    actvs = np.asarray(actvs)
    if actvs.ndim != 2 or actvs.shape[0] < 2:
        raise MetricsError(f'FID needs at least 2 images, got {actvs.shape[0] if actvs.ndim else 0}; '
                           f'add images')
    return actvs.astype(np.float64).mean(axis=0), np.cov(actvs, rowvar=False)


def list_image_files(folder: StrPath) -> list[str]:
    from core.datasets.folders import list_images  # the project's one definition of "an image"
    if not os.path.isdir(folder):
        raise MetricsError(f"image folder '{folder}' does not exist; check the path")
    files = list_images(folder)
    if len(files) < 2:
        raise MetricsError(f"'{folder}' holds {len(files)} images; FID needs at least 2")
    return files


def stats_cache_key(folder: StrPath, files: Iterable[str], img_size: int, fingerprint: str | None) -> str:
    """Hash of what the statistics depend on: files (names, sizes, mtimes), img_size, weights."""
    entries = []
    for f in files:
        st = os.stat(f)
        entries.append([os.path.relpath(f, folder), st.st_size, st.st_mtime_ns])
    blob = json.dumps({'files': entries, 'img_size': img_size, 'weights': fingerprint,
                       'version': 1})
    return hashlib.sha1(blob.encode()).hexdigest()


def stats_from_folder(folder: StrPath, img_size: int, batch_size: int, inception: InceptionPool3,
                      cache_dir: StrPath | None = None) -> Stats:
    """(mu, cov) of the images under ``folder``, cached on disk in ``cache_dir`` when given.

    The cache entry is keyed by the sorted file list with sizes and mtimes, ``img_size``
    and the Inception weights, so any change to the folder recomputes it.
    """
    files = list_image_files(folder)
    cache_file = None
    if cache_dir:
        key = stats_cache_key(folder, files, img_size, inception.fingerprint)
        cache_file = os.path.join(cache_dir, f'fid_stats_{key}.npz')
        if os.path.isfile(cache_file):
            try:
                with np.load(cache_file) as f:
                    return f['mu'], f['cov']
            except (OSError, ValueError, KeyError):
                pass   # corrupt entry: recompute and overwrite
    mu, cov = statistics(activations_from_paths(files, img_size, batch_size, inception))
    if cache_file:
        atomic_write(cache_file, lambda f: np.savez(f, mu=mu, cov=cov, folder=os.path.abspath(folder), n=len(files)))
    return mu, cov


# ---------------------------------------------------------------- distance
def frechet_distance(mu: npt.ArrayLike, cov: npt.ArrayLike, mu2: npt.ArrayLike, cov2: npt.ArrayLike) -> float:
    """Frechet distance between N(mu, cov) and N(mu2, cov2) (the official formula and argument names)."""
    mu1, mu2 = np.atleast_1d(mu), np.atleast_1d(mu2)
    cov1, cov2 = np.atleast_2d(cov), np.atleast_2d(cov2)
    if mu1.shape != mu2.shape or cov1.shape != cov2.shape:
        raise MetricsError(f'statistics do not match: mu {mu1.shape} vs {mu2.shape}, '
                           f'cov {cov1.shape} vs {cov2.shape}; use the same feature extractor')
    with warnings.catch_warnings():   # singular products are the rule with few images
        warnings.simplefilter('ignore', linalg.LinAlgWarning)
        covmean = linalg.sqrtm(cov1 @ cov2)
    dist = np.sum((mu1 - mu2) ** 2) + np.trace(cov1 + cov2 - 2 * covmean)
    return float(np.real(dist))


def _stats_of(source: Source, img_size: int, batch_size: int, inception: InceptionPool3,
              cache_dir: StrPath | None) -> Stats:
    if isinstance(source, (str, os.PathLike)):
        return stats_from_folder(source, img_size, batch_size, inception, cache_dir)
    if isinstance(source, tuple) and len(source) == 2:   # precomputed (mu, cov)
        return source
    return statistics(activations_from_uint8(source, img_size, batch_size, inception))


def calculate_fid_given_paths(paths: Sequence[Source], img_size: int = 256, batch_size: int = 50,
                              inception_path: StrPath | None = None, device: DeviceLike = None,
                              cache_dir: StrPath | None = None) -> float:
    """FID between two image sources.

    Each of ``paths`` is a folder, a uint8 array (N, H, W, 3) or a precomputed (mu, cov);
    folder statistics are cached in ``cache_dir`` when given.
    """
    if len(paths) != 2:
        raise MetricsError(f'FID compares 2 image sources, got {len(paths)}; pass --paths REAL FAKE')
    inception = build_inception(inception_path, device)
    stats = [_stats_of(p, img_size, batch_size, inception, cache_dir) for p in paths]
    return frechet_distance(*stats[0], *stats[1])


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description='FID between two image folders (official StarGAN v2 way).')
    p.add_argument('--paths', type=str, nargs=2, required=True, metavar=('REAL', 'FAKE'))
    p.add_argument('--img_size', type=int, default=256)
    p.add_argument('--batch_size', type=int, default=50)
    p.add_argument('--inception_path', type=str, default=None,
                   help='torchvision inception_v3 ImageNet state_dict (default: torchvision cache)')
    p.add_argument('--cache_dir', type=str, default=DEFAULT_CACHE_DIR,
                   help="statistics cache for the first (real) folder; '' disables it")
    p.add_argument('--device', type=str, default=None)
    args = p.parse_args(argv)
    try:
        inception = build_inception(args.inception_path, args.device)
        real = stats_from_folder(args.paths[0], args.img_size, args.batch_size, inception,
                                 args.cache_dir or None)
        fake = stats_from_folder(args.paths[1], args.img_size, args.batch_size, inception)
    except UserError as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    print(frechet_distance(*real, *fake))
    return 0


if __name__ == '__main__':
    sys.exit(main())
