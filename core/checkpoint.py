"""The official ``core.checkpoint`` name ``CheckpointIO`` (compatibility layer: delegates only).

The checkpoint files themselves (official format, atomic writes, resume state) are
``core.io.ckpt_files``'s; ``CheckpointIO`` is the official object over its functions.
"""
from __future__ import annotations

import os
from typing import Dict, Tuple

import torch
from torch import nn

from core.io.ckpt_files import Optimizers, atomic_save, load_modules, load_optimizers, state_dicts

__all__ = ['CheckpointIO']


class CheckpointIO:
    """The official checkpoint object: ``CheckpointIO('ckpt/{:06d}_nets.ckpt', generator=G, ...)``.

    ``save(step)`` writes ``{name: state_dict}`` of the registered modules (and optimisers)
    to ``fname_template.format(step)`` atomically; ``load(step)`` reads it with
    :func:`load_modules` (``module.`` prefixes, the released CelebA-HQ file, one-line errors
    for a file of another configuration) and :func:`load_optimizers`. Wrapped and plain
    modules both work, whatever ``data_parallel`` says.
    """

    def __init__(self, fname_template: str, data_parallel: bool = False, **kwargs: nn.Module | torch.optim.Optimizer) -> None:
        folder = os.path.dirname(fname_template)
        if folder:
            os.makedirs(folder, exist_ok=True)
        self.fname_template = fname_template
        self.data_parallel = data_parallel  # kept for official call sites; unwrap() handles both
        self.module_dict: Dict[str, nn.Module | torch.optim.Optimizer] = dict(kwargs)

    def register(self, **kwargs: nn.Module | torch.optim.Optimizer) -> None:
        self.module_dict.update(kwargs)

    def _split(self) -> Tuple[Dict[str, nn.Module], Optimizers]:
        optims = {k: v for k, v in self.module_dict.items() if isinstance(v, torch.optim.Optimizer)}
        modules = {k: v for k, v in self.module_dict.items() if not isinstance(v, torch.optim.Optimizer)}
        return modules, optims

    def save(self, step: int) -> str:
        fname = self.fname_template.format(step)
        print(f'Saving checkpoint into {fname}...')
        modules, optims = self._split()
        atomic_save({**state_dicts(modules), **{k: o.state_dict() for k, o in optims.items()}}, fname)
        return fname

    def load(self, step: int) -> str:
        fname = self.fname_template.format(step)
        print(f'Loading checkpoint from {fname}...')
        modules, optims = self._split()
        if modules:
            load_modules(fname, modules)
        if optims:
            load_optimizers(fname, optims)
        return fname
