"""StarGAN v2 networks: Generator, MappingNetwork, StyleEncoder, Discriminator.

Pure ``nn.Module``s with the official class names, constructor signatures and
state-dict keys, so official checkpoints load as they are. No device logic:
modules follow their inputs. Construction order matters (it fixes the RNG draws
of PyTorch's default init, which the EMA copies keep), so every module is built
in the official order.

``dim_in`` (base channels) is our one addition: ``None`` gives the official
``2**14 // img_size``; smaller values make CPU-sized configs.
"""
from __future__ import annotations

import copy
import dataclasses
import math
from argparse import Namespace
from typing import Any, Dict, List, Mapping, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from munch import Munch

from core.device import DeviceLike
from core.errors import UserError, shown
from core.nn.fan import Masks


def _base_dim(img_size: int, dim_in: Optional[int]) -> int:
    return 2 ** 14 // img_size if dim_in is None else dim_in


class ResBlk(nn.Module):
    def __init__(self, dim_in: int, dim_out: int, actv: nn.Module = nn.LeakyReLU(0.2), normalize: bool = False,
                 downsample: bool = False) -> None:
        super().__init__()
        self.actv = actv
        self.normalize = normalize
        self.downsample = downsample
        self.learned_sc = dim_in != dim_out
        self.conv1 = nn.Conv2d(dim_in, dim_in, 3, 1, 1)
        self.conv2 = nn.Conv2d(dim_in, dim_out, 3, 1, 1)
        if normalize:
            self.norm1 = nn.InstanceNorm2d(dim_in, affine=True)
            self.norm2 = nn.InstanceNorm2d(dim_in, affine=True)
        if self.learned_sc:
            self.conv1x1 = nn.Conv2d(dim_in, dim_out, 1, 1, 0, bias=False)

    def _shortcut(self, x: torch.Tensor) -> torch.Tensor:
        if self.learned_sc:
            x = self.conv1x1(x)
        if self.downsample:
            x = F.avg_pool2d(x, 2)
        return x

    def _residual(self, x: torch.Tensor) -> torch.Tensor:
        if self.normalize:
            x = self.norm1(x)
        x = self.conv1(self.actv(x))
        if self.downsample:
            x = F.avg_pool2d(x, 2)
        if self.normalize:
            x = self.norm2(x)
        return self.conv2(self.actv(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self._shortcut(x) + self._residual(x)) / math.sqrt(2)


class AdaIN(nn.Module):
    def __init__(self, style_dim: int, num_features: int) -> None:
        super().__init__()
        self.norm = nn.InstanceNorm2d(num_features, affine=False)
        self.fc = nn.Linear(style_dim, num_features * 2)

    def forward(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        h = self.fc(s)
        gamma, beta = torch.chunk(h.view(h.size(0), h.size(1), 1, 1), chunks=2, dim=1)
        return (1 + gamma) * self.norm(x) + beta


class AdainResBlk(nn.Module):
    def __init__(self, dim_in: int, dim_out: int, style_dim: int = 64, w_hpf: float = 0, actv: nn.Module = nn.LeakyReLU(0.2),
                 upsample: bool = False) -> None:
        super().__init__()
        self.w_hpf = w_hpf
        self.actv = actv
        self.upsample = upsample
        self.learned_sc = dim_in != dim_out
        self.conv1 = nn.Conv2d(dim_in, dim_out, 3, 1, 1)
        self.conv2 = nn.Conv2d(dim_out, dim_out, 3, 1, 1)
        self.norm1 = AdaIN(style_dim, dim_in)
        self.norm2 = AdaIN(style_dim, dim_out)
        if self.learned_sc:
            self.conv1x1 = nn.Conv2d(dim_in, dim_out, 1, 1, 0, bias=False)

    def _shortcut(self, x: torch.Tensor) -> torch.Tensor:
        if self.upsample:
            x = F.interpolate(x, scale_factor=2, mode='nearest')
        if self.learned_sc:
            x = self.conv1x1(x)
        return x

    def _residual(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        x = self.actv(self.norm1(x, s))
        if self.upsample:
            x = F.interpolate(x, scale_factor=2, mode='nearest')
        x = self.conv1(x)
        x = self.actv(self.norm2(x, s))
        return self.conv2(x)

    @property
    def unused_parameters(self) -> Tuple[str, ...]:
        """Local names of parameters ``forward`` never uses: with ``w_hpf > 0`` the shortcut is
        skipped (official), so a learned shortcut's ``conv1x1`` exists (its key is in official
        checkpoints) but never gets a gradient."""
        return ('conv1x1.weight',) if self.w_hpf != 0 and self.learned_sc else ()

    def forward(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        out = self._residual(x, s)
        if self.w_hpf == 0:
            out = (out + self._shortcut(x)) / math.sqrt(2)
        return out


class HighPass(nn.Module):
    """Depthwise 3x3 Laplacian-like filter; the kernel is a buffer fixed by ``w_hpf``."""

    filter: torch.Tensor  # buffer (3, 3)

    def __init__(self, w_hpf: float, device: DeviceLike = None) -> None:  # official signature
        super().__init__()
        kernel = torch.tensor([[-1., -1., -1.], [-1., 8., -1.], [-1., -1., -1.]], device=device)
        self.register_buffer('filter', kernel / w_hpf)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.filter.to(x.dtype).view(1, 1, 3, 3).repeat(x.size(1), 1, 1, 1)
        return F.conv2d(x, weight, padding=1, groups=x.size(1))


MASKED_SIZES = (32, 64, 128)  # feature sizes where the high-pass skip path joins


class Generator(nn.Module):
    """``to_rgb_norm=False`` (ours, off in the paper configurations) drops the InstanceNorm
    before the last 1x1 convolution: that norm removes every channel's per-image level, so an
    image of flat colours can only get its colours from the style by way of small artefacts
    (configs/demo.yaml). Module names stay the official ones (``to_rgb.2`` is the convolution)."""

    def __init__(self, img_size: int = 256, style_dim: int = 64, max_conv_dim: int = 512, w_hpf: float = 1,
                 dim_in: Optional[int] = None, to_rgb_norm: bool = True) -> None:
        super().__init__()
        dim_in = _base_dim(img_size, dim_in)
        self.img_size = img_size
        self.from_rgb = nn.Conv2d(3, dim_in, 3, 1, 1)
        self.encode = nn.ModuleList()
        self.decode = nn.ModuleList()
        self.to_rgb = nn.Sequential(
            nn.InstanceNorm2d(dim_in, affine=True) if to_rgb_norm else nn.Identity(),
            nn.LeakyReLU(0.2),
            nn.Conv2d(dim_in, 3, 1, 1, 0))

        repeat_num = int(math.log2(img_size)) - 4
        if w_hpf > 0:
            repeat_num += 1
        dim_out = dim_in
        for _ in range(repeat_num):
            dim_out = min(dim_in * 2, max_conv_dim)
            self.encode.append(ResBlk(dim_in, dim_out, normalize=True, downsample=True))
            self.decode.insert(0, AdainResBlk(dim_out, dim_in, style_dim, w_hpf=w_hpf, upsample=True))
            dim_in = dim_out
        for _ in range(2):  # bottleneck
            self.encode.append(ResBlk(dim_out, dim_out, normalize=True))
            self.decode.insert(0, AdainResBlk(dim_out, dim_out, style_dim, w_hpf=w_hpf))

        if w_hpf > 0:
            self.hpf = HighPass(w_hpf)

    def forward(self, x: torch.Tensor, s: torch.Tensor, masks: Masks = None) -> torch.Tensor:
        x = self.from_rgb(x)
        cache: Dict[int, torch.Tensor] = {}
        for block in self.encode:
            if masks is not None and x.size(2) in MASKED_SIZES:
                cache[x.size(2)] = x
            x = block(x)
        for block in self.decode:
            x = block(x, s)
            if masks is not None and x.size(2) in MASKED_SIZES:
                mask = masks[0] if x.size(2) == 32 else masks[1]
                mask = F.interpolate(mask, size=x.size(2), mode='bilinear', align_corners=False)
                x = x + self.hpf(mask * cache[x.size(2)])
        return self.to_rgb(x)


def unused_parameter_names(module: nn.Module) -> List[str]:
    """Full names of the parameters of ``module`` that its forward never uses (blocks declare
    them in ``unused_parameters``): DistributedDataParallel must be told to ignore them, or
    it waits for their gradients for ever."""
    return [f'{prefix}.{name}' if prefix else name
            for prefix, sub in module.named_modules() for name in getattr(sub, 'unused_parameters', ())]


def _pick(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Row b of ``out`` (B, K, ...) taken from branch y[b]."""
    return out[torch.arange(y.size(0), device=y.device), y]


class MappingNetwork(nn.Module):
    def __init__(self, latent_dim: int = 16, style_dim: int = 64, num_domains: int = 2) -> None:
        super().__init__()
        layers = [nn.Linear(latent_dim, 512), nn.ReLU()]
        for _ in range(3):
            layers += [nn.Linear(512, 512), nn.ReLU()]
        self.shared = nn.Sequential(*layers)
        self.unshared = nn.ModuleList()
        for _ in range(num_domains):
            self.unshared.append(nn.Sequential(
                nn.Linear(512, 512), nn.ReLU(),
                nn.Linear(512, 512), nn.ReLU(),
                nn.Linear(512, 512), nn.ReLU(),
                nn.Linear(512, style_dim)))

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = self.shared(z)
        return _pick(torch.stack([branch(h) for branch in self.unshared], dim=1), y)


def _conv_trunk(img_size: int, max_conv_dim: int, dim_in: Optional[int]) -> Tuple[List[nn.Module], int]:
    """Shared body of StyleEncoder and Discriminator; returns (layers, out channels)."""
    dim_in = _base_dim(img_size, dim_in)
    blocks: List[nn.Module] = [nn.Conv2d(3, dim_in, 3, 1, 1)]
    dim_out = dim_in
    for _ in range(int(math.log2(img_size)) - 2):
        dim_out = min(dim_in * 2, max_conv_dim)
        blocks.append(ResBlk(dim_in, dim_out, downsample=True))
        dim_in = dim_out
    blocks += [nn.LeakyReLU(0.2), nn.Conv2d(dim_out, dim_out, 4, 1, 0), nn.LeakyReLU(0.2)]
    return blocks, dim_out


class StyleEncoder(nn.Module):
    def __init__(self, img_size: int = 256, style_dim: int = 64, num_domains: int = 2, max_conv_dim: int = 512,
                 dim_in: Optional[int] = None) -> None:
        super().__init__()
        blocks, dim_out = _conv_trunk(img_size, max_conv_dim, dim_in)
        self.shared = nn.Sequential(*blocks)
        self.unshared = nn.ModuleList([nn.Linear(dim_out, style_dim) for _ in range(num_domains)])

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = self.shared(x)
        h = h.view(h.size(0), -1)
        return _pick(torch.stack([head(h) for head in self.unshared], dim=1), y)


class Discriminator(nn.Module):
    def __init__(self, img_size: int = 256, num_domains: int = 2, max_conv_dim: int = 512, dim_in: Optional[int] = None) -> None:
        super().__init__()
        blocks, dim_out = _conv_trunk(img_size, max_conv_dim, dim_in)
        blocks.append(nn.Conv2d(dim_out, num_domains, 1, 1, 0))
        self.main = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        out = self.main(x)
        return _pick(out.view(out.size(0), -1), y)


def split_names(names: str | list | tuple | None) -> Optional[List[str]]:
    """Domain names from a comma-separated string (or a list), None when there are none."""
    if isinstance(names, str):
        names = [n.strip() for n in names.split(',')]
    return list(names) if names else None


# The bounds of the architecture fields (docs/usage.md#model-size-limits): wide enough for any
# configuration a researcher trains (the paper's are 256 px, 2-3 domains, 64/16/512 widths),
# narrow enough that no file or flag can make the builder allocate tens of GiB.
IMG_SIZES = (16, 1024)  # a power of two: each block halves it down to 4x4 (16 is the least with a bottleneck)
DIM_LIMIT = 2048  # style_dim, latent_dim, dim_in, max_conv_dim
MAX_DOMAINS = 256  # the mapping network has one 4-layer branch (about 1M parameters) per domain
W_HPF_LIMIT = 1000.0
NAME_LIMIT = 100  # characters of a domain name
_INT_FIELDS = {'img_size': IMG_SIZES, 'style_dim': (1, DIM_LIMIT), 'latent_dim': (1, DIM_LIMIT),
               'num_domains': (1, MAX_DOMAINS), 'max_conv_dim': (1, DIM_LIMIT), 'dim_in': (1, DIM_LIMIT)}


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_model_value(key: str, value: Any, label: str = '{}') -> Any:
    """``value`` of the architecture field ``key`` in its stored type (w_hpf a float,
    to_rgb_norm a bool, domain_names a tuple or None), or a one-line UserError naming
    ``label.format(key)`` (e.g. '--{}' or "'{}' in FILE"), the value and what it must be.
    Domain names may also come as a comma list. The one set of rules of a model
    configuration: ModelConfig applies it to every instance; the readers of flags, config
    files, Hub folders and the API apply it first to name their source."""
    def bad(rule: str) -> UserError:
        return UserError(f'{label.format(key)} must be {rule}, not {shown(value)}')

    if key in _INT_FIELDS:
        lo, hi = _INT_FIELDS[key]
        if key == 'dim_in' and value is None:
            return None
        if key == 'img_size':
            if not (_is_int(value) and lo <= value <= hi and value & (value - 1) == 0):
                raise bad(f'a power of two from {lo} to {hi}')
            return value
        if not (_is_int(value) and lo <= value <= hi):
            raise bad(f"an integer from {lo} to {hi}{' (or null: the official width)' if key == 'dim_in' else ''}")
        return value
    if key == 'w_hpf':
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) \
            and 0 <= value <= W_HPF_LIMIT
        if not ok:
            raise bad(f'a number from 0 (no face masks) to {W_HPF_LIMIT:g} (the official face models use 1)')
        return float(value)
    if key == 'to_rgb_norm':
        if value not in (0, 1) or not isinstance(value, (bool, int)):
            raise bad('true/false (or 1/0)')
        return bool(value)
    if key == 'domain_names':
        if value is None:
            return None
        names = split_names(value) if isinstance(value, str) else value
        if not isinstance(names, (list, tuple)) or not names or not all(isinstance(n, str) for n in names):
            raise bad("a list of names (or a comma list like 'cat,dog,wild'), or null")
        for name in names:
            if not name or name != name.strip() or len(name) > NAME_LIMIT or ',' in name \
                    or not name.isprintable():
                raise UserError(f'{label.format(key)}: domain name {shown(name)} is not usable; give names of 1 to '
                                f'{NAME_LIMIT} printable characters, without commas or spaces around them (rename '
                                f'the domain folder, or set --domain_names)')
        repeated = sorted({n for n in names if list(names).count(n) > 1})
        if repeated:
            raise UserError(f"{label.format(key)} names {repeated[0]!r} twice; give each domain its own name")
        return tuple(names)
    raise UserError(f'{label.format(key)}: not a model setting; use one of {", ".join(MODEL_KEYS)}')


def check_model_values(values: Mapping[str, Any], label: str = '{}') -> Dict[str, Any]:
    """``check_model_value`` of every architecture field in ``values`` (others are left as they are);
    also that domain names, when both are there, number ``num_domains``."""
    out = dict(values)
    for key in MODEL_KEYS:
        if key in values:
            out[key] = check_model_value(key, values[key], label)
    names, count = out.get('domain_names'), out.get('num_domains')
    if names is not None and count is not None and len(names) != count:
        raise UserError(f"{label.format('domain_names')} gives {len(names)} names but "
                        f"{label.format('num_domains')} is {count}; give one name per domain")
    return out


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Everything that fixes the networks' shapes (plus the domain names), stored with a run
    (its ``config.yaml``) and read back by every mode that loads the run."""
    img_size: int = 256
    style_dim: int = 64
    latent_dim: int = 16
    num_domains: int = 2
    w_hpf: float = 1.0
    dim_in: Optional[int] = None  # None: the official width 2**14 // img_size
    max_conv_dim: int = 512
    to_rgb_norm: bool = True  # official: InstanceNorm before the generator's last convolution
    domain_names: Optional[Tuple[str, ...]] = None

    def __post_init__(self) -> None:
        """Every field checked (``check_model_values``: types and bounds, domain names one per
        domain; one-line UserError), and stored in its type, before any network of this
        configuration is built."""
        checked = check_model_values({f.name: getattr(self, f.name) for f in dataclasses.fields(self)})
        for key, value in checked.items():
            object.__setattr__(self, key, value)

    @classmethod
    def checked(cls, values: Mapping[str, Any], label: str = '{}') -> ModelConfig:
        """The ModelConfig of the model keys in ``values`` (a missing one takes its default,
        other keys are ignored), checked as every instance is, with a one-line UserError naming
        the source by ``label.format(key)`` (e.g. '--{}' or "'{}' in FILE")."""
        full = {f.name: values[f.name] if f.name in values else f.default for f in dataclasses.fields(cls)}
        return cls(**check_model_values(full, label))

    @classmethod
    def from_args(cls, args: Namespace | Munch, domain_names: str | list | None = None) -> ModelConfig:
        """From parsed arguments (a Namespace or Munch; scripts written for the official
        ``main.py`` may lack our keys, which then take their defaults), through ``checked``;
        ``domain_names`` (a list or a comma-separated string) overrides ``args.domain_names``;
        a ``max_conv_dim`` of None or 0 is the default."""
        values = {key: getattr(args, key) for key in MODEL_KEYS if hasattr(args, key)}
        names = split_names(domain_names if domain_names is not None else values.get('domain_names'))
        values.update(max_conv_dim=values.get('max_conv_dim') or cls.max_conv_dim,
                      domain_names=tuple(names) if names else None)
        return cls.checked(values)

    def names(self) -> List[str]:
        """Domain names, or the indices as strings when the run has none."""
        return list(self.domain_names) if self.domain_names else [str(i) for i in range(self.num_domains)]


MODEL_KEYS = tuple(f.name for f in dataclasses.fields(ModelConfig))
# the networks each use needs; EMA copies exist of the inference ones
INFERENCE = ('generator', 'mapping_network', 'style_encoder')
TRAINED = INFERENCE + ('discriminator',)


def build_generator(cfg: ModelConfig) -> Generator:
    """An untrained Generator of ``cfg``."""
    return Generator(cfg.img_size, cfg.style_dim, cfg.max_conv_dim, cfg.w_hpf, cfg.dim_in, cfg.to_rgb_norm)


def build_mapping_network(cfg: ModelConfig) -> MappingNetwork:
    """An untrained MappingNetwork of ``cfg``."""
    return MappingNetwork(cfg.latent_dim, cfg.style_dim, cfg.num_domains)


def build_style_encoder(cfg: ModelConfig) -> StyleEncoder:
    """An untrained StyleEncoder of ``cfg``."""
    return StyleEncoder(cfg.img_size, cfg.style_dim, cfg.num_domains, cfg.max_conv_dim, cfg.dim_in)


def build_discriminator(cfg: ModelConfig) -> Discriminator:
    """An untrained Discriminator of ``cfg``."""
    return Discriminator(cfg.img_size, cfg.num_domains, cfg.max_conv_dim, cfg.dim_in)


def build_networks(cfg: ModelConfig, training: bool = False) -> Munch:
    """The one builder of the networks of ``cfg``: generator, mapping network, style encoder,
    the discriminator when ``training``, and an untrained FAN when ``w_hpf > 0`` (load its
    weights with ``core.nn.fan.load_fan``). Built in the official order, which fixes the random
    draws of PyTorch's default init. For inference (not ``training``) they are in eval mode."""
    nets = Munch(generator=build_generator(cfg), mapping_network=build_mapping_network(cfg),
                 style_encoder=build_style_encoder(cfg))
    if training:
        nets.discriminator = build_discriminator(cfg)
        # official order: the EMA copies were taken here; copying draws no random numbers, so
        # ema_copies() after this builder gives the same weights
    if cfg.w_hpf > 0:
        from core.nn.fan import FAN  # local: FAN is only needed with the high-pass path
        nets.fan = FAN().eval()
    if not training:
        for net in nets.values():
            net.eval()
    return nets


def ema_copies(nets: Munch) -> Munch:
    """The EMA networks: copies of the inference networks of ``nets`` as they are now, sharing
    its FAN. Official quirk: the copies are taken before He init, so they start from PyTorch's
    default init (changes numbers; kept on purpose)."""
    nets_ema = Munch({name: copy.deepcopy(nets[name]) for name in INFERENCE})
    if 'fan' in nets:
        nets_ema.fan = nets.fan
    return nets_ema
