"""Datasets, transforms, loaders and ``InputFetcher``: what the modes read images through.

``InputFetcher`` tracks (epoch, batch) of its loaders and the state of the generator
its latent codes come from; ``state_dict()`` / ``load_state_dict()`` save and restore
them, which is all a checkpoint needs for a bitwise-identical data stream.
"""
from __future__ import annotations

import bisect
import functools
from collections.abc import Callable, Iterator
from typing import Any, Dict, List, Optional, Tuple, TypeAlias

import numpy as np
import torch
from munch import Munch
from PIL import Image
from torch.utils import data
from torchvision import transforms

from core.datasets.folders import EXT_TEXT, check_dataset, list_domain_images, list_domains, list_images, require_dir
from core.datasets.order import SEED_MAX, BalancedSampler, Resumable, Share, ShuffleSampler, resolve_seed
from core.device import DeviceLike, pin_memory, select_device
from core.errors import UserError
from core.io.files import StrPath
from core.io.images import CheckedImages, ImageReadError, load_rgb

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
# what a dataset applies to each PIL image (a tensor in [-1, 1] here; the official datasets' default: the image)
Transform: TypeAlias = Callable[[Image.Image], Any]



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
        s1, s2 = (torch.randint(0, SEED_MAX, (2,), generator=g).tolist()
                  if g is not None else (None, None))
        return self._load(index, s1), self._load(index2, s2), y


class FlatImageDataset(data.Dataset):
    """All images under ``root`` (recursive, sorted), no labels: item is ``x``."""

    def __init__(self, root: StrPath, transform: Transform) -> None:
        self.root = root
        self.samples = list_images(root)
        if not self.samples:
            raise UserError(f"'{root}' holds no images ({EXT_TEXT}); check the path")
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> Any:
        return self.transform(load_rgb(self.samples[int(index)]))


# --------------------------------------------------------------------------- loaders

def _worker_error(error: ImageReadError) -> ImageReadError:
    """The one-line error of an image that a DataLoader worker could not read: torch re-raises a
    worker's exception in this process as its type made from the worker's whole traceback text
    (``Caught ... Original Traceback ...``), whose last line is ``<module>.<Name>: <message>``.
    An error raised in this process (no workers) is returned as it is."""
    lines = [ln.strip() for ln in str(error).splitlines() if ln.strip()]
    if len(lines) <= 1:
        return error
    tag = f'{type(error).__name__}: '
    last = lines[-1]
    return type(error)(last[last.index(tag) + len(tag):] if tag in last else last)


class _Batches:
    """The batches of a DataLoader iterator, an image that a worker could not read failing with
    its one-line ImageReadError (see ``_worker_error``)."""

    def __init__(self, batches: Iterator[Any]) -> None:
        self.batches = batches

    def __iter__(self) -> _Batches:
        return self

    def __len__(self) -> int:
        return len(self.batches)  # type: ignore[arg-type]

    def __next__(self) -> Any:
        try:
            return next(self.batches)
        except ImageReadError as e:
            error = _worker_error(e)
            if error is e:
                raise
            raise error from None


class _Loader(data.DataLoader):
    """A DataLoader whose batches fail as in this process: an image that a worker could not read
    is its one-line ImageReadError, as without workers."""

    def __iter__(self) -> _Batches:  # type: ignore[override]
        return _Batches(super().__iter__())


def _make_loader(dataset: data.Dataset, sampler: BalancedSampler | ShuffleSampler, batch_size: int, num_workers: int,
                 drop_last: bool, pin: bool) -> data.DataLoader:
    """A loader whose workers live across epochs (``persistent_workers``); ``pin``: pinned
    memory (see ``core.device.pin_memory``, the one device decision); an image that a worker
    cannot read fails with its one-line ImageReadError (``_Loader``)."""
    return _Loader(
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
                     device: DeviceLike = None, uint8: bool = False,
                     checked: Optional[CheckedImages] = None) -> data.DataLoader:
    """Training loader: balanced over domains, augmented, reproducible and resumable.

    which='source' yields ``(x, y)``, which='reference' yields ``(x_ref, x_ref2, y)``.
    ``seed`` (else one drawn from ``generator``, else ``torch.initial_seed()``) fixes the
    whole stream; ``epoch``/``start`` (batches) start it where a previous run stopped.
    ``uint8``: images as uint8 pixels (``InputFetcher`` turns them into the [-1, 1] values
    on the device, see ``TrainTransform``). ``checked``: one ``CheckedImages`` for the loaders of
    one dataset (source and reference), so that the up-front check reads each image once.
    """
    if which not in ('source', 'reference'):
        raise ValueError(f"which must be 'source' or 'reference', not {which!r}")
    check_dataset(root, num_domains, batch_size, checked)
    dataset = DomainDataset(root, TrainTransform(img_size, prob, uint8), pair=(which == 'reference'))
    sampler = BalancedSampler(dataset.targets, resolve_seed(seed, generator, which),
                              epoch=epoch, start=start * batch_size)
    return _make_loader(dataset, sampler, batch_size, num_workers, drop_last=True, pin=pin_memory(device))


def get_test_loader(root: StrPath, img_size: int = 256, batch_size: int = 32, shuffle: bool = True, num_workers: int = 4,
                    seed: Optional[int] = None, num_domains: Optional[int] = None, device: DeviceLike = None) -> data.DataLoader:
    """Validation/test loader over domain folders: Resize, [-1, 1]; yields ``(x, y)``."""
    check_dataset(root, num_domains)
    dataset = DomainDataset(root, plain_transform(img_size))
    sampler = ShuffleSampler(len(dataset), resolve_seed(seed, None, 'test'), shuffle)
    return _make_loader(dataset, sampler, batch_size, num_workers, drop_last=False, pin=pin_memory(device))


def get_eval_loader(root: StrPath, img_size: int = 256, batch_size: int = 32, imagenet_normalize: bool = True,
                    shuffle: bool = True, num_workers: int = 4, drop_last: bool = False, seed: Optional[int] = None,
                    device: DeviceLike = None) -> data.DataLoader:
    """Loader over all images under ``root`` (no labels) for the metrics; yields ``x``.

    Resize([img_size]*2); with ``imagenet_normalize`` then Resize([299, 299]) and ImageNet
    mean/std (Inception input), else [-1, 1].
    """
    require_dir(root, 'image folder')
    dataset = FlatImageDataset(root, plain_transform(img_size, imagenet_normalize))
    sampler = ShuffleSampler(len(dataset), resolve_seed(seed, None, 'eval'), shuffle)
    return _make_loader(dataset, sampler, batch_size, num_workers, drop_last=drop_last, pin=pin_memory(device))


# --------------------------------------------------------------------------- fetcher

class _Cursor:
    """Iterates a loader forever (epoch after epoch) and knows its (epoch, batch). Positions
    count global batches: a loader of one process's share (``share_loader``) advances one
    global batch per batch it yields, as the one-process loader does."""

    def __init__(self, loader):
        self.loader = loader
        sampler = getattr(loader, 'sampler', None)
        self.resumable = isinstance(sampler, Resumable)
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
                          torch.Generator().manual_seed(resolve_seed(seed, None, 'latent')))
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
