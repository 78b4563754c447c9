"""How well a trained demo model translates shapes (no learned metric: analytic tests).

The demo domains are shapes and the style is colours (``core/datasets/demo_shapes.py``). Held-out
validation images of every domain are translated to every other domain,

* latent-guided:    s = F(z, y_trg), z ~ N(0, I);
* reference-guided: s = E(x_ref, y_trg), x_ref a validation image of the target domain,

and scored with :func:`bench.shape_classifier.classify_shape` / :func:`~bench.shape_classifier.shape_colours`:

* shape accuracy: the fraction of outputs whose shape is the target domain's
  (latent and reference guidance);
* colour following (reference guidance): the fraction of outputs whose foreground and
  background colours are closer to the reference's than to the source's (sum of the two
  RGB distances), and the mean of these distances;
* latent diversity: for one source and target domain, ``--div_codes`` (K) latent codes give
  K outputs; their spread is the mean pairwise colour distance (foreground + background,
  RGB) over the K outputs, averaged over ``--div_sources`` sources per task. It is reported
  against the same spread among the real validation images of the target domain
  (``latent_diversity_ratio``; 1 = as varied as real images, 0 = K identical outputs).

The classifier's accuracy on the real validation images is printed as a sanity check
(it should be 1.0). Usage (other flags as main.py; --resume_iter 0 = latest checkpoint)::

    python bench/demo_quality.py --config configs/demo.yaml --resume_iter 1200 --out expr/demo/quality.json
    python bench/demo_quality.py --config configs/demo.yaml --all_checkpoints   # against training time

Runs on CPU in well under a minute for the demo model (about 10 s with ``--num_threads 1``
on a busy 2-core machine, 45 s with torch's default threads there).
"""
import argparse
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench.shape_classifier import classify_shape, shape_colours  # noqa: E402
from core.datasets.demo_shapes import SHAPES  # noqa: E402
from core.errors import UserError, exit_on_user_error  # noqa: E402
from core.io.images import to_uint8  # noqa: E402
from core.nn.fan import fan_masks  # noqa: E402

__all__ = ['evaluate', 'load_val_images', 'format_table', 'main']


def to_tensor(images, device):
    """List of (H, W, 3) uint8 arrays -> (N, 3, H, W) float batch in [-1, 1]."""
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float()
    return (x / 127.5 - 1).to(device)


def load_val_images(val_dir, img_size, num_images):
    """{domain: [uint8 arrays]}: the first ``num_images`` (sorted) images of each domain
    folder of ``val_dir``, resized to ``img_size`` when needed."""
    from PIL import Image

    from core.datasets.folders import list_domains, list_images
    from core.io.images import load_rgb
    domains = list_domains(val_dir)
    if not domains:
        raise UserError(f"'{val_dir}' has no domain sub-folders; generate the demo data first "
                        f"(python main.py --config configs/demo.yaml --mode train)")
    unknown = [d for d in domains if d not in SHAPES]
    if unknown:
        raise UserError(f"'{val_dir}' has domains {', '.join(unknown)}: this bench scores the demo "
                        f"shapes only ({', '.join(SHAPES)})")
    out = {}
    for d in domains:
        paths = list_images(os.path.join(val_dir, d))[:num_images]
        if not paths:
            raise UserError(f"domain folder '{os.path.join(val_dir, d)}' holds no images")
        imgs = []
        for p in paths:
            img = load_rgb(p)
            if img.size != (img_size, img_size):
                img = img.resize((img_size, img_size), Image.BILINEAR)
            imgs.append(np.asarray(img, dtype=np.uint8))
        out[d] = imgs
    return out


def _colour_distance(a, b):
    (fa, ba), (fb, bb) = a, b
    return float(np.linalg.norm(fa - fb) + np.linalg.norm(ba - bb))


def _colours_or_flat(img):
    """(fg, bg) of an image; an image with no shape is one colour: fg = bg."""
    fg, bg = shape_colours(img)
    return (bg if fg is None else fg), bg


