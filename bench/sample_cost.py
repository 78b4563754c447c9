"""Time of each file of ``--mode sample`` (the official README's CelebA-HQ command).

A released-format checkpoint (``100000_nets_ema.ckpt``: generator, mapping_network,
style_encoder; 256 px, w_hpf 1) and ``wing.ckpt`` are written with weights filled by
name, then ``main.py --mode sample`` runs once per output with ``--sample_outputs`` set
to it, and the wall and CPU time of each run are printed (each run includes loading the
networks, a few seconds). Photos: ``--assets`` (the official
``assets/representative``); ``--per_domain K`` keeps the first K sources and references
of each domain (the issue measured K = 1), 0 keeps them all.

    python bench/sample_cost.py --assets ../shared/assets/representative --per_domain 1
    python bench/sample_cost.py --assets ... --outputs reference,video_ref
"""
import argparse
import os
import shutil
import sys
import tempfile
import time

import torch
from munch import Munch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, 'tests'))

from weights_by_name import fill_by_name  # noqa: E402

import main as cli  # noqa: E402
from core.cli.arguments import SAMPLE_OUTPUTS  # noqa: E402
from core.model import build_model  # noqa: E402
from core.nn.fan import FAN  # noqa: E402


def write_released_format(folder, img_size=256, num_domains=2):
    """``{folder}/100000_nets_ema.ckpt`` and ``{folder}/wing.ckpt`` with weights filled by name."""
    os.makedirs(folder, exist_ok=True)
    args = Munch(img_size=img_size, style_dim=64, latent_dim=16, num_domains=num_domains, w_hpf=1)
    _, nets_ema = build_model(args)
    torch.save({name: fill_by_name(nets_ema[name]).state_dict()
                for name in ('generator', 'mapping_network', 'style_encoder')},
               os.path.join(folder, '100000_nets_ema.ckpt'))
    torch.save({'state_dict': fill_by_name(FAN()).state_dict()}, os.path.join(folder, 'wing.ckpt'))


def subset(src_root, dst_root, k):
    """The first k images of each domain folder of src_root, copied to dst_root (k = 0: all)."""
    for domain in sorted(os.listdir(src_root)):
        os.makedirs(os.path.join(dst_root, domain))
        names = sorted(os.listdir(os.path.join(src_root, domain)))
        for name in names[:k] if k else names:
            shutil.copy(os.path.join(src_root, domain, name), os.path.join(dst_root, domain, name))
    return dst_root


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--assets', required=True, help='the official assets/representative folder')
    p.add_argument('--per_domain', type=int, default=1, help='images per domain (0: all)')
    p.add_argument('--outputs', default=','.join(SAMPLE_OUTPUTS))
    p.add_argument('--work', default=None, help='scratch folder (default: a temporary one)')
    opt = p.parse_args(argv)
    work = opt.work or tempfile.mkdtemp(prefix='sample_cost_')
    ckpt = os.path.join(work, 'ckpt')
    write_released_format(ckpt)
    data = os.path.join(opt.assets, 'celeba_hq')
    src = subset(os.path.join(data, 'src'), os.path.join(work, 'src'), opt.per_domain)
    ref = subset(os.path.join(data, 'ref'), os.path.join(work, 'ref'), opt.per_domain)
    print(f'torch threads {torch.get_num_threads()}, {sum(len(f) for _, _, f in os.walk(src))} sources, '
          f'{sum(len(f) for _, _, f in os.walk(ref))} references', flush=True)
    for output in opt.outputs.split(','):
        start, cpu = time.time(), time.process_time()
        rc = cli.main(['--mode', 'sample', '--num_domains', '2', '--resume_iter', '100000', '--w_hpf', '1',
                       '--checkpoint_dir', ckpt, '--result_dir', os.path.join(work, 'results'),
                       '--src_dir', src, '--ref_dir', ref, '--wing_path', os.path.join(ckpt, 'wing.ckpt'),
                       '--num_workers', '0', '--sample_outputs', output])
        # CPU seconds (all threads) tell the cost on a shared machine better than the wall time
        print(f'{output}: {time.time() - start:.1f} s wall, {time.process_time() - cpu:.1f} s CPU (exit {rc})',
              flush=True)


if __name__ == '__main__':
    main()
