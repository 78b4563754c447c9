"""A script that knows only the official interface (tests/official_style_main.py: the
official main.py's flags and calls) trains, samples, evaluates and aligns with this
project's core/ and metrics/, on tiny generated data. Network weights that would be
downloaded (Inception, AlexNet, FAN) are filled by name and put where the script looks."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from helpers import TESTS, face_like_landmarks, make_dataset
from PIL import Image
from weights_by_name import fill_by_name, fill_torch_hub

from core.wing import FAN

SCRIPT = os.path.join(TESTS, 'official_style_main.py')
# official flags only; 32 px keeps the official widths (dim_in = 2**14 // img_size) affordable
# (16 px is too small for LPIPS's AlexNet, upstream too)
TINY = ['--img_size', '32', '--num_domains', '2', '--w_hpf', '0', '--batch_size', '2', '--val_batch_size', '2',
        '--num_workers', '0', '--num_outs_per_domain', '2', '--seed', '3']


@pytest.fixture(scope='module')
def env(tmp_path_factory):
    """TORCH_HOME with name-filled Inception v3 / AlexNet in the hub cache, one thread."""
    home = fill_torch_hub(tmp_path_factory.mktemp('torch_home'))
    return dict(os.environ, TORCH_HOME=str(home), OMP_NUM_THREADS='1')


def official(env, cwd, *args):
    r = subprocess.run([sys.executable, SCRIPT, *args], cwd=cwd, env=env, capture_output=True, text=True,
                       timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


@pytest.mark.slow
def test_official_interface_trains_samples_evaluates_and_aligns(env, tmp_path):
    data = make_dataset(tmp_path / 'data', n=3, size=36)
    run = ['--checkpoint_dir', str(tmp_path / 'ckpt'), '--train_img_dir', str(data / 'train'),
           '--val_img_dir', str(data / 'val')]

    official(env, tmp_path, '--mode', 'train', *TINY, *run, '--total_iters', '2', '--print_every', '1',
             '--sample_every', '2', '--save_every', '2', '--ds_iter', '2')
    for kind in ('nets', 'nets_ema', 'optims'):
        assert (tmp_path / 'ckpt' / f'000002_{kind}.ckpt').is_file()
    assert (tmp_path / 'expr' / 'samples' / '000002_reference.jpg').is_file()  # official default sample_dir

    official(env, tmp_path, '--mode', 'sample', *TINY, *run, '--resume_iter', '2', '--src_dir', str(data / 'val'),
             '--ref_dir', str(data / 'val'), '--result_dir', str(tmp_path / 'results'))
    # the official sample mode's two files, and only those by default
    assert sorted(os.listdir(tmp_path / 'results')) == ['reference.jpg', 'video_ref.mp4']
    assert Image.open(tmp_path / 'results' / 'reference.jpg').size == (3 * 32, 3 * 32)  # 2 sources, 2 references

    official(env, tmp_path, '--mode', 'eval', *TINY, *run, '--resume_iter', '2', '--eval_dir', str(tmp_path / 'eval'))
    for mode in ('latent', 'reference'):
        fid = json.loads((tmp_path / 'eval' / f'FID_00002_{mode}.json').read_text())
        lpips = json.loads((tmp_path / 'eval' / f'LPIPS_00002_{mode}.json').read_text())
        assert set(fid) == {f'FID_{mode}/cat2dog', f'FID_{mode}/dog2cat', f'FID_{mode}/mean'}
        assert set(lpips) == {f'LPIPS_{mode}/cat2dog', f'LPIPS_{mode}/dog2cat', f'LPIPS_{mode}/mean'}
        for values in (fid, lpips):  # two iterations of training: only the bookkeeping is checked
            assert all(np.isfinite(v) and v >= 0 for v in values.values())
            tasks = [v for k, v in values.items() if not k.endswith('/mean')]
            assert values[next(k for k in values if k.endswith('/mean'))] == pytest.approx(np.mean(tasks))

    wing = tmp_path / 'expr' / 'checkpoints'
    wing.mkdir(parents=True)
    torch.save({'state_dict': fill_by_name(FAN()).state_dict()}, wing / 'wing.ckpt')
    np.savez(wing / 'celeba_lm_mean.npz', mean=face_like_landmarks())
    (tmp_path / 'faces').mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)).save(tmp_path / 'faces' / 'a.jpg')
    # official default --wing_path / --lm_path (expr/checkpoints/...), relative to the working folder
    official(env, tmp_path, '--mode', 'align', '--img_size', '64', '--w_hpf', '0', '--inp_dir', str(tmp_path / 'faces'),
             '--out_dir', str(tmp_path / 'aligned'))
    out = np.asarray(Image.open(tmp_path / 'aligned' / 'a.jpg'))
    assert out.shape == (256, 256, 3) and out.std() > 1
