"""Several GPUs (or CPU processes) with DistributedDataParallel, launched by torchrun:

    torchrun --nproc_per_node 4 main.py --mode train --config configs/afhq.yaml

``--batch_size`` stays the global batch (as the official DataParallel run): every rank
follows the same seeded plan of global batches and reads and trains on its rows of each
(``core.datasets.pipeline.InputFetcher``), so the data order, the checkpoints and exact resume do not
depend on the number of processes.
Gradients are averaged across ranks, which equals the single-process batch mean.
Wrappers are added outside the networks, after loading; checkpoints always hold the
unwrapped ``state_dict()`` (rank 0 writes them).
"""
from __future__ import annotations

import contextlib
import datetime
import inspect
import os
from collections.abc import Iterable
from typing import Any, List, Optional, Tuple

import torch
import torch.distributed as dist
from munch import Munch
from torch.nn.parallel import DistributedDataParallel

from core.device import DeviceLike, dist_backend, local_cuda_index, use_cuda_device
from core.errors import UserError
from core.nn.networks import TRAINED, unused_parameter_names
from core.train.losses import eager

# buffers are not broadcast before each forward (torch 2.14 renamed the option)
_NO_BUFFER_SYNC: dict[str, Any] = (dict(forward_sync_buffers=False)
                                   if 'forward_sync_buffers' in inspect.signature(DistributedDataParallel).parameters
                                   else dict(broadcast_buffers=False))


class Single:
    """The one-process case: every collective is the identity."""
    rank, world_size, is_main = 0, 1, True

    def device(self, device: torch.device) -> torch.device:
        """The process's device; a CUDA one becomes the current device, so that the pin-memory
        thread and every implicit ``'cuda'`` use it and not GPU 0."""
        return use_cuda_device(device)

    def wrap(self, nets: Munch, device: torch.device) -> Munch:
        return nets

    def mean(self, logs: Munch) -> Munch:
        return logs

    def agree(self, failed: bool, signum: int) -> Tuple[bool, int]:
        """(whether any rank ``failed``, the largest stop signal number seen by any rank), on
        the host: every rank takes the same decision in the same iteration without syncing
        the device."""
        return failed, signum

    def first_message(self, message: Optional[str]) -> str:
        """The message of the lowest rank that has one (call on every rank, after ``agree``
        said one failed)."""
        assert message is not None
        return message

    def first_nonzero(self, t: torch.Tensor) -> int:
        """The value of a 0-dim integer tensor (0: none); read back to the host."""
        return int(t)

    def no_sync(self, nets: Munch, names: Iterable[str]) -> contextlib.AbstractContextManager[object]:
        """Inside it, backward passes leave the gradients of ``nets[names]`` on this process
        (no all-reduce): for networks that the step does not update."""
        return contextlib.nullcontext()

    def close(self) -> None:
        pass