def colour_spread(colours):
    """Mean pairwise colour distance (fg + bg, RGB) of a list of (fg, bg) pairs."""
    n = len(colours)
    dists = [_colour_distance(colours[a], colours[b]) for a in range(n) for b in range(a + 1, n)]
    return float(np.mean(dists)) if dists else 0.0


@torch.no_grad()
def evaluate(nets, images, latent_dim, w_hpf=0, seed=0, batch_size=64, div_sources=5, div_codes=10):
    """Scores ``nets`` (generator, mapping_network, style_encoder[, fan]) on ``images``
    ({domain: [uint8 arrays]}, domains among SHAPES; label = index in sorted order of
    the dict's keys as given). Returns a dict of metrics (see the module doc)."""
    if div_codes < 2 or div_sources < 1:
        raise UserError(f'latent diversity needs --div_codes >= 2 and --div_sources >= 1 '
                        f'(got {div_codes}, {div_sources})')
    domains = list(images)
    device = next(nets.generator.parameters(), torch.zeros(())).device
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    colours = {d: [shape_colours(im) for im in images[d]] for d in domains}
    real_hits = [classify_shape(im, domains) == d for d in domains for im in images[d]]

    tasks = {}
    for i, src in enumerate(domains):
        for j, trg in enumerate(domains):
            if i == j:
                continue
            srcs = images[src]
            n = len(srcs)
            refs_idx = rng.choice(len(images[trg]), size=n, replace=n > len(images[trg]))
            z_all = torch.randn(n, latent_dim, generator=gen)
            lat_hits, ref_hits, follows, d_ref, d_src = [], [], [], [], []
            for b in range(0, n, batch_size):
                sl = slice(b, min(b + batch_size, n))
                x = to_tensor(srcs[sl], device)
                y = torch.full((x.size(0),), j, dtype=torch.long, device=device)
                masks = fan_masks(nets, w_hpf, x)
                out_lat = to_uint8(nets.generator(x, nets.mapping_network(z_all[sl].to(device), y), masks=masks))
                ref_ids = refs_idx[sl]
                x_ref = to_tensor([images[trg][k] for k in ref_ids], device)
                out_ref = to_uint8(nets.generator(x, nets.style_encoder(x_ref, y), masks=masks))
                lat_hits += [classify_shape(o, domains) == trg for o in out_lat]
                for k, o in enumerate(out_ref):
                    ref_hits.append(classify_shape(o, domains) == trg)
                    fg, bg = shape_colours(o)
                    c_src = colours[src][b + k]
                    c_ref = colours[trg][ref_ids[k]]
                    if fg is None or c_src[0] is None or c_ref[0] is None:
                        follows.append(False)  # no shape in the output: no colours to follow
                        continue
                    dr, ds = _colour_distance((fg, bg), c_ref), _colour_distance((fg, bg), c_src)
                    d_ref.append(dr)
                    d_src.append(ds)
                    follows.append(dr < ds)
            spreads = []  # latent diversity: K codes for each of the first sources
            z_div = torch.randn(div_codes, latent_dim, generator=gen).to(device)
            y_div = torch.full((div_codes,), j, dtype=torch.long, device=device)
            s_div = nets.mapping_network(z_div, y_div)
            for img in srcs[:div_sources]:
                x = to_tensor([img] * div_codes, device)
                outs = to_uint8(nets.generator(x, s_div, masks=fan_masks(nets, w_hpf, x)))
                spreads.append(colour_spread([_colours_or_flat(o) for o in outs]))
            tasks[f'{src}2{trg}'] = {
                'n': n,
                'latent_shape_acc': float(np.mean(lat_hits)),
                'ref_shape_acc': float(np.mean(ref_hits)),
                'ref_colour_follow': float(np.mean(follows)),
                'ref_colour_dist_to_ref': float(np.mean(d_ref)) if d_ref else None,
                'ref_colour_dist_to_src': float(np.mean(d_src)) if d_src else None,
                'latent_diversity': float(np.mean(spreads)),
            }

    def mean(key):
        vals = [t[key] for t in tasks.values() if t[key] is not None]
        return float(np.mean(vals)) if vals else None

    real_spread = float(np.mean([colour_spread([_colours_or_flat(im) for im in images[d]]) for d in domains]))
    latent_spread = mean('latent_diversity')
    return {
        'domains': domains,
        'classifier_acc_real': float(np.mean(real_hits)),
        'latent_shape_acc': mean('latent_shape_acc'),
        'ref_shape_acc': mean('ref_shape_acc'),
        'ref_colour_follow': mean('ref_colour_follow'),
        'ref_colour_dist_to_ref': mean('ref_colour_dist_to_ref'),
        'ref_colour_dist_to_src': mean('ref_colour_dist_to_src'),
        'latent_diversity': latent_spread,
        'real_diversity': real_spread,
        'latent_diversity_ratio': latent_spread / real_spread if real_spread > 0 else None,
        'tasks': tasks,
    }


