"""The data order of training: seeds, the balanced sampler, each process's share of a global batch.

Reproducible, resumable order
-----------------------------
A training loader is a pure function of ``(seed, epoch, position)``:

* epoch ``e`` draws, from a ``torch.Generator`` seeded with ``derive_seed(seed, e)``,
  the balanced index sequence (``torch.multinomial`` with weights 1/domain size,
  with replacement, ``len(dataset)`` draws) and one 63-bit seed per draw;
* each sample's random crop / flip (and the choice of the second reference image)
  uses only that per-sample seed, so worker processes and their count do not matter;
* ``get_train_loader(..., seed, epoch=e, start=k)`` (``core.datasets.pipeline``) starts at batch
  ``k`` of epoch ``e`` and yields exactly the batches an uninterrupted loader yields from there.
"""
from __future__ import annotations

import dataclasses
import hashlib
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Optional, Tuple

import torch
from torch.utils import data
from torch.utils.data.sampler import WeightedRandomSampler

SEED_MAX = 2 ** 63 - 1


# --------------------------------------------------------------------------- seeds

def derive_seed(*parts: object) -> int:
    """A 63-bit seed from any ints/strings; the same parts give the same seed everywhere."""
    h = hashlib.blake2b(repr(tuple(parts)).encode(), digest_size=8).digest()
    return int.from_bytes(h, 'little') & SEED_MAX


def resolve_seed(seed: Optional[int], generator: Optional[torch.Generator], tag: str) -> int:
    """Seed of a loader: explicit seed, else drawn from ``generator``, else torch.initial_seed().

    ``torch.initial_seed()`` is the value given to ``torch.manual_seed`` (``--seed``), so the
    default is reproducible and consumes no random numbers. ``tag`` keeps the source and
    reference loaders (and the latent codes) independent when given the same seed.
    """
    if seed is None:
        if generator is not None:
            seed = int(torch.randint(0, SEED_MAX, (1,), generator=generator))
        else:
            seed = torch.initial_seed()
    return derive_seed(int(seed), tag)


# --------------------------------------------------------------------------- samplers

class Resumable:
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


class BalancedSampler(Resumable, WeightedRandomSampler):
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
        seeds = torch.randint(0, SEED_MAX, (self.num_samples,), generator=g)
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


class ShuffleSampler(Resumable, data.Sampler):
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
