"""Speed of ``metrics.eval.calculate_metrics`` against the same protocol run the official way.

The official way, on the same translated images: every output written as a PNG and
read back for FID, Inception built anew for every task, the target's training
statistics recomputed for every task, LPIPS built anew for every source batch and
both images of every pair run through AlexNet. Ours: backbones built once, training
statistics cached, outputs kept in memory, AlexNet features computed once per output.
The numbers must agree; the script prints both times and their ratio.

    python bench/eval_speed.py --name_filled_weights          # offline, CPU
    python bench/eval_speed.py --inception_path F --alexnet_path F --device cuda

No ``--official PATH`` here (bench/train_speed.py has one): the official metrics code
cannot run offline or on a CPU (its LPIPS calls ``.cuda()`` unconditionally and its
Inception and AlexNet download ImageNet weights), so "the official way" above is the
official protocol rebuilt on our networks.
"""
import argparse
import dataclasses
import os
import shutil
import sys
import tempfile
import time

import numpy as np
import torch
from munch import Munch
from PIL import Image
from torchvision import models

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import metrics as metrics_pkg  # noqa: E402
from core.datasets.folders import list_domains  # noqa: E402
from core.nn.networks import ModelConfig, build_generator, build_mapping_network, build_style_encoder  # noqa: E402
from metrics import eval as meval  # noqa: E402
from metrics import fid, lpips  # noqa: E402


def write_dataset(root, domains, train_per_domain, val_per_domain, size, seed=0):
    """Smooth random images (low-frequency noise, upsampled) per domain for train/ and val/."""
    g = torch.Generator().manual_seed(seed)
    for split, n in (('train', train_per_domain), ('val', val_per_domain)):
        for d in range(domains):
            folder = os.path.join(root, split, f'd{d}')
            os.makedirs(folder, exist_ok=True)
            low = torch.rand(n, 3, 4, 4, generator=g) + d * 0.3
            x = torch.nn.functional.interpolate(low, size=size, mode='bilinear', align_corners=False)
            x = (x + 0.1 * torch.rand(x.shape, generator=g)).clamp(0, 1)
            for i, img in enumerate((x * 255).round().byte().permute(0, 2, 3, 1).numpy()):
                Image.fromarray(img).save(os.path.join(folder, f'{i:04d}.png'))


def write_name_filled_weights(folder):
    sys.path.insert(0, os.path.join(ROOT, 'tests'))
    from weights_by_name import value_for
    paths = []
    for net, name in ((models.inception_v3(weights=None, aux_logits=True, init_weights=False),
                       'inception_v3.pth'), (models.alexnet(weights=None), 'alexnet.pth')):
        paths.append(os.path.join(folder, name))
        torch.save({k: value_for(k, v, gain=2 ** 0.5) for k, v in net.state_dict().items()}, paths[-1])
    return paths


def tiny_nets(args, device):
    torch.manual_seed(0)
    cfg = dataclasses.replace(ModelConfig.from_args(args), w_hpf=0)  # no FAN in this bench
    nets = Munch(generator=build_generator(cfg), mapping_network=build_mapping_network(cfg),
                 style_encoder=build_style_encoder(cfg))
    for net in nets.values():        # He init as in training, so styles change the outputs
        for m in net.modules():
            if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
                torch.nn.init.kaiming_normal_(m.weight, mode='fan_in', nonlinearity='relu')
                if m.bias is not None:
                    torch.nn.init.zeros_(m.bias)
    return Munch({k: net.to(device).eval() for k, net in nets.items()})


# ---------------------------------------------------------------- the official way
@torch.no_grad()
def official_lpips(group, alexnet_path, device):
    net = lpips.build_lpips(alexnet_path, device, cache=False)     # rebuilt for every batch
    values = [net(group[i], group[j]) for i in range(len(group)) for j in range(i + 1, len(group))]
    return torch.stack(values).mean().item()


def official_fid(real_folder, fake_folder, args, device):
    inception = fid.build_inception(args.inception_path, device, cache=False)   # rebuilt per task
    stats = [fid.stats_from_folder(p, args.img_size, args.val_batch_size, inception)  # no cache
             for p in (real_folder, fake_folder)]
    return fid.frechet_distance(*stats[0], *stats[1])


