"""Align mode end to end: main.py on a face (the real photo from ../shared when it is there),
FAN weights filled by name (the transform and the checks: tests/core/use/test_align.py)."""
import os

import numpy as np
import pytest
import torch
from helpers import ROOT, face_like_landmarks
from PIL import Image
from weights_by_name import fill_by_name

import main as cli
from core.nn.fan import FAN

CUSTOM = os.path.join(ROOT, '..', 'shared', 'assets', 'representative', 'custom', 'female')


@pytest.mark.slow
def test_align_mode_end_to_end(tmp_path):
    inp = tmp_path / 'inp'
    inp.mkdir()
    if os.path.isdir(CUSTOM):
        src = os.path.join(CUSTOM, sorted(os.listdir(CUSTOM))[0])
        Image.open(src).convert('RGB').resize((128, 128)).save(inp / 'face.jpg')
    else:  # the real photo is absent: any picture exercises the pipeline
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (128, 128, 3), np.uint8)).save(inp / 'face.jpg')
    torch.save({'state_dict': fill_by_name(FAN()).state_dict()}, tmp_path / 'wing.ckpt')
    np.savez(tmp_path / 'lm.npz', mean=face_like_landmarks())
    rc = cli.main(['--mode', 'align', '--img_size', '64', '--inp_dir', str(inp), '--out_dir', str(tmp_path / 'out'),
                   '--wing_path', str(tmp_path / 'wing.ckpt'), '--lm_path', str(tmp_path / 'lm.npz')])
    assert rc == 0
    out = np.asarray(Image.open(tmp_path / 'out' / 'face.jpg'))
    assert out.shape == (256, 256, 3) and out.std() > 1  # a real picture, not a blank
