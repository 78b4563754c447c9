"""The code paths that only a GPU run (or several processes) takes, reproduced on CPU where
they can be: DDP with parameters a forward never uses (w_hpf > 0), gradients kept local for
the networks a step does not update, resume into fused Adam and into another memory
layout, R1 under a GradScaler, stop signals under torchrun, FAN masks under autocast, TF32
during evaluation. What needs a real CUDA device (tensors built on the wrong device,
``set_device``) is checked on fake CUDA tensors (``FakeTensorMode``) and recorded calls.
"""
import copy
import signal

import pytest
import torch
import torch.distributed as dist
import torch.nn as nn
from munch import Munch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode

from core import device as device_mod
from core.ckpt import atomic_save, load_optimizers, to_host
from core.config import with_defaults
from core.distributed import Distributed, Single, stack_on
from core.losses import r1_reg
from core.model import build_model
from core.networks import Generator, unused_parameter_names
from core.training import _StopFlag
from core.networks import TRAINED
from core.trainer import TrainConfig, build_optimizers, init_weights, match_optimizer_layout, train_step
from core.fan import fan_masks
from tiny_run import sparse_heatmaps
from weights_by_name import fill_by_name


def tiny_args(w_hpf, **extra):
    return with_defaults(Munch(img_size=32, dim_in=8, max_conv_dim=32, style_dim=16, latent_dim=8, num_domains=2,
                               w_hpf=w_hpf, wing_path=None, **extra))


def tiny_nets(w_hpf, seed=0):
    args = tiny_args(w_hpf)
    torch.manual_seed(seed)
    nets, nets_ema = build_model(args)
    init_weights(nets)
    if w_hpf:
        sparse_heatmaps(fill_by_name(nets.fan))
    return nets, nets_ema, args


