"""The official ``core.wing`` names (compatibility layer: delegates only).

The FAN network, its masks and landmarks live in ``core.nn.fan``; face alignment in
``core.use.align``; image conversions in ``core.io.images``. This module gives them the official
names and argument lists, for scripts written against the official repository.
"""
from __future__ import annotations

from argparse import Namespace
from typing import Optional, Tuple

import numpy as np
import numpy.typing as npt
import torch
from munch import Munch

from core.cli.arguments import with_defaults
from core.device import select_device
from core.io.images import from_uint8, to_uint8, to_uint8_truncated
from core.nn.fan import (  # noqa: F401 (re-exported)
    FAN,
    PART_OPS,
    AddCoords,
    ConvBlock,
    CoordConvTh,
    HourGlass,
    _shift,
    fan_masks,
    heatmaps_to_masks,
    landmarks_from_heatmaps,
    load_fan,
    normalize,
    truncate,
)
from core.use.align import (
    EYE_LEFT,
    EYE_RIGHT,
    MOUTH_CORNERS,
    FloatArray,
    align_image,
    face_axis,
    landmarks_to_matrix,
    load_mean_landmarks,
)
from core.use.align import align_faces as _align_faces
from core.use.align import pad_mirror as _pad_mirror

AddCoordsTh = AddCoords
get_preds_fromhm = landmarks_from_heatmaps


def resize(x: torch.Tensor, p: float = 2) -> torch.Tensor:
    """Heat-maps raised to the power ``p`` (the official name)."""
    return x ** p


def shift(x: torch.Tensor, N: int) -> torch.Tensor:
    """Cyclic shift of the rows of x (N, C, H, W): N >= 0 moves up by N, N < 0 down by |N|."""
    return _shift(x, N)


def preprocess(x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Upsampled (256 px) 98-landmark heat-maps -> the generator's two masks."""
    return heatmaps_to_masks(x, drop_boundary=False)


def tensor2numpy255(tensor: torch.Tensor) -> npt.NDArray[np.uint8]:
    """(3, H, W) image in [-1, 1] -> (H, W, 3) uint8 (truncated, as the official helper)."""
    return to_uint8_truncated(tensor)


def np2tensor(image: npt.ArrayLike) -> torch.Tensor:
    """(H, W, 3) array in [0, 255] -> (3, H, W) float tensor in [-1, 1]."""
    return from_uint8(image)


def points2T(point: npt.ArrayLike, direction: str) -> FloatArray:
    """3x3 translation moving the mean of ``point`` to the origin ('from') or the origin to it ('to')."""
    t = np.eye(3)
    t[:2, 2] = (-1 if direction == 'from' else 1) * np.asarray(point).mean(axis=0)
    return t


def landmarks2eyes(landmarks: FloatArray) -> Tuple[FloatArray, FloatArray]:
    return landmarks[EYE_LEFT].mean(axis=0), landmarks[EYE_RIGHT].mean(axis=0)


def landmarks2mouthends(landmarks: FloatArray) -> Tuple[FloatArray, FloatArray]:
    return landmarks[MOUTH_CORNERS[0]], landmarks[MOUTH_CORNERS[1]]


def rotate90(vec: FloatArray) -> FloatArray:
    x, y = vec
    return np.array([y, -x])


def landmarks2xaxis(landmarks: FloatArray) -> FloatArray:
    return face_axis(landmarks)


def vecs2R(vec_x: FloatArray, vec_y: FloatArray) -> FloatArray:
    """3x3 rotation taking the direction of ``vec_x`` to that of ``vec_y``."""
    angle = np.arctan2(vec_y[1], vec_y[0]) - np.arctan2(vec_x[1], vec_x[0])
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def landmarks2S(x: npt.ArrayLike, y: npt.ArrayLike) -> FloatArray:
    """3x3 scaling by the landmarks' spread ratio (eyes and mouth corners) of ``y`` over ``x``."""
    m = landmarks_to_matrix(np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64))
    return np.diag([np.hypot(m[0, 0], m[1, 0])] * 2 + [1.0])


def pad_mirror(img: FloatArray, landmarks: FloatArray) -> Tuple[FloatArray, FloatArray]:
    """Mirror-padded image (half its size on each side, blurred near the border) and shifted landmarks."""
    return _pad_mirror(img, landmarks)


class FaceAligner:
    """Aligns batches of face images with FAN landmarks onto the mean CelebA-HQ landmarks."""

    def __init__(self, fname_wing: Optional[str], fname_celeba_mean: Optional[str], output_size: int) -> None:
        self.device = select_device('auto')
        self.fan = FAN(fname_pretrained=fname_wing).to(self.device).eval()
        self.CELEB_REF = load_mean_landmarks(fname_celeba_mean, output_size)
        self.output_size = output_size

    @torch.no_grad()
    def align(self, imgs: torch.Tensor, output_size: int = 256) -> torch.Tensor:
        """imgs (B, 3, H, W) in [-1, 1] -> aligned (B, 3, S, S), S = the constructor's output_size."""
        imgs = imgs.to(self.device)
        landmarks = self.fan.get_landmark(imgs).cpu().double().numpy()
        out = []
        for img, lm in zip(imgs, landmarks):
            out.append(from_uint8(align_image(to_uint8(img), lm, self.CELEB_REF, self.output_size)))
        return torch.stack(out).to(self.device)

    def landmarks2mat(self, landmarks: npt.ArrayLike) -> FloatArray:
        """3x3 similarity taking ``landmarks`` onto the mean CelebA-HQ landmarks."""
        return landmarks_to_matrix(np.asarray(landmarks, dtype=np.float64), self.CELEB_REF)


def align_faces(args: Namespace | Munch, input_dir: str, output_dir: str) -> None:
    """Align mode: every image of ``input_dir`` aligned into ``output_dir`` (``core.use.align``;
    flags the official ``main.py`` lacks take this project's defaults)."""
    return _align_faces(with_defaults(args), input_dir, output_dir)