@torch.no_grad()
def official_metrics(nets, args, mode, device):
    from torchvision.utils import save_image
    fid_values, lpips_values = {}, {}
    domains = list_domains(args.val_img_dir)
    for trg_idx, trg in enumerate(domains):
        for src in domains:
            if src == trg:
                continue
            task = meval.Task(args, mode, src, trg, trg_idx)      # same images, same codes
            folder = os.path.join(args.eval_dir, task.name)
            shutil.rmtree(folder, ignore_errors=True)
            os.makedirs(folder)
            values, seen = [], 0
            for x_src in task.sources:
                outs = meval.translate_batch(nets, args, task, x_src.to(device))
                for j, x in enumerate(outs):
                    for k in range(x.size(0)):
                        save_image(((x[k] + 1) / 2).clamp(0, 1),
                                   os.path.join(folder, f'{seen + k + 1:04d}_{j + 1:02d}.png'))
                values.append(official_lpips(outs, args.alexnet_path, device))
                seen += x_src.size(0)
            lpips_values[f'LPIPS_{mode}/{task.name}'] = float(np.mean(values))
            fid_values[f'FID_{mode}/{task.name}'] = official_fid(
                os.path.join(args.train_img_dir, trg), folder, args, device)
    fid_values[f'FID_{mode}/mean'] = float(np.mean(list(fid_values.values())))
    lpips_values[f'LPIPS_{mode}/mean'] = float(np.mean(list(lpips_values.values())))
    return fid_values, lpips_values


# ---------------------------------------------------------------- main
def merged(results):
    """((fid, lpips) per mode) -> one (fid, lpips) pair of dicts."""
    fid_values, lpips_values = {}, {}
    for fid_part, lpips_part in results:
        fid_values.update(fid_part)
        lpips_values.update(lpips_part)
    return fid_values, lpips_values


def main(argv=None):
    """Run the comparison (``argv`` as on the command line); its result dict (``run``)."""
    opt = parse(argv)
    work = opt.workdir or tempfile.mkdtemp(prefix='eval_speed_')
    try:
        return run(opt, work)
    finally:
        if not opt.workdir:
            shutil.rmtree(work, ignore_errors=True)


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--name_filled_weights', action='store_true',
                   help='fill Inception/AlexNet by parameter name (offline); else ImageNet weights')
    p.add_argument('--inception_path', default=None)
    p.add_argument('--alexnet_path', default=None)
    p.add_argument('--device', default='cpu')
    p.add_argument('--modes', nargs='+', default=list(meval.MODES), choices=meval.MODES,
                   help='modes evaluated one after the other, as at a training eval step')
    p.add_argument('--num_domains', type=int, default=2)
    p.add_argument('--train_per_domain', type=int, default=32)
    p.add_argument('--val_per_domain', type=int, default=16)
    p.add_argument('--num_outs_per_domain', type=int, default=10)
    p.add_argument('--val_batch_size', type=int, default=8)
    p.add_argument('--img_size', type=int, default=32)
    p.add_argument('--dim_in', type=int, default=16)
    p.add_argument('--max_conv_dim', type=int, default=64)
    p.add_argument('--style_dim', type=int, default=16)
    p.add_argument('--latent_dim', type=int, default=8)
    p.add_argument('--workdir', default=None, help='where data and outputs go (default: a temp dir)')
    return p.parse_args(argv)


