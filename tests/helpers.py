"""Helpers shared by the tests (and bench/parity_errors.py): golden cases, tiny command-line
runs on generated data, bitwise comparison of checkpoint files, name-filled networks.

Importable as ``helpers`` because the pytest configuration (pyproject.toml) puts the project
root and ``tests/`` on the path; fixtures live in ``conftest.py``.
"""
import os

import numpy as np
import pytest
import torch
from munch import Munch
from PIL import Image

from core.config import with_defaults
from core.fan import fan_masks

TESTS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TESTS)

# ---------------------------------------------------------------------------- golden cases

LOCAL_GOLDENS = os.path.join(TESTS, 'goldens')
SHARED_GOLDENS = os.path.join(ROOT, '..', 'shared', 'goldens')
# Cases too large to commit: read from ../shared/goldens when it is there.
LARGE_CASES = ('forward_afhq_256_s11', 'forward_celeba_hq_256_s11', 'masks_s41')


def goldens_dir():
    return os.environ.get('STARGAN_GOLDENS') or LOCAL_GOLDENS


def golden_cases(kind, slow=False):
    """One pytest.param per ``{kind}_*.pt`` case, its id the file name without .pt, marked
    parity (and slow when ``slow`` or a 256 px case)."""
    folder = goldens_dir()
    found = {f[:-3]: os.path.join(folder, f) for f in os.listdir(folder)
             if f.startswith(kind + '_') and f.endswith('.pt')}
    if not os.environ.get('STARGAN_GOLDENS'):
        for name in LARGE_CASES:
            if name.startswith(kind + '_') and name not in found:
                path = os.path.join(SHARED_GOLDENS, name + '.pt')
                found[name] = path if os.path.isfile(path) else None
    params = []
    for name, path in sorted(found.items()):
        marks = [pytest.mark.parity]
        if slow or name in LARGE_CASES:
            marks.append(pytest.mark.slow)
        if path is None:
            marks.append(pytest.mark.skip(reason=f'{name}.pt is not committed (large) and '
                                                 f'../shared/goldens is absent'))
        params.append(pytest.param(path, id=name, marks=marks))
    return params


def filled_nets(case):
    """G, F, E, D (and FAN when w_hpf > 0) of a golden case's configuration, filled by name."""
    from core.networks import Discriminator, Generator, MappingNetwork, StyleEncoder
    from core.fan import FAN
    from weights_by_name import fill_by_name
    args = Munch(img_size=case['img_size'], style_dim=case['style_dim'], latent_dim=case['latent_dim'],
                 num_domains=case['num_domains'], w_hpf=case['w_hpf'])
    nets = Munch(generator=Generator(args.img_size, args.style_dim, w_hpf=args.w_hpf),
                 mapping_network=MappingNetwork(args.latent_dim, args.style_dim, args.num_domains),
                 style_encoder=StyleEncoder(args.img_size, args.style_dim, args.num_domains),
                 discriminator=Discriminator(args.img_size, args.num_domains))
    if args.w_hpf > 0:
        nets.fan = FAN().eval()
    for net in nets.values():
        fill_by_name(net)
    return nets, args


def masks_of(nets, args, x):
    return fan_masks(nets, args.w_hpf, x)


def loss_args(case, **extra):
    """The case's settings, every other flag at this project's default (as parse_args gives)."""
    return with_defaults(Munch(w_hpf=case['w_hpf'], lambda_reg=case['lambda_reg'], lambda_sty=case['lambda_sty'],
                               lambda_ds=case['lambda_ds'], lambda_cyc=case['lambda_cyc'], **extra))


# ---------------------------------------------------------------------------- tiny runs

TINY = ['--img_size', '32', '--dim_in', '8', '--max_conv_dim', '32', '--style_dim', '16', '--latent_dim', '8',
        '--w_hpf', '0', '--batch_size', '2', '--val_batch_size', '2', '--num_workers', '0', '--eval_every', '0',
        '--num_outs_per_domain', '2', '--ds_iter', '4']


def make_dataset(root, domains=('cat', 'dog'), n=5, size=40, seed=0):
    """``root/{train,val}/<domain>/<i>.png``: ``n`` noise images of ``size`` px per domain."""
    rng = np.random.default_rng(seed)
    for split in ('train', 'val'):
        for d in domains:
            os.makedirs(root / split / d, exist_ok=True)
            for i in range(n):
                img = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
                Image.fromarray(img).save(root / split / d / f'{i}.png')
    return root


def run_args(data, run, *extra):
    """main.py arguments of a tiny training run on ``data`` writing into ``run``."""
    return ['--mode', 'train', *TINY, '--train_img_dir', str(data / 'train'), '--val_img_dir', str(data / 'val'),
            '--checkpoint_dir', str(run / 'ckpt'), '--sample_dir', str(run / 'samples'), *extra]


def flatten(obj, prefix=''):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from flatten(v, f'{prefix}/{k}')
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from flatten(v, f'{prefix}/{i}')
    else:
        yield prefix, obj


def assert_files_equal(a, b):
    """Two checkpoint files hold the same keys and bitwise-equal values."""
    fa = dict(flatten(torch.load(a, weights_only=True)))
    fb = dict(flatten(torch.load(b, weights_only=True)))
    assert fa.keys() == fb.keys()
    for key in fa:
        if torch.is_tensor(fa[key]):
            assert torch.equal(fa[key], fb[key]), f'{os.path.basename(a)}{key} differs'
        else:
            assert fa[key] == fb[key], f'{os.path.basename(a)}{key} differs'


def face_like_landmarks(seed=0):
    """98 points with eyes left/right above a mouth, in 256 px."""
    rng = np.random.default_rng(seed)
    lm = rng.uniform(60, 200, (98, 2))
    lm[60:68] = [90, 110] + rng.normal(0, 3, (8, 2))
    lm[96] = [90, 110]
    lm[68:76] = [166, 110] + rng.normal(0, 3, (8, 2))
    lm[97] = [166, 110]
    lm[76], lm[82] = [100, 190], [156, 190]
    return lm
