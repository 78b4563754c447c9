"""core/networks.py: the networks' declared unused parameters (DDP with w_hpf > 0: GPU path,
docs/first_gpu_run.md item 1) and ModelConfig, what fixes their shapes."""
import pytest
import torch

from core.config import parse_args
from core.networks import MODEL_KEYS, Generator, ModelConfig, unused_parameter_names


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


def test_model_config_from_args_and_names():
    args = parse_args(['--mode', 'train', '--img_size', '32', '--num_domains', '3', '--domain_names', 'a, b,c'])
    cfg = ModelConfig.from_args(args)
    assert (cfg.img_size, cfg.num_domains, cfg.max_conv_dim, cfg.dim_in) == (32, 3, 512, None)
    assert cfg.names() == ['a', 'b', 'c']
    assert ModelConfig.from_args(args, domain_names=['x', 'y', 'z']).domain_names == ('x', 'y', 'z')
    assert ModelConfig(num_domains=2).names() == ['0', '1']
    assert set(MODEL_KEYS) == {'img_size', 'style_dim', 'latent_dim', 'num_domains', 'w_hpf', 'dim_in',
                               'max_conv_dim', 'to_rgb_norm', 'domain_names'}
    assert cfg.to_rgb_norm is True  # official by default
