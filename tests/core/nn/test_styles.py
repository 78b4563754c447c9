"""core/nn/styles.py: the mean style, shared latent codes, and the rules of the style strength
(one message for the API, the flags, translate mode and the web demo)."""
import pytest
import torch
from munch import Munch

from core.errors import UserError
from core.nn.networks import MappingNetwork
from core.nn.styles import check_strength, domain_mean_style, mean_style, need_source_domain, shared_latents


def test_mean_style_is_the_domains_mean_on_the_networks_device():
    torch.manual_seed(0)
    nets = Munch(mapping_network=MappingNetwork(latent_dim=4, style_dim=8, num_domains=2))
    got = mean_style(nets, 1, 4, n=300, generator=torch.Generator().manual_seed(5))
    want = domain_mean_style(nets.mapping_network, 1, 4, 'cpu', n=300, generator=torch.Generator().manual_seed(5))
    assert got.shape == (1, 8) and torch.equal(got, want)


def test_shared_latents_are_shared_by_the_sources():
    z = shared_latents(3, 5, 4, torch.Generator().manual_seed(1), 'cpu')
    assert z.shape == (3, 5, 4) and torch.equal(z, z[:, :1].expand(-1, 5, -1))
    assert torch.equal(z[:, 0], torch.randn(3, 1, 4, generator=torch.Generator().manual_seed(1))[:, 0])


def test_check_strength():
    assert check_strength(0.25) == 0.25 and check_strength('1') == 1.0 and check_strength(0) == 0.0
    for bad in (-0.1, 1.5):
        with pytest.raises(UserError, match=r"^--strength must be in \[0, 1\] \(1: the target style, 0: the source's "
                                            r"own\), not "):
            check_strength(bad, '--strength')


def test_need_source_domain_one_message_in_the_callers_words():
    names = ['cat', 'dog']
    need_source_domain(1.0, None, names)  # the plain translation needs none
    need_source_domain(0.5, 0, names)
    for words, end in [((), 'give source_domain'), (('--strength', '--src_domain'), 'give --src_domain')]:
        with pytest.raises(UserError) as e:
            need_source_domain(0.5, None, names, *words)
        assert str(e.value).startswith(f"{words[0] if words else 'strength'} 0.5 starts from the source's own style "
                                       f"and needs the source image's domain (cat, dog): ")
        assert str(e.value).endswith(end) and '\n' not in str(e.value)
