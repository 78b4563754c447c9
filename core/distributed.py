"""Several GPUs (or CPU processes) with DistributedDataParallel, launched by torchrun:

    torchrun --nproc_per_node 4 main.py --mode train --config configs/afhq.yaml

``--batch_size`` stays the global batch (as the official DataParallel run): every rank
draws the same global batch from the same seeded stream and trains on its slice, so the
data order, the checkpoints and exact resume do not depend on the number of processes.
Gradients are averaged across ranks, which equals the single-process batch mean.
Wrappers are added outside the networks, after loading; checkpoints always hold the
unwrapped ``state_dict()`` (rank 0 writes them).
"""
import datetime
import os

import torch
import torch.distributed as dist
from munch import Munch
from torch.nn.parallel import DistributedDataParallel

from core.device import dist_backend
from core.errors import UserError

WRAPPED = ('generator', 'mapping_network', 'style_encoder', 'discriminator')


class Single:
    """The one-process case: every collective is the identity."""
    rank, world_size, is_main = 0, 1, True

    def device(self, device):
        return device

    def wrap(self, nets, device):
        return nets

    def shard(self, inputs):
        return inputs

    def mean(self, logs):
        return logs

    def any(self, flag):
        return flag

    def first_nonzero(self, t):
        """The value of a 0-dim integer tensor (0: none); read back to the host."""
        return int(t)

    def barrier(self):
        pass

    def close(self):
        pass


class Distributed(Single):
    def __init__(self, batch_size, device):
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

    def device(self, device):
        """One process per GPU: rank-local CUDA device."""
        if device.type == 'cuda':
            device = torch.device('cuda', self.local_rank)
            torch.cuda.set_device(device)
        return device

    def wrap(self, nets, device):
        """DDP wrappers around the trained networks (FAN stays as it is: it is not trained)."""
        ids = [device.index] if device.type == 'cuda' else None
        wrapped = Munch(nets)
        for name in WRAPPED:
            wrapped[name] = DistributedDataParallel(nets[name], device_ids=ids)
        return wrapped

    def shard(self, inputs):
        """This rank's slice of the global batch."""
        def piece(t):
            n = t.size(0) // self.world_size
            return t[self.rank * n:(self.rank + 1) * n]
        return Munch({k: piece(v) for k, v in inputs.items()})

    def mean(self, logs):
        """Losses averaged over ranks (one collective), for logging steps only (it syncs)."""
        keys = list(logs)
        values = torch.stack([torch.as_tensor(logs[k], dtype=torch.float32) for k in keys]).to(self._comm_device())
        dist.all_reduce(values)
        values /= self.world_size
        return Munch(zip(keys, values.cpu()))

    def any(self, flag):
        """True on every rank when it is true on one (e.g. a Ctrl-C seen by one process)."""
        t = torch.tensor([int(flag)], device=self._comm_device())
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def first_nonzero(self, t):
        """Smallest non-zero value of a 0-dim integer tensor over ranks (0 when it is 0 on
        every rank): the first iteration that went non-finite anywhere. One collective."""
        none = torch.iinfo(torch.long).max
        v = torch.where(t == 0, none, t).reshape(1).to(self._comm_device())
        dist.all_reduce(v, op=dist.ReduceOp.MIN)
        v = int(v.item())
        return 0 if v == none else v

    def barrier(self):
        dist.barrier()

    def close(self):
        if dist.is_initialized():
            dist.destroy_process_group()

    def _comm_device(self):
        return torch.device('cuda', self.local_rank) if dist.get_backend() == 'nccl' else torch.device('cpu')


def from_env(batch_size, device):
    """Distributed when launched by torchrun (WORLD_SIZE > 1), else Single."""
    if int(os.environ.get('WORLD_SIZE', '1')) > 1:
        return Distributed(batch_size, device)
    return Single()