def format_table(result):
    def f(v):
        return '   -  ' if v is None else f'{v:6.3f}'

    lines = [f'{"task":<20} {"latent shape":>12} {"ref shape":>10} {"ref colour":>11} {"latent spread":>14}',
             '-' * 71]
    for name, t in result['tasks'].items():
        lines.append(f'{name:<20} {f(t["latent_shape_acc"]):>12} {f(t["ref_shape_acc"]):>10} '
                     f'{f(t["ref_colour_follow"]):>11} {t["latent_diversity"]:>14.1f}')
    lines.append('-' * 71)
    lines.append(f'{"mean":<20} {f(result["latent_shape_acc"]):>12} {f(result["ref_shape_acc"]):>10} '
                 f'{f(result["ref_colour_follow"]):>11} {result["latent_diversity"]:>14.1f}')
    lines.append('shape accuracy = fraction of outputs classified as the target shape; ref colour = '
                 'fraction closer to the reference\'s colours than to the source\'s')
    lines.append(f'latent spread = mean pairwise colour distance (fg + bg, RGB) of K latent outputs of one source; '
                 f'real images of a domain: {result["real_diversity"]:.1f}; '
                 f'ratio {f(result["latent_diversity_ratio"])}')
    lines.append(f'mean colour distance (fg + bg, RGB) to reference {f(result["ref_colour_dist_to_ref"])}, '
                 f'to source {f(result["ref_colour_dist_to_src"])}; '
                 f'classifier on real val images {f(result["classifier_acc_real"])}')
    return '\n'.join(lines)


def checkpoint_steps(checkpoint_dir):
    """Sorted steps of the complete checkpoints in ``checkpoint_dir`` (a save that was cut
    short is left out, see ``core.io.ckpt_files.complete_steps``)."""
    from core.io.ckpt_files import complete_steps
    steps = complete_steps(checkpoint_dir)
    if not steps:
        raise UserError(f"no *_nets_ema.ckpt checkpoint in '{checkpoint_dir}'; train the demo first "
                        f"or pass --checkpoint_dir")
    return steps


def training_seconds(checkpoint_dir):
    """{step: seconds since the run started} from the run's ``log.jsonl`` ({} without one)."""
    out = {}
    try:
        with open(os.path.join(checkpoint_dir, 'log.jsonl'), encoding='utf-8') as f:
            for line in f:
                try:
                    rec = json.loads(line)
                    out[int(rec['step'])] = float(rec['time'])
                except (ValueError, KeyError, TypeError):
                    continue
    except OSError:
        pass
    return out


def format_curve(results):
    """Accuracy against training time, one line per checkpoint."""
    def f(v):
        return '     -' if v is None else f'{v:6.3f}'

    lines = [f'{"step":>6} {"train s":>8} {"latent shape":>12} {"ref shape":>10} {"ref colour":>11} '
             f'{"diversity":>10}']
    for r in results:
        secs = '-' if r.get('train_seconds') is None else f'{r["train_seconds"]:.0f}'
        lines.append(f'{r["step"]:>6} {secs:>8} {f(r["latent_shape_acc"]):>12} {f(r["ref_shape_acc"]):>10} '
                     f'{f(r["ref_colour_follow"]):>11} {f(r["latent_diversity_ratio"]):>10}')
    return '\n'.join(lines)


