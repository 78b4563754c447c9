"""--grad_checkpoint (core/train/recompute.py): activation checkpointing trains bit for bit as without it
in fp32, on a tiny configuration and on the goldens' configurations (official widths, FAN masks).
(A command-line run with it: tests/e2e/test_train_cli.py.)"""
import copy

import pytest
import torch
from helpers import filled_nets, golden_cases, loss_args, tiny_nets
from munch import Munch

from core.cli.arguments import parse_args
from core.nn.networks import ModelConfig, build_networks
from core.train.recompute import is_recomputed
from core.train.step import TrainConfig, build_optimizers, speed_nets, train_step

pytestmark = pytest.mark.usefixtures('one_thread')

TINY = dict(img_size=32, dim_in=8, max_conv_dim=32, style_dim=16, latent_dim=8, num_domains=2, w_hpf=0,
            ds_iter=10)


def tiny_inputs(n, latent_dim, img_size, seed=1):
    g = torch.Generator().manual_seed(seed)
    img = lambda: torch.rand(n, 3, img_size, img_size, generator=g) * 2 - 1
    return Munch(x_src=img(), y_src=torch.arange(n) % 2, x_ref=img(), x_ref2=img(), y_ref=(torch.arange(n) + 1) % 2,
                 z_trg=torch.randn(n, latent_dim, generator=g), z_trg2=torch.randn(n, latent_dim, generator=g))


def train(nets, nets_ema, args, batches, flag):
    """``len(batches)`` iterations on copies of the networks, --grad_checkpoint ``flag``."""
    nets, nets_ema = copy.deepcopy(nets), copy.deepcopy(nets_ema)
    if 'fan' in nets:
        nets_ema.fan = nets.fan
    args = Munch(args, grad_checkpoint=flag)
    hp = TrainConfig.from_args(args)
    optims = build_optimizers(nets, hp)
    train_nets = speed_nets(nets, hp)
    assert is_recomputed(nets.generator) == is_recomputed(nets.discriminator) == flag
    logs = []
    for step, batch in enumerate(batches):
        logs.append(train_step(train_nets, nets_ema, optims, Munch({k: v.clone() for k, v in batch.items()}), hp, step))
    return nets, nets_ema, optims, logs


def assert_same_training(nets, nets_ema, args, batches):
    plain, recomputed = (train(nets, nets_ema, args, batches, flag) for flag in (False, True))
    for kind in (0, 1):  # the trained networks and the EMA copies, every parameter and buffer
        for name, net in plain[kind].items():
            a, b = net.state_dict(), recomputed[kind][name].state_dict()
            assert a.keys() == b.keys()  # no wrapper in the keys
            for key in a:
                assert torch.equal(a[key], b[key]), f'{"ema " * kind}{name}.{key}'
    for name, optim in plain[2].items():  # Adam's moments too
        for p_a, p_b in zip(optim.param_groups[0]['params'], recomputed[2][name].param_groups[0]['params']):
            for key, value in optim.state[p_a].items():
                assert torch.equal(value, recomputed[2][name].state[p_b][key]), f'{name} Adam {key}'
    for a, b in zip(plain[3], recomputed[3]):
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(torch.as_tensor(a[key]), torch.as_tensor(b[key])), key


def test_tiny_training_is_bit_for_bit_the_same():
    nets, nets_ema, args = tiny_nets(ds_iter=10)
    batches = [tiny_inputs(4, args.latent_dim, args.img_size, seed) for seed in (1, 2)]
    assert_same_training(nets, nets_ema, args, batches)


def test_flag_is_off_by_default_and_leaves_the_modules_alone():
    assert parse_args(['--mode', 'train']).grad_checkpoint is False
    args = parse_args(['--mode', 'train', '--grad_checkpoint', *sum((['--' + k, str(v)] for k, v in TINY.items()), [])])
    assert args.grad_checkpoint is True
    nets = build_networks(ModelConfig.from_args(args), training=True)
    keys = {name: list(net.state_dict()) for name, net in nets.items()}
    train_nets = speed_nets(nets, TrainConfig.from_args(args))
    assert train_nets is nets  # no wrapper: the same modules, recomputing in place
    assert {name: list(net.state_dict()) for name, net in nets.items()} == keys
    assert is_recomputed(nets.generator) and is_recomputed(nets.discriminator) and is_recomputed(nets.style_encoder)
    assert not is_recomputed(nets.mapping_network)


@pytest.mark.parametrize('path', golden_cases('train', slow=True))
def test_golden_train_cases_bit_for_bit(path):
    """The goldens' configurations (official widths, w_hpf 0 and 1, 64 px): their first
    iteration on the first image of its batch (the tiny test above runs two iterations of four
    images, the second from the Adam moments and EMA copies the first made; more golden images or
    iterations, or the losses cases of the same configurations, would add minutes of CI time and
    no code path)."""
    case = torch.load(path, weights_only=False)
    nets, _ = filled_nets(case)
    nets_ema = Munch({k: copy.deepcopy(nets[k]) for k in ('generator', 'mapping_network', 'style_encoder')})
    beta1, beta2 = case['betas']
    args = loss_args(case, ds_iter=case['ds_iter'], lr=case['lr'], f_lr=case['f_lr'], beta1=beta1, beta2=beta2,
                     weight_decay=case['weight_decay'], ema_beta=case['ema_beta'])
    first = {k: v[:1] for k, v in case['batches'][0].items()}  # one image: the same code path, half the CI time
    assert_same_training(nets, nets_ema, args, [first])
