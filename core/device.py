"""The one device decision, and everything that follows from it.

Every module that needs a device, a process-group backend or pinned memory asks here,
so ``--device cpu`` on a GPU machine means CPU everywhere (tensors, DataLoader pinning,
gloo under torchrun, metrics networks).
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Literal, TypeAlias

import torch

from core.errors import UserError

__all__ = ['select_device', 'as_device', 'dist_backend', 'pin_memory', 'use_cuda_device', 'local_cuda_index',
           'fused_optimizers', 'configure_training', 'exact_fp32', 'DeviceLike', 'data_workers']

# what the functions here take for a device: a torch.device, a name ('cpu', 'cuda:1', 'auto') or None ('auto')
DeviceLike: TypeAlias = torch.device | str | None


def select_device(name: str | None = 'auto') -> torch.device:
    """'auto' -> cuda when available, else cpu; 'cpu', 'cuda', 'cuda:N', 'mps' checked."""
    name = 'auto' if name is None else str(name).strip()
    if name == 'auto':
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError):
        raise UserError(f"--device '{name}' is not a device; use auto, cpu, cuda or cuda:N") from None
    if dev.type == 'cuda':
        if not torch.cuda.is_available():
            raise UserError(f"--device {name} asked for CUDA but CUDA is not available; "
                            f"use --device cpu (or auto)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UserError(f'--device {name}: only {torch.cuda.device_count()} CUDA device(s); '
                            f'use an index below that')
    elif dev.type == 'mps':
        if not (hasattr(torch.backends, 'mps') and torch.backends.mps.is_available()):
            raise UserError(f'--device {name} is not available here; use --device cpu (or auto)')
    elif dev.type != 'cpu':
        raise UserError(f"--device '{name}' is not supported; use auto, cpu, cuda or cuda:N")
    return dev


def as_device(device: DeviceLike) -> torch.device:
    """A torch.device from a device, a name or None (None: the 'auto' decision)."""
    return device if isinstance(device, torch.device) else select_device(device)


def dist_backend(device: DeviceLike) -> str:
    """Process-group backend for a device: nccl for CUDA, gloo for everything else."""
    return 'nccl' if as_device(device).type == 'cuda' else 'gloo'


def pin_memory(device: DeviceLike) -> bool:
    """Pinned host memory pays only when batches are copied to a CUDA device."""
    return as_device(device).type == 'cuda'


def local_cuda_index(local_rank: int, visible: int) -> int:
    """The CUDA index of this process: LOCAL_RANK when the node's GPUs are all visible, 0 when
    the scheduler shows each process its own GPU (CUDA_VISIBLE_DEVICES of one device)."""
    if visible == 1:
        return 0
    if local_rank >= visible:
        raise UserError(f'LOCAL_RANK {local_rank} but this process sees {visible} CUDA devices: '
                        f'start at most {visible} processes per node (torchrun --nproc_per_node {visible})')
    return local_rank


def use_cuda_device(device: torch.device) -> torch.device:
    """A CUDA ``device`` with its index made explicit, set as the current device; other
    devices as they are."""
    if device.type != 'cuda':
        return device
    device = torch.device('cuda', torch.cuda.current_device() if device.index is None else device.index)
    torch.cuda.set_device(device)
    return device


def fused_optimizers(device: DeviceLike) -> bool:
    """Adam as one fused kernel per step: on CUDA (equal to the default up to float rounding)."""
    return as_device(device).type == 'cuda'


def configure_training(device: DeviceLike) -> None:
    """Backend settings for training on ``device``: cuDNN picks its fastest convolution
    algorithms (the official main.py sets ``cudnn.benchmark`` too; shapes are fixed)."""
    if as_device(device).type == 'cuda':
        torch.backends.cudnn.benchmark = True


@contextlib.contextmanager
def exact_fp32() -> Iterator[None]:
    """Float32 matrix products and convolutions in full precision (no TF32 on Ampere and
    later) inside the block, the previous settings restored after it: FID and LPIPS
    features are defined in float32 (the parity tests check those values)."""
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn


def _cores_per_process() -> int:
    """The cores this process may use (its CPU affinity: a container's or scheduler's limit),
    shared equally among the processes torchrun started on this machine (LOCAL_WORLD_SIZE)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        cores = os.cpu_count() or 1
    return max(cores // max(int(os.environ.get('LOCAL_WORLD_SIZE', '1')), 1), 1)


def data_workers(requested: int | Literal['auto'], share: float = 1.0) -> int:
    """Worker processes of a loader that does ``share`` of this process's image decoding:
    ``requested`` when it is a number (--num_workers N: N for every loader, as upstream); for
    'auto' that share of this process's cores (``_cores_per_process``) less the one its
    training loop runs on, at least one."""
    if requested != 'auto':
        return int(requested)
    return max(round((_cores_per_process() - 1) * share), 1)
