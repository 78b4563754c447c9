"""Speed switches (--amp, --channels_last, --compile) and the always-on speed-ups
(fused EMA, fused Adam, the device-side finite check) keep the maths."""
import copy
import os

import pytest
import torch
from munch import Munch

import main as cli
from core import training as training_mod
from core.config import parse_args, with_defaults
from core.model import build_model
from core.solver import compute_d_loss, compute_g_loss
from core.trainer import (TrainConfig, autocast, build_optimizers, ema_update, init_weights, make_scaler, moving_average,
                          prepare_inputs, speed_nets, train_step)
from helpers import make_dataset, run_args

pytestmark = pytest.mark.usefixtures('one_thread')  # tiny tensors: one thread (conftest)

SMALL = dict(img_size=32, dim_in=16, max_conv_dim=64, style_dim=16, latent_dim=8, num_domains=2,
             hidden_dim=64, w_hpf=0, lambda_reg=1., lambda_sty=1., lambda_ds=1., lambda_cyc=1.,
             ds_iter=10, lr=1e-4, f_lr=1e-6, beta1=0., beta2=0.99, weight_decay=1e-4, ema_beta=0.999,
             wing_path=None)


def small_run(seed=0, **switches):
    args = with_defaults(Munch(SMALL, **switches))
    torch.manual_seed(seed)
    nets, nets_ema = build_model(args)
    init_weights(nets)
    optims = build_optimizers(nets, TrainConfig.from_args(args))
    g = torch.Generator().manual_seed(seed + 1)
    n = 4
    inputs = Munch(x_src=torch.rand(n, 3, 32, 32, generator=g) * 2 - 1, y_src=torch.tensor([0, 1, 0, 1]),
                   x_ref=torch.rand(n, 3, 32, 32, generator=g) * 2 - 1,
                   x_ref2=torch.rand(n, 3, 32, 32, generator=g) * 2 - 1, y_ref=torch.tensor([1, 0, 1, 0]),
                   z_trg=torch.randn(n, 8, generator=g), z_trg2=torch.randn(n, 8, generator=g))
    return args, nets, nets_ema, optims, inputs


def first_losses(**switches):
    """The first iteration's losses (D with R1, G with all its terms) on the initial
    weights, before any optimiser step: after a step, Adam (beta1 = 0) moves every weight
    by about lr x sign(gradient), so rounding-sized gradient changes flip whole steps."""
    args, nets, _, _, inputs = small_run(**switches)
    hp = TrainConfig.from_args(args)
    nets, x = speed_nets(nets, hp), prepare_inputs(inputs, hp)
    with autocast(hp, 'cpu'):
        d_loss, d_parts = compute_d_loss(nets, args, x.x_src, x.y_src, x.y_ref, z_trg=x.z_trg)
        g_loss, g_parts = compute_g_loss(nets, args, x.x_src, x.y_src, x.y_ref, z_trgs=[x.z_trg, x.z_trg2])
    assert d_loss.dtype == g_loss.dtype == torch.float32  # reduced in float32 under --amp too
    return dict(d_loss=float(d_loss.detach()), g_loss=float(g_loss.detach()), **{'D/' + k: float(v) for k, v in d_parts.items()},
                **{'G/' + k: float(v) for k, v in g_parts.items()})


def train_logs(steps=2, **switches):
    args, nets, nets_ema, optims, inputs = small_run(**switches)
    hp = TrainConfig.from_args(args)
    train_nets, scaler = speed_nets(nets, hp), make_scaler(hp, 'cpu')
    for step in range(steps):
        logs = train_step(train_nets, nets_ema, optims, prepare_inputs(inputs, hp), hp, step, scaler=scaler)
    return {k: float(v) for k, v in logs.items()}


def test_ema_update_equals_moving_average_bit_for_bit():
    args, nets, nets_ema, _, _ = small_run()
    for net in nets.values():  # online weights away from the EMA copies
        for p in net.parameters():
            p.data.add_(torch.randn_like(p) * 0.1)
    old = copy.deepcopy(nets_ema)
    for name in ('generator', 'mapping_network', 'style_encoder'):
        moving_average(nets[name], old[name], beta=0.999)
    ema_update(nets, nets_ema, beta=0.999)
    for name in ('generator', 'mapping_network', 'style_encoder'):
        a, b = old[name].state_dict(), nets_ema[name].state_dict()
        changed = any(not torch.equal(a[k], nets[name].state_dict()[k]) for k in a)
        assert changed
        for key in a:
            assert torch.equal(a[key], b[key]), f'{name}.{key}'


