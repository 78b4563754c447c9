"""Style-interpolation videos, streamed frame by frame to ffmpeg.

Two videos, as in the paper's project page:

* :func:`video_ref` -- reference-guided: the style moves from one reference image's
  style code to the next one's while the sources are translated with it;
* :func:`video_latent` -- latent-guided: the style moves along a sequence of latent
  codes (for one or more target domains), truncated towards each domain's mean style.

Timing (as the official video code). Every transition between two styles uses the weights
``0, sigmoid(-5), sigmoid(-4.5), ..., sigmoid(4.5), 1 x 10`` (31 frames: a smooth
S-curve, then a pause on the arrival style); the last frame of the video is held for
10 more frames. The frames are meant for 30 fps played at half speed, i.e. each frame
is shown for 2/30 s. We write each frame once into a stream declared as **15 fps**
(``FPS / SLOWDOWN``): the file then plays at half speed in every player, with no
duplicated frames and no player-side speed setting. The video is H.264 (libx264),
``yuv420p`` (the pixel format every player decodes); odd frame sizes are padded by one
row/column, since yuv420p needs even sizes.

Memory. Nothing is collected: frames come from generator functions and go to the
ffmpeg pipe one at a time, so memory does not grow with the number of references or
latent codes (only the style codes, a few floats each, are kept). The file is written
under a temporary name beside the target and renamed when complete: an interrupted run
never leaves a truncated video under the final name.

Layouts (cells are the images, scaled up by an integer factor, see ``scale``)::

    video_ref                                video_latent
    +--------+-------+-------+---            +-------+-------+---
    | a -> b | src 1 | src 2 |               | src 1 | src 2 |
    | [bar]  |       |       |               +-------+-------+---
    +--------+-------+-------+---            | out 1 | out 2 |
    |  ref   | out 1 | out 2 |               +-------+-------+---
    +--------+-------+-------+---

``a -> b``: thumbnails of the two references of the current transition; ``bar``: how far
the style has moved from a to b; ``ref``: the two references cross-faded with the same
weight as the styles; ``out k``: source k translated with the interpolated style.
"""
from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from types import ModuleType, TracebackType
from typing import Any, List, Literal, Optional, Tuple, TypeVar

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from munch import Munch

from core.errors import UserError
from core.io.files import StrPath
from core.io.images import to_uint8
from core.nn.fan import fan_masks
from core.nn.styles import N_MEAN_STYLE, domain_mean_style

__all__ = ['FPS', 'SLOWDOWN', 'HOLD_LAST', 'VideoWriter', 'interpolation_weights',
           'auto_scale', 'video_ref', 'video_latent', 'ref_frames',
           'latent_frames', 'domain_mean_style']

FPS = 30            # nominal frame rate of the interpolation (official)
SLOWDOWN = 2        # played at half speed: the file is declared FPS / SLOWDOWN = 15 fps
HOLD_LAST = 10      # the last frame is shown this many more times
DEFAULT_CRF = 18    # libx264 constant rate factor: visually near-lossless
VIDEO_EXTENSIONS = ('.mp4', '.mkv', '.mov', '.m4v')
MIN_CELL = 128      # auto scale: small images are enlarged to at least this many pixels

_P = TypeVar('_P', str, os.PathLike[str])  # the video functions return their path argument as given


def interpolation_weights() -> List[float]:
    """The 31 style weights of one transition: 0, sigmoid(-5 ... 4.5 step 0.5), then 1 x 10."""
    return [0.0] + torch.sigmoid(torch.arange(-5, 5, 0.5)).tolist() + [1.0] * 10


