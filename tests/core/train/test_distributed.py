"""core/train/distributed.py: DDP wrappers, gradient sync, the averaged logs and the single-process
device, reproduced on CPU (a one-process gloo group; fake CUDA tensors and recorded calls
for what needs a GPU). GPU paths: docs/first_gpu_run.md items 1, 2, 9 and 11; the 2-process
runs are in tests/e2e/test_distributed.py."""
import copy

import pytest
import torch
import torch.distributed as dist
from helpers import tiny_nets
from munch import Munch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode

from core.errors import UserError
from core.nn.networks import TRAINED
from core.train.distributed import Distributed, Single, stack_on
from core.train.step import TrainConfig, build_optimizers, train_step


def tiny_inputs(batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    img = lambda: torch.randn(batch, 3, 32, 32, generator=g)
    return Munch(x_src=img(), y_src=torch.arange(batch) % 2, x_ref=img(), x_ref2=img(),
                 y_ref=(torch.arange(batch) + 1) % 2, z_trg=torch.randn(batch, 8, generator=g),
                 z_trg2=torch.randn(batch, 8, generator=g))


# ------------------------------------------------------------------ DDP (items 1, 11)
@pytest.fixture
def one_process_group(tmp_path):
    """A real gloo process group of one process: DDP's reducer runs as it does across GPUs."""
    dist.init_process_group('gloo', store=dist.FileStore(str(tmp_path / 'store'), 1), rank=0, world_size=1)
    group = Distributed.__new__(Distributed)  # its collectives, without torchrun's environment
    group.rank, group.world_size, group.local_rank, group.is_main = 0, 1, 0, True
    yield group
    dist.destroy_process_group()


@pytest.mark.parametrize('w_hpf', [0, 1])
def test_ddp_trains_every_configuration_and_syncs_only_what_a_step_updates(one_process_group, w_hpf):
    """Two DDP iterations run for both w_hpf (w_hpf 1 raised 'Expected to have finished
    reduction' in the second forward before the unused shortcuts were ignored), equal to
    the unwrapped step bit for bit, and gradients are all-reduced only for the networks a
    backward updates: D in the two D steps, G, F and E in the latent generator step, G
    alone in the reference step."""
    nets, nets_ema, args = tiny_nets(w_hpf)
    twin, twin_ema = copy.deepcopy(nets), copy.deepcopy(nets_ema)
    if w_hpf:
        twin_ema.fan = twin.fan
    hp = TrainConfig.from_args(args)
    optims, twin_optims = build_optimizers(nets, hp), build_optimizers(twin, hp)
    wrapped = one_process_group.wrap(nets, torch.device('cpu'))
    synced = []
    for name in TRAINED:
        def hook(state, bucket, name=name):
            synced.append(name)
            fut = torch.futures.Future()
            fut.set_result(bucket.buffer())
            return fut
        wrapped[name].register_comm_hook(None, hook)
    for step in range(2):
        synced.clear()
        train_step(wrapped, nets_ema, optims, tiny_inputs(seed=step), hp, step, no_sync=one_process_group.no_sync)
        train_step(twin, twin_ema, twin_optims, tiny_inputs(seed=step), hp, step)
        # G, E and D fit one bucket each (the mapping network's 512-wide layers take several):
        # D synced in the two D steps only, E in the latent step only, G in both G steps
        assert [synced.count(n) for n in ('discriminator', 'style_encoder', 'generator')] == [2, 1, 2]
        assert 'mapping_network' in synced
    for name in TRAINED:
        for (key, a), b in zip(nets[name].state_dict().items(), twin[name].state_dict().values()):
            assert torch.equal(a, b), f'{name}.{key}'


# ------------------------------------------------------------------ devices (items 2, 9)
class StrictDevices(TorchDispatchMode):
    """Fails an operation whose tensor arguments lie on different devices, CPU scalars
    included (CUDA's stack and cat refuse them); explicit copies are the exception."""
    TRANSFERS = {torch.ops.aten._to_copy.default, torch.ops.aten.copy_.default}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func not in self.TRANSFERS:
            found = set()

            def visit(a):
                if isinstance(a, torch.Tensor):
                    found.add(a.device.type)
                elif isinstance(a, (list, tuple)):
                    for b in a:
                        visit(b)
            for a in (*args, *kwargs.values()):
                visit(a)
            assert len(found) <= 1, f'{func} mixes devices {sorted(found)}'
        return func(*args, **kwargs)


def test_strict_devices_catches_a_cpu_number_stacked_with_cuda_tensors():
    with FakeTensorMode(), StrictDevices():
        loss = torch.ones((), device='cuda')
        with pytest.raises(AssertionError, match='mixes devices'):
            torch.stack([loss, torch.as_tensor(0.5)])


def test_logged_losses_are_averaged_on_the_communication_device(monkeypatch):
    """``Distributed.mean`` on CUDA losses and the Python float lambda_ds: every value is
    moved to the NCCL device before stacking (it used to stack a CPU tensor with them)."""
    reduced = []
    monkeypatch.setattr(dist, 'all_reduce', lambda t, **kw: reduced.append(t))
    group = Distributed.__new__(Distributed)
    group.world_size = 2
    with FakeTensorMode(), StrictDevices():
        monkeypatch.setattr(Distributed, '_comm_device', lambda self: torch.device('cuda', 0))
        logs = Munch({'D/latent_real': torch.ones((), device='cuda'), 'G/lambda_ds': 0.5})
        group.mean(logs)
        assert reduced[0].device == torch.device('cuda', 0) and reduced[0].shape == (2,)
        assert stack_on([torch.ones((), device='cuda'), 1], torch.device('cuda', 0)).device.type == 'cuda'


def test_single_process_cuda_device_becomes_the_current_device(monkeypatch):
    """--device cuda:1 in one process: set_device(cuda:1), so the pin-memory thread and every
    implicit 'cuda' use it; plain 'cuda' is made explicit as the current device."""
    calls = []
    monkeypatch.setattr(torch.cuda, 'set_device', lambda d: calls.append(d))
    monkeypatch.setattr(torch.cuda, 'current_device', lambda: 0)
    assert Single().device(torch.device('cuda', 1)) == torch.device('cuda', 1)
    assert Single().device(torch.device('cuda')) == torch.device('cuda', 0)
    assert calls == [torch.device('cuda', 1), torch.device('cuda', 0)]
    assert Single().device(torch.device('cpu')) == torch.device('cpu') and len(calls) == 2


# ------------------------------------------------------------------ launch checks
def test_batch_not_divisible_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    from core.train.distributed import from_env
    monkeypatch.setenv('WORLD_SIZE', '3')
    monkeypatch.setenv('RANK', '0')
    with pytest.raises(UserError, match='--batch_size 8 must be divisible by the number of processes'):
        from_env(8, 'cpu')
