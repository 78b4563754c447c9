"""The official ``core.utils`` names (compatibility layer: delegates), for scripts written
against the official repository.

Each is this project's own function (``core.use.sample_grids``, ``core.io.images``, ``core.use.video``,
``core.train.step``, ``core.io.files``)
under the official name and argument names; the files written are those of our sample
mode and training grids. Differences that remain (see docs/official_dropin.md):
``video_ref`` / ``video_latent`` write this project's layout and interpolate across
domains too; ``save_video`` supports libx264 without extra ffmpeg filters only.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING as _TYPE_CHECKING
from typing import TypeVar as _TypeVar

import numpy as np
import torch
from torch import nn

from core.errors import UserError as _UserError
from core.io.files import write_json as _write_json
from core.io.images import denormalize, save_image  # noqa: F401 (official names)
from core.io.images import to_float255 as _to_float255
from core.nn.fan import fan_masks as _fan_masks
from core.nn.styles import mean_style as _mean_style
from core.train.step import he_init  # noqa: F401 (official name)
from core.use import sample_grids as _sample_grids
from core.use.video import SLOWDOWN as _SLOWDOWN
from core.use.video import VideoWriter as _VideoWriter
from core.use.video import interpolation_weights as _interpolation_weights
from core.use.video import video_latent as _video_latent
from core.use.video import video_ref as _video_ref

if _TYPE_CHECKING:  # names of the annotations only: the module's public names are the official ones
    from argparse import Namespace
    from collections.abc import Iterable, Mapping, Sequence
    from typing import Any, List, Tuple

    import numpy.typing as npt
    from munch import Munch

    from core.io.files import StrPath

__all__ = ['save_json', 'print_network', 'he_init', 'denormalize', 'save_image', 'translate_and_reconstruct',
           'translate_using_latent', 'translate_using_reference', 'debug_image', 'sigmoid', 'get_alphas',
           'interpolate', 'slide', 'video_ref', 'video_latent', 'save_video', 'tensor2ndarray255']

_P = _TypeVar('_P', str, os.PathLike[str])  # functions that write a file return its path as given


def save_json(json_file: Mapping[str, Any], filename: _P) -> _P:
    """Writes the dict ``json_file`` to ``filename`` (indented JSON, written atomically)."""
    return _write_json(json_file, filename)


def print_network(network: nn.Module, name: str) -> int:
    """Prints the number of parameters of ``network``; returns it."""
    count = sum(p.numel() for p in network.parameters())
    print(f'Number of parameters of {name}: {count}')
    return count


def sigmoid(x: npt.ArrayLike, w: float = 1) -> npt.NDArray[np.float64]:
    return 1.0 / (1.0 + np.exp(-w * np.asarray(x, dtype=np.float64)))


def get_alphas(start: float = -5, end: float = 5, step: float = 0.5, len_tail: int = 10) -> List[float]:
    """Style weights of one video transition; the defaults give ``core.use.video.interpolation_weights()``."""
    if (start, end, step, len_tail) == (-5, 5, 0.5, 10):
        return _interpolation_weights()
    return [0.0] + [float(a) for a in sigmoid(np.arange(start, end, step))] + [1.0] * len_tail


def translate_and_reconstruct(nets: Munch, args: Namespace | Munch, x_src: torch.Tensor, y_src: torch.Tensor,
                              x_ref: torch.Tensor, y_ref: torch.Tensor, filename: StrPath) -> None:
    """The cycle-consistency grid (``core.use.sample_grids.translate_and_reconstruct``)."""
    _sample_grids.translate_and_reconstruct(nets, args.w_hpf, x_src, y_src, x_ref, y_ref, filename)


@torch.no_grad()
def translate_using_latent(nets: Munch, args: Namespace | Munch, x_src: torch.Tensor, y_trg_list: Sequence[torch.Tensor],
                           z_trg_list: Iterable[torch.Tensor], psi: float, filename: StrPath) -> None:
    """The latent-guided grid (``core.use.sample_grids.translate_using_latent``), each domain's
    mean style from the global RNG."""
    mean_styles = [_mean_style(nets, y_trg[0], args.latent_dim) for y_trg in y_trg_list]
    _sample_grids.translate_using_latent(nets, args.w_hpf, x_src, y_trg_list, z_trg_list, psi, filename, mean_styles)


def translate_using_reference(nets: Munch, args: Namespace | Munch, x_src: torch.Tensor, x_ref: torch.Tensor,
                              y_ref: torch.Tensor, filename: StrPath) -> None:
    """The reference-guided grid (``core.use.sample_grids.translate_using_reference``)."""
    _sample_grids.translate_using_reference(nets, args.w_hpf, x_src, x_ref, y_ref, filename)


@torch.no_grad()
def interpolate(nets: Munch, args: Namespace | Munch, x_src: torch.Tensor, s_prev: torch.Tensor,
                s_next: torch.Tensor) -> torch.Tensor:
    """(T, 3, 2H, N*W) frames: the sources on top, below them translated with the style
    moving from ``s_prev`` to ``s_next`` by :func:`get_alphas` (frames on the CPU)."""
    masks = _fan_masks(nets, args.w_hpf, x_src)
    top = torch.cat(list(x_src), dim=2)
    frames = []
    for alpha in get_alphas():
        x_fake = nets.generator(x_src, torch.lerp(s_prev, s_next, alpha), masks=masks)
        frames.append(torch.cat([top, torch.cat(list(x_fake), dim=2)], dim=1).cpu())
    return torch.stack(frames)


def slide(entries: List[torch.Tensor] | Tuple[torch.Tensor, ...], margin: int = 32) -> torch.Tensor:
    """(T, C, 2H, W + margin) frames (-1 = black) of the pair [x_prev above x_next]
    (``entries``: two (1, C, H, W) images) sliding up by H as the weights of
    :func:`get_alphas` go from 0 to 1: the lower cell shows x_prev first, x_next at the end."""
    _, c, h, w = entries[0].shape
    pair = torch.cat(entries, dim=2)[0].cpu()
    alphas = get_alphas()
    canvas = -torch.ones(len(alphas), c, 2 * h, w + margin)
    for t, alpha in enumerate(alphas):
        top = int(h * (1 - alpha))
        canvas[t, :, top:, :w] = pair[:, :2 * h - top]
    return canvas


def video_ref(nets: Munch, args: Namespace | Munch, x_src: torch.Tensor, x_ref: torch.Tensor, y_ref: torch.Tensor,
              fname: _P) -> _P:
    """Reference-guided video, as our sample mode writes it (``core.use.video.video_ref``)."""
    return _video_ref(nets, args.w_hpf, x_src, x_ref, y_ref, fname)


def video_latent(nets: Munch, args: Namespace | Munch, x_src: torch.Tensor, y_list: Iterable[int | torch.Tensor],
                 z_list: Iterable[torch.Tensor], psi: float, fname: _P) -> _P:
    """Latent-guided video, as our sample mode writes it (``core.use.video.video_latent``)."""
    return _video_latent(nets, args.w_hpf, x_src, y_list, z_list, psi, fname)


def save_video(fname: _P, images: npt.ArrayLike, output_fps: float = 30, vcodec: str = 'libx264', filters: str = '') -> _P:
    """Writes NHWC frames (0-255) as an H.264 video played at half speed (``output_fps`` / 2
    frames per second, as the official file plays)."""
    if vcodec != 'libx264' or filters:
        raise _UserError("save_video writes libx264 without extra filters only; for anything else "
                         "use core.use.video.VideoWriter or ffmpeg on the frames")
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f'images must be an (N, H, W, 3) array, got shape {images.shape}')
    with _VideoWriter(fname, fps=output_fps / _SLOWDOWN) as writer:
        for frame in images:
            writer.write(np.clip(frame, 0, 255).astype(np.uint8))
    return fname


def tensor2ndarray255(images: torch.Tensor) -> npt.NDArray[np.floating]:
    """(N, 3, H, W) images in [-1, 1] -> (N, H, W, 3) float array in [0, 255]."""
    return _to_float255(images)


def debug_image(nets: Munch, args: Any, inputs: Munch, step: int) -> None:
    """The official training-time grids: ``core.use.sample_grids.training_grids`` with the training
    flags (``--sample_dir``, ``--seed``, the model's)."""
    _sample_grids.training_grids(nets, inputs, step, args.sample_dir, _sample_grids.GridConfig.from_args(args))
