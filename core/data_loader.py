"""The official ``core.data_loader`` names (compatibility layer: delegates only).

The data code lives in ``core.datasets``: the loaders and ``InputFetcher`` are its own, under
the official names and arguments; the official datasets are thin subclasses of its datasets.
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

from PIL import Image

from core.datasets.folders import list_images
from core.datasets.pipeline import (
    DomainDataset,
    FlatImageDataset,
    InputFetcher,
    Transform,
    get_eval_loader,
    get_test_loader,
    get_train_loader,  # noqa: F401 (official names)
)
from core.io.files import StrPath

__all__ = ['listdir', 'DefaultDataset', 'ReferenceDataset', 'get_train_loader', 'get_eval_loader',
           'get_test_loader', 'InputFetcher']


def _identity(img: Image.Image) -> Image.Image:
    return img


def listdir(dname: StrPath) -> List[Path]:
    """Image files under ``dname`` (recursive, sorted) as ``pathlib.Path`` (the official helper)."""
    return [Path(p) for p in list_images(dname)]


class DefaultDataset(FlatImageDataset):
    """The official name of :class:`core.datasets.pipeline.FlatImageDataset` (all images under ``root``, no labels)."""

    def __init__(self, root: StrPath, transform: Optional[Transform] = None) -> None:
        super().__init__(root, transform or _identity)
        self.targets = None


class ReferenceDataset(DomainDataset):
    """The official name of a reference dataset: items ``(x, x2, y)``, ``x2`` another image of the
    same domain (see :class:`core.datasets.pipeline.DomainDataset` with ``pair=True``)."""

    def __init__(self, root: StrPath, transform: Optional[Transform] = None) -> None:
        super().__init__(root, transform or _identity, pair=True)
