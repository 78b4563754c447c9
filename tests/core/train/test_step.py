"""core/train/step.py: the speed switches (--amp, --channels_last, --compile) and the always-on
speed-ups (fused EMA, fused Adam) keep the maths; Adam's moments follow a layout change; the
schedules are pure functions of the step, off (the paper's constants) by default. (Runs of
the command line with the switches: tests/e2e/test_train_cli.py.)"""
import copy

import pytest
import torch
import torch.nn as nn
from helpers import adam_after_one_step, tiny_nets
from munch import Munch

from core.cli.arguments import parse_args, with_defaults
from core.solver import compute_d_loss, compute_g_loss
from core.train.step import (
    TrainConfig,
    autocast,
    build_optimizers,
    ema_update,
    lambda_ds_at,
    lr_scale_at,
    make_scaler,
    match_optimizer_layout,
    moving_average,
    prepare_inputs,
    set_lr,
    speed_nets,
    train_step,
)

pytestmark = pytest.mark.usefixtures('one_thread')  # tiny tensors: one thread (conftest)

# wider than helpers.TINY_MODEL: the tolerances below were measured on these widths
SMALL = dict(dim_in=16, max_conv_dim=64, hidden_dim=64, ds_iter=10)
SWITCHES = ('amp', 'channels_last', 'compile', 'grad_checkpoint')


def small_run(seed=0, **switches):
    nets, nets_ema, args = tiny_nets(seed=seed, **SMALL, **switches)
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
    """The defaults (no switches given) run the exact fp32 eager step: a training iteration
    through the switches' plumbing (speed_nets, make_scaler, prepare_inputs, as training
    calls them) with every switch given and off equals, bit for bit, a plain train_step on
    the bare networks and inputs: the logged losses, the networks, their EMA copies and
    Adam's moments."""
    args = parse_args(['--mode', 'train'])
    assert (args.amp, args.channels_last, args.compile, args.grad_checkpoint) == ('none', False, False, False)
    nets = Munch(a=torch.nn.Conv2d(1, 1, 1))
    assert speed_nets(nets, with_defaults(Munch(amp='none'))) is nets
    assert make_scaler(TrainConfig.from_args(with_defaults(Munch(amp='bf16'))), 'cpu') is None

    def one_step(plain):
        args, nets, nets_ema, optims, inputs = small_run()
        if plain:
            hp = TrainConfig.from_args(args)
            logs = train_step(nets, nets_ema, optims, inputs, hp, 0)
        else:
            off = parse_args(['--mode', 'train', '--amp', 'none'])  # the switches' own defaults: off
            hp = TrainConfig.from_args(Munch(args, **{k: getattr(off, k) for k in SWITCHES}))
            assert {k: getattr(hp, k) for k in SWITCHES} == {'amp': 'none', 'channels_last': False, 'compile': False,
                                                             'grad_checkpoint': False}
            step_nets = speed_nets(nets, hp)
            logs = train_step(step_nets, nets_ema, optims, prepare_inputs(inputs, hp), hp, 0, scaler=make_scaler(hp, 'cpu'))
        return logs, nets, nets_ema, optims

    plain, switched = one_step(True), one_step(False)
    assert plain[0].keys() == switched[0].keys()
    for key in plain[0]:
        assert torch.equal(torch.as_tensor(plain[0][key]), torch.as_tensor(switched[0][key])), key
    for kind, nets in (('', plain[1]), ('ema ', plain[2])):
        other = switched[1] if not kind else switched[2]
        for name, net in nets.items():
            a, b = net.state_dict(), other[name].state_dict()
            assert a.keys() == b.keys()
            for key in a:
                assert torch.equal(a[key], b[key]), f'{kind}{name}.{key}'
    for name, optim in plain[3].items():
        for p_a, p_b in zip(optim.param_groups[0]['params'], switched[3][name].param_groups[0]['params']):
            for key, value in optim.state[p_a].items():
                assert torch.equal(value, switched[3][name].state[p_b][key]), f'{name} Adam {key}'
    moved = any(not torch.equal(a, b) for a, b in zip(plain[1].generator.parameters(), small_run()[1].generator.parameters()))
    assert moved  # the step did train (the comparison is not of two untouched networks)


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


