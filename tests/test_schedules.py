"""Short-run schedules: pure functions of the step, off (the paper's constants) by default."""
import pytest
from munch import Munch

from core.config import parse_args, with_defaults
from core.model import build_model
from core.trainer import TrainConfig, build_optimizers, lambda_ds_at, lr_scale_at, set_lr

pytestmark = pytest.mark.usefixtures('one_thread')


def test_lr_scale_is_one_then_falls_linearly_over_the_last_iterations():
    assert [lr_scale_at(s, 10, 4) for s in range(10)] == [1, 1, 1, 1, 1, 1, 1.0, 0.75, 0.5, 0.25]
    assert all(lr_scale_at(s, 10, 0) == 1.0 for s in range(12))  # off: the paper's constant rates
    assert lr_scale_at(0, 10, 20) == 0.5  # a decay longer than the run starts part-way down


def test_set_lr_scales_every_optimiser_from_its_own_base_rate():
    args = with_defaults(Munch(img_size=32, dim_in=8, max_conv_dim=16, style_dim=8, latent_dim=4, hidden_dim=16,
                               num_domains=2, w_hpf=0, lr=1e-3, f_lr=1e-5, total_iters=100, lr_decay_iter=50))
    nets, _ = build_model(args)
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


def test_negative_decay_is_a_one_line_error():
    from core.errors import UserError
    with pytest.raises((UserError, SystemExit)):
        parse_args(['--mode', 'train', '--lr_decay_iter', '-1'])