def tiny_inputs(batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    img = lambda: torch.randn(batch, 3, 32, 32, generator=g)
    return Munch(x_src=img(), y_src=torch.arange(batch) % 2, x_ref=img(), x_ref2=img(),
                 y_ref=(torch.arange(batch) + 1) % 2, z_trg=torch.randn(batch, 8, generator=g),
                 z_trg2=torch.randn(batch, 8, generator=g))


# ------------------------------------------------------------------ DDP (item 1, 11)
@pytest.mark.parametrize('w_hpf', [0, 1])
def test_unused_parameters_are_exactly_those_without_gradient(w_hpf):
    """What the generator declares unused is what a forward and backward leave without a
    gradient (w_hpf 1: the decoder's learned shortcuts; w_hpf 0: nothing)."""
    g = Generator(32, 16, 32, w_hpf, dim_in=8)
    x = torch.randn(2, 3, 32, 32)
    masks = (torch.rand(2, 1, 32, 32), torch.rand(2, 1, 32, 32)) if w_hpf else None
    g(x, torch.randn(2, 16), masks=masks).sum().backward()
    no_grad = sorted(n for n, p in g.named_parameters() if p.grad is None)
    assert sorted(unused_parameter_names(g)) == no_grad
    assert bool(no_grad) == bool(w_hpf)


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


def test_checkpoints_hold_cpu_tensors():
    """Saved state (networks, Adam moments, RNG) is moved to the CPU first, so a plain
    torch.load works on a machine without a GPU; a state_dict keeps its version metadata."""
    sd = nn.Linear(2, 2).state_dict()
    with FakeTensorMode() as mode:
        state = {'net': {k: mode.from_tensor(v).to('cuda') for k, v in sd.items()},
                 'rng': [torch.zeros(3, device='cuda')], 'step': 7}
        state['net'] = type(sd)(state['net'])
        state['net']._metadata = sd._metadata
        host = to_host(state)
    assert all(t.device.type == 'cpu' for t in (*host['net'].values(), *host['rng']))
    assert host['step'] == 7 and host['net']._metadata == sd._metadata


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


def test_local_rank_maps_to_a_visible_gpu():
    assert device_mod.local_cuda_index(3, 8) == 3
    assert device_mod.local_cuda_index(3, 1) == 0  # the scheduler shows each process its own GPU
    with pytest.raises(device_mod.UserError, match='nproc_per_node 2'):
        device_mod.local_cuda_index(2, 2)


def test_cudnn_benchmark_for_cuda_training_only(monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, 'benchmark', False)
    device_mod.configure_training(torch.device('cpu'))
    assert torch.backends.cudnn.benchmark is False
    device_mod.configure_training(torch.device('cuda', 0))
    assert torch.backends.cudnn.benchmark is True


# ------------------------------------------------------------------ resume into fused Adam (items 3, 4)
def _adam_state_after_one_step(model):
    optim = torch.optim.Adam(model.parameters(), lr=1e-2)
    model(torch.randn(2, 3, 8, 8)).pow(2).sum().backward()
    optim.step()
    return optim


def test_resume_keeps_fused_adam_and_the_grad_scaler_steps(tmp_path):
    """A checkpoint written by an unfused Adam (CPU run, official code) no longer makes the
    fused optimiser unfused; with it, the GradScaler's step (fp16) runs."""
    torch.manual_seed(0)
    model = nn.Conv2d(3, 4, 3)
    atomic_save({'discriminator': _adam_state_after_one_step(model).state_dict()}, str(tmp_path / 'optims.ckpt'))
    fused = torch.optim.Adam(model.parameters(), lr=1e-2, fused=True)
    load_optimizers(str(tmp_path / 'optims.ckpt'), {'discriminator': fused})
    assert fused.param_groups[0]['fused'] is True
    assert fused.param_groups[0]['lr'] == 1e-2 and fused.state[model.weight]['step'] == 1  # the file's state
    scaler = torch.amp.GradScaler('cpu', init_scale=2.0 ** 10)
    with torch.autocast('cpu', dtype=torch.float16):
        loss = model(torch.randn(2, 3, 8, 8)).float().pow(2).sum()
    scaler.scale(loss).backward()
    scaler.step(fused)  # an unfused Adam asserts 'Expected grad_scale and found_inf to be None'
    assert fused.state[model.weight]['step'] == 2


def test_moments_follow_their_parameters_into_channels_last():
    """Resumed into channels_last parameters, Adam's contiguous moments are converted: the
    fused CPU kernel, which walks memory as it lies, then gives the same update as in the
    contiguous layout (without the conversion it was off by about lr)."""
    torch.manual_seed(0)
    model = nn.Conv2d(3, 4, 3)
    saved = copy.deepcopy(_adam_state_after_one_step(model).state_dict())
    x = torch.randn(2, 3, 8, 8)
    weights = {}
    for layout in (torch.contiguous_format, torch.channels_last):
        m = copy.deepcopy(model).to(memory_format=layout)
        optim = torch.optim.Adam(m.parameters(), lr=1e-2, fused=True)
        optim.load_state_dict(copy.deepcopy(saved))  # loading keeps the tensors, which step() changes
        optim.param_groups[0]['fused'] = True
        match_optimizer_layout({'m': optim})
        assert optim.state[m.weight]['exp_avg'].stride() == m.weight.stride()
        m(x.contiguous(memory_format=layout)).pow(2).sum().backward()
        optim.step()
        weights[layout] = m.weight.detach().clone()
    torch.testing.assert_close(weights[torch.channels_last], weights[torch.contiguous_format], rtol=1e-6, atol=1e-7)


# ------------------------------------------------------------------ R1 under fp16 (item 5)
def test_r1_under_a_grad_scaler_keeps_small_gradients():
    """A discriminator whose input gradients are 1e-8 (below fp16's smallest number): the
    unscaled penalty underflows to 0 in the fp16 activations; taken of the scaled output
    and unscaled in float32, it equals the float32 penalty."""
    x = torch.randn(4, 3, 8, 8, requires_grad=True)
    weight = torch.full((3, 8, 8), 1e-8)

    def d_out(half):
        h = x.half() if half else x
        return (h * weight.to(h.dtype)).flatten(1).sum(1)

    exact = r1_reg(d_out(False), x).item()
    assert exact == pytest.approx(0.5 * 192 * 1e-16, rel=1e-4)
    assert r1_reg(d_out(True), x).item() == 0.0  # what fp16 gave before
    scale = torch.tensor(2.0 ** 10)
    assert r1_reg(d_out(True), x, scale=scale).item() == pytest.approx(exact, rel=1e-2)


# ------------------------------------------------------------------ stop signals (item 6)
def test_second_ctrl_c_interrupts_one_process_but_not_torchrun_workers():
    with _StopFlag() as stop:
        stop._handle(signal.SIGINT, None)
        assert stop.signum == signal.SIGINT
        try:  # (pytest.raises would let pytest see the KeyboardInterrupt as its own)
            stop._handle(signal.SIGINT, None)
            interrupted = False
        except KeyboardInterrupt:
            interrupted = True
        assert interrupted
    with _StopFlag(launched_by_torchrun=True) as stop:
        stop._handle(signal.SIGINT, None)  # from the terminal
        stop._handle(signal.SIGINT, None)  # the same Ctrl-C passed on by torchrun
        assert stop.signum == signal.SIGINT
    with _StopFlag() as stop:
        stop._handle(signal.SIGTERM, None)
        stop._handle(signal.SIGTERM, None)  # schedulers may resend: never an interrupt
        stop._handle(signal.SIGUSR1, None)
        assert stop.signum == signal.SIGTERM


# ------------------------------------------------------------------ FAN under autocast (item 7)
@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
def test_fan_masks_are_float32_under_autocast(dtype):
    nets, _, args = tiny_nets(1)
    x = torch.rand(2, 3, 256, 256) * 2 - 1
    ref = fan_masks(nets, 1, x)
    with torch.autocast('cpu', dtype=dtype):
        got = fan_masks(nets, 1, x)
    for a, b in zip(ref, got):
        assert b.dtype == torch.float32 and torch.equal(a, b)
    assert 0 < ref[0].mean() < 1  # not a constant mask


# ------------------------------------------------------------------ TF32 in evaluation (item 8)
def test_fid_and_lpips_features_run_without_tf32(monkeypatch):
    from torchvision import models

    from metrics.fid import InceptionPool3
    from metrics.lpips import LPIPS
    monkeypatch.setattr(torch.backends.cudnn, 'allow_tf32', True)
    monkeypatch.setattr(torch.backends.cuda.matmul, 'allow_tf32', True)
    seen = []
    record = lambda module, inputs: seen.append((torch.backends.cudnn.allow_tf32,
                                                 torch.backends.cuda.matmul.allow_tf32))
    inception = InceptionPool3(models.inception_v3(weights=None, aux_logits=True, init_weights=False)).eval()
    inception.block4.register_forward_pre_hook(record)
    lpips = LPIPS(features=models.alexnet(weights=None).features).eval()
    lpips.net.register_forward_pre_hook(record)
    lpips.lins[0].register_forward_pre_hook(record)
    with torch.no_grad():
        inception(torch.zeros(1, 3, 75, 75))
        lpips(torch.zeros(1, 3, 64, 64), torch.ones(1, 3, 64, 64))
    assert seen == [(False, False)] * 4  # Inception, the AlexNet trunk on x and on y, a linear head
    assert torch.backends.cudnn.allow_tf32 and torch.backends.cuda.matmul.allow_tf32  # restored after