def run(opt, work):
    """Both protocols on the same generated data and networks; prints the comparison and returns
    it as a dict (times, speed-up, agreement, the metric values)."""
    os.makedirs(work, exist_ok=True)
    if opt.name_filled_weights:
        opt.inception_path, opt.alexnet_path = write_name_filled_weights(work)
    write_dataset(work, opt.num_domains, opt.train_per_domain, opt.val_per_domain, opt.img_size)
    device = torch.device(opt.device)
    args = Munch(img_size=opt.img_size, num_domains=opt.num_domains, latent_dim=opt.latent_dim,
                 style_dim=opt.style_dim, dim_in=opt.dim_in, max_conv_dim=opt.max_conv_dim,
                 val_batch_size=opt.val_batch_size, num_outs_per_domain=opt.num_outs_per_domain,
                 w_hpf=0, train_img_dir=os.path.join(work, 'train'),
                 val_img_dir=os.path.join(work, 'val'), seed=0, num_workers=0,
                 inception_path=opt.inception_path, alexnet_path=opt.alexnet_path,
                 save_eval_images=False)
    nets = tiny_nets(args, device)
    with torch.no_grad():            # warm-up, so neither run pays the first-call costs
        fid.build_inception(args.inception_path, device)(torch.zeros(1, 3, 299, 299, device=device))
        lpips.build_lpips(args.alexnet_path, device)(*torch.zeros(2, 1, 3, 32, 32, device=device))

    sqrtm_time = []
    distance = fid.frechet_distance

    def timed_distance(*stats):
        t0 = time.perf_counter()
        try:
            return distance(*stats)
        finally:
            sqrtm_time.append(time.perf_counter() - t0)

    fid.frechet_distance = meval.frechet_distance = timed_distance

    t, c = time.perf_counter(), time.process_time()
    ref = merged(official_metrics(nets, Munch(args, eval_dir=os.path.join(work, 'eval_official')),
                                  mode, device) for mode in opt.modes)
    t_official, c_official = time.perf_counter() - t, time.process_time() - c
    sqrtm_official, sqrtm_time[:] = sum(sqrtm_time), []

    metrics_pkg._BUILT.clear()       # ours pays its one build and its first statistics too
    t, c = time.perf_counter(), time.process_time()
    ours = merged(meval.calculate_metrics(nets, Munch(args, eval_dir=os.path.join(work, 'eval_ours')),
                                          0, mode, verbose=False) for mode in opt.modes)
    t_ours, c_ours = time.perf_counter() - t, time.process_time() - c
    sqrtm_ours = sum(sqrtm_time)
    fid.frechet_distance = meval.frechet_distance = distance

    worst = 0.0
    for a, b in zip(ref, ours):
        assert list(a) == list(b), (list(a), list(b))
        for k in a:
            err = abs(a[k] - b[k]) / max(abs(a[k]), 1e-12)
            worst = max(worst, err)
            assert err <= 1e-6, f'{k}: official way {a[k]!r} vs ours {b[k]!r}'
    exact_lpips = all(ref[1][k] == ours[1][k] for k in ref[1])
    tasks = opt.num_domains * (opt.num_domains - 1)
    print(f'setup: modes {" + ".join(opt.modes)}, {tasks} tasks each, {opt.val_per_domain} sources '
          f'x {opt.num_outs_per_domain} outputs, {opt.train_per_domain} real per domain, '
          f'img_size {opt.img_size}, device {device}')
    for k in ours[0]:
        print(f'  {k}: {ours[0][k]:.6g}   {k.replace("FID", "LPIPS")}: '
              f'{ours[1][k.replace("FID", "LPIPS")]:.6g}')
    print(f'numbers agree: max relative difference {worst:.2e} (LPIPS bit-identical: {exact_lpips})')
    print(f'official way: {t_official:.2f} s wall, {c_official:.2f} s CPU '
          f'(of which Frechet distance, scipy sqrtm: {sqrtm_official:.2f} s)')
    print(f'ours:         {t_ours:.2f} s wall, {c_ours:.2f} s CPU '
          f'(of which Frechet distance: {sqrtm_ours:.2f} s, in a thread beside the next task)')
    print(f'speed-up:     {t_official / t_ours:.2f}x wall, {c_official / c_ours:.2f}x CPU time')
    images = tasks * len(opt.modes) * opt.val_per_domain * opt.num_outs_per_domain
    return dict(modes=list(opt.modes), tasks=tasks * len(opt.modes), generated_images=images, img_size=opt.img_size,
                official_s=t_official, ours_s=t_ours, speedup=t_official / t_ours, max_rel_diff=worst,
                lpips_bit_identical=exact_lpips, fid=ours[0], lpips=ours[1])


if __name__ == '__main__':
    main()
