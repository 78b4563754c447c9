"""Image data for StarGAN v2: per-domain folders, balanced sampling, resumable order.

Layout: a root folder with one sub-folder per domain; domain labels are the indices
of the sorted sub-folder names. Images are found recursively inside each domain
folder (extensions in ``IMG_EXTENSIONS``, any case). Symbolic links are followed, each
file is listed once (by its real path), a link that leads back into the folder being
listed (a loop) or into another domain of the dataset is skipped (``list_images``).

Every mode reads images through ``load_rgb``: as a viewer shows them, that is turned
upright by their EXIF orientation and with transparent pixels composited on white
(``ALPHA_BACKGROUND``), then converted to RGB.

Reproducible, resumable order
-----------------------------
A training loader is a pure function of ``(seed, epoch, position)``:

* epoch ``e`` draws, from a ``torch.Generator`` seeded with ``derive_seed(seed, e)``,
  the balanced index sequence (``torch.multinomial`` with weights 1/domain size,
  with replacement, ``len(dataset)`` draws) and one 63-bit seed per draw;
* each sample's random crop / flip (and the choice of the second reference image)
  uses only that per-sample seed, so worker processes and their count do not matter;
* ``get_train_loader(..., seed, epoch=e, start=k)`` starts at batch ``k`` of epoch ``e``
  and yields exactly the batches an uninterrupted loader yields from there.

``InputFetcher`` tracks (epoch, batch) of its loaders and the state of the generator
its latent codes come from; ``state_dict()`` / ``load_state_dict()`` save and restore
them, which is all a checkpoint needs for a bitwise-identical data stream.
"""
from __future__ import annotations

import bisect
import dataclasses
import functools
import hashlib
import os
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from typing import Any, BinaryIO, Dict, List, Optional, Set, Tuple, TypeAlias

import numpy as np
import torch
from munch import Munch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch.utils import data
from torch.utils.data.sampler import WeightedRandomSampler
from torchvision import transforms

from core.device import DeviceLike, pin_memory, select_device
from core.errors import UserError
from core.fileio import StrPath, file_identity, is_inside, same_file

IMG_EXTENSIONS = ('png', 'jpg', 'jpeg', 'JPG', 'webp', 'bmp')
# The image formats every reader accepts (PIL's names), those of IMG_EXTENSIONS (a camera's JPEG
# with extra pictures opens through JPEG as 'MPO'). A file of any other format (EPS, which PIL
# hands to Ghostscript, PSD, TIFF, ...), whatever its name, is refused before any decoder sees it.
IMAGE_FORMATS = ('PNG', 'JPEG', 'WEBP', 'BMP')
FORMATS_TEXT = 'PNG, JPEG, WebP or BMP'  # IMAGE_FORMATS as messages name them
_EXT_SET = frozenset('.' + e.lower() for e in IMG_EXTENSIONS)
_EXT_TEXT = '/'.join(sorted({e.lower() for e in IMG_EXTENSIONS}))
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
_SEED_MAX = 2 ** 63 - 1
# what a dataset applies to each PIL image (a tensor in [-1, 1] here; the official datasets' default: the image)
Transform: TypeAlias = Callable[[Image.Image], Any]


class ImageReadError(UserError):
    """An image file that PIL cannot decode.

    DataLoader workers re-raise exceptions as ``type(e)(text with traceback)``; the
    constructor keeps only the original one-line message in that case.
    """

    def __init__(self, message: object = '') -> None:
        lines = [ln.strip() for ln in str(message).splitlines() if ln.strip()]
        if len(lines) > 1:
            last = lines[-1]
            tag = f'{type(self).__name__}: '
            message = last[last.index(tag) + len(tag):] if tag in last else last
        super().__init__(message)


# --------------------------------------------------------------------------- files

def is_image_file(path: StrPath) -> bool:
    return os.path.splitext(path)[1].lower() in _EXT_SET


def _require_dir(root: Optional[StrPath], what: str = 'data folder') -> None:
    if root is None or not os.path.exists(root):
        raise UserError(f"{what} '{root}' does not exist; check the path")
    if not os.path.isdir(root):
        raise UserError(f"{what} '{root}' is not a folder; give a folder")


def list_domains(root: StrPath) -> List[str]:
    """Sorted names of the sub-folders of ``root`` (one per domain; hidden ones skipped)."""
    _require_dir(root)
    return sorted(d.name for d in os.scandir(root)
                  if d.is_dir() and not d.name.startswith('.'))


