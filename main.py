"""StarGAN v2 command line: a thin dispatcher (see README.md).

    python main.py --mode train --config configs/afhq.yaml
    python main.py --mode sample --config configs/celeba_hq.yaml --resume_iter 100000
"""
import sys

from munch import Munch

from core.config import parse_args
from core.errors import UserError


def train(args):
    from core.data import get_test_loader, get_train_loader
    from core.solver import Solver
    if args.demo_data:  # the demo makes its own dataset (configs/demo.yaml)
        from core.demo_data import make_shapes_dataset
        make_shapes_dataset(args.demo_data, img_size=args.img_size)
    common = dict(img_size=args.img_size, batch_size=args.batch_size, prob=args.randcrop_prob,
                  num_workers=args.num_workers, seed=args.seed, num_domains=args.num_domains,
                  device=args.device)  # pinned memory follows --device
    loaders = Munch(src=get_train_loader(args.train_img_dir, 'source', **common),
                    ref=get_train_loader(args.train_img_dir, 'reference', **common),
                    val=get_test_loader(args.val_img_dir, img_size=args.img_size, batch_size=args.val_batch_size,
                                        shuffle=True, num_workers=args.num_workers, seed=args.seed,
                                        num_domains=args.num_domains, device=args.device))
    solver = Solver(args)
    solver.train(loaders)
    # stopped by a signal after saving: 128 + its number, as a shell reports it (a requeue script reads it)
    return 128 + solver.stopped_by if solver.stopped_by else 0


def sample(args):
    from core.config import sample_outputs
    from core.data import InputFetcher, get_test_loader
    from core.inference import load_run_networks
    from core.sampling import write_samples
    nets, _ = load_run_networks(args)
    device = next(nets.generator.parameters()).device
    common = dict(img_size=args.img_size, batch_size=args.val_batch_size, shuffle=False,
                  num_workers=args.num_workers, num_domains=args.num_domains, device=args.device)
    src, ref = (next(InputFetcher(get_test_loader(root, **common), None, args.latent_dim, 'test', device))
                for root in (args.src_dir, args.ref_dir))
    write_samples(nets, args, src, ref, sample_outputs(args))


def evaluate(args):
    from core.inference import load_run_networks
    from metrics.eval import evaluate_networks
    nets, step = load_run_networks(args)
    evaluate_networks(nets, args, step)


def align(args):
    from core.align import align_faces
    align_faces(args, args.inp_dir, args.out_dir)


def translate(args):
    from core.translate import translate
    translate(args)


def serve(args):
    from core.serve import serve
    serve(args)


def export(args):
    from core.export import export
    export(args)


MODES = dict(train=train, sample=sample, eval=evaluate, align=align, translate=translate, serve=serve,
             export=export)


def main(argv=None):
    try:
        args = parse_args(argv)
        return MODES[args.mode](args) or 0
    except UserError as e:
        print(f'error: {e}', file=sys.stderr)
        return 2


if __name__ == '__main__':
    sys.exit(main())
