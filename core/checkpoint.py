"""The official ``core.checkpoint`` name ``CheckpointIO`` (compatibility layer: delegates only).

The checkpoint files themselves (official format, atomic writes, resume state) are
``core.ckpt``'s; ``CheckpointIO`` is the official object over its functions.
"""
import os

import torch

from core.ckpt import atomic_save, load_modules, load_optimizers, state_dicts

__all__ = ['CheckpointIO']


class CheckpointIO:
    """The official checkpoint object: ``CheckpointIO('ckpt/{:06d}_nets.ckpt', generator=G, ...)``.

    ``save(step)`` writes ``{name: state_dict}`` of the registered modules (and optimisers)
    to ``fname_template.format(step)`` atomically; ``load(step)`` reads it with
    :func:`load_modules` (``module.`` prefixes, the released CelebA-HQ file, one-line errors
    for a file of another configuration) and :func:`load_optimizers`. Wrapped and plain
    modules both work, whatever ``data_parallel`` says.
    """

    def __init__(self, fname_template, data_parallel=False, **kwargs):
        folder = os.path.dirname(fname_template)
        if folder:
            os.makedirs(folder, exist_ok=True)
        self.fname_template = fname_template
        self.data_parallel = data_parallel  # kept for official call sites; unwrap() handles both
        self.module_dict = dict(kwargs)

    def register(self, **kwargs):
        self.module_dict.update(kwargs)

    def _split(self):
        optims = {k: v for k, v in self.module_dict.items() if isinstance(v, torch.optim.Optimizer)}
        modules = {k: v for k, v in self.module_dict.items() if k not in optims}
        return modules, optims

    def save(self, step):
        fname = self.fname_template.format(step)
        print(f'Saving checkpoint into {fname}...')
        modules, optims = self._split()
        atomic_save({**state_dicts(modules), **{k: o.state_dict() for k, o in optims.items()}}, fname)
        return fname

    def load(self, step):
        fname = self.fname_template.format(step)
        print(f'Loading checkpoint from {fname}...')
        modules, optims = self._split()
        if modules:
            load_modules(fname, modules)
        if optims:
            load_optimizers(fname, optims)
        return fname