def auto_scale(img_size: int) -> int:
    """Integer enlargement making a cell at least MIN_CELL pixels (1 for 128 px and up)."""
    return max(1, -(-MIN_CELL // int(img_size)))


def _import_ffmpeg() -> ModuleType:
    try:
        import imageio_ffmpeg
    except ImportError:
        raise UserError('writing videos needs the imageio-ffmpeg package: pip install imageio-ffmpeg') from None
    try:
        imageio_ffmpeg.get_ffmpeg_exe()
    except Exception as e:  # the package is there but its ffmpeg binary is not
        raise UserError(f'imageio-ffmpeg found no ffmpeg binary ({str(e).splitlines()[0][:120]}): '
                        f'reinstall it with pip install --force-reinstall imageio-ffmpeg') from None
    return imageio_ffmpeg


class VideoWriter:
    """H.264 / yuv420p video written frame by frame through imageio-ffmpeg.

    ::

        with VideoWriter('out.mp4') as w:      # 15 fps = 30 fps at half speed
            for frame in frames:               # (H, W, 3) uint8, all the same size
                w.write(frame)

    ffmpeg starts at the first frame, whose size fixes the video's. ``scale`` enlarges
    every frame by an integer factor (nearest neighbour, keeps pixels sharp); odd sizes
    are padded to even ones by repeating the last row/column. The file appears under
    ``path`` only when the writer closes without an exception; on an exception ffmpeg is
    stopped and the partial file removed.
    """

    def __init__(self, path: StrPath, fps: float = FPS / SLOWDOWN, scale: int = 1, crf: int = DEFAULT_CRF,
                 ffmpeg_log_level: str = 'error') -> None:
        path = os.fspath(path)
        ext = os.path.splitext(path)[1].lower()
        if ext not in VIDEO_EXTENSIONS:
            raise UserError(f"video file '{path}' must end in {', '.join(VIDEO_EXTENSIONS)} (H.264 video)")
        if int(scale) != scale or scale < 1:
            raise ValueError(f'scale must be a positive integer, not {scale!r}')
        if not fps > 0:
            raise ValueError(f'fps must be > 0, not {fps!r}')
        self._ffmpeg = _import_ffmpeg()
        self.path = path
        self.fps = fps
        self.scale = int(scale)
        self.crf = crf
        self.log_level = ffmpeg_log_level
        self.size: Optional[Tuple[int, int]] = None  # (W, H) of the frames given, before scaling and padding
        self.frames = 0         # frames written so far
        self._gen: Optional[Generator[Any, Optional[np.ndarray], None]] = None  # the imageio-ffmpeg generator, once started
        self._tmp: Optional[str] = None
        self._closed = False

    # ------------------------------------------------------------------ context manager
    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type: Optional[type[BaseException]], exc: Optional[BaseException],
                 tb: Optional[TracebackType]) -> Literal[False]:
        if exc_type is None:
            self.close()
        else:
            self.abort()
        return False

    def __del__(self) -> None:  # a writer dropped without close(): stop ffmpeg, leave no partial file
        try:
            if not self._closed:
                self.abort()
        except Exception:
            pass

    # ------------------------------------------------------------------ writing
    def _start(self, h: int, w: int) -> Generator[Any, Optional[np.ndarray], None]:
        folder = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(folder, exist_ok=True)
        base, ext = os.path.splitext(os.path.basename(self.path))
        # ffmpeg creates the file (normal permissions); the name keeps the extension,
        # which tells ffmpeg the container
        self._tmp = os.path.join(folder, f'.{base}.{uuid.uuid4().hex[:12]}.partial{ext}')
        self.size = (w, h)
        out_w, out_h = w * self.scale, h * self.scale
        out_w, out_h = out_w + out_w % 2, out_h + out_h % 2
        self._out_size = (out_w, out_h)
        self._gen = gen = self._ffmpeg.write_frames(
            self._tmp, (out_w, out_h), fps=self.fps, codec='libx264', pix_fmt_in='rgb24',
            pix_fmt_out='yuv420p', quality=None, macro_block_size=1,
            ffmpeg_log_level=self.log_level,
            output_params=['-crf', str(self.crf), '-movflags', '+faststart'])
        gen.send(None)
        return gen

    def write(self, frame: npt.ArrayLike) -> None:
        """Appends one (H, W, 3) uint8 RGB frame."""
        if self._closed:
            raise ValueError(f'VideoWriter for {self.path} is closed')
        frame = np.asarray(frame)
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            raise ValueError(f'a frame must be an (H, W, 3) uint8 array, got {frame.dtype} {frame.shape}')
        h, w = frame.shape[:2]
        gen = self._gen
        if gen is None:
            gen = self._start(h, w)
        elif (w, h) != self.size:
            assert self.size is not None  # set with the generator (_start)
            raise ValueError(f'frame of size {w}x{h} in a video of {self.size[0]}x{self.size[1]}')
        if self.scale > 1:
            frame = frame.repeat(self.scale, axis=0).repeat(self.scale, axis=1)
        out_w, out_h = self._out_size
        if frame.shape[1] != out_w or frame.shape[0] != out_h:
            frame = np.pad(frame, ((0, out_h - frame.shape[0]), (0, out_w - frame.shape[1]), (0, 0)), mode='edge')
        gen.send(np.ascontiguousarray(frame))
        self.frames += 1

    # ------------------------------------------------------------------ closing
    def close(self) -> str:
        """Finishes the file and moves it to ``path``; returns ``path``."""
        if self._closed:
            return self.path
        if self._gen is None:
            self._closed = True
            raise ValueError(f'no frame was written to {self.path}')
        self._closed = True
        self._gen.close()  # closes ffmpeg's stdin and waits for it to finish the file
        self._gen = None
        if self._tmp is None or not os.path.isfile(self._tmp) or os.path.getsize(self._tmp) == 0:
            self._remove_tmp()
            raise RuntimeError(f'ffmpeg failed to write {self.path}')
        os.replace(self._tmp, self.path)
        self._tmp = None
        return self.path

    def abort(self) -> None:
        """Stops ffmpeg and removes the partial file (``path`` is left untouched)."""
        self._closed = True
        gen, self._gen = self._gen, None
        try:
            if gen is not None:
                gen.close()
        finally:
            self._remove_tmp()

    def _remove_tmp(self) -> None:
        if self._tmp is not None and os.path.exists(self._tmp):
            os.remove(self._tmp)
        self._tmp = None


# ---------------------------------------------------------------------------- layout

def _row(cells: List[torch.Tensor]) -> torch.Tensor:
    return torch.cat(cells, dim=2)


def _grid(rows: Iterable[List[torch.Tensor]]) -> torch.Tensor:
    """Rows of (3, S, S) cells -> one (3, rows*S, cols*S) image."""
    return torch.cat([_row(r) for r in rows], dim=1)


def _pair_cell(ref_a: torch.Tensor, ref_b: torch.Tensor, alpha: float) -> torch.Tensor:
    """White cell with thumbnails of ``ref_a`` (left) and ``ref_b`` (right)
    and, along the bottom, a bar filled to ``alpha``."""
    size = ref_a.size(-1)
    cell = torch.ones(3, size, size, dtype=ref_a.dtype, device=ref_a.device)
    margin = max(1, size // 32)
    thumb = (size - 3 * margin) // 2
    thumbs = F.interpolate(torch.stack([ref_a, ref_b]), size=(thumb, thumb), mode='bilinear',
                           align_corners=False, antialias=True)
    top = (size - thumb) // 2
    cell[:, top:top + thumb, margin:margin + thumb] = thumbs[0]
    cell[:, top:top + thumb, 2 * margin + thumb:2 * margin + 2 * thumb] = thumbs[1]
    bar = max(1, size // 16)
    filled = int(round(float(alpha) * size))
    cell[:, size - bar:, :] = 0.5            # grey track
    cell[:, size - bar:, :filled] = -1.0     # black progress
    return cell


# ---------------------------------------------------------------------------- styles

def _batched(fn: Callable[[slice], torch.Tensor], n: int, chunk: int) -> torch.Tensor:
    return torch.cat([fn(slice(i, min(i + chunk, n))) for i in range(0, n, chunk)], dim=0)


def _as_domain(y: int | torch.Tensor) -> int:
    if torch.is_tensor(y):
        flat = y.reshape(-1)
        if flat.numel() == 0 or not bool((flat == flat[0]).all()):
            raise ValueError('each entry of y_trg_list must name one domain (a scalar or a constant tensor)')
        return int(flat[0])
    return int(y)


def _check_batch(x: object, what: str) -> None:
    if not torch.is_tensor(x) or x.dim() != 4 or x.size(1) != 3:
        shape = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
        raise ValueError(f'{what} must be a (N, 3, H, W) batch, got {shape}')


# ---------------------------------------------------------------------------- frames

@torch.no_grad()
def ref_frames(nets: Munch, w_hpf: float, x_src: torch.Tensor, x_ref: torch.Tensor,
               y_ref: torch.Tensor | Sequence[int], loop: bool = False, chunk: int = 16) -> Iterator[torch.Tensor]:
    """Yields the frames of the reference-guided video, one (3, H, W) tensor at a time.

    For each consecutive pair of references (a, b) -- and b = the first one after the last
    when ``loop`` -- the style goes from E(x_ref[a], y_ref[a]) to E(x_ref[b], y_ref[b]) with
    :func:`interpolation_weights`; the style vectors are interpolated even when the two
    references belong to different domains. No hold frames (see :func:`video_ref`).
    """
    _check_batch(x_src, 'x_src')
    _check_batch(x_ref, 'x_ref')
    n_ref = x_ref.size(0)
    if n_ref < 2:
        raise UserError(f'a reference video interpolates between references: give at least 2 '
                        f'reference images, not {n_ref}')
    if x_ref.shape[1:] != x_src.shape[1:]:
        raise UserError(f'reference images are {tuple(x_ref.shape[2:])} but sources are '
                        f'{tuple(x_src.shape[2:])}: use images of the same size')
    y_ref = torch.as_tensor(y_ref, dtype=torch.long, device=x_ref.device).reshape(-1)
    if y_ref.numel() != n_ref:
        raise ValueError(f'y_ref has {y_ref.numel()} labels for {n_ref} reference images')
    n = x_src.size(0)
    masks = fan_masks(nets, w_hpf, x_src)  # once per video
    # the style codes of all references: a few floats each, computed in chunks
    styles = _batched(lambda sl: nets.style_encoder(x_ref[sl], y_ref[sl]), n_ref, chunk)
    pairs = [(i, i + 1) for i in range(n_ref - 1)] + ([(n_ref - 1, 0)] if loop else [])
    weights = interpolation_weights()
    for a, b in pairs:
        for alpha in weights:
            s = torch.lerp(styles[a], styles[b], alpha).unsqueeze(0).expand(n, -1)
            out = nets.generator(x_src, s, masks=masks)
            ref = torch.lerp(x_ref[a], x_ref[b], alpha)
            top = [_pair_cell(x_ref[a], x_ref[b], alpha)] + list(x_src)
            bottom = [ref] + list(out)
            yield _grid([top, bottom])


@torch.no_grad()
def latent_frames(nets: Munch, w_hpf: float, x_src: torch.Tensor, y_trg_list: Iterable[int | torch.Tensor],
                  z_trg_list: Iterable[torch.Tensor], psi: float, n_mean: int = N_MEAN_STYLE,
                  generator: Optional[torch.Generator] = None) -> Iterator[torch.Tensor]:
    """Yields the frames of the latent-guided video, one (3, H, W) tensor at a time.

    The style sequence is, for each domain y of ``y_trg_list`` and each z of ``z_trg_list``,
    s = lerp(mean style of y, F(z, y), psi), the mean taken over ``n_mean`` random codes
    once per domain. A z is (latent_dim,), (1, latent_dim) (shared by all sources) or
    (N, latent_dim) (one per source). Consecutive styles are interpolated with
    :func:`interpolation_weights`. No hold frames (see :func:`video_latent`).
    """
    _check_batch(x_src, 'x_src')
    n = x_src.size(0)
    domains = [_as_domain(y) for y in y_trg_list]
    zs = [torch.as_tensor(z, dtype=torch.float32, device=x_src.device) for z in z_trg_list]
    zs = [z.unsqueeze(0) if z.dim() == 1 else z for z in zs]
    if not domains or not zs:
        raise ValueError('video_latent needs at least one target domain and one latent code')
    for z in zs:
        if z.dim() != 2 or z.size(0) not in (1, n) or z.size(1) != zs[0].size(1):
            raise ValueError(f'latent codes must be (latent_dim,), (1, latent_dim) or ({n}, latent_dim); '
                             f'got {tuple(z.shape)}')
    if len(domains) * len(zs) < 2:
        raise UserError('a latent video interpolates between styles: give at least 2 latent codes '
                        'or 2 target domains')
    masks = fan_masks(nets, w_hpf, x_src)  # once per video
    latent_dim = zs[0].size(1)
    styles: List[torch.Tensor] = []  # (N or 1, style_dim) each
    for y in domains:
        mean = domain_mean_style(nets.mapping_network, y, latent_dim, x_src.device, n=n_mean,
                                 generator=generator)
        for z in zs:
            s = nets.mapping_network(z, torch.full((z.size(0),), y, dtype=torch.long, device=z.device))
            styles.append(torch.lerp(mean, s, float(psi)))
    weights = interpolation_weights()
    for a, b in zip(styles[:-1], styles[1:]):
        for alpha in weights:
            s = torch.lerp(a, b, alpha).expand(n, -1)
            out = nets.generator(x_src, s, masks=masks)
            yield _grid([list(x_src), list(out)])


def _write(frames: Iterable[torch.Tensor], fname: _P, scale: int, crf: int) -> _P:
    """Streams ``frames`` to ``fname``; the last one is written HOLD_LAST more times."""
    with VideoWriter(fname, scale=scale, crf=crf) as writer:
        last = None
        for frame in frames:
            last = to_uint8(frame)
            writer.write(last)
        if last is None:
            raise ValueError('no frames to write')
        for _ in range(HOLD_LAST):
            writer.write(last)
    return fname


def _scale_for(x: torch.Tensor, scale: Optional[int]) -> int:
    return auto_scale(x.size(-1)) if scale is None else scale


def video_ref(nets: Munch, w_hpf: float, x_src: torch.Tensor, x_ref: torch.Tensor,
              y_ref: torch.Tensor | Sequence[int], fname: _P, loop: bool = False, scale: Optional[int] = None,
              crf: int = DEFAULT_CRF) -> _P:
    """Writes the reference-guided interpolation video to ``fname`` (.mp4); returns ``fname``.

    ``x_src`` (N, 3, H, W) and ``x_ref`` (R >= 2, 3, H, W) in [-1, 1], ``y_ref`` (R,) the
    references' domains. (R - 1) transitions of 31 frames (R with ``loop``), then the last
    frame held 10 frames; 15 fps (30 fps at half speed). ``scale``: integer enlargement of
    every pixel (None: enough to make cells >= 128 px). Uses ``w_hpf`` (FAN masks of
    the sources, computed once). Runs on the device of the inputs; memory does not
    depend on R.
    """
    _check_batch(x_src, 'x_src')
    _import_ffmpeg()  # fail early, before any network runs
    frames = ref_frames(nets, w_hpf, x_src, x_ref, y_ref, loop=loop)
    return _write(frames, fname, _scale_for(x_src, scale), crf)


def video_latent(nets: Munch, w_hpf: float, x_src: torch.Tensor, y_trg_list: Iterable[int | torch.Tensor],
                 z_trg_list: Iterable[torch.Tensor], psi: float, fname: _P, scale: Optional[int] = None,
                 crf: int = DEFAULT_CRF, n_mean: int = N_MEAN_STYLE, generator: Optional[torch.Generator] = None) -> _P:
    """Writes the latent-guided interpolation video to ``fname`` (.mp4); returns ``fname``.

    Styles: for each target domain in ``y_trg_list`` (ints or constant label tensors),
    for each code in ``z_trg_list``: lerp(domain mean style, F(z, y), psi); the video
    interpolates through them in that order (31 frames per transition), then holds the
    last frame 10 frames. Layout: sources on top, translations below. ``z_trg_list``:
    a list (or a (K, N or 1, latent_dim) tensor) of codes, see :func:`latent_frames`.
    ``n_mean`` codes make each domain's mean style, drawn from ``generator`` (CPU
    ``torch.Generator``, None: global RNG). See :func:`video_ref` for ``scale`` and timing.
    """
    _check_batch(x_src, 'x_src')
    _import_ffmpeg()
    frames = latent_frames(nets, w_hpf, x_src, y_trg_list, z_trg_list, psi, n_mean=n_mean, generator=generator)
    return _write(frames, fname, _scale_for(x_src, scale), crf)
