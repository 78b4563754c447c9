"""Style codes: a domain's mean style, the truncation trick, latent codes shared by the sources.

Every function follows the device of its networks or inputs.
"""
from __future__ import annotations

from argparse import Namespace

import torch
from munch import Munch
from torch import nn


N_MEAN_STYLE = 10000  # latent codes averaged for a domain's mean style


@torch.no_grad()
def domain_mean_style(mapping_network: nn.Module, y: int | torch.Tensor, latent_dim: int, device: torch.device | str,
                      n: int = N_MEAN_STYLE, chunk: int = 2500, generator: torch.Generator | None = None) -> torch.Tensor:
    """Mean over ``n`` random z ~ N(0, I) of F(z, y) for domain index ``y``: (1, style_dim),
    the centre of the truncation trick. The codes are drawn at once on the CPU (from
    ``generator``, else the global RNG), so they are the same on every device, and mapped
    in chunks of ``chunk``."""
    z = torch.randn(n, latent_dim, generator=generator).to(device)
    y = torch.full((n,), int(y), dtype=torch.long, device=device)
    s = torch.cat([mapping_network(z[i:i + chunk], y[i:i + chunk]) for i in range(0, n, chunk)])
    return s.mean(dim=0, keepdim=True)


def mean_style(nets: Munch, args: Namespace | Munch, y: int | torch.Tensor, n: int = N_MEAN_STYLE,
               generator: torch.Generator | None = None) -> torch.Tensor:
    device = next(nets.mapping_network.parameters()).device
    return domain_mean_style(nets.mapping_network, y, args.latent_dim, device, n=n, generator=generator)


def shared_latents(args: Namespace | Munch, n: int, generator: torch.Generator | None,
                   device: torch.device | str) -> torch.Tensor:
    """``num_outs_per_domain`` latent codes, each shared by the ``n`` sources: (K, n, latent_dim)."""
    z = torch.randn(args.num_outs_per_domain, 1, args.latent_dim, generator=generator)
    return z.repeat(1, n, 1).to(device)


def truncated_style(nets: Munch, s_avg: torch.Tensor, z_trg: torch.Tensor, y_trg: torch.Tensor,
                    psi: float) -> torch.Tensor:
    """s = lerp(mean style, F(z), psi)."""
    return torch.lerp(s_avg, nets.mapping_network(z_trg, y_trg), psi)
