"""The one device decision, and everything that follows from it.

Every module that needs a device, a process-group backend or pinned memory asks here,
so ``--device cpu`` on a GPU machine means CPU everywhere (tensors, DataLoader pinning,
gloo under torchrun, metrics networks).
"""
import torch

from core.errors import UserError

__all__ = ['select_device', 'as_device', 'dist_backend', 'pin_memory']


def select_device(name='auto'):
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


def as_device(device):
    """A torch.device from a device, a name or None (None: the 'auto' decision)."""
    return device if isinstance(device, torch.device) else select_device(device)


def dist_backend(device):
    """Process-group backend for a device: nccl for CUDA, gloo for everything else."""
    return 'nccl' if as_device(device).type == 'cuda' else 'gloo'


def pin_memory(device):
    """Pinned host memory pays only when batches are copied to a CUDA device."""
    return as_device(device).type == 'cuda'