class Distributed(Single):
    def __init__(self, batch_size: int, device: DeviceLike) -> None:
        self.rank = int(os.environ['RANK'])
        self.world_size = int(os.environ['WORLD_SIZE'])
        self.local_rank = int(os.environ.get('LOCAL_RANK', self.rank))
        self.is_main = self.rank == 0
        if batch_size % self.world_size:
            raise UserError(f'--batch_size {batch_size} must be divisible by the number of processes '
                            f'({self.world_size}): it is the global batch, split across them')
        backend = dist_backend(device)  # follows the device decision: --device cpu uses gloo on a GPU machine
        # evaluation runs on rank 0 while the others wait: allow it hours, not minutes
        dist.init_process_group(backend, timeout=datetime.timedelta(hours=3))
        # host-side agreements (a failed read, a stop signal) each iteration: over gloo, so that
        # asking never waits for the device (under nccl a CPU group of its own)
        group = dist.new_group(backend='gloo') if backend != 'gloo' else None
        self._host_group = group if isinstance(group, dist.ProcessGroup) else None

    def device(self, device: torch.device) -> torch.device:
        """One process per GPU: the rank-local CUDA device (see ``local_cuda_index``)."""
        if device.type == 'cuda':
            device = use_cuda_device(torch.device('cuda', local_cuda_index(self.local_rank, torch.cuda.device_count())))
        return device

    def wrap(self, nets: Munch, device: torch.device) -> Munch:
        """DDP wrappers around the trained networks (FAN stays as it is: it is not trained).
        Parameters a forward never uses (the generator's ``conv1x1`` with w_hpf > 0) are
        ignored, else DDP would wait for their gradients and fail on the next forward;
        buffers are constants (the high-pass kernel), so none is broadcast per forward."""
        ids = [device.index] if device.type == 'cuda' else None
        wrapped = Munch(nets)
        for name in TRAINED:
            DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(
                nets[name], unused_parameter_names(nets[name]))
            wrapped[name] = DistributedDataParallel(nets[name], device_ids=ids, **_NO_BUFFER_SYNC)
        return wrapped

    def no_sync(self, nets: Munch, names: Iterable[str]) -> contextlib.AbstractContextManager[object]:
        stack = contextlib.ExitStack()
        for name in names:
            net = eager(nets[name])  # under torch.compile: the DDP wrapper
            if isinstance(net, DistributedDataParallel):
                stack.enter_context(net.no_sync())
        return stack

    def mean(self, logs: Munch) -> Munch:
        """Losses averaged over ranks (one collective), for logging steps only (it syncs)."""
        keys = list(logs)
        values = stack_on(logs.values(), self._comm_device())
        dist.all_reduce(values)
        values /= self.world_size
        return Munch(zip(keys, values.cpu()))

    def agree(self, failed: bool, signum: int) -> Tuple[bool, int]:
        t = torch.tensor([int(failed), int(signum)])
        dist.all_reduce(t, op=dist.ReduceOp.MAX, group=self._host_group)
        return bool(t[0]), int(t[1])

    def first_message(self, message: Optional[str]) -> str:
        messages: List[Optional[str]] = [None] * self.world_size
        dist.all_gather_object(messages, message, group=self._host_group)
        return next(m for m in messages if m is not None)

    def first_nonzero(self, t: torch.Tensor) -> int:
        """Smallest non-zero value of a 0-dim integer tensor over ranks (0 when it is 0 on
        every rank): the first iteration that went non-finite anywhere. One collective."""
        none = torch.iinfo(torch.long).max
        v = torch.where(t == 0, none, t).reshape(1).to(self._comm_device())
        dist.all_reduce(v, op=dist.ReduceOp.MIN)
        first = int(v.item())
        return 0 if first == none else first

    def close(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()

    def _comm_device(self) -> torch.device:
        # nccl: the current device, which ``device`` set (not LOCAL_RANK: see local_cuda_index)
        return torch.device('cuda', torch.cuda.current_device()) if dist.get_backend() == 'nccl' else torch.device('cpu')


def stack_on(values: Iterable[torch.Tensor | float], device: torch.device) -> torch.Tensor:
    """Losses (tensors on any device, or Python numbers) as one float32 vector on ``device``,
    each moved there before stacking (stacking a CPU number with CUDA tensors fails)."""
    return torch.stack([torch.as_tensor(v, dtype=torch.float32, device=device).reshape(()) for v in values])


def launched_by_torchrun() -> bool:
    """True in a worker that torchrun (torch.distributed.run) started, even a single one."""
    return 'TORCHELASTIC_RUN_ID' in os.environ or int(os.environ.get('WORLD_SIZE', '1')) > 1


def from_env(batch_size: int, device: DeviceLike) -> Single:
    """Distributed when launched by torchrun (WORLD_SIZE > 1), else Single."""
    if int(os.environ.get('WORLD_SIZE', '1')) > 1:
        return Distributed(batch_size, device)
    return Single()
