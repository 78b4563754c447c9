"""Style codes: a domain's mean style, the truncation trick, latent codes shared by the sources,
and the rules of the style strength (the walk from the source's own style to the target style).

Every function follows the device of its networks or inputs.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from munch import Munch
from torch import nn

from core.errors import UserError

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


def mean_style(nets: Munch, y: int | torch.Tensor, latent_dim: int, n: int = N_MEAN_STYLE,
               generator: torch.Generator | None = None) -> torch.Tensor:
    """``domain_mean_style`` of ``nets.mapping_network``, on its device."""
    device = next(nets.mapping_network.parameters()).device
    return domain_mean_style(nets.mapping_network, y, latent_dim, device, n=n, generator=generator)


def shared_latents(k: int, n: int, latent_dim: int, generator: torch.Generator | None,
                   device: torch.device | str) -> torch.Tensor:
    """``k`` latent codes, each shared by the ``n`` sources: (k, n, latent_dim)."""
    z = torch.randn(k, 1, latent_dim, generator=generator)
    return z.repeat(1, n, 1).to(device)


def truncated_style(nets: Munch, s_avg: torch.Tensor, z_trg: torch.Tensor, y_trg: torch.Tensor,
                    psi: float) -> torch.Tensor:
    """s = lerp(mean style, F(z), psi)."""
    return torch.lerp(s_avg, nets.mapping_network(z_trg, y_trg), psi)


def check_strength(strength: Any, name: str = 'strength') -> float:
    """``strength`` as a float in [0, 1]; a one-line UserError naming ``name`` otherwise."""
    value = float(strength)
    if not 0 <= value <= 1:
        raise UserError(f"{name} must be in [0, 1] (1: the target style, 0: the source's own), not {value}")
    return value


def need_source_domain(strength: float, source_domain: Any, names: Sequence[str], name: str = 'strength',
                       source_name: str = 'source_domain') -> None:
    """The rule of the style strength: below 1 it starts from the source's own style, read in
    the source's domain, so ``source_domain`` (None: not given) is needed. ``name`` and
    ``source_name`` say how the caller's user gives the two; ``names`` are the model's domains."""
    if strength < 1 and source_domain is None:
        raise UserError(f"{name} {strength:g} starts from the source's own style and needs the source image's domain "
                        f"({', '.join(names)}): give {source_name}")
