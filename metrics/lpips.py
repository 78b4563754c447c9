"""LPIPS (AlexNet, v0.1) as the official StarGAN v2 evaluation computes it.

The trunk is torchvision's AlexNet with ImageNet weights, the five 1x1 linear
heads are the ``lpips`` package's v0.1 ``alex.pth`` (the official weights). For
two batches in [-1, 1] the value is the batch mean; for a group of K batches (K
outputs of the same sources) it is the mean over all pairs i < j.
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence

import lpips as lpips_pkg
import torch
import torch.nn as nn
from torchvision import models

from core.device import DeviceLike, as_device, exact_fp32
from core.io.files import StrPath
from metrics import MetricsError, build_cached, load_into, read_state_dict, resolve_weights


def normalize(x: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """Unit-normalise feature maps along channels, the official way: x / sqrt(sum x^2 + eps)."""
    return x * torch.rsqrt(torch.sum(x ** 2, dim=1, keepdim=True) + eps)


class LPIPS(nn.Module):
    """AlexNet LPIPS v0.1 built from the ``lpips`` package's modules and linear weights.

    ``features`` are the torchvision ``AlexNet.features`` with ImageNet weights; the
    package keeps their indices inside its slices (``net.slice2.3`` is ``features.3``).
    """

    def __init__(self, features: nn.Sequential | None = None) -> None:
        super().__init__()
        if features is None:  # the official LPIPS(): ImageNet AlexNet from torchvision's cache
            features = _alexnet_from(None).features
        with warnings.catch_warnings():   # pnet_rand builds torchvision's AlexNet the deprecated way
            warnings.simplefilter('ignore')
            pkg = lpips_pkg.LPIPS(net='alex', version='0.1', pnet_rand=True, verbose=False)
        self.scaling_layer = pkg.scaling_layer   # (x - shift) / scale
        self.net = pkg.net                       # five slices, outputs after each ReLU
        self.lins = pkg.lins                     # 1x1 heads: dropout (off in eval), conv, no bias
        trunk = {f'{name}.{index}.{key}': value
                 for name, slice_ in self.net.named_children()
                 for index in slice_._modules
                 for key, value in features[int(index)].state_dict().items()}
        self.net.load_state_dict(trunk, strict=True)

    @exact_fp32()  # features in float32, not TF32 (Ampere and later)
    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Normalised feature maps of images x in [-1, 1]."""
        return [normalize(f) for f in self.net(self.scaling_layer(x))]

    @exact_fp32()
    def distance(self, fx: Sequence[torch.Tensor], fy: Sequence[torch.Tensor]) -> torch.Tensor:
        """Batch-mean LPIPS between two lists of normalised feature maps."""
        return sum(lin((a - b) ** 2).mean() for a, b, lin in zip(fx, fy, self.lins))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.distance(self.features(x), self.features(y))


ALEXNET_WEIGHTS = models.AlexNet_Weights.IMAGENET1K_V1


def _alexnet(state: dict[str, torch.Tensor], file: str) -> models.AlexNet:
    alexnet = models.alexnet(weights=None)
    load_into(alexnet, state, file, 'alexnet', '--alexnet_path')
    return alexnet


def _alexnet_from(alexnet_path: StrPath | None) -> models.AlexNet:
    file = resolve_weights(ALEXNET_WEIGHTS, alexnet_path, '--alexnet_path')
    return _alexnet(read_state_dict(file, ALEXNET_WEIGHTS), file)


class AlexNet(nn.Module):
    """The official name: AlexNet ``features`` (ImageNet weights from ``alexnet_path`` or
    torchvision's cache); forward returns the feature maps after each ReLU."""

    def __init__(self, alexnet_path: StrPath | None = None) -> None:
        super().__init__()
        self.layers = _alexnet_from(alexnet_path).features
        self.channels = [m.out_channels for m in self.layers if isinstance(m, nn.Conv2d)]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        fmaps = []
        for layer in self.layers:
            x = layer(x)
            if isinstance(layer, nn.ReLU):
                fmaps.append(x)
        return fmaps


class Conv1x1(nn.Module):
    """The official name of an LPIPS linear head: dropout (off in eval), 1x1 convolution, no bias."""

    def __init__(self, in_channels: int, out_channels: int = 1) -> None:
        super().__init__()
        self.main = nn.Sequential(nn.Dropout(0.5), nn.Conv2d(in_channels, out_channels, 1, 1, 0, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x)


def build_lpips(alexnet_path: StrPath | None = None, device: DeviceLike = None, cache: bool = True) -> LPIPS:
    """LPIPS in eval mode, AlexNet weights from ``alexnet_path`` or torchvision's cache.

    Built once per (weights file, device) and reused (``cache=False`` forces a fresh build).
    ``device`` None follows the project's one device decision, as Inception does.
    """
    device = as_device(device)

    def make(state: dict[str, torch.Tensor], file: str) -> LPIPS:
        return LPIPS(_alexnet(state, file).features).eval().requires_grad_(False).to(device)
    return build_cached('lpips', ALEXNET_WEIGHTS, alexnet_path, '--alexnet_path',
                        device, make, cache)


@torch.no_grad()
def calculate_lpips_given_images(group_of_images: Sequence[torch.Tensor], alexnet_path: StrPath | None = None,
                                 net: LPIPS | None = None) -> float:
    """Mean LPIPS over all pairs i < j of ``group_of_images`` (K >= 2 batches of the same shape
    in [-1, 1]). Each batch's features are computed once and reused for all its pairs.
    """
    group = group_of_images
    if len(group) < 2:
        raise MetricsError(f'LPIPS needs at least 2 outputs per source, got {len(group)}; '
                           f'set num_outs_per_domain >= 2')
    shapes = {tuple(x.shape) for x in group}
    if len(shapes) != 1 or len(next(iter(shapes))) != 4 or next(iter(shapes))[1] != 3:
        raise MetricsError(f'LPIPS needs batches of the same shape (N, 3, H, W), got {sorted(shapes)}')
    net = net if net is not None else build_lpips(alexnet_path, group[0].device)
    feats = [net.features(x) for x in group]
    values = [net.distance(feats[i], feats[j])
              for i in range(len(group)) for j in range(i + 1, len(group))]
    return torch.stack(values).mean().item()
