"""The official ``core.model`` names (compatibility layer: delegates only).

The networks and their builder live in ``core.nn.networks``; here are the official classes
under their official module path and the official ``build_model(args)``.
"""
from typing import Any, Tuple

from munch import Munch

from core.nn.fan import FAN, load_fan  # noqa: F401 (official name)
from core.nn.networks import (  # noqa: F401
    AdaIN,
    AdainResBlk,
    Discriminator,
    Generator,
    HighPass,
    MappingNetwork,
    ModelConfig,
    ResBlk,
    StyleEncoder,
    build_networks,
    ema_copies,
)

__all__ = ['ResBlk', 'AdaIN', 'AdainResBlk', 'HighPass', 'Generator', 'MappingNetwork', 'StyleEncoder',
           'Discriminator', 'build_model']


def build_model(args: Any) -> Tuple[Munch, Munch]:
    """Networks and their EMA copies, as the official ``build_model``: ``(nets, nets_ema)``
    with generator, mapping_network, style_encoder, discriminator (online only) and, when
    ``args.w_hpf > 0``, one FAN shared by both, loaded from ``args.wing_path`` when it is set.
    ``args`` is read by :meth:`ModelConfig.from_args` (our extra keys may be missing)."""
    nets = build_networks(ModelConfig.from_args(args), training=True)
    nets_ema = ema_copies(nets)
    if 'fan' in nets and getattr(args, 'wing_path', None):
        load_fan(nets.fan, args.wing_path)
    return nets, nets_ema