def _split_argv(argv):
    own = argparse.ArgumentParser(description=__doc__.split('\n')[0], add_help=True)
    own.add_argument('--out', default=None, help='JSON file for the results')
    own.add_argument('--num_images', type=int, default=50,
                     help='validation images per domain used as sources')
    own.add_argument('--bench_seed', type=int, default=0, help='seed of the latent codes and reference choice')
    own.add_argument('--div_sources', type=int, default=5,
                     help='latent diversity: sources per task, each translated with --div_codes codes')
    own.add_argument('--div_codes', type=int, default=10, help='latent diversity: latent codes (K) per source')
    own.add_argument('--all_checkpoints', action='store_true',
                     help='score every checkpoint of the run: accuracy against training time')
    own.add_argument('--num_threads', type=int, default=0,
                     help='CPU threads for torch (0: its default); 1 is often fastest for these tiny '
                          'tensors on a busy machine')
    mine, rest = own.parse_known_args(argv)
    if mine.num_images < 1:
        raise UserError(f'--num_images must be >= 1, not {mine.num_images}')
    if mine.num_threads < 0:
        raise UserError(f'--num_threads must be >= 0, not {mine.num_threads}')
    return mine, rest


def main(argv=None):
    from core.cli.arguments import parse_args
    from core.device import select_device
    from core.io.ckpt_files import ckpt_path, load_modules
    from core.model import build_model

    argv = list(sys.argv[1:] if argv is None else argv)
    mine, rest = _split_argv(argv)
    if '--mode' not in rest and not any(a.startswith('--mode=') for a in rest):
        rest += ['--mode', 'eval']
    args = parse_args(rest)
    if mine.num_threads:
        torch.set_num_threads(mine.num_threads)
    device = select_device(args.device)
    if mine.all_checkpoints:
        steps = checkpoint_steps(args.checkpoint_dir)
    else:
        steps = [args.resume_iter or checkpoint_steps(args.checkpoint_dir)[-1]]
    seconds = training_seconds(args.checkpoint_dir)
    images = load_val_images(args.val_img_dir, args.img_size, mine.num_images)
    _, nets_ema = build_model(args)
    for m in nets_ema.values():
        m.to(device).eval()  # once: each checkpoint is copied into these parameters
    results = []
    for step in steps:
        # the networks sample mode would use: EMA copies, or the online ones with --sample_from online
        path = ckpt_path(args.checkpoint_dir, step, 'nets' if args.sample_from == 'online' else 'nets_ema')
        start = time.time()
        load_modules(path, nets_ema)
        result = evaluate(nets_ema, images, args.latent_dim, w_hpf=args.w_hpf, seed=mine.bench_seed,
                          batch_size=args.val_batch_size, div_sources=mine.div_sources, div_codes=mine.div_codes)
        result.update(checkpoint=path, step=step, train_seconds=seconds.get(step),
                      num_images=mine.num_images, seed=mine.bench_seed, seconds=round(time.time() - start, 2))
        print(f'demo quality of {path} ({min(len(v) for v in images.values())}+ val images per domain)')
        print(format_table(result))
        results.append(result)
    if len(results) > 1:
        print('accuracy against training time (seconds from log.jsonl)')
        print(format_curve(results))
    report = results if mine.all_checkpoints else results[0]
    if mine.out:
        folder = os.path.dirname(os.path.abspath(mine.out))
        os.makedirs(folder, exist_ok=True)
        with open(mine.out, 'w', encoding='utf-8') as f:
            json.dump(report, f, indent=1)
        print(f'wrote {mine.out}')
    return report


if __name__ == '__main__':
    exit_on_user_error(main)
