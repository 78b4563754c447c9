"""Helpers shared by the tests (and bench/parity_errors.py): golden cases, tiny networks,
tiny command-line runs on generated data, bitwise comparison of checkpoint files, name-filled
networks, the image files and datasets of the data tests, the official flags' defaults, a serve
process, a download mirror's files.

Importable as ``helpers`` because the pytest configuration (pyproject.toml) puts the project
root and ``tests/`` on the path; fixtures live in ``conftest.py``.
"""
import contextlib
import io
import os
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile

import numpy as np
import pytest
import torch
from munch import Munch
from PIL import Image

from core.cli.arguments import with_defaults
from core.errors import UserError
from core.nn.fan import fan_masks

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
    from weights_by_name import fill_by_name

    from core.nn.networks import ModelConfig, build_networks
    args = Munch(img_size=case['img_size'], style_dim=case['style_dim'], latent_dim=case['latent_dim'],
                 num_domains=case['num_domains'], w_hpf=case['w_hpf'])
    nets = build_networks(ModelConfig.from_args(args), training=True)  # the FAN too when w_hpf > 0
    for net in nets.values():
        fill_by_name(net)
    return nets, args


def masks_of(nets, args, x):
    return fan_masks(nets, args.w_hpf, x)


def loss_args(case, **extra):
    """The case's settings, every other flag at this project's default (as parse_args gives)."""
    return with_defaults(Munch(w_hpf=case['w_hpf'], lambda_reg=case['lambda_reg'], lambda_sty=case['lambda_sty'],
                               lambda_ds=case['lambda_ds'], lambda_cyc=case['lambda_cyc'], **extra))


# ---------------------------------------------------------------------------- tiny networks

# The tiny model most tests use: 32 px, channels 8 ... 32, style 16, latent 8, two domains.
TINY_MODEL = dict(img_size=32, dim_in=8, max_conv_dim=32, style_dim=16, latent_dim=8, num_domains=2)


def tiny_args(w_hpf=0, **over):
    """The arguments of a tiny model (TINY_MODEL, ``w_hpf``; ``over`` replaces any key), every
    other flag at its default, no FAN weights file."""
    return with_defaults(Munch({**TINY_MODEL, 'w_hpf': w_hpf, 'wing_path': None, **over}))


def tiny_nets(w_hpf=0, seed=0, **over):
    """``(nets, nets_ema, args)``: the training networks of ``tiny_args(w_hpf, **over)`` built
    as training builds them (under ``torch.manual_seed(seed)``, in the official order, the EMA
    copies taken before He init), He-initialised; with ``w_hpf > 0`` a FAN filled by name whose
    heat-maps leave masks that vary (``tiny_run.sparse_heatmaps``)."""
    from tiny_run import sparse_heatmaps
    from weights_by_name import fill_by_name

    from core.nn.networks import ModelConfig, build_networks, ema_copies
    from core.train.step import init_weights
    args = tiny_args(w_hpf, **over)
    torch.manual_seed(seed)
    nets = build_networks(ModelConfig.from_args(args), training=True)
    nets_ema = ema_copies(nets)
    init_weights(nets)
    if 'fan' in nets:
        sparse_heatmaps(fill_by_name(nets.fan))
    return nets, nets_ema, args


def adam_after_one_step(model):
    """An Adam optimiser (lr 1e-2, unfused) after one step of ``model`` (a conv taking 3 channels)."""
    optim = torch.optim.Adam(model.parameters(), lr=1e-2)
    model(torch.randn(2, 3, 8, 8)).pow(2).sum().backward()
    optim.step()
    return optim


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


def random_uint8(n, size, seed):
    """``n`` noise images (n, size, size, 3) uint8."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def write_pngs(folder, images, start=0):
    """``folder/{start + i:03d}.png`` for each (H, W, 3) uint8 image."""
    os.makedirs(folder, exist_ok=True)
    for i, img in enumerate(images):
        Image.fromarray(img).save(os.path.join(folder, f'{start + i:03d}.png'))


# ---------------------------------------------------------------------------- image files of the data tests
# (tests/core/io/test_images.py, tests/core/datasets/)

DATA_SIZE = 16  # the image side of the data tests


def solid(path, rgb, size=DATA_SIZE, mode='RGB'):
    """A one-colour image: crops, flips and resizes leave its pixels unchanged."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.new('RGB', (size, size), tuple(rgb)).convert(mode).save(path)


def noise(path, seed, size=DATA_SIZE):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    arr = np.random.RandomState(seed).randint(0, 256, (size, size, 3), dtype=np.uint8)
    Image.fromarray(arr).save(path)


def coded_dataset(root, counts):
    """Image i of the d-th domain in SORTED name order -> colour (40 + 60 d, i, 7).

    Pixels tell domain and image apart; folders are created in the given (unsorted) order.
    """
    order = sorted(counts)
    for name, n in counts.items():
        d = order.index(name)
        for i in range(n):
            solid(os.path.join(root, name, f'{i:03d}.png'), (40 + 60 * d, i, 7))
    return str(root)


