"""A tiny checkpoint for the serve and export tests: weights filled by name, saved in the
official format (``{step:06d}_nets_ema.ckpt``), with or without the run's config.yaml."""
import os

import numpy as np
import torch
from PIL import Image
from weights_by_name import fill_by_name

from core.cli.arguments import parse_args
from core.cli.config_files import save_config
from core.io.ckpt_files import NETS_EMA, atomic_save, ckpt_path, state_dicts
from core.nn.networks import ModelConfig, build_networks

STEP = 3


def model_flags(img_size=32, num_domains=2, w_hpf=0, names=None):
    flags = ['--img_size', str(img_size), '--dim_in', '8', '--max_conv_dim', '32', '--style_dim', '16',
             '--latent_dim', '8', '--num_domains', str(num_domains), '--w_hpf', str(w_hpf)]
    if names:
        flags += ['--domain_names', ','.join(names)]
    return flags


def sparse_heatmaps(fan, scale=0.03, bias=-0.2):
    """Weights filled by name make FAN heat-maps so large that both masks are 1 everywhere;
    a smaller, negatively biased last layer leaves peaks (masks about half covered, a
    third saturated), so that comparisons of masks are not of two constant images."""
    with torch.no_grad():
        fan.l0.weight.mul_(scale)
        fan.l0.bias.fill_(bias)
    return fan


def make_checkpoint(folder, with_config=True, **model):
    """Writes ``folder/000003_nets_ema.ckpt`` (and ``config.yaml`` when ``with_config``);
    returns ``(flags, nets)``: the model flags and the filled networks."""
    flags = model_flags(**model)
    args = parse_args(['--mode', 'train', *flags, '--checkpoint_dir', str(folder)])
    nets = build_networks(ModelConfig.from_args(args))
    for net in nets.values():
        fill_by_name(net)
    if 'fan' in nets:
        sparse_heatmaps(nets.fan)
    os.makedirs(folder, exist_ok=True)
    atomic_save(state_dicts(nets), ckpt_path(str(folder), STEP, NETS_EMA))  # the FAN too, as upstream
    if with_config:
        save_config(args, str(folder))
    return flags, nets


def make_image(path, size=48, seed=0):
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (size, size + 8, 3), dtype=np.uint8)).save(path)
    return path


def upload_images(root):
    """The web demo tests' uploads: a PNG source, a JPEG reference and a file that is no image."""
    src = make_image(root / 'source.png', size=48, seed=1)
    ref = make_image(root / 'reference.jpg', size=40, seed=2)
    bad = root / 'broken.png'
    bad.write_bytes(b'this is not an image')
    return src, ref, bad
