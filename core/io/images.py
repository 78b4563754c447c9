"""Image files: reading them (formats, integrity checks, decoding as a viewer shows them) and
writing them; conversions between tensors in [-1, 1] and pixels.

Every mode reads images through ``load_rgb``: as a viewer shows them, that is turned
upright by their EXIF orientation and with transparent pixels composited on white
(``ALPHA_BACKGROUND``), then converted to RGB. Only ``IMAGE_FORMATS`` reach a decoder.

One rounding for the whole project: :func:`to_uint8` rounds exactly as torchvision's
``save_image`` stores an image, so grids, videos, the web demo and the metrics see the same
pixels. The two official helpers that convert differently (``tensor2numpy255`` truncates,
``tensor2ndarray255`` keeps floats) have their formulas here too, under names that say so.
"""
from __future__ import annotations

import io
import os
from collections.abc import Iterable
from typing import BinaryIO, Dict, List, Optional, Tuple

import numpy as np
import numpy.typing as npt
import torch
import torchvision.utils as vutils
from PIL import Image, ImageOps, UnidentifiedImageError

from core.errors import UserError
from core.io.files import StrPath, atomic_write


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
    (its format from the extension), written atomically (``core.io.files.atomic_write``: a full
    disk is one line naming the file, and leaves no partial image)."""
    ext = os.path.splitext(os.fspath(filename))[1].lower()
    image_format = Image.registered_extensions().get(ext)
    if image_format is None:
        raise ValueError(f'unknown image file extension {ext!r}: {filename}')
    encoded = io.BytesIO()
    vutils.save_image(denormalize(x.detach().cpu().clone()), encoded, nrow=ncol, padding=0, format=image_format)
    data = encoded.getvalue()
    atomic_write(os.fspath(filename), lambda f: f.write(data), size=len(data))


# --------------------------------------------------------------------------- reading and checking

# The image formats every reader accepts (PIL's names), those of IMG_EXTENSIONS (a camera's JPEG
# with extra pictures opens through JPEG as 'MPO'). A file of any other format (EPS, which PIL
# hands to Ghostscript, PSD, TIFF, ...), whatever its name, is refused before any decoder sees it.
IMAGE_FORMATS = ('PNG', 'JPEG', 'WEBP', 'BMP')
FORMATS_TEXT = 'PNG, JPEG, WebP or BMP'  # IMAGE_FORMATS as messages name them


class ImageReadError(UserError):
    """An image file that PIL cannot decode."""


# Last bytes of a whole file of these formats (a truncated file lacks them).
_TRAILERS = {'PNG': b'IEND\xaeB`\x82', 'JPEG': b'\xff\xd9', 'MPO': b'\xff\xd9'}
MAX_NAMED = 5  # unreadable files named in the message (the count says how many in all)


def _looks_whole(f: BinaryIO, img: Image.Image) -> bool:
    """From the header and the last bytes: False when the file may be cut short."""
    size = f.seek(0, os.SEEK_END)
    f.seek(max(size - 16, 0))
    tail = f.read()
    if img.format in _TRAILERS:
        return tail.endswith(_TRAILERS[img.format])
    f.seek(0)
    head = f.read(12)
    if img.format == 'WEBP':  # RIFF: bytes 4-8 hold the size of what follows
        return int.from_bytes(head[4:8], 'little') + 8 <= size
    if img.format == 'BMP':  # bytes 2-6 hold the file size
        return 0 < int.from_bytes(head[2:6], 'little') <= size
    return False


def unreadable_reason(path: StrPath) -> Optional[str]:
    """None when the image file at ``path`` can be read, else why not (a short text).

    Fast: PIL reads the header only (it opens lazily) and the file's last bytes show
    whether it was cut short; only a file whose end looks wrong (a truncated file, or
    trailing bytes after a JPEG's end) is decoded in full, as training would."""
    try:
        with open(path, 'rb') as f, open_image(f) as img:
            if _looks_whole(f, img):
                return None
    except _DECODE_ERRORS as e:
        return _reason(e)
    try:
        _decode_rgb(path)
    except _DECODE_ERRORS as e:
        return _reason(e)
    return None


class CheckedImages(Dict[str, Tuple[int, int]]):
    """The files that :func:`check_images` found readable: path -> (size, modification time in
    ns). A caller that checks one dataset more than once (training's source and reference
    loaders) hands the same one to each check, so that each unchanged file is read once."""


def check_images(root: StrPath, paths: Iterable[str], checked: Optional[CheckedImages] = None) -> None:
    """UserError naming the unreadable files among ``paths`` (all of them are checked, the
    first few are named, with the count), before any training starts. ``checked``: files in it
    with the same size and modification time are skipped, and those found readable are added."""
    bad: List[Tuple[str, str]] = []
    for path in paths:
        try:
            st = os.stat(path)
        except OSError as e:
            bad.append((path, e.strerror or type(e).__name__))
            continue
        stamp = (st.st_size, st.st_mtime_ns)
        if checked is not None and checked.get(path) == stamp:
            continue
        reason = unreadable_reason(path)
        if reason is None:
            if checked is not None:
                checked[path] = stamp
        else:
            bad.append((path, reason))
    if bad:
        named = ', '.join(f"{os.path.relpath(p, root)} ({reason[:80]})" for p, reason in bad[:MAX_NAMED])
        more = f' and {len(bad) - MAX_NAMED} more' if len(bad) > MAX_NAMED else ''
        raise UserError(f"{len(bad)} unreadable image file{'s' if len(bad) > 1 else ''} in '{root}': "
                        f"{named}{more}; replace or delete {'them' if len(bad) > 1 else 'it'}")


_DECODE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


def _reason(error: BaseException) -> str:
    return ' '.join(str(error).split()) or type(error).__name__


ALPHA_BACKGROUND = (255, 255, 255)  # transparent pixels are shown on white, as on a page
_ORIENTATION = 0x0112  # EXIF tag: 1 upright, 2-8 mirrored and/or rotated
_ALPHA_MODES = frozenset({'RGBA', 'LA', 'PA', 'RGBa', 'La'})


class ImageTooLargeError(ImageReadError):
    """An image with more pixels than a reader allows (``load_rgb(max_pixels=...)``); ``size``:
    its (width, height)."""
    size: Optional[Tuple[int, int]] = None


def _upright(img: Image.Image) -> Image.Image:
    """``img`` turned as its EXIF orientation says (viewers and browsers do the same)."""
    try:
        orientation = img.getexif().get(_ORIENTATION, 1)
    except Exception:  # an unreadable EXIF block: shown as stored, like a viewer does
        return img
    return ImageOps.exif_transpose(img) if orientation in range(2, 9) else img


def _flatten(img: Image.Image) -> Image.Image:
    """A transparent image composited on ``ALPHA_BACKGROUND``; others as they are."""
    if img.mode not in _ALPHA_MODES and 'transparency' not in img.info:
        return img
    rgba = img.convert('RGBA')
    background = Image.new('RGBA', rgba.size, ALPHA_BACKGROUND + (255,))
    return Image.alpha_composite(background, rgba).convert('RGB')


class ImageFormatError(UnidentifiedImageError):
    """A file that is no image of ``IMAGE_FORMATS`` (another format, or no image at all); the
    readers turn it into their one-line ImageReadError, as any decoding error."""


def open_image(file: StrPath | BinaryIO) -> Image.Image:
    """``Image.open`` (lazy: the header only) restricted to ``IMAGE_FORMATS``: the one place a file
    meets PIL, so that no decoder of another format runs on it. ImageFormatError otherwise."""
    try:
        return Image.open(file, formats=IMAGE_FORMATS)
    except UnidentifiedImageError:
        raise ImageFormatError(f'not a {FORMATS_TEXT} image, the formats read') from None


def _open(path: StrPath, max_pixels: Optional[int]) -> Image.Image:
    try:
        return open_image(path)
    except Image.DecompressionBombError:  # PIL's own limit, far above a reader's max_pixels
        if max_pixels is None:
            raise
        raise ImageTooLargeError(f"image '{path}' has more than {max_pixels:,} pixels; use a smaller image") from None


def _decode_rgb(path: StrPath, max_pixels: Optional[int] = None) -> Image.Image:
    with _open(path, max_pixels) as img:
        if max_pixels is not None and img.width * img.height > max_pixels:
            error = ImageTooLargeError(f"image '{path}' is {img.width} x {img.height} pixels, more than "
                                       f"{max_pixels:,} allowed; use a smaller image")
            error.size = img.size
            raise error
        img.load()
        return as_shown_rgb(img)


def as_shown_rgb(img: Image.Image) -> Image.Image:
    """A PIL image (of any mode) as an RGB image as a viewer shows it: upright by its EXIF
    orientation, transparency composited on ``ALPHA_BACKGROUND``, 16-bit and float images
    scaled to 8 bits; always a new image. What ``load_rgb`` makes of a decoded file, and
    what the Python API (``core.api``) makes of an image given in memory."""
    img = _flatten(_upright(img))
    if img.mode == 'RGB':
        return img.copy()
    if img.mode == 'P':
        img = img.convert('RGBA')
    elif img.mode.startswith('I;16') or img.mode == 'I':
        arr = np.asarray(img, dtype=np.float64)
        scale = 65535.0 if img.mode != 'I' or arr.max() > 255 else 255.0
        img = Image.fromarray(np.clip(arr / scale * 255.0 + 0.5, 0, 255).astype(np.uint8))
    elif img.mode == 'F':
        arr = np.asarray(img, dtype=np.float64)
        arr = arr * 255.0 if arr.max() <= 1.0 else arr
        img = Image.fromarray(np.clip(arr + 0.5, 0, 255).astype(np.uint8))
    return img.convert('RGB')


def load_rgb(path: StrPath, max_pixels: Optional[int] = None) -> Image.Image:
    """Open an image file as an RGB PIL image (grayscale, palette, RGBA, CMYK, 16-bit...) as a
    viewer shows it: upright by its EXIF orientation, transparency composited on white
    (``ALPHA_BACKGROUND``). The one reader of image files of every mode. ``max_pixels``:
    ImageTooLargeError, before decoding, for an image with more pixels."""
    try:
        return _decode_rgb(path, max_pixels)
    except ImageTooLargeError:
        raise
    except _DECODE_ERRORS as e:
        raise ImageReadError(f"cannot read image '{path}' ({_reason(e)}); "
                             f"replace or delete the file") from None


