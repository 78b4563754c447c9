"""core/nn/networks.py: the networks' declared unused parameters (DDP with w_hpf > 0: GPU path,
docs/first_gpu_run.md item 1) and ModelConfig, what fixes their shapes."""
import pytest
import torch

from core.cli.arguments import parse_args
from core.errors import UserError
from core.nn.networks import MODEL_KEYS, Generator, ModelConfig, check_model_value, unused_parameter_names


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


# ---------------------------------------------------------------------------- the one check of a configuration

@pytest.mark.parametrize('key,value,match', [
    ('style_dim', 10 ** 12, 'style_dim must be an integer from 1 to 2048, not 1000000000000'),
    ('num_domains', 10000, 'num_domains must be an integer from 1 to 256, not 10000'),
    ('img_size', 1, 'img_size must be a power of two from 16 to 1024, not 1'),
    ('img_size', 48, 'img_size must be a power of two'),
    ('img_size', 2048, 'img_size must be a power of two from 16 to 1024'),
    ('img_size', '128', "img_size must be a power of two from 16 to 1024, not '128'"),
    ('img_size', 256.0, 'img_size must be a power of two'),
    ('latent_dim', True, 'latent_dim must be an integer'),
    ('max_conv_dim', 0, 'max_conv_dim must be an integer from 1 to 2048'),
    ('dim_in', 10 ** 6, r'dim_in must be an integer from 1 to 2048 \(or null'),
    ('w_hpf', float('nan'), 'w_hpf must be a number from 0'),
    ('w_hpf', -1, 'w_hpf must be a number from 0'),
    ('w_hpf', '1', 'w_hpf must be a number from 0'),
    ('to_rgb_norm', 'false', 'to_rgb_norm must be true/false'),
    ('to_rgb_norm', 2, 'to_rgb_norm must be true/false'),
    ('domain_names', ('a,b', 'c'), "domain name 'a,b' is not usable; .*without commas"),
    ('domain_names', ('cat', 'cat'), "domain_names names 'cat' twice"),
    ('domain_names', ('cat', ' dog'), "domain name ' dog' is not usable"),
    ('domain_names', ('cat', 'd\nog'), 'is not usable'),
    ('domain_names', ('cat', 3), 'domain_names must be a list of names'),
    ('domain_names', ('a', 'b', 'c'), 'domain_names gives 3 names but num_domains is 2'),
])
def test_every_field_has_a_type_and_bounds_with_one_line(key, value, match, monkeypatch):
    """A configuration a file or a caller could give (a 200-byte config.json with style_dim
    10**12, num_domains 10000, img_size 1 or '128') is refused in one line naming the field,
    before any network is built."""
    import core.nn.networks as N
    monkeypatch.setattr(N, 'Generator', lambda *a, **k: pytest.fail('a network was built'))
    with pytest.raises(UserError, match=match) as e:
        N.build_networks(ModelConfig(**{key: value}))
    assert '\n' not in str(e.value) and key in str(e.value)


def test_the_bounds_keep_every_configuration_in_use():
    """The paper's, the demo's and the tests' configurations pass; values are stored in their types."""
    for cfg in (ModelConfig(), ModelConfig(img_size=16), ModelConfig(img_size=1024, num_domains=256),
                ModelConfig(img_size=32, dim_in=8, max_conv_dim=32, style_dim=16, latent_dim=8, w_hpf=0, to_rgb_norm=0),
                ModelConfig(style_dim=2048, latent_dim=2048, max_conv_dim=2048, dim_in=2048)):
        assert isinstance(cfg.w_hpf, float) and isinstance(cfg.to_rgb_norm, bool)
    cfg = ModelConfig(num_domains=3, domain_names=['cat', 'dog', 'wild'], w_hpf=1, to_rgb_norm=1)  # type: ignore[arg-type]
    assert cfg.domain_names == ('cat', 'dog', 'wild') and cfg.w_hpf == 1.0 and cfg.to_rgb_norm is True
    assert ModelConfig(num_domains=2, domain_names='a, b').domain_names == ('a', 'b')  # type: ignore[arg-type]


def test_the_message_names_the_source_it_is_given():
    with pytest.raises(UserError, match=r"^'style_dim' in run/config.yaml must be an integer from 1 to 2048, not 10000000"):
        check_model_value('style_dim', 10 ** 12, "'{}' in run/config.yaml")
    with pytest.raises(UserError, match=r"^--img_size must be a power of two from 16 to 1024, not 'a{30,}\.\.\.$"):
        check_model_value('img_size', 'a' * 10000, '--{}')


def test_checked_builds_a_configuration_whose_errors_name_the_source():
    """ModelConfig.checked: the model keys of a mapping (others ignored, missing ones their
    defaults), each error one line naming the source; the same configuration as the constructor's."""
    values = dict(img_size=32, num_domains=3, domain_names=['cat', 'dog', 'wild'], w_hpf=0, lr=0.5)
    cfg = ModelConfig.checked(values, "'{}' in hf/config.json")
    assert cfg == ModelConfig(img_size=32, num_domains=3, domain_names=('cat', 'dog', 'wild'), w_hpf=0.0)
    with pytest.raises(UserError, match=r"^'domain_names' in hf/config.json gives 3 names but 'num_domains' in "
                                        r"hf/config.json is 2; give one name per domain$"):
        ModelConfig.checked({**values, 'num_domains': 2}, "'{}' in hf/config.json")
    with pytest.raises(UserError, match=r"^--domain_names gives 3 names but --num_domains is 2"):  # the default count
        ModelConfig.checked({'domain_names': 'a,b,c'}, '--{}')
    with pytest.raises(UserError, match=r"^--img_size must be a power of two"):
        ModelConfig.checked({'img_size': 48}, '--{}')


def test_build_networks_uses_the_one_builder_of_each_network():
    from core.nn import networks
    cfg = ModelConfig(img_size=32, style_dim=16, latent_dim=8, num_domains=3, w_hpf=0, dim_in=8, max_conv_dim=32)
    torch.manual_seed(0)
    nets = networks.build_networks(cfg, training=True)
    torch.manual_seed(0)
    alone = [networks.build_generator(cfg), networks.build_mapping_network(cfg), networks.build_style_encoder(cfg),
             networks.build_discriminator(cfg)]
    for name, net in zip(networks.TRAINED, alone):
        assert type(nets[name]) is type(net)
        want = net.state_dict()
        assert {k: v.shape for k, v in nets[name].state_dict().items()} == {k: v.shape for k, v in want.items()}
        assert all(torch.equal(v, want[k]) for k, v in nets[name].state_dict().items()), name  # the same draws