def list_images(folder: StrPath, exclude: Collection[str] = ()) -> List[str]:
    """Sorted paths of the image files under ``folder`` (recursive, hidden ones skipped).

    Symbolic links (to files or folders) are followed, without loops: each real folder is
    walked once and each real file listed once (under its path through real folders when it
    has one). A link to ``folder`` itself or to a folder above it is skipped, and so is one
    that resolves into a folder of ``exclude`` (e.g. the other domains of a dataset) unless it
    stays inside ``folder``. Folders are compared by file, not by spelling
    (``core.fileio.file_identity``: another case on a case-insensitive disk is the same
    folder); image files by real path, so hard links to one file stay separate images, as
    they always were. A dangling link is listed (the up-front check names it)."""
    _require_dir(folder, 'image folder')
    top = os.path.realpath(folder)
    walked: Set[object] = set()
    files: Dict[str, str] = {}  # real path -> listed path
    links: List[str] = []

    def allowed(real: str) -> bool:
        if is_inside(top, real) and not same_file(real, top):  # a folder above: every file of it would be listed
            return False
        return is_inside(real, top) or not any(is_inside(real, e) for e in exclude)

    def walk(start: StrPath) -> None:
        for dirpath, dirnames, filenames in os.walk(start):
            key = file_identity(dirpath)
            if key in walked:  # reached twice (a loop, or two links to one folder)
                dirnames[:] = []
                continue
            walked.add(key)
            dirnames[:] = sorted(d for d in dirnames if not d.startswith('.'))
            for d in [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
                dirnames.remove(d)  # linked folders: after every real one, so real paths win
                links.append(os.path.join(dirpath, d))
            for f in sorted(filenames):
                path = os.path.join(dirpath, f)
                if f.startswith('.') or not is_image_file(f):
                    continue
                if os.path.islink(path):
                    links.append(path)
                else:
                    files.setdefault(os.path.realpath(path), path)

    walk(folder)
    while links:
        link = links.pop(0)
        real = os.path.realpath(link)
        if not allowed(real):
            continue
        if os.path.isdir(real):
            walk(link)
        else:
            files.setdefault(real, link)
    return sorted(files.values())


def list_domain_images(root: StrPath, domains: Optional[Sequence[str]] = None) -> Dict[str, List[str]]:
    """``{domain: list_images(root/domain)}`` for the domain folders of ``root``, where no
    domain's listing enters another domain's folder, the root or a folder above it. UserError
    when two domain names lead to one folder (a link)."""
    domains = list_domains(root) if domains is None else domains
    real = {d: os.path.realpath(os.path.join(root, d)) for d in domains}
    seen: Dict[object, str] = {}
    for d in domains:
        key = file_identity(real[d])
        if key in seen:
            raise UserError(f"domain folders '{seen[key]}' and '{d}' in '{root}' are one folder "
                            f"(a symbolic link); give each domain its own folder")
        seen[key] = d
    root_real = os.path.realpath(root)
    return {d: list_images(os.path.join(root, d), exclude=[root_real] + [real[o] for o in domains if o != d])
            for d in domains}


def check_dataset(root: StrPath, num_domains: Optional[int] = None, batch_size: Optional[int] = None) -> List[str]:
    """Check a domain-folder dataset before any work; return its sorted domain names.

    UserError (one line, naming the fix) when: the folder is missing; it has no domain
    sub-folders or not ``num_domains`` of them; a domain holds no image; it holds fewer
    images than ``batch_size`` (training drops incomplete batches, so none would be left);
    image files cannot be read (all are checked up front, see ``check_images``).
    """
    domains = list_domains(root)
    if not domains:
        raise UserError(f"'{root}' has no domain sub-folders; put the images of each domain "
                        f"in its own sub-folder (e.g. {root}/cat, {root}/dog)")
    if num_domains is not None and len(domains) != num_domains:
        raise UserError(f"'{root}' has {len(domains)} domain sub-folders ({', '.join(domains)}) "
                        f"but --num_domains is {num_domains}; set --num_domains {len(domains)} "
                        f"or fix the folder")
    paths: List[str] = []
    for d, found in list_domain_images(root, domains).items():
        if not found:
            raise UserError(f"domain '{d}' ({os.path.join(root, d)}) holds no images "
                            f"({_EXT_TEXT}); add images or remove the folder")
        paths += found
    if batch_size is not None and len(paths) < batch_size:
        raise UserError(f"'{root}' holds {len(paths)} images, fewer than the batch size {batch_size}; "
                        f"add images or lower --batch_size")
    check_images(root, paths)
    return domains


# Last bytes of a whole file of these formats (a truncated file lacks them).
_TRAILERS = {'PNG': b'IEND\xaeB`\x82', 'JPEG': b'\xff\xd9', 'MPO': b'\xff\xd9'}
_checked: Dict[str, Tuple[int, float]] = {}  # path -> (size, mtime) of the files found readable in this process
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


def check_images(root: StrPath, paths: Iterable[str]) -> None:
    """UserError naming the unreadable files among ``paths`` (all of them are checked, the
    first few are named, with the count), before any training starts. Files found readable
    are remembered (by size and modification time), so the source and reference loaders of
    one dataset check it once."""
    bad: List[Tuple[str, str]] = []
    for path in paths:
        try:
            st = os.stat(path)
        except OSError as e:
            bad.append((path, e.strerror or type(e).__name__))
            continue
        stamp = (st.st_size, st.st_mtime_ns)
        if _checked.get(path) == stamp:
            continue
        reason = unreadable_reason(path)
        if reason is None:
            _checked[path] = stamp
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


# --------------------------------------------------------------------------- seeds

def derive_seed(*parts: object) -> int:
    """A 63-bit seed from any ints/strings; the same parts give the same seed everywhere."""
    h = hashlib.blake2b(repr(tuple(parts)).encode(), digest_size=8).digest()
    return int.from_bytes(h, 'little') & _SEED_MAX


def _resolve_seed(seed: Optional[int], generator: Optional[torch.Generator], tag: str) -> int:
    """Seed of a loader: explicit seed, else drawn from ``generator``, else torch.initial_seed().

    ``torch.initial_seed()`` is the value given to ``torch.manual_seed`` (``--seed``), so the
    default is reproducible and consumes no random numbers. ``tag`` keeps the source and
    reference loaders (and the latent codes) independent when given the same seed.
    """
    if seed is None:
        if generator is not None:
            seed = int(torch.randint(0, _SEED_MAX, (1,), generator=generator))
        else:
            seed = torch.initial_seed()
    return derive_seed(int(seed), tag)


# --------------------------------------------------------------------------- samplers

class _Resumable:
    """Mixin: epoch-wise plans that depend only on (seed, epoch); start anywhere."""

    seed: int
    num_samples: int
    epoch: int
    start: int

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Next iteration yields epoch ``epoch`` from its ``start``-th sample."""
        self.epoch = int(epoch)
        self.start = int(start)

    def _epoch_generator(self, epoch: int) -> torch.Generator:
        return torch.Generator().manual_seed(derive_seed(self.seed, 'epoch', epoch))

    def __len__(self) -> int:
        return max(self.num_samples - self.start, 0)


@dataclasses.dataclass(frozen=True)
class Share:
    """One process's share of a training stream: of each global batch of ``global_batch``
    positions, process ``rank`` of ``world_size`` reads the ``global_batch // world_size``
    positions from ``rank * global_batch // world_size`` on (the rows it trains on)."""
    global_batch: int
    rank: int = 0
    world_size: int = 1

    def __post_init__(self) -> None:
        if self.global_batch <= 0 or self.global_batch % self.world_size or not 0 <= self.rank < self.world_size:
            raise ValueError(f'no share of a global batch of {self.global_batch} for rank {self.rank} '
                             f'of {self.world_size}')

    @property
    def local_batch(self) -> int:
        return self.global_batch // self.world_size

    def rows(self, n: int) -> slice:
        """This process's rows of a global batch of ``n`` rows."""
        local = n // self.world_size
        return slice(self.rank * local, (self.rank + 1) * local)


class BalancedSampler(_Resumable, WeightedRandomSampler):
    """Domain-balanced sampling (weight 1/domain size, with replacement), resumable.

    Yields ``(index, sample_seed)`` keys; the dataset draws the sample's random
    transform from ``sample_seed`` alone.

    With a ``share`` (training): the stream goes on epoch after epoch (the loader never ends,
    so its workers never drain and refill at an epoch boundary), each epoch's last incomplete
    global batch is skipped (the official ``drop_last``), and only this process's positions
    of each global batch are yielded. The plan, and so every image and transform, is the one
    process's whatever the number of processes.
    """

    def __init__(self, labels: Iterable[int], seed: int, epoch: int = 0, start: int = 0,
                 share: Optional[Share] = None) -> None:
        labels = [int(v) for v in labels]
        counts = Counter(labels)
        weights = [1.0 / counts[v] for v in labels]
        super().__init__(weights, num_samples=len(labels), replacement=True)
        self.labels = labels
        self.seed = int(seed)
        self.share = share
        self.set_epoch(epoch, start)

    def plan(self, epoch: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """(indices, per-sample seeds) of a whole epoch."""
        g = self._epoch_generator(epoch)
        idx = torch.multinomial(self.weights, self.num_samples, self.replacement, generator=g)
        seeds = torch.randint(0, _SEED_MAX, (self.num_samples,), generator=g)
        return idx, seeds

    def batches_per_epoch(self, batch_size: int) -> int:
        return self.num_samples // batch_size

    def shared(self, share: Share) -> BalancedSampler:
        """The same stream (seed, position), ``share`` of it."""
        return BalancedSampler(self.labels, self.seed, self.epoch, self.start, share)

    def __len__(self) -> int:
        if self.share is None:
            return super().__len__()
        # endless: the number of this process's positions in the rest of this epoch's full
        # batches (what one pass of a DataLoader over one epoch would say)
        used = self.batches_per_epoch(self.share.global_batch) * self.share.global_batch
        return max(used - self.start, 0) // self.share.world_size

    # keys (index, sample_seed): not the plain indices of the Sampler[int] base
    def __iter__(self) -> Iterator[Tuple[int, int]]:  # type: ignore[override]
        if self.share is None:
            idx, seeds = self.plan(self.epoch)
            for k in range(self.start, self.num_samples):
                yield int(idx[k]), int(seeds[k])
            return
        share, epoch, start = self.share, self.epoch, self.start
        rows = share.rows(share.global_batch)
        used = self.batches_per_epoch(share.global_batch) * share.global_batch
        while True:
            idx, seeds = self.plan(epoch)
            for first in range(start - start % share.global_batch, used, share.global_batch):
                for k in range(first + rows.start, first + rows.stop):
                    if k >= start:
                        yield int(idx[k]), int(seeds[k])
            epoch, start = epoch + 1, 0


class ShuffleSampler(_Resumable, data.Sampler):
    """A permutation per epoch (or the natural order), resumable; yields plain indices."""

    def __init__(self, n: int, seed: int, shuffle: bool = True, epoch: int = 0, start: int = 0) -> None:
        self.num_samples = int(n)
        self.seed = int(seed)
        self.shuffle = bool(shuffle)
        self.set_epoch(epoch, start)

    def plan(self, epoch: int) -> torch.Tensor:
        if not self.shuffle:
            return torch.arange(self.num_samples)
        return torch.randperm(self.num_samples, generator=self._epoch_generator(epoch))

    def __iter__(self) -> Iterator[int]:
        order = self.plan(self.epoch)
        for k in range(self.start, self.num_samples):
            yield int(order[k])


# --------------------------------------------------------------------------- datasets

class _MaybeCrop:
    """RandomResizedCrop(img_size, scale=(0.8, 1), ratio=(0.9, 1.1)) when U[0, 1) < prob."""

    def __init__(self, img_size: int, prob: float) -> None:
        self.prob = float(prob)
        self.crop = transforms.RandomResizedCrop(img_size, scale=(0.8, 1.0), ratio=(0.9, 1.1))

    def __call__(self, img: Image.Image) -> Image.Image:
        return self.crop(img) if float(torch.rand(1)) < self.prob else img


def _to_unit_range() -> List[Callable[[Any], torch.Tensor]]:
    """ToTensor then Normalize(0.5, 0.5): a PIL image as float32 values in [-1, 1] (the one
    definition of the mapping that the training, test and look-up paths share)."""
    return [transforms.ToTensor(), transforms.Normalize(mean=[0.5, 0.5, 0.5], std=[0.5, 0.5, 0.5])]


class TrainTransform:
    """The official training augmentation, driven by one seed per call.

    With probability ``prob`` RandomResizedCrop(img_size, scale=(0.8, 1), ratio=(0.9, 1.1)),
    then Resize([img_size, img_size]), RandomHorizontalFlip, ToTensor, Normalize to [-1, 1].
    All draws use the CPU default generator inside ``fork_rng`` seeded with ``seed``; the
    caller's random state (CPU and CUDA) is left exactly as it was.

    ``uint8``: the pixels as a uint8 tensor (C, H, W) instead, a quarter of the bytes to pass
    from the workers and copy to the device; ``unit_range`` there makes them exactly the
    ToTensor + Normalize values.
    """

    def __init__(self, img_size: int, prob: float, uint8: bool = False) -> None:
        to_tensor = [transforms.PILToTensor()] if uint8 else _to_unit_range()
        self.transform = transforms.Compose([
            _MaybeCrop(img_size, prob),
            transforms.Resize([img_size, img_size]),
            transforms.RandomHorizontalFlip(),
            *to_tensor,
        ])

    def __call__(self, img: Image.Image, seed: Optional[int] = None) -> torch.Tensor:
        if seed is None:
            return self.transform(img)
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(int(seed))
            return self.transform(img)


@functools.lru_cache(maxsize=8)
def _unit_values(device: torch.device) -> torch.Tensor:
    """The value ToTensor then Normalize(0.5, 0.5) give each of the 256 uint8 pixel values,
    computed by those transforms on the CPU (as the workers would), on ``device``."""
    every = np.arange(256, dtype=np.uint8).reshape(1, 256, 1).repeat(3, axis=2)  # one row, R = G = B
    return transforms.Compose(_to_unit_range())(Image.fromarray(every))[0, 0].to(device)


def unit_range(x: torch.Tensor) -> torch.Tensor:
    """uint8 pixels (``TrainTransform(uint8=True)``) as ToTensor then Normalize(0.5, 0.5) make
    them on the CPU, bit for bit, on any device: a look-up of the 256 values (CUDA divides by a
    number as a multiplication by its reciprocal, which differs in the last bit for about half
    of them)."""
    return _unit_values(x.device)[x.long()]


INCEPTION_SIZE = 299


def plain_transform(img_size: int, imagenet_normalize: bool = False) -> Callable[[Image.Image], torch.Tensor]:
    """Test/eval transform: Resize, then [-1, 1]; with ``imagenet_normalize`` the official FID
    pre-processing instead (then 299 px, ImageNet mean/std), used by metrics/fid.py."""
    steps = [transforms.Resize([img_size, img_size])]
    if imagenet_normalize:
        steps += [transforms.Resize([INCEPTION_SIZE, INCEPTION_SIZE]), transforms.ToTensor(),
                  transforms.Normalize(mean=IMAGENET_MEAN, std=IMAGENET_STD)]
    else:
        steps += _to_unit_range()
    return transforms.Compose(steps)


class DomainDataset(data.Dataset):
    """Images in per-domain sub-folders of ``root``; label = index of the sorted folder.

    ``pair=False``: item is ``(x, y)``. ``pair=True`` (reference images): item is
    ``(x, x2, y)`` with ``x2`` another image of the same domain (the same one only when
    the domain has a single image). Keys are indices or ``(index, sample_seed)``; with a
    seed, every random choice comes from it (see ``BalancedSampler``).
    """

    def __init__(self, root: StrPath, transform: Transform, pair: bool = False) -> None:
        self.root = root
        self.domains = list_domains(root)
        self.samples: List[Tuple[str, int]] = []
        for label, found in enumerate(list_domain_images(root, self.domains).values()):
            self.samples += [(p, label) for p in found]
        self.targets = [y for _, y in self.samples]
        self.transform = transform
        self.pair = pair
        self._by_domain: Dict[int, List[int]] = {}
        for i, y in enumerate(self.targets):
            self._by_domain.setdefault(y, []).append(i)

    def __len__(self) -> int:
        return len(self.samples)

    def _load(self, i: int, seed: Optional[int]) -> Any:
        img = load_rgb(self.samples[i][0])
        if isinstance(self.transform, TrainTransform):
            return self.transform(img, seed)
        return self.transform(img)

    def __getitem__(self, key: int | Tuple[int, int]) -> Tuple[Any, int] | Tuple[Any, Any, int]:
        index, seed = key if isinstance(key, tuple) else (key, None)
        index = int(index)
        y = self.samples[index][1]
        if not self.pair:
            return self._load(index, seed), y
        g = torch.Generator().manual_seed(int(seed)) if seed is not None else None
        same = self._by_domain[y]
        if len(same) == 1:
            index2 = index
        else:  # uniform over the other images of the domain
            k = int(torch.randint(0, len(same) - 1, (1,), generator=g))
            index2 = same[k + 1] if k >= bisect.bisect_left(same, index) else same[k]
        s1, s2 = (torch.randint(0, _SEED_MAX, (2,), generator=g).tolist()
                  if g is not None else (None, None))
        return self._load(index, s1), self._load(index2, s2), y


class FlatImageDataset(data.Dataset):
    """All images under ``root`` (recursive, sorted), no labels: item is ``x``."""

    def __init__(self, root: StrPath, transform: Transform) -> None:
        self.root = root
        self.samples = list_images(root)
        if not self.samples:
            raise UserError(f"'{root}' holds no images ({_EXT_TEXT}); check the path")
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> Any:
        return self.transform(load_rgb(self.samples[int(index)]))


# --------------------------------------------------------------------------- loaders

def _make_loader(dataset: data.Dataset, sampler: BalancedSampler | ShuffleSampler, batch_size: int, num_workers: int,
                 drop_last: bool, pin: bool) -> data.DataLoader:
    """A loader whose workers live across epochs (``persistent_workers``); ``pin``: pinned
    memory (see ``core.device.pin_memory``, the one device decision)."""
    return data.DataLoader(
        dataset=dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
        pin_memory=pin, drop_last=drop_last, persistent_workers=num_workers > 0,
        # private generator: creating an iterator must not consume the global RNG
        generator=torch.Generator().manual_seed(sampler.seed))


def share_loader(loader: data.DataLoader, share: Share) -> Optional[data.DataLoader]:
    """A training loader of ``get_train_loader`` (batch = the global batch) made this process's
    endless ``share`` of the same stream: batches of ``share.local_batch``, the same workers,
    pinning and position. None for a loader of another kind (its batches are then read whole
    and sliced). ``loader`` itself is left unused, so its workers never start."""
    sampler = loader.sampler
    if not isinstance(sampler, BalancedSampler) or sampler.share is not None or loader.batch_size != share.global_batch:
        return None
    if sampler.batches_per_epoch(share.global_batch) == 0:
        raise UserError(f'{sampler.num_samples} training images, fewer than the batch size {share.global_batch}; '
                        f'add images or lower --batch_size')
    return _make_loader(loader.dataset, sampler.shared(share), share.local_batch, loader.num_workers,
                        drop_last=True, pin=loader.pin_memory)


def without_workers(loader: data.DataLoader) -> data.DataLoader:
    """The same batches read in this process (no worker processes): for a loader read once
    (the training run's fixed validation batch), so that no idle workers stay alive. Loaders
    of another kind are returned as they are."""
    if loader.num_workers == 0 or not isinstance(loader.sampler, (BalancedSampler, ShuffleSampler)):
        return loader
    return _make_loader(loader.dataset, loader.sampler, loader.batch_size or 1, 0, loader.drop_last, loader.pin_memory)


def get_train_loader(root: StrPath, which: str = 'source', img_size: int = 256, batch_size: int = 8, prob: float = 0.5,
                     num_workers: int = 4, generator: Optional[torch.Generator] = None, seed: Optional[int] = None,
                     epoch: int = 0, start: int = 0, num_domains: Optional[int] = None,
                     device: DeviceLike = None, uint8: bool = False) -> data.DataLoader:
    """Training loader: balanced over domains, augmented, reproducible and resumable.

    which='source' yields ``(x, y)``, which='reference' yields ``(x_ref, x_ref2, y)``.
    ``seed`` (else one drawn from ``generator``, else ``torch.initial_seed()``) fixes the
    whole stream; ``epoch``/``start`` (batches) start it where a previous run stopped.
    ``uint8``: images as uint8 pixels (``InputFetcher`` turns them into the [-1, 1] values
    on the device, see ``TrainTransform``).
    """
    if which not in ('source', 'reference'):
        raise ValueError(f"which must be 'source' or 'reference', not {which!r}")
    check_dataset(root, num_domains, batch_size)
    dataset = DomainDataset(root, TrainTransform(img_size, prob, uint8), pair=(which == 'reference'))
    sampler = BalancedSampler(dataset.targets, _resolve_seed(seed, generator, which),
                              epoch=epoch, start=start * batch_size)
    return _make_loader(dataset, sampler, batch_size, num_workers, drop_last=True, pin=pin_memory(device))


def get_test_loader(root: StrPath, img_size: int = 256, batch_size: int = 32, shuffle: bool = True, num_workers: int = 4,
                    seed: Optional[int] = None, num_domains: Optional[int] = None, device: DeviceLike = None) -> data.DataLoader:
    """Validation/test loader over domain folders: Resize, [-1, 1]; yields ``(x, y)``."""
    check_dataset(root, num_domains)
    dataset = DomainDataset(root, plain_transform(img_size))
    sampler = ShuffleSampler(len(dataset), _resolve_seed(seed, None, 'test'), shuffle)
    return _make_loader(dataset, sampler, batch_size, num_workers, drop_last=False, pin=pin_memory(device))


def get_eval_loader(root: StrPath, img_size: int = 256, batch_size: int = 32, imagenet_normalize: bool = True,
                    shuffle: bool = True, num_workers: int = 4, drop_last: bool = False, seed: Optional[int] = None,
                    device: DeviceLike = None) -> data.DataLoader:
    """Loader over all images under ``root`` (no labels) for the metrics; yields ``x``.

    Resize([img_size]*2); with ``imagenet_normalize`` then Resize([299, 299]) and ImageNet
    mean/std (Inception input), else [-1, 1].
    """
    _require_dir(root, 'image folder')
    dataset = FlatImageDataset(root, plain_transform(img_size, imagenet_normalize))
    sampler = ShuffleSampler(len(dataset), _resolve_seed(seed, None, 'eval'), shuffle)
    return _make_loader(dataset, sampler, batch_size, num_workers, drop_last=drop_last, pin=pin_memory(device))


# --------------------------------------------------------------------------- fetcher

class _Cursor:
    """Iterates a loader forever (epoch after epoch) and knows its (epoch, batch). Positions
    count global batches: a loader of one process's share (``share_loader``) advances one
    global batch per batch it yields, as the one-process loader does."""

    def __init__(self, loader):
        self.loader = loader
        sampler = getattr(loader, 'sampler', None)
        self.resumable = isinstance(sampler, _Resumable)
        self.share = getattr(sampler, 'share', None)  # an endless loader of one process's share
        self.global_batch = self.share.global_batch if self.share is not None else loader.batch_size
        self.epoch = sampler.epoch if self.resumable else 0
        self.batch = sampler.start // self.global_batch if self.resumable else 0
        self._it = None
        self._wrap()

    def _wrap(self) -> None:
        """An endless stream past its epoch's last full batch is at the next epoch's start."""
        if self.share is not None and self.batch >= self._per_epoch():
            self.epoch, self.batch = self.epoch + 1, 0

    def _per_epoch(self) -> int:
        n, bs = self.loader.sampler.num_samples, self.global_batch
        return n // bs if self.share is not None or self.loader.drop_last else -(-n // bs)

    def _open(self):
        skip = 0
        if self.resumable:
            self.loader.sampler.set_epoch(self.epoch, self.batch * self.global_batch)
        else:
            skip = self.batch
        self._it = iter(self.loader)
        for _ in range(skip):  # foreign loader: replay to the position
            next(self._it)

    def next(self):
        if self._it is None:
            self._open()
        try:
            out = next(self._it)
        except StopIteration:  # an endless loader never ends
            self.epoch, self.batch = self.epoch + 1, 0
            self._open()
            try:
                out = next(self._it)
            except StopIteration:
                raise UserError('a data loader yields no batch; add images or lower the '
                                'batch size') from None
        self.batch += 1
        self._wrap()
        return out

    def state_dict(self):
        epoch, batch = self.epoch, self.batch
        if self.resumable:
            if batch >= self._per_epoch():  # the epoch is used up: the same as the start of the next
                epoch, batch = epoch + 1, 0
            return {'epoch': epoch, 'batch': batch, 'seed': self.loader.sampler.seed,
                    'batch_size': self.global_batch, 'num_samples': self.loader.sampler.num_samples}
        return {'epoch': epoch, 'batch': batch}

    def load_state_dict(self, st, strict=True):
        if strict and self.resumable:
            bs, n = self.global_batch, self.loader.sampler.num_samples
            if st.get('batch_size', bs) != bs:
                raise UserError(f"the saved data position is for batch size {st['batch_size']}, "
                                f"not {bs}; resume with --batch_size {st['batch_size']}")
            if st.get('num_samples', n) != n:
                raise UserError(f"the saved data position is for {st['num_samples']} images but "
                                f"the folder now holds {n}; restore the dataset to resume exactly")
        self.epoch, self.batch = int(st['epoch']), int(st['batch'])
        if self.resumable and 'seed' in st:
            self.loader.sampler.seed = int(st['seed'])
        self._it = None
        self._wrap()


class InputFetcher:
    """Endless batches as Munch, on ``device``.

    mode 'train': x_src, y_src, x_ref, x_ref2, y_ref, z_trg, z_trg2 (``loader`` is a
    source loader, ``loader_ref`` a reference loader; z ~ N(0, I) of shape
    (batch, latent_dim), drawn on the CPU from a private generator). ``loader``'s batch is the
    global batch; process ``rank`` of ``world_size`` gets its rows of it, and reads only those
    images when the loaders come from ``get_train_loader`` (see ``share_loader``); the latent
    codes are the global batch's rows too, so every value is the one process's;
    'val': x_src, y_src, x_ref, y_ref (references from ``loader_ref`` or, without one, the
    next batch of ``loader``); 'test': x, y. A loader that ends starts its next epoch.
    """

    def __init__(self, loader: data.DataLoader, loader_ref: Optional[data.DataLoader] = None, latent_dim: int = 16,
                 mode: str = '', device: DeviceLike = None, generator: Optional[torch.Generator] = None,
                 seed: Optional[int] = None, rank: int = 0, world_size: int = 1) -> None:
        if mode == 'train' and loader_ref is None:
            raise ValueError("mode 'train' needs loader_ref (a reference loader)")
        self.loader, self.loader_ref = loader, loader_ref
        self.latent_dim = latent_dim
        self.mode = mode
        self.device = select_device('auto') if device is None else torch.device(device)
        self.share: Optional[Share] = None  # 'train': this process's rows of each global batch
        self.sliced = False  # the loaders yield whole global batches: keep this process's rows
        if mode == 'train':
            assert loader.batch_size is not None and loader_ref is not None
            self.share = Share(loader.batch_size, rank, world_size)
            src, ref = share_loader(loader, self.share), share_loader(loader_ref, self.share)
            if src is not None and ref is not None:  # each process reads only its rows
                loader, loader_ref = src, ref
            else:
                self.sliced = world_size > 1
        self.src = _Cursor(loader)
        self.ref = _Cursor(loader_ref) if loader_ref is not None else None
        self.generator = (generator if generator is not None else
                          torch.Generator().manual_seed(_resolve_seed(seed, None, 'latent')))
        self._copy_stream: Optional[torch.cuda.Stream] = None

    def __iter__(self) -> InputFetcher:
        return self

    def _to_device(self, batch: Dict[str, torch.Tensor]) -> Munch:
        """The batch on the device, uint8 images as [-1, 1] values there (``unit_range``). On
        CUDA the copy runs on a stream of its own (from pinned memory), so it overlaps the
        previous iteration's kernels, which the host has queued ahead; the compute stream
        waits for it before using the batch."""
        if self.device.type != 'cuda':
            out = {k: v.to(self.device) for k, v in batch.items()}
        else:
            if self._copy_stream is None:
                self._copy_stream = torch.cuda.Stream(self.device)
            compute = torch.cuda.current_stream(self.device)
            with torch.cuda.stream(self._copy_stream):
                out = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
            compute.wait_stream(self._copy_stream)
            for v in out.values():
                v.record_stream(compute)  # made on the copy stream, used (and freed) on the compute stream
        return Munch({k: unit_range(v) if v.dtype == torch.uint8 else v for k, v in out.items()})

    def __next__(self):
        if self.mode == 'train':
            assert self.ref is not None and self.share is not None
            x, y = self.src.next()
            x_ref, x_ref2, y_ref = self.ref.next()
            batch = dict(x_src=x, y_src=y, x_ref=x_ref, x_ref2=x_ref2, y_ref=y_ref)
            # the size of the global batch: this one, or the sum of the processes' equal rows
            n = x.size(0) if self.sliced or self.share.world_size == 1 else x.size(0) * self.share.world_size
            rows = self.share.rows(n)
            if self.sliced:
                batch = {k: v[rows] for k, v in batch.items()}
            # the latent codes of the whole global batch (those of one process), then this process's rows
            batch['z_trg'] = torch.randn((n, self.latent_dim), generator=self.generator)[rows]
            batch['z_trg2'] = torch.randn((n, self.latent_dim), generator=self.generator)[rows]
        elif self.mode == 'val':
            x, y = self.src.next()
            ref = (self.ref or self.src).next()  # no loader_ref: the next batch is the reference
            x_ref, y_ref = ref[0], ref[-1]
            batch = dict(x_src=x, y_src=y, x_ref=x_ref, y_ref=y_ref)
        elif self.mode == 'test':
            x, y = self.src.next()
            batch = dict(x=x, y=y)
        else:
            raise NotImplementedError(f"InputFetcher mode must be train, val or test, not {self.mode!r}")
        return self._to_device(batch)

    def state_dict(self) -> Dict[str, Any]:
        """Everything needed to continue the exact stream: positions, seeds, z generator."""
        return {'mode': self.mode,
                'src': self.src.state_dict(),
                'ref': self.ref.state_dict() if self.ref is not None else None,
                'generator': self.generator.get_state()}

    def load_state_dict(self, state: Dict[str, Any], strict: bool = True) -> None:
        """Continue exactly where ``state`` was taken. ``strict``: UserError when the loaders'
        batch size or dataset size differ from the saved ones (the stream could not match)."""
        self.src.load_state_dict(state['src'], strict)
        if self.ref is not None and state.get('ref') is not None:
            self.ref.load_state_dict(state['ref'], strict)
        self.generator.set_state(state['generator'])
