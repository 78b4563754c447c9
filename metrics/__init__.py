"""Evaluation metrics of StarGAN v2: FID (``metrics.fid``), LPIPS (``metrics.lpips``)
and the paper's evaluation protocol (``metrics.eval``).

This module holds what both backbones share: the error types and the loading of
torchvision ImageNet weights from a local file or torchvision's cache.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import os
import sys
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, TypeAlias, TypeVar, cast

import torch
from torch import nn

from core.errors import UserError

if TYPE_CHECKING:
    from torchvision.models import WeightsEnum

_M = TypeVar('_M', bound=nn.Module)
# (the package is at the bottom of the layers: core.io.files's StrPath and core.device's DeviceLike, spelled out)
_StrPath: TypeAlias = str | os.PathLike[str]


class MetricsError(UserError):
    """Bad input to a metric (empty folder, unreadable image...); message is one line."""


class MissingWeightsError(MetricsError):
    """Backbone weights are missing or unusable; the message names the file and where to put it."""


def _hub_checkpoint_dir() -> str:
    return os.path.join(torch.hub.get_dir(), 'checkpoints')


def weights_file(weights: WeightsEnum, path: _StrPath | None = None) -> str:
    """Path of the state_dict file for torchvision ``weights`` (a ``WeightsEnum`` member).

    ``path`` (a user flag) wins; otherwise the file in torchvision's cache
    ($TORCH_HOME/hub/checkpoints), downloaded there when absent and possible.
    """
    if path:
        return os.path.abspath(path)
    filename = os.path.basename(weights.url)
    cached = os.path.join(_hub_checkpoint_dir(), filename)
    if not os.path.isfile(cached):
        try:
            os.makedirs(os.path.dirname(cached), exist_ok=True)
            with contextlib.redirect_stderr(io.StringIO()):   # failure is reported by the caller
                torch.hub.download_url_to_file(weights.url, cached, progress=False)
            print(f'downloaded {weights.url} to {cached}', file=sys.stderr)
        except Exception:  # offline, proxy, read-only disk...: the fix is the same
            pass
    return cached


def resolve_weights(weights: WeightsEnum, path: _StrPath | None = None, flag: str = '--weights_path') -> str:
    """Existing state_dict file for torchvision ``weights``; ``MissingWeightsError`` when unavailable."""
    file = weights_file(weights, path)
    if not os.path.isfile(file):
        filename = os.path.basename(weights.url)
        where = f'pass {flag} {file}' if path else \
            f'put it in {_hub_checkpoint_dir()}/ (set TORCH_HOME to change it) or pass {flag} FILE'
        raise MissingWeightsError(
            f'ImageNet weights not found: {file} is missing; download {filename} '
            f'from {weights.url} and {where}')
    return file


def read_state_dict(file: str, weights: WeightsEnum) -> dict[str, torch.Tensor]:
    """The state_dict stored in ``file``; ``MissingWeightsError`` when it cannot be read."""
    filename = os.path.basename(weights.url)
    try:
        state = torch.load(file, map_location='cpu', weights_only=True)
    except Exception as e:
        raise MissingWeightsError(
            f'cannot read {file} ({type(e).__name__}); replace it with {filename} '
            f'from {weights.url}') from None
    if not isinstance(state, dict):
        raise MissingWeightsError(f'{file} is not a state_dict; replace it with {filename} '
                                  f'from {weights.url}')
    return state


def load_into(module: nn.Module, state: Mapping[str, torch.Tensor], file: str, what: str, flag: str) -> None:
    """``module.load_state_dict(state)``, a one-line ``MissingWeightsError`` on a key/shape mismatch."""
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError:
        own = module.state_dict()
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
        first = (missing or unexpected or wrong or ['?'])[0]
        raise MissingWeightsError(
            f'{file} is not a torchvision {what} state_dict ({len(missing)} missing, '
            f'{len(unexpected)} unexpected, {len(wrong)} mis-shaped keys, e.g. {first}); '
            f'pass the right file with {flag}') from None


def file_fingerprint(file: _StrPath) -> str:
    """sha1 of a file's bytes (identifies the weights in cache keys)."""
    h = hashlib.sha1()
    with open(file, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 22), b''):
            h.update(chunk)
    return h.hexdigest()


_BUILT: dict[tuple[str, str, int, int, str], nn.Module] = {}  # (kind, file, size, mtime, device) -> network


def build_cached(kind: str, weights: WeightsEnum, path: _StrPath | None, flag: str, device: torch.device | str | None,
                 make: Callable[[dict[str, torch.Tensor], str], _M], cache: bool = True) -> _M:
    """A backbone built once per (kind, weights file, device) and reused:
    ``make(state_dict, file)`` builds it; ``cache=False`` forces a fresh build."""
    file = resolve_weights(weights, path, flag)
    st = os.stat(file)
    key = (kind, file, st.st_size, st.st_mtime_ns, str(device))
    if cache and key in _BUILT:
        return cast(_M, _BUILT[key])
    net = make(read_state_dict(file, weights), file)
    if cache:
        _BUILT[key] = net
    return net
