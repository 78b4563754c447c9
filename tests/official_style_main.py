"""A script written only against the official StarGAN v2 interface: the official
``main.py`` flags (names, types, defaults) and the calls it makes into ``core`` and
``metrics`` (``Solver(args)``, ``get_train_loader(root=..., which=..., ...)``,
``get_test_loader(...)``, ``solver.train/sample/evaluate``, ``core.wing.align_faces``).
It knows nothing of this project's extra flags; tests/e2e/test_official_style.py runs it to
show that code written for the official repository runs here unchanged.

    python tests/official_style_main.py --mode train --num_domains 2 --w_hpf 0 ...
"""
import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # the official main.py lives in the project root; this script in tests/

import torch  # noqa: E402
from munch import Munch  # noqa: E402

from core.data_loader import get_test_loader, get_train_loader  # noqa: E402
from core.solver import Solver  # noqa: E402

# the official main.py's flags: (name, type, default)
OFFICIAL_FLAGS = [
    ('img_size', int, 256), ('num_domains', int, 2), ('latent_dim', int, 16), ('hidden_dim', int, 512),
    ('style_dim', int, 64),
    ('lambda_reg', float, 1), ('lambda_cyc', float, 1), ('lambda_sty', float, 1), ('lambda_ds', float, 1),
    ('ds_iter', int, 100000), ('w_hpf', float, 1),
    ('randcrop_prob', float, 0.5), ('total_iters', int, 100000), ('resume_iter', int, 0), ('batch_size', int, 8),
    ('val_batch_size', int, 32), ('lr', float, 1e-4), ('f_lr', float, 1e-6), ('beta1', float, 0.0),
    ('beta2', float, 0.99), ('weight_decay', float, 1e-4), ('num_outs_per_domain', int, 10),
    ('num_workers', int, 4), ('seed', int, 777),
    ('train_img_dir', str, 'data/celeba_hq/train'), ('val_img_dir', str, 'data/celeba_hq/val'),
    ('sample_dir', str, 'expr/samples'), ('checkpoint_dir', str, 'expr/checkpoints'),
    ('eval_dir', str, 'expr/eval'), ('result_dir', str, 'expr/results'),
    ('src_dir', str, 'assets/representative/celeba_hq/src'), ('ref_dir', str, 'assets/representative/celeba_hq/ref'),
    ('inp_dir', str, 'assets/representative/custom/female'),
    ('out_dir', str, 'assets/representative/celeba_hq/src/female'),
    ('wing_path', str, 'expr/checkpoints/wing.ckpt'), ('lm_path', str, 'expr/checkpoints/celeba_lm_mean.npz'),
    ('print_every', int, 10), ('sample_every', int, 5000), ('save_every', int, 10000), ('eval_every', int, 50000),
]


def domain_count(folder):
    return len([d for d in os.listdir(folder) if os.path.isdir(os.path.join(folder, d))])


def loaders_for_training(args):
    common = dict(img_size=args.img_size, batch_size=args.batch_size, prob=args.randcrop_prob,
                  num_workers=args.num_workers)
    return Munch(src=get_train_loader(root=args.train_img_dir, which='source', **common),
                 ref=get_train_loader(root=args.train_img_dir, which='reference', **common),
                 val=get_test_loader(root=args.val_img_dir, img_size=args.img_size, batch_size=args.val_batch_size,
                                     shuffle=True, num_workers=args.num_workers))


def loaders_for_sampling(args):
    common = dict(img_size=args.img_size, batch_size=args.val_batch_size, shuffle=False,
                  num_workers=args.num_workers)
    return Munch(src=get_test_loader(root=args.src_dir, **common), ref=get_test_loader(root=args.ref_dir, **common))


def run(args):
    torch.manual_seed(args.seed)
    solver = Solver(args)
    if args.mode == 'train':
        assert domain_count(args.train_img_dir) == args.num_domains == domain_count(args.val_img_dir)
        solver.train(loaders_for_training(args))
    elif args.mode == 'sample':
        assert domain_count(args.src_dir) == args.num_domains == domain_count(args.ref_dir)
        solver.sample(loaders_for_sampling(args))
    elif args.mode == 'eval':
        solver.evaluate()
    elif args.mode == 'align':
        from core.wing import align_faces
        align_faces(args, args.inp_dir, args.out_dir)
    else:
        raise NotImplementedError(args.mode)


def parse(argv=None):
    parser = argparse.ArgumentParser()
    for name, kind, default in OFFICIAL_FLAGS:
        parser.add_argument('--' + name, type=kind, default=default)
    parser.add_argument('--mode', type=str, required=True, choices=['train', 'sample', 'eval', 'align'])
    return parser.parse_args(argv)


if __name__ == '__main__':
    run(parse())
