"""bench/train_memory.py: the training-memory count, checked against hand-computable cases."""

import pytest
import torch
from helpers import tiny_nets
from munch import Munch

from bench.train_memory import PHASES, MemoryCount, count_iteration
from core.nn.networks import Discriminator
from core.train.losses import adv_loss, r1_reg
from core.train.step import TrainConfig, build_optimizers, speed_nets, train_step

pytestmark = pytest.mark.usefixtures('one_thread')  # tiny tensors: one thread (conftest)


def adam_state_bytes(optim):
    return sum(v.nbytes for state in optim.state.values() for v in state.values() if torch.is_tensor(v))


def test_linear_layer_saves_its_input_and_weight():
    lin = torch.nn.Linear(16, 4)
    optim = torch.optim.Adam(lin.parameters())
    x = torch.randn(64, 16, requires_grad=True)  # the input needs a gradient: addmm saves the weight too

    def iteration():  # forward, zero_grad, backward, step (the trainer's order)
        y = lin(x)
        optim.zero_grad()
        y.sum().backward()  # sum saves no tensor
        optim.step()

    iteration()  # Adam's states exist from the first step on
    with MemoryCount({'lin': lin}, {'lin': optim}) as count:
        iteration()
    report = count.report()
    params = lin.weight.nbytes + lin.bias.nbytes
    assert report['params'] == params
    assert report['saved_all'] == x.nbytes + lin.weight.nbytes  # every distinct storage saved
    first = report['phases'][0]
    assert first['saved'] == x.nbytes  # the weight is a parameter: not counted twice
    # at the end of the forward the previous step's gradients are still alive
    assert first['peak'] == params + adam_state_bytes(optim) + params + x.nbytes
    assert report['peak'] == first['peak']


def test_inputs_are_counted_once():
    lin = torch.nn.Linear(16, 4)
    optim = torch.optim.SGD(lin.parameters(), lr=0.1)
    x = torch.randn(64, 16, requires_grad=True)

    def iteration():
        y = lin(x)
        optim.zero_grad()
        y.sum().backward()
        optim.step()

    report = count_iteration(iteration, {'lin': lin}, {'lin': optim}, inputs=[x])
    assert report['inputs'] == x.nbytes
    assert report['phases'][0]['saved'] == 0  # x is an input, the weight a parameter
    assert report['phases'][0]['peak'] == 2 * (lin.weight.nbytes + lin.bias.nbytes) + x.nbytes  # params + grads


def test_graph_dropped_without_backward_is_released():
    """A forward whose graph is thrown away (as the generator's x_fake2 in the G step):
    its saved tensors, outputs of their own ops included, stop counting at once."""
    lin = torch.nn.Linear(16, 16)
    x = torch.randn(8, 16)
    with MemoryCount({'lin': lin}, {}) as count:
        y = torch.exp(lin(x))  # exp saves its output (a reference cycle if held attached)
        held = count.saved_now
        del y
        after = count.saved_now
    assert held == x.nbytes + 8 * 16 * 4  # the input of the linear layer and the output of exp
    assert after == 0


def test_counting_leaves_the_r1_double_backward_unchanged():
    torch.manual_seed(0)
    nets = [Discriminator(32, 2, 32, 8) for _ in range(2)]
    nets[1].load_state_dict(nets[0].state_dict())
    x, y = torch.randn(2, 3, 32, 32), torch.tensor([0, 1])

    def loss(net):
        x_real = x.clone().requires_grad_()
        out = net(x_real, y)
        (adv_loss(out, 1) + r1_reg(out, x_real)).backward()

    loss(nets[0])
    with MemoryCount({'d': nets[1]}, {}) as count:
        loss(nets[1])
    assert count.saved_all_peak > 0
    for a, b in zip(nets[0].parameters(), nets[1].parameters()):
        assert torch.equal(a.grad, b.grad)


def tiny_training(**switches):
    nets, nets_ema, args = tiny_nets(**switches)
    optims = build_optimizers(nets, TrainConfig.from_args(args))
    g = torch.Generator().manual_seed(1)
    inputs = Munch(x_src=torch.rand(2, 3, 32, 32, generator=g), y_src=torch.tensor([0, 1]),
                   x_ref=torch.rand(2, 3, 32, 32, generator=g), x_ref2=torch.rand(2, 3, 32, 32, generator=g),
                   y_ref=torch.tensor([1, 0]), z_trg=torch.randn(2, 8, generator=g), z_trg2=torch.randn(2, 8, generator=g))
    return args, speed_nets(nets, TrainConfig.from_args(args)), nets_ema, optims, inputs


def test_train_step_phases_and_checkpointing_saves_less():
    reports = {}
    for flag in (False, True):
        args, nets, nets_ema, optims, inputs = tiny_training(grad_checkpoint=flag)
        train_step(nets, nets_ema, optims, Munch(inputs), TrainConfig.from_args(args), 0)
        reports[flag] = count_iteration(lambda: train_step(nets, nets_ema, optims, Munch(inputs), TrainConfig.from_args(args), 1),
                                        nets, optims, inputs)
    plain, recomputed = reports[False], reports[True]
    assert [p['name'] for p in plain['phases']] == list(PHASES)
    params = sum(p.nbytes for net in nets.values() for p in net.parameters())
    states = sum(adam_state_bytes(o) for o in optims.values())
    assert plain['params'] == params and plain['states'] == states
    for p in plain['phases']:
        assert p['peak'] >= params + states
    for a, b in zip(plain['phases'][:4], recomputed['phases'][:4]):
        assert b['saved'] < a['saved'], a['name']  # every phase trains G or D


def test_count_on_fake_tensors_equals_the_count_on_real_ones():
    """bench/train_speed.py --count_only counts on data-less FakeTensors: the same bytes as a real
    CPU iteration of the same setting in fp32; in bf16 within 0.1 % (a few CPU bf16 kernels
    save a slightly different tensor: 1.4 kB of 8 MB here)."""
    from bench.train_speed import Project, count_step, fake_tensors, parse, train_args
    opt = parse(['--device', 'cpu', '--dim_in', '8', '--max_conv_dim', '32'])
    for amp, ckpt in (('none', False), ('bf16', True)):
        args = train_args(opt, 32, 2, amp, grad_checkpoint=ckpt)
        real = Project(args, torch.device('cpu'))
        real.step()
        expected = count_step(real)
        with fake_tensors() as device:
            fake = Project(args, device)
            fake.step()
            got = count_step(fake)
        if amp == 'none':
            assert got == expected
        for a, b in zip(got['phases'], expected['phases']):
            assert a['name'] == b['name'] and a['grads'] == b['grads']
            assert abs(a['peak'] - b['peak']) <= 1e-3 * b['peak'], a['name']
        assert got['peak'] > got['params'] + got['states']
