"""core/use/load_run.py: the one loader of networks for inference (newest step, EMA or online, the
FAN from the checkpoint, a run's model configuration checked). Which flags a run supplies:
tests/core/cli/test_arguments.py."""

import pytest
import torch

from core.errors import UserError
from core.io.ckpt_files import complete_steps, save_checkpoint
from core.nn.networks import ModelConfig, build_networks, ema_copies
from core.use.load_run import load_networks, resolve_step


def built(cfg):
    """``(nets, nets_ema)`` of ``cfg`` as training builds them (EMA copies at PyTorch's init)."""
    nets = build_networks(cfg, training=True)
    return nets, ema_copies(nets)


TINY = dict(img_size=32, style_dim=16, latent_dim=8, num_domains=3, w_hpf=0.0, dim_in=8, max_conv_dim=32,
            to_rgb_norm=0)


def test_generator_without_to_rgb_norm_keeps_official_names_and_is_told_apart(tmp_path, one_thread):
    plain, bare = (built(ModelConfig(**{**TINY, 'to_rgb_norm': flag}))[1] for flag in (True, False))
    names = set(bare.generator.state_dict())
    assert set(plain.generator.state_dict()) - names == {'to_rgb.0.weight', 'to_rgb.0.bias'}
    assert 'to_rgb.2.weight' in names  # the 1x1 convolution keeps its official name
    x, s = torch.rand(2, 3, 32, 32), torch.randn(2, 16)
    with torch.no_grad():  # without the norm, the style moves the output's mean colour
        flat = torch.zeros_like(x)
        out = bare.generator(flat, s)
        assert (out[0].mean((1, 2)) - out[1].mean((1, 2))).abs().max() > 1e-3
    assert bare.generator(x, s).shape == x.shape
    saved_run(tmp_path, [5], ModelConfig(**TINY))
    with pytest.raises(UserError, match='another configuration .*to_rgb_norm=0'):
        load_networks(ModelConfig(**{**TINY, 'to_rgb_norm': True}), str(tmp_path), 5, 'cpu')
    assert not load_networks(ModelConfig(**TINY), str(tmp_path), 5, 'cpu').generator.to_rgb[0].state_dict()


def saved_run(folder, steps, cfg):
    nets, nets_ema = built(cfg)
    for step in steps:
        for p in nets_ema.generator.parameters():
            p.data.fill_(step)
        save_checkpoint(str(folder), step, nets, nets_ema)
    return nets, nets_ema


def test_load_networks_newest_step_ema_or_online(tmp_path, one_thread):
    cfg = ModelConfig(**TINY)
    nets, _ = saved_run(tmp_path, [3, 10, 7], cfg)
    assert complete_steps(str(tmp_path)) == [3, 7, 10]
    assert resolve_step(str(tmp_path), 0) == 10 and resolve_step(str(tmp_path), 3) == 3
    ema = load_networks(cfg, str(tmp_path), 0, 'cpu')
    assert sorted(ema) == ['generator', 'mapping_network', 'style_encoder']
    assert all(torch.all(p == 10) for p in ema.generator.parameters())
    assert not ema.generator.training
    online = load_networks(cfg, str(tmp_path), 7, 'cpu', which='online')
    for key, value in online.generator.state_dict().items():
        assert torch.equal(value, nets.generator.state_dict()[key])


def test_load_networks_errors_are_one_line(tmp_path):
    with pytest.raises(UserError, match='no complete checkpoint with a \\*_nets_ema.ckpt file'):
        load_networks(ModelConfig(**TINY), str(tmp_path), 0)
    saved_run(tmp_path, [1], ModelConfig(**TINY))
    with pytest.raises(UserError, match='another configuration') as err:
        load_networks(ModelConfig(**{**TINY, 'num_domains': 2}), str(tmp_path), 1)
    assert '\n' not in str(err.value)
    with pytest.raises(UserError, match="which must be 'ema' or 'online'"):
        load_networks(ModelConfig(**TINY), str(tmp_path), 1, which='best')


def test_w_hpf_models_take_the_fan_from_the_checkpoint(tmp_path):
    from weights_by_name import value_for
    cfg = ModelConfig(**{**TINY, 'img_size': 64, 'num_domains': 2, 'w_hpf': 1.0})
    nets, nets_ema = built(cfg)
    nets.fan.load_state_dict({k: value_for(k, v) for k, v in nets.fan.state_dict().items()})
    save_checkpoint(str(tmp_path), 5, nets, nets_ema)
    loaded = load_networks(cfg, str(tmp_path), 5, 'cpu', wing_path=None)
    for key, value in nets.fan.state_dict().items():
        assert torch.equal(loaded.fan.state_dict()[key], value)
