"""Align mode: crop and rotate face photos the way CelebA-HQ is aligned.

FAN finds 98 landmarks; a similarity transform maps the eyes and mouth onto the mean
CelebA-HQ landmarks (``celeba_lm_mean.npz``); the photo is mirror-padded (blended
towards a blurred copy near its border) so the warp never samples outside it. Outputs keep
the photos' file names and sub-folders under ``--out_dir``, which must lie outside ``--inp_dir``.
"""
from __future__ import annotations

import os
from argparse import Namespace

import numpy as np
import numpy.typing as npt
import torch
from munch import Munch
from PIL import Image
from scipy.ndimage import gaussian_filter
from skimage.transform import warp

from core.cli.arguments import output_flag
from core.datasets.folders import list_images
from core.device import select_device
from core.errors import UserError
from core.io.files import check_output_dir, check_outside, mirror_paths
from core.io.images import load_rgb
from core.nn.fan import FAN, load_fan

EYE_LEFT = list(range(60, 68)) + [96]
EYE_RIGHT = list(range(68, 76)) + [97]
MOUTH_CORNERS = [76, 82]
SCALE_POINTS = [96, 97, 76, 82]

FloatArray = npt.NDArray[np.float64]


def load_mean_landmarks(path: str | None, output_size: int = 256) -> FloatArray:
    if not path or not os.path.isfile(path):
        raise UserError(f'mean landmarks not found at {path!r}: run `bash download.sh wing` or pass --lm_path')
    try:
        mean = np.load(path)['mean']
    except Exception as e:
        raise UserError(f'cannot read mean landmarks from {path}: {type(e).__name__} (expected an npz with key "mean")') from None
    return np.asarray(mean, dtype=np.float64) * (output_size // 256)


def face_axis(lm: FloatArray) -> FloatArray:
    """Unit x-axis of a face: eye-to-eye direction corrected by the eye-mouth direction."""
    eye_l, eye_r = lm[EYE_LEFT].mean(0), lm[EYE_RIGHT].mean(0)
    mouth = lm[MOUTH_CORNERS].mean(0)
    up = (eye_l + eye_r) / 2 - mouth
    axis = (eye_r - eye_l) - np.array([up[1], -up[0]])  # rot90(x, y) = (y, -x)
    return axis / np.linalg.norm(axis)


def landmarks_to_matrix(lm: FloatArray, ref: FloatArray) -> FloatArray:
    """3x3 similarity taking image points (landmarks ``lm``) to the reference frame."""
    lm_mean, ref_mean = lm.mean(0), ref.mean(0)
    a, b = face_axis(lm), face_axis(ref)
    angle = np.arctan2(b[1], b[0]) - np.arctan2(a[1], a[0])
    c, s = np.cos(angle), np.sin(angle)
    scale = np.mean(np.linalg.norm(ref[SCALE_POINTS] - ref_mean, axis=1) /
                    np.linalg.norm(lm[SCALE_POINTS] - lm_mean, axis=1))

    def translate(t: FloatArray) -> FloatArray:
        return np.array([[1, 0, t[0]], [0, 1, t[1]], [0, 0, 1]], dtype=np.float64)

    rotate_scale = np.array([[scale * c, -scale * s, 0], [scale * s, scale * c, 0], [0, 0, 1]])
    return translate(ref_mean) @ rotate_scale @ translate(-lm_mean)


def pad_mirror(img: FloatArray, lm: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Mirror-pads an (H, W, 3) float image by half its size on each side, blending the
    padding towards a blurred copy near the outer border; shifts the landmarks."""
    h, w = img.shape[:2]
    padded = np.pad(img, ((h // 2, h // 2), (w // 2, w // 2), (0, 0)), mode='reflect')
    hp, wp = padded.shape[:2]
    blurred = gaussian_filter(padded, sigma=(h / 16, w / 16, 0))
    rows, cols = np.arange(hp)[:, None], np.arange(wp)[None, :]
    dist = np.minimum(np.minimum(rows, hp - 1 - rows), np.minimum(cols, wp - 1 - cols))
    weight = (np.clip(1 - dist / (hp / 4), 0, 1) ** 4)[..., None]
    return padded * (1 - weight) + blurred * weight, lm + np.array([w // 2, h // 2])


def align_image(img: npt.NDArray[np.uint8], lm: FloatArray, ref: FloatArray, output_size: int = 256
                ) -> npt.NDArray[np.uint8]:
    """img: (H, W, 3) uint8; lm: (98, 2) landmarks (x, y) in its pixels -> aligned uint8 square."""
    padded, lm = pad_mirror(img.astype(np.float64) / 255, lm)
    matrix = landmarks_to_matrix(lm, ref)
    if not np.all(np.isfinite(matrix)):
        raise ValueError('degenerate landmarks')
    rows, cols = max(padded.shape[0], output_size), max(padded.shape[1], output_size)
    # skimage's warp takes the output -> input map; bicubic keeps it sharp
    out = warp(padded, np.linalg.inv(matrix), output_shape=(rows, cols), order=3, mode='edge')
    return (np.clip(out[:output_size, :output_size], 0, 1) * 255 + 0.5).astype(np.uint8)


def plan(input_dir: str, output_dir: str, out_flag: str = '--out_dir') -> list[tuple[str, str]]:
    """``[(photo, output file)]``: the images under ``input_dir`` at the same relative paths under
    ``output_dir``, which must lie outside ``input_dir`` and be writable (checked, not made).
    ``out_flag``: the option that named ``output_dir``, for messages."""
    if not input_dir or not os.path.isdir(input_dir):
        raise UserError(f"input folder '{input_dir}' does not exist; pass --inp_dir")
    paths = list_images(input_dir)
    if not paths:
        raise UserError(f"no images in '{input_dir}'; pass --inp_dir with face photos")
    check_outside(output_dir, input_dir, out_flag, '--inp_dir')
    check_output_dir(output_dir, out_flag)
    return mirror_paths(paths, input_dir, output_dir, out_flag)


@torch.no_grad()
def align_faces(args: Namespace | Munch, input_dir: str, output_dir: str) -> None:
    """Every photo under ``input_dir`` aligned into ``output_dir`` (``args``: complete parsed arguments)."""
    ref = load_mean_landmarks(args.lm_path, 256)
    out_flag = output_flag(args) if args.mode == 'align' else '--out_dir'
    jobs = plan(input_dir, output_dir, out_flag)  # every path checked before the FAN loads
    device = select_device(args.device)
    fan = load_fan(FAN().eval(), args.wing_path).to(device)
    for path, out in jobs:
        img = np.array(load_rgb(path).resize((args.img_size, args.img_size), Image.Resampling.BILINEAR))
        x = torch.from_numpy(img).permute(2, 0, 1).float().div(127.5).sub(1).unsqueeze(0).to(device)
        lm = fan.get_landmark(x)[0].cpu().double().numpy()
        try:
            aligned = align_image(img, lm, ref, 256)
        except ValueError:
            raise UserError(f'no usable face landmarks in {path}; use a photo with one frontal face') from None
        os.makedirs(os.path.dirname(out), exist_ok=True)
        Image.fromarray(aligned).save(out)
        print(f'aligned {path} -> {out}')


def run(args: Namespace | Munch) -> None:
    """``--mode align``: every photo under ``--inp_dir`` aligned into ``--out`` (``--out_dir``)."""
    align_faces(args, args.inp_dir, args.out_dir)
