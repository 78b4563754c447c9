"""FAN: the 98-landmark face alignment network whose heat-maps become the
generator's high-pass masks (CelebA-HQ, ``w_hpf > 0``).

State-dict keys equal the official ones, so ``wing.ckpt`` loads as it is.
``heatmaps_to_masks`` is the official heat-map post-processing; ``get_landmark``
gives the landmarks the align mode needs.
"""
from __future__ import annotations

import contextlib
import os
from typing import Any, Literal, Mapping, Optional, Tuple, TypeVar, overload

import torch
import torch.nn as nn
import torch.nn.functional as F

from core.errors import UserError
from core.io.files import StrPath

_M = TypeVar('_M', bound=nn.Module)


class AddCoords(nn.Module):
    """Appends coordinate planes in [-1, 1] (rows, columns, optional radius), and with
    a boundary heat-map the coordinate planes masked by boundary > 0.05."""

    coords: torch.Tensor  # buffer (1, 2 or 3, height, width)

    def __init__(self, height: int = 64, width: int = 64, with_r: bool = False, with_boundary: bool = False) -> None:
        super().__init__()
        self.with_r = with_r
        self.with_boundary = with_boundary
        rows = (torch.arange(height).float() / (height - 1) * 2 - 1).view(height, 1).expand(height, width)
        cols = (torch.arange(width).float() / (width - 1) * 2 - 1).view(1, width).expand(height, width)
        planes = [rows, cols]
        if with_r:
            radius = torch.sqrt(rows ** 2 + cols ** 2)
            planes.append(radius / radius.max())
        # constants, not weights: non-persistent so the official keys stay unchanged
        self.register_buffer('coords', torch.stack(planes).unsqueeze(0), persistent=False)

    def forward(self, x: torch.Tensor, heatmap: Optional[torch.Tensor] = None) -> torch.Tensor:
        coords = self.coords.expand(x.size(0), -1, -1, -1)
        planes = [x, coords]
        if self.with_boundary and heatmap is not None:
            boundary = torch.clamp(heatmap[:, -1:], 0.0, 1.0) > 0.05
            xy = self.coords[:, :2]
            planes.append(torch.where(boundary, xy, torch.zeros_like(xy)))
        return torch.cat(planes, dim=1)