def decode(x):
    """(domain, image id) of each solid image in a [-1, 1] batch."""
    rgb = torch.round((x[:, :, 0, 0] + 1) * 127.5).long()
    return [((int(r) - 40) // 60, int(g)) for r, g, _ in rgb]


def noise_dataset(root, counts, size=DATA_SIZE):
    k = 0
    for name, n in counts.items():
        for i in range(n):
            noise(os.path.join(root, name, f'{i:03d}.png'), k, size)
            k += 1
    return str(root)


def one_line_error(fn, *needles):
    with pytest.raises(UserError) as e:
        fn()
    msg = str(e.value)
    assert '\n' not in msg and msg.strip() == msg and msg
    for s in needles:
        assert s in msg, (s, msg)
    return msg


# ---------------------------------------------------------------------------- official flags

# Every flag of the official StarGAN v2 main.py with its official default.
OFFICIAL_DEFAULTS = {
    'img_size': 256, 'num_domains': 2, 'latent_dim': 16, 'hidden_dim': 512, 'style_dim': 64,
    'lambda_reg': 1.0, 'lambda_cyc': 1.0, 'lambda_sty': 1.0, 'lambda_ds': 1.0,
    'ds_iter': 100000, 'w_hpf': 1.0, 'randcrop_prob': 0.5, 'total_iters': 100000,
    'resume_iter': 0, 'batch_size': 8, 'val_batch_size': 32, 'lr': 1e-4, 'f_lr': 1e-6,
    'beta1': 0.0, 'beta2': 0.99, 'weight_decay': 1e-4, 'num_outs_per_domain': 10,
    'num_workers': 4, 'seed': 777,
    'train_img_dir': 'data/celeba_hq/train', 'val_img_dir': 'data/celeba_hq/val',
    'sample_dir': 'expr/samples', 'checkpoint_dir': 'expr/checkpoints',
    'eval_dir': 'expr/eval', 'result_dir': 'expr/results',
    'src_dir': 'assets/representative/celeba_hq/src',
    'ref_dir': 'assets/representative/celeba_hq/ref',
    'inp_dir': 'assets/representative/custom/female',
    'out_dir': 'assets/representative/celeba_hq/src/female',
    'wing_path': 'expr/checkpoints/wing.ckpt',
    'lm_path': 'expr/checkpoints/celeba_lm_mean.npz',
    'print_every': 10, 'sample_every': 5000, 'save_every': 10000, 'eval_every': 50000,
}


# ---------------------------------------------------------------------------- end to end: serve, download.sh

def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


class Server:
    """`python main.py --mode serve ...` in a subprocess, on a free loopback port."""

    def __init__(self, argv, log_path):
        self.port = free_port()
        self.url = f'http://127.0.0.1:{self.port}/'
        self.log_path = log_path
        env = dict(os.environ, PYTHONUNBUFFERED='1', GRADIO_ANALYTICS_ENABLED='False')
        self.log = open(log_path, 'w')
        self.proc = subprocess.Popen([sys.executable, 'main.py', '--mode', 'serve', '--device', 'cpu',
                                      '--port', str(self.port), *argv],
                                     cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT, env=env)

    def output(self):
        self.log.flush()
        with open(self.log_path) as f:
            return f.read()

    def wait(self, timeout=180):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f'serve exited with {self.proc.returncode}:\n{self.output()[-3000:]}')
            try:
                with urllib.request.urlopen(self.url, timeout=5) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.5)
        pytest.fail(f'serve did not answer on {self.url} in {timeout} s:\n{self.output()[-3000:]}')

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def write_zip(path, members):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with zipfile.ZipFile(path, 'w') as z:
        for name, data in members.items():
            z.writestr(name, data)


def loadable(name):
    """A file of the kind ``name`` names that loads (a torch checkpoint, an .npz), distinct per name."""
    buf = io.BytesIO()
    values = np.frombuffer(name.encode() * 40, np.uint8).astype(np.float32)
    if name.endswith('.npz'):
        np.savez(buf, mean=values)
    else:
        torch.save({'generator': {'w': torch.from_numpy(values)}}, buf)
    return buf.getvalue()


@contextlib.contextmanager
def switched(obj, **values):
    """``obj``'s attributes set to ``values`` inside the block, their earlier values back after.
    For torch's switch modules (``torch.backends.cudnn``, ``torch.backends.cuda.matmul``,
    ``torch._dynamo.config``), whose attributes are properties or module-level ``__getattr__``
    values: pytest's monkeypatch (9.2) records those as absent and deletes them on undo."""
    before = {name: getattr(obj, name) for name in values}
    try:
        for name, value in values.items():
            setattr(obj, name, value)
        yield obj
    finally:
        for name, value in before.items():
            setattr(obj, name, value)


@contextlib.contextmanager
def small_disk(folder, size):
    """A real file system of ``size`` bytes mounted on ``folder`` (a tmpfs; made here), unmounted
    afterwards. Where this process may not mount (mounting needs root) the test is skipped, or
    fails when STARGAN_REQUIRE_MOUNT is set (CI sets it: there the check must run)."""
    folder.mkdir(parents=True)
    try:
        r = subprocess.run(['mount', '-t', 'tmpfs', '-o', f'size={size}', 'tmpfs', str(folder)],
                           capture_output=True, timeout=30)
        mounted = r.returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        mounted = False
    if not mounted:
        why = 'mounting a small tmpfs needs root (the injected-error tests cover the same code)'
        if os.environ.get('STARGAN_REQUIRE_MOUNT'):
            pytest.fail(why)
        pytest.skip(why)
    try:
        yield folder
    finally:
        subprocess.run(['umount', '-l', str(folder)], capture_output=True, timeout=30)