# ------------------------------------------------------------------ resume into another layout (docs/first_gpu_run.md item 4)
def test_speed_nets_under_compile_keeps_the_keys_of_the_networks():
    """--compile wraps G, F, E, D; the result has exactly the keys of the networks (the R1 pass
    finds the eager discriminator under its wrapper: core.train.losses.eager)."""
    from core.train.losses import eager
    nets = tiny_nets()[0]
    hp = TrainConfig.from_args(with_defaults(Munch(compile=True)))
    compiled = speed_nets(nets, hp, compile_options=dict(backend='eager'))
    assert set(compiled) == set(nets)
    assert all(eager(compiled[name]) is nets[name] for name in nets)


def test_train_config_reads_complete_arguments_only():
    """Missing flags take their defaults in one place (with_defaults), not again here."""
    with pytest.raises(TypeError, match='lack lr_decay_iter'):
        TrainConfig.from_args(Munch({k: v for k, v in vars(parse_args(['--mode', 'train'])).items() if k != 'lr_decay_iter'}))
    assert TrainConfig.from_args(with_defaults(Munch())) == TrainConfig.from_args(parse_args(['--mode', 'train']))


def test_moments_follow_their_parameters_into_channels_last():
    """Resumed into channels_last parameters, Adam's contiguous moments are converted: the
    fused CPU kernel, which walks memory as it lies, then gives the same update as in the
    contiguous layout (without the conversion it was off by about lr)."""
    torch.manual_seed(0)
    model = nn.Conv2d(3, 4, 3)
    saved = copy.deepcopy(adam_after_one_step(model).state_dict())
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


# ------------------------------------------------------------------ schedules: pure functions of the step, off by default
def test_lr_scale_is_one_then_falls_linearly_over_the_last_iterations():
    assert [lr_scale_at(s, 10, 4) for s in range(10)] == [1, 1, 1, 1, 1, 1, 1.0, 0.75, 0.5, 0.25]
    assert all(lr_scale_at(s, 10, 0) == 1.0 for s in range(12))  # off: the paper's constant rates
    assert lr_scale_at(0, 10, 20) == 0.5  # a decay longer than the run starts part-way down


def test_set_lr_scales_every_optimiser_from_its_own_base_rate():
    nets, _, args = tiny_nets(lr=1e-3, f_lr=1e-5, total_iters=100, lr_decay_iter=50)
    optims = build_optimizers(nets, TrainConfig.from_args(args))
    set_lr(optims, TrainConfig.from_args(args), 90)  # 10 iterations left of 50: a fifth of each base rate
    assert optims.generator.param_groups[0]['lr'] == pytest.approx(2e-4)
    assert optims.discriminator.param_groups[0]['lr'] == pytest.approx(2e-4)
    assert optims.mapping_network.param_groups[0]['lr'] == pytest.approx(2e-6)
    set_lr(optims, TrainConfig.from_args(args), 10)  # before the decay: back to the base rates (no drift from earlier calls)
    assert optims.style_encoder.param_groups[0]['lr'] == 1e-3
    off = with_defaults(Munch(args, lr_decay_iter=0, lr=5.0))
    set_lr(optims, TrainConfig.from_args(off), 99)  # off: the optimisers are left as they are
    assert optims.generator.param_groups[0]['lr'] == 1e-3


def test_constant_diversity_weight_when_ds_iter_is_zero():
    assert [lambda_ds_at(s, 2.0, 0) for s in (0, 1, 5000)] == [2.0, 2.0, 2.0]
    assert lambda_ds_at(2, 1.0, 4) == 0.5

