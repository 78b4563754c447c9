"""The inputs of the Python API as the networks take them: images of any kind as one batch of
tensors in [-1, 1], domains by name or index, and output tensors as PIL images.

Images are PIL images, numpy arrays (H, W[, 3 or 4]) of uint8, file paths, or float tensors
(3, H, W) or (N, 3, H, W) in [-1, 1]; a list of them is a batch. Files, PIL images and arrays
go through the image reader of every mode (``core.io.images``: upright by EXIF, transparency on
white, resized to the model's size with PIL), tensors of another size are resized with
torchvision (antialiased bilinear).
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, TypeAlias

import numpy as np
import torch
import torchvision.transforms.functional as TF
from PIL import Image

from core.datasets.pipeline import plain_transform
from core.device import DeviceLike
from core.errors import UserError
from core.io.images import as_shown_rgb, load_rgb, to_uint8

__all__ = ['ImageInput', 'Images', 'Domain', 'as_batch', 'domain_index', 'to_pil']

ImageInput: TypeAlias = 'Image.Image | np.ndarray | str | os.PathLike[str] | torch.Tensor'
Images: TypeAlias = 'ImageInput | Sequence[ImageInput]'
Domain: TypeAlias = 'int | str'


def domain_index(value: Domain | None, names: Sequence[str], what: str, hint: str = '') -> int:
    """The index of domain ``value`` (a name of ``names``, or an index) of a model; ``what``
    names the argument in the one-line UserError, ``hint`` is added to it."""
    if value is None:
        raise UserError(f'{what} is required: a domain name ({", ".join(names)}) or index')
    if isinstance(value, str) and value in names:
        return list(names).index(value)
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool) and 0 <= int(value) < len(names):
        return int(value)
    if isinstance(value, str) and value.isdigit() and int(value) < len(names):
        return int(value)
    raise UserError(f"{what} '{value}' is not a domain of this model; use one of {', '.join(names)} "
                    f"(or an index){hint}")


def _image_tensor(image: Any, img_size: int, max_pixels: int | None) -> torch.Tensor:
    """One image (any accepted kind but a list) as a (N, 3, img_size, img_size) float tensor in [-1, 1] on the CPU
    (or on the tensor's device)."""
    if isinstance(image, torch.Tensor):
        if not image.is_floating_point():
            raise UserError(f'an image tensor must be float in [-1, 1], not {image.dtype}; '
                            f'give uint8 pixels as a numpy (H, W, 3) array')
        x = image.detach()
        if x.dim() == 3:
            x = x.unsqueeze(0)
        if x.dim() != 4 or x.size(1) != 3:
            raise UserError(f'an image tensor must be (3, H, W) or (N, 3, H, W) in [-1, 1], not {tuple(image.shape)}')
        if tuple(x.shape[2:]) != (img_size, img_size):
            x = TF.resize(x, [img_size, img_size], antialias=True)
        return x.float()
    if isinstance(image, (str, os.PathLike)):
        pil = load_rgb(os.fspath(image), max_pixels)
    elif isinstance(image, Image.Image):
        pil = as_shown_rgb(image)
    elif isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (3, 4)):
            raise UserError(f'a numpy image must be uint8 (H, W), (H, W, 3) or (H, W, 4), not {image.dtype} '
                            f'{image.shape}; give floats in [-1, 1] as a torch tensor (3, H, W)')
        pil = as_shown_rgb(Image.fromarray(np.ascontiguousarray(image)))
    else:
        raise UserError(f'cannot read an image from a {type(image).__name__}; give a PIL image, a numpy uint8 '
                        f'array, a file path or a tensor in [-1, 1]')
    return plain_transform(img_size)(pil).unsqueeze(0)


def as_batch(images: Images, img_size: int, device: DeviceLike, max_pixels: int | None = None) -> torch.Tensor:
    """``images`` (one image of any accepted kind, or a list of them) as one (N, 3, img_size,
    img_size) float batch in [-1, 1] on ``device``; a file is read by ``core.io.images.load_rgb``
    (ImageReadError, or ImageTooLargeError above ``max_pixels`` pixels, both UserErrors)."""
    if isinstance(images, (list, tuple)):
        if not images:
            raise UserError('no images given (an empty list)')
        parts = [_image_tensor(image, img_size, max_pixels) for image in images]
        return torch.cat([p.to(device) for p in parts])
    return _image_tensor(images, img_size, max_pixels).to(device)


def to_pil(x: torch.Tensor) -> list[Image.Image]:
    """Images (N, 3, H, W) in [-1, 1] as PIL images, rounded as the saved files are (``to_uint8``)."""
    return [Image.fromarray(a) for a in to_uint8(x)]