def test_fused_adam_equals_unfused_up_to_rounding():
    """torch 2.14 has a fused Adam for CPU too, so the CUDA-only switch is checked here:
    the same three steps, fused and not, agree to float32 rounding."""
    args, nets, _, _, _ = small_run()
    twin = copy.deepcopy(nets)
    hp = TrainConfig.from_args(args)
    plain, fused = build_optimizers(nets, hp), build_optimizers(twin, hp, fused=True)
    assert fused.generator.param_groups[0]['fused'] and not plain.generator.param_groups[0]['fused']
    g = torch.Generator().manual_seed(3)
    for _ in range(3):
        for a, b in zip(nets.generator.parameters(), twin.generator.parameters()):
            grad = torch.randn(a.shape, generator=g)
            a.grad, b.grad = grad.clone(), grad.clone()
        plain.generator.step()
        fused.generator.step()
    moved = 0.
    for a, b, c in zip(nets.generator.parameters(), twin.generator.parameters(),
                       small_run()[1].generator.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
        moved = max(moved, (a - c).abs().max().item())
    assert moved > 1e-4  # the steps did move the weights


def test_bf16_channels_last_first_losses_close_to_fp32():
    """Tolerance 3 % relative (+ 1e-3 absolute for losses near 0): bf16 keeps 8 mantissa
    bits, a relative rounding of 2**-8 = 0.4 % per operation; the losses reduce many such
    products and were measured 0.03-0.7 % off fp32 here, so 3 % is about eight bf16
    roundings and still fails for a real mistake (a wrong loss term moves a loss by > 10 %)."""
    ref = first_losses()
    got = first_losses(amp='bf16', channels_last=True)
    assert ref.keys() == got.keys()
    for key in ref:
        assert got[key] == pytest.approx(ref[key], rel=0.03, abs=1e-3), key
    assert got != ref  # bf16 did change the numbers (the switch is on)


def test_channels_last_alone_matches_fp32_closely():
    ref, got = first_losses(), first_losses(channels_last=True)
    for key in ref:
        assert got[key] == pytest.approx(ref[key], rel=1e-5, abs=1e-7), key


def test_fp16_first_losses_close_to_fp32():
    ref, got = first_losses(), first_losses(amp='fp16')
    for key in ref:  # fp16 keeps 11 mantissa bits (0.05 % per rounding; measured <= 0.23 % off)
        assert got[key] == pytest.approx(ref[key], rel=0.01, abs=1e-3), key


@pytest.mark.parametrize('amp', ['bf16', 'fp16'])
def test_two_training_steps_with_amp_stay_finite_and_close(amp):
    """Two full iterations (four optimiser steps each; fp16 through the GradScaler): finite,
    and within a loose 25 % of fp32 (after a step Adam amplifies rounding, see first_losses)."""
    ref, got = train_logs(amp=amp, channels_last=True), train_logs()
    for key in ref:
        assert torch.isfinite(torch.tensor(got[key])), key
        assert got[key] == pytest.approx(ref[key], rel=0.25, abs=0.05), key


def test_switches_off_change_nothing():
    """The defaults (no switches given) run the exact fp32 eager step."""
    args = parse_args(['--mode', 'train'])
    assert (args.amp, args.channels_last, args.compile) == ('none', False, False)
    nets = Munch(a=torch.nn.Conv2d(1, 1, 1))
    assert speed_nets(nets, with_defaults(Munch(amp='none'))) is nets
    assert make_scaler(TrainConfig.from_args(with_defaults(Munch(amp='bf16'))), 'cpu') is None


def test_bad_amp_value_is_a_one_line_error(capsys):
    assert cli.main(['--mode', 'train', '--amp', 'fp8']) == 2
    assert 'fp8' in capsys.readouterr().err


@pytest.mark.slow
def test_short_run_with_bf16_channels_last_stays_finite(tmp_path):
    data = make_dataset(tmp_path / 'data', n=4)
    assert cli.main(run_args(data, tmp_path / 'run', '--total_iters', '20', '--print_every', '5',
                             '--sample_every', '0', '--save_every', '0', '--device', 'cpu',
                             '--amp', 'bf16', '--channels_last')) == 0
    saved = torch.load(tmp_path / 'run' / 'ckpt' / '000020_nets.ckpt', weights_only=True)
    for name, state in saved.items():
        for key, value in state.items():
            assert torch.isfinite(value).all(), f'{name}.{key}'


@pytest.mark.slow
def test_divergence_found_on_a_later_logging_step_names_the_first_bad_iteration(tmp_path, monkeypatch, capsys):
    """Losses are read back only every --print_every and before saving: a NaN at iteration
    3 is seen at iteration 5 (log) yet reported as iteration 3, and no checkpoint after the
    last good one (iteration 2) is written."""
    real_step = training_mod.train_step

    def diverge_at_three(nets, nets_ema, optims, inputs, args, step, **kw):
        logs = real_step(nets, nets_ema, optims, inputs, args, step, **kw)
        if step == 2:
            logs['D/ref_fake'] = logs['D/ref_fake'] * float('inf')
        return logs

    monkeypatch.setattr(training_mod, 'train_step', diverge_at_three)
    data = make_dataset(tmp_path / 'data', n=4)
    rc = cli.main(run_args(data, tmp_path, '--total_iters', '10', '--print_every', '5', '--sample_every', '0',
                           '--save_every', '2', '--device', 'cpu'))
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert err[-1].startswith('error: non-finite loss at iteration 3 (D/ref_fake=inf)'), err[-1]
    assert 'last good checkpoint is iteration 2' in err[-1]
    written = sorted(f for f in os.listdir(tmp_path / 'ckpt') if f.endswith('.ckpt'))
    assert written[-1] == '000002_state.ckpt'


@pytest.mark.slow
def test_huge_lr_diverges_without_writing_nan(tmp_path, capsys):
    """A real divergence (lr 1e6): training stops with the one-line error and every
    checkpoint that was written holds finite weights only."""
    data = make_dataset(tmp_path / 'data', n=4)
    rc = cli.main(run_args(data, tmp_path, '--total_iters', '30', '--print_every', '0', '--sample_every', '0',
                           '--save_every', '1', '--device', 'cpu', '--lr', '1e6', '--f_lr', '1e6'))
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2, 'lr 1e6 did not diverge in 30 iterations'
    assert err[-1].startswith('error: non-finite loss at iteration ')
    step = int(err[-1].split('iteration ')[1].split()[0])
    written = sorted(f for f in os.listdir(tmp_path / 'ckpt') if f.endswith('_nets.ckpt'))
    assert written == [f'{k:06d}_nets.ckpt' for k in range(1, step)]  # every good one, no later one
    for f in written:
        for name, state in torch.load(tmp_path / 'ckpt' / f, weights_only=True).items():
            for key, value in state.items():
                assert torch.isfinite(value).all(), f'{f} {name}.{key}'


@pytest.mark.slow
def test_compile_trains_with_eager_r1(monkeypatch):
    """--compile: dynamo + AOT autograd on G, F, E, D while the R1 pass stays eager (a
    compiled D would raise 'does not currently support double backward'). The backend is
    aot_eager (no inductor code generation, which takes many minutes on a 2-core CPU);
    the graphs and the double-backward split are the same as with inductor."""
    real_compile = torch.compile
    monkeypatch.setattr(torch, 'compile', lambda model: real_compile(model, backend='aot_eager'))
    torch._dynamo.reset()
    ref, got = first_losses(), first_losses(compile=True)
    for key in ref:
        assert got[key] == pytest.approx(ref[key], rel=1e-4, abs=1e-6), key
    logs = train_logs(steps=1, compile=True)
    assert all(torch.isfinite(torch.tensor(v)) for v in logs.values())


def test_loaders_follow_the_device_and_keep_workers(tmp_path):
    from core.data import get_test_loader, get_train_loader
    data = make_dataset(tmp_path / 'data', n=2)
    cpu = get_train_loader(str(data / 'train'), img_size=32, batch_size=2, num_workers=0, seed=0, device='cpu')
    assert not cpu.pin_memory and not cpu.persistent_workers
    workers = get_test_loader(str(data / 'val'), img_size=32, batch_size=2, num_workers=1, seed=0, device='cpu')
    assert workers.persistent_workers and not workers.pin_memory