class CoordConvTh(nn.Module):
    """AddCoords then a convolution; also returns the last two input planes."""

    def __init__(self, height: int, width: int, with_r: bool, with_boundary: bool, in_channels: int, first_one: bool = False,
                 **conv: Any) -> None:
        super().__init__()
        self.addcoords = AddCoords(height, width, with_r, with_boundary)
        in_channels += 2 + int(with_r) + (2 if with_boundary and not first_one else 0)
        self.conv = nn.Conv2d(in_channels=in_channels, **conv)

    def forward(self, x: torch.Tensor, heatmap: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        x = self.addcoords(x, heatmap)
        return self.conv(x), x[:, -2:]


def _conv3x3(dim_in: int, dim_out: int) -> nn.Conv2d:
    return nn.Conv2d(dim_in, dim_out, 3, 1, 1, bias=False)


class ConvBlock(nn.Module):
    def __init__(self, in_planes: int, out_planes: int) -> None:  # official argument names
        super().__init__()
        dim_in, dim_out = in_planes, out_planes
        self.bn1 = nn.BatchNorm2d(dim_in)
        self.conv1 = _conv3x3(dim_in, dim_out // 2)
        self.bn2 = nn.BatchNorm2d(dim_out // 2)
        self.conv2 = _conv3x3(dim_out // 2, dim_out // 4)
        self.bn3 = nn.BatchNorm2d(dim_out // 4)
        self.conv3 = _conv3x3(dim_out // 4, dim_out // 4)
        self.downsample: Optional[nn.Sequential] = None
        if dim_in != dim_out:
            self.downsample = nn.Sequential(
                nn.BatchNorm2d(dim_in), nn.ReLU(True), nn.Conv2d(dim_in, dim_out, 1, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        o1 = self.conv1(F.relu(self.bn1(x)))
        o2 = self.conv2(F.relu(self.bn2(o1)))
        o3 = self.conv3(F.relu(self.bn3(o2)))
        residual = x if self.downsample is None else self.downsample(x)
        return torch.cat((o1, o2, o3), dim=1) + residual


class HourGlass(nn.Module):
    def __init__(self, num_modules: int, depth: int, num_features: int, first_one: bool = False) -> None:
        super().__init__()
        self.depth = depth
        self.coordconv = CoordConvTh(64, 64, True, True, 256, first_one,
                                     out_channels=256, kernel_size=1, stride=1, padding=0)
        self._build(depth)

    def _build(self, level: int) -> None:  # registration order = official key order
        self.add_module(f'b1_{level}', ConvBlock(256, 256))
        self.add_module(f'b2_{level}', ConvBlock(256, 256))
        if level > 1:
            self._build(level - 1)
        else:
            self.add_module(f'b2_plus_{level}', ConvBlock(256, 256))
        self.add_module(f'b3_{level}', ConvBlock(256, 256))

    def _level(self, level, x):
        up = self._modules[f'b1_{level}'](x)
        low = self._modules[f'b2_{level}'](F.avg_pool2d(x, 2, stride=2))
        if level > 1:
            low = self._level(level - 1, low)
        else:
            low = self._modules[f'b2_plus_{level}'](low)
        low = self._modules[f'b3_{level}'](low)
        return up + F.interpolate(low, scale_factor=2, mode='nearest')

    def forward(self, x: torch.Tensor, heatmap: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        x, last_channels = self.coordconv(x, heatmap)
        return self._level(self.depth, x), last_channels


class FAN(nn.Module):
    """Input (N, 3, 256, 256) in [0, 1]; output (N, 99, 64, 64) heat-maps (last: boundary)."""

    def __init__(self, num_modules: int = 1, end_relu: bool = False, num_landmarks: int = 98,
                 fname_pretrained: Optional[StrPath] = None) -> None:
        super().__init__()
        self.end_relu = end_relu
        self.conv1 = CoordConvTh(256, 256, True, False, in_channels=3, out_channels=64,
                                 kernel_size=7, stride=2, padding=3)
        self.bn1 = nn.BatchNorm2d(64)
        self.conv2 = ConvBlock(64, 128)
        self.conv3 = ConvBlock(128, 128)
        self.conv4 = ConvBlock(128, 256)
        self.m0 = HourGlass(1, 4, 256, first_one=True)
        self.top_m_0 = ConvBlock(256, 256)
        self.conv_last0 = nn.Conv2d(256, 256, 1, 1, 0)
        self.bn_end0 = nn.BatchNorm2d(256)
        self.l0 = nn.Conv2d(256, num_landmarks + 1, 1, 1, 0)
        if fname_pretrained is not None:
            load_fan(self, fname_pretrained)

    def load_pretrained_weights(self, fname: StrPath) -> FAN:
        return load_fan(self, fname)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, _ = self.conv1(x)
        x = F.relu(self.bn1(x))
        x = F.avg_pool2d(self.conv2(x), 2, stride=2)
        x = self.conv4(self.conv3(x))
        x, _ = self.m0(x)
        x = self.top_m_0(x)
        x = F.relu(self.bn_end0(self.conv_last0(x)))
        out = self.l0(x)
        return F.relu(out) if self.end_relu else out

    def _heatmaps(self, x: torch.Tensor) -> torch.Tensor:
        """98 landmark maps (64x64) of images x in [-1, 1]."""
        x = F.interpolate(x, size=256, mode='bilinear', align_corners=False)
        return self(x * 0.5 + 0.5)[:, :-1]

    @overload
    def get_heatmap(self, x: torch.Tensor, b_preprocess: Literal[True] = ...) -> Tuple[torch.Tensor, torch.Tensor]: ...

    @overload
    def get_heatmap(self, x: torch.Tensor, b_preprocess: Literal[False]) -> torch.Tensor: ...

    @overload
    def get_heatmap(self, x: torch.Tensor, b_preprocess: bool) -> Tuple[torch.Tensor, torch.Tensor] | torch.Tensor: ...

    @torch.no_grad()
    def get_heatmap(self, x: torch.Tensor, b_preprocess: bool = True) -> Tuple[torch.Tensor, torch.Tensor] | torch.Tensor:
        """The generator's two masks (N, 1, 256, 256) for images x in [-1, 1]."""
        heatmaps = self._heatmaps(x)
        return heatmaps_to_masks(heatmaps, drop_boundary=False) if b_preprocess else heatmaps

    @torch.no_grad()
    def get_landmark(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 98, 2) landmarks (x, y) in the pixel units of x."""
        return landmarks_from_heatmaps(self._heatmaps(x)) * (x.size(2) // 64)


def load_fan(fan: _M, path: Optional[StrPath]) -> _M:
    """Loads ``wing.ckpt`` ({'state_dict': ...}); keys the model lacks are ignored."""
    if not path or not os.path.isfile(path):
        raise UserError(f'FAN weights not found at {path!r}: run `bash download.sh wing` '
                        f'or pass --wing_path to a local wing.ckpt (needed when w_hpf > 0)')
    try:
        checkpoint = torch.load(path, map_location='cpu', weights_only=True)
        weights = dict(checkpoint['state_dict'])
    except Exception as e:  # unreadable or not a wing checkpoint
        raise UserError(f'cannot read FAN weights from {path}: {type(e).__name__}; '
                        f'download a fresh wing.ckpt with `bash download.sh wing`') from None
    state = fan.state_dict()
    # every weight must come from the file (BatchNorm counters may be absent in old files):
    # a file of other weights would train a w_hpf model with random face masks
    needed = [k for k in state if not k.endswith('num_batches_tracked')]
    missing = [k for k in needed if getattr(weights.get(k), 'shape', None) != state[k].shape]
    if missing:
        raise UserError(f'{path} holds no FAN weights ({len(missing)} of {len(needed)} missing or of another shape, '
                        f'e.g. {missing[0]}): download wing.ckpt with `bash download.sh wing` or fix --wing_path')
    state.update({k: v for k, v in weights.items() if k in state})
    fan.load_state_dict(state)
    return fan


Masks = Optional[Tuple[torch.Tensor, torch.Tensor]]  # the generator's two masks, or None (w_hpf 0)


def fan_masks(nets: Mapping[str, Any], w_hpf: float, x: torch.Tensor) -> Masks:
    """The generator's two masks of ``x`` from ``nets['fan']`` when ``w_hpf > 0``, else None
    (the one place that decides whether a model uses FAN masks). Always in float32, also
    inside ``--amp`` autocast: the heat-maps are thresholded and raised to powers, so
    half-precision masks would differ from those of sampling and evaluation."""
    if w_hpf <= 0:
        return None
    if nets.get('fan') is None:
        raise UserError('w_hpf > 0 needs the FAN network (nets.fan); build the networks with w_hpf > 0 '
                        'and load wing.ckpt (--wing_path)')
    fan: FAN = nets['fan']
    with _autocast_off(x.device.type):
        return fan.get_heatmap(x.float())


def _autocast_off(device_type: str) -> contextlib.AbstractContextManager[Any]:
    """Autocast switched off for ``device_type``; nothing to switch off where the installed torch
    has no autocast for that device (``torch.autocast`` rejects it, e.g. 'mps' before torch 2.5)."""
    try:
        return torch.autocast(device_type, enabled=False)
    except RuntimeError:  # this torch has no autocast for the device, so none can be on
        return contextlib.nullcontext()


# Landmark index ranges [start, end) of the 98-point layout.
CHIN = (8, 25)
EYEBROWS = (33, 51)
NOSE = (51, 55)
EYES = (60, 76)
LIPS = (76, 96)
# (range, row shift in units of H // 256, power), applied in this order.
PART_OPS = (
    (CHIN, 0, 3),
    (EYEBROWS, -7, 2),
    ((55, 60), 8, 4),    # nostrils
    ((77, 82), -8, 4),   # upper lip
    ((83, 88), 8, 4),    # lower lip
    ((88, 96), -2, 3),   # inner lip
)
ZEROED = list(range(0, 8)) + list(range(25, 33)) + [33, 46, 76, 82]


def _shift(m: torch.Tensor, k: int) -> torch.Tensor:
    """Cyclic row shift: k >= 0 moves content up by k, k < 0 down by |k|."""
    return torch.roll(m, shifts=-k, dims=2)


def truncate(x: torch.Tensor, thres: float = 0.1) -> torch.Tensor:
    """Heat-map values below ``thres`` set to 0."""
    return torch.where(x < thres, torch.zeros_like(x), x)


def normalize(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Min-max normalisation of each (N, C) map of x (N, C, H, W) to [0, 1]."""
    n, c, h, w = x.shape
    flat = x.reshape(n * c, -1)
    lo = flat.min(dim=1, keepdim=True)[0]
    hi = flat.max(dim=1, keepdim=True)[0]
    return ((flat - lo) / (hi - lo + eps)).view(n, c, h, w)


def heatmaps_to_masks(heatmaps: torch.Tensor, drop_boundary: bool = True) -> Tuple[torch.Tensor, torch.Tensor]:
    """FAN heat-maps (N, 99 or 98, 64, 64) -> the two generator masks (N, 1, 256, 256)."""
    if drop_boundary:
        heatmaps = heatmaps[:, :-1]
    x = F.interpolate(heatmaps, scale_factor=256 // heatmaps.size(2), mode='bilinear', align_corners=True)
    n, c, h, w = x.shape
    sw = h // 256
    x = normalize(truncate(x))

    for (start, end), k, power in PART_OPS:
        x[:, start:end] = _shift(x[:, start:end], k * sw) ** power
    x[:, ZEROED] = 0
    x[:, NOSE[0] + 1:NOSE[1]] = _shift(x[:, NOSE[0] + 1:NOSE[1]], 4 * sw)
    eyes = x[:, EYES[0]:EYES[1]]
    x[:, EYES[0]:EYES[1]] = _shift(eyes, -8) ** 3 + _shift(eyes, -24)  # literal 8, 24 (official)

    x2 = x.clone()  # second level: no chin, lips or eyebrows
    for start, end in (CHIN, LIPS, EYEBROWS):
        x2[:, start:end] = 0
    masks0 = x.sum(dim=1, keepdim=True)
    masks1 = x2.sum(dim=1, keepdim=True)
    masks0 = torch.nan_to_num(masks0, nan=0.0, posinf=float('inf'), neginf=float('-inf'))
    return masks0.clamp(0, 1), masks1.clamp(0, 1)


def landmarks_from_heatmaps(hm: torch.Tensor) -> torch.Tensor:
    """Arg-max of each 64x64 map (1-based x, y), nudged 0.25 towards the larger
    neighbour when not on the border, minus 0.5."""
    n, c, h, w = hm.shape
    idx = hm.reshape(n, c, h * w).argmax(dim=2)
    px, py = idx % w, idx // w  # 0-based column and row
    inner = (px > 0) & (px < w - 1) & (py > 0) & (py < h - 1)
    pxc, pyc = px.clamp(1, w - 2), py.clamp(1, h - 2)
    flat = hm.reshape(n, c, h * w)

    def at(row: torch.Tensor, col: torch.Tensor) -> torch.Tensor:
        return flat.gather(2, (row * w + col).unsqueeze(2)).squeeze(2)

    dx = torch.sign(at(pyc, pxc + 1) - at(pyc, pxc - 1))
    dy = torch.sign(at(pyc + 1, pxc) - at(pyc - 1, pxc))
    preds = torch.stack([px + 1, py + 1], dim=2).float()
    preds = preds + 0.25 * torch.stack([dx, dy], dim=2) * inner.unsqueeze(2)
    return preds - 0.5
