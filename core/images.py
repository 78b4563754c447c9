"""Image conversions between tensors in [-1, 1] and pixels, and image files (the bottom of the graph).

One rounding for the whole project: :func:`to_uint8` rounds exactly as torchvision's
``save_image`` stores an image, so grids, videos, the web demo and the metrics see the same
pixels. The two official helpers that convert differently (``tensor2numpy255`` truncates,
``tensor2ndarray255`` keeps floats) have their formulas here too, under names that say so.
"""
from __future__ import annotations

import io
import os

import numpy as np
import numpy.typing as npt
import torch
import torchvision.utils as vutils
from PIL import Image

from core.fileio import StrPath, atomic_write


def denormalize(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> [0, 1] (a new tensor, clamped)."""
    return ((x + 1) / 2).clamp_(0, 1)


def to_uint8(x: torch.Tensor) -> npt.NDArray[np.uint8]:
    """(N, 3, H, W) in [-1, 1] -> (N, H, W, 3) uint8 numpy array, or one (3, H, W) image ->
    (H, W, 3), rounded exactly as torchvision's save_image stores it (the one image-to-uint8
    of the project)."""
    if x.dim() == 3:
        if x.size(0) != 3:
            raise ValueError(f'expected a (3, H, W) image, got shape {tuple(x.shape)}')
        return to_uint8(x.unsqueeze(0))[0]
    if x.dim() != 4:
        raise ValueError(f'expected (N, 3, H, W) images or one (3, H, W) image, got shape {tuple(x.shape)}')
    x = ((x.detach().float() + 1) / 2).clamp(0, 1).mul(255).add(0.5).clamp(0, 255)
    return np.ascontiguousarray(x.permute(0, 2, 3, 1).to('cpu', torch.uint8).numpy())


def to_float255(images: torch.Tensor) -> npt.NDArray[np.floating]:
    """(N, 3, H, W) in [-1, 1] -> (N, H, W, 3) float array in [0, 255], not rounded."""
    images = torch.clamp(images * 0.5 + 0.5, 0, 1)
    return images.cpu().numpy().transpose(0, 2, 3, 1) * 255


def to_uint8_truncated(image: torch.Tensor) -> npt.NDArray[np.uint8]:
    """(3, H, W) in [-1, 1] -> (H, W, 3) uint8, truncated towards zero and not clamped (the
    official face aligner's conversion; :func:`to_uint8` is the project's)."""
    return ((image.permute(1, 2, 0).cpu().numpy() * 0.5 + 0.5) * 255).astype('uint8')


def from_uint8(image: npt.ArrayLike) -> torch.Tensor:
    """(H, W, 3) array in [0, 255] -> (3, H, W) float tensor in [-1, 1]."""
    return torch.as_tensor(np.asarray(image), dtype=torch.float32).permute(2, 0, 1) / 255 * 2 - 1


def image_row(x: torch.Tensor) -> npt.NDArray[np.uint8]:
    """Images (n, 3, H, W) in [-1, 1] side by side as one (H, n * W, 3) uint8 array, rounded
    as ``save_image`` rounds them."""
    return np.concatenate(list(to_uint8(x)), axis=1)


def save_image(x: torch.Tensor, ncol: int, filename: StrPath) -> None:
    """A grid of images (N, 3, H, W) in [-1, 1], ``ncol`` per row, no padding, to ``filename``
    (its format from the extension), written atomically (``core.fileio.atomic_write``: a full
    disk is one line naming the file, and leaves no partial image)."""
    ext = os.path.splitext(os.fspath(filename))[1].lower()
    image_format = Image.registered_extensions().get(ext)
    if image_format is None:
        raise ValueError(f'unknown image file extension {ext!r}: {filename}')
    encoded = io.BytesIO()
    vutils.save_image(denormalize(x.detach().cpu().clone()), encoded, nrow=ncol, padding=0, format=image_format)
    data = encoded.getvalue()
    atomic_write(os.fspath(filename), lambda f: f.write(data), size=len(data))
