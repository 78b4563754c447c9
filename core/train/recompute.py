"""Opt-in activation checkpointing for training (``--grad_checkpoint``): the residual blocks of
the generator, the discriminator and the style encoder keep only their inputs for backward
and run their forward again when backward reaches them (``torch.utils.checkpoint`` with
``use_reentrant=False``).

Bit for bit the same training in fp32: the recomputation runs the same kernels on the same
inputs (the blocks draw no random numbers), and the non-reentrant checkpoint records the
same autograd graph (only where the saved tensors come from changes), so backward runs and
accumulates in the same order. The discriminator's R1 penalty differentiates twice (the
first backward with ``create_graph``): the checkpoint recomputes the block inside that
first backward, which then saves the recomputed tensors for the second one, so the real-
image pass of the discriminator saves memory only between its forward and the R1 backward;
its fake-image passes and the generator's and style encoder's passes save it until the end.

Parameters, state-dict keys and module types are untouched: the blocks' ``forward`` is
replaced on the training instances (checkpoints and DDP see the same modules; the EMA copies,
which never run backward, are left as they are).
"""
from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from core.nn.networks import AdainResBlk, ResBlk

RECOMPUTED = ('generator', 'discriminator', 'style_encoder')


def _recomputed(forward, *args, **kwargs):
    if not torch.is_grad_enabled():  # no_grad passes (fake images for D, sampling): nothing is saved anyway
        return forward(*args, **kwargs)
    return checkpoint(forward, *args, use_reentrant=False, preserve_rng_state=False, **kwargs)


def recompute_blocks(net: nn.Module) -> int:
    """Checkpoint every ResBlk / AdainResBlk of ``net`` (in place); returns how many. Calling it
    again changes nothing."""
    n = 0
    for module in net.modules():
        if isinstance(module, (ResBlk, AdainResBlk)) and 'forward' not in module.__dict__:
            # replaced on the instance, on purpose (see the module's docstring)
            module.forward = functools.partial(_recomputed, type(module).forward.__get__(module))  # type: ignore[method-assign]
            n += 1
    return n


def is_recomputed(net: nn.Module) -> bool:
    return any('forward' in m.__dict__ for m in net.modules() if isinstance(m, (ResBlk, AdainResBlk)))


def recompute_nets(nets: Mapping[str, nn.Module], names: Iterable[str] = RECOMPUTED) -> int:
    """``recompute_blocks`` on the named networks of ``nets`` that are there."""
    return sum(recompute_blocks(nets[name]) for name in names if name in nets)
