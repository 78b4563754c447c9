"""The picture of a demo run for the README: a reference grid and a latent grid in one PNG,
captioned with the run's seed, iterations, training time and (given its JSON) the scores of
``bench/demo_quality.py``.

    python bench/demo_picture.py --config configs/demo.yaml --quality expr/demo/quality.json \\
        --out assets/demo.png

* Reference grid (left): the first row holds references, the first column sources (one
  each per domain and --per_domain); each cell is G(source, E(reference)).
* Latent grid (right): for each source, one row per target domain: the source, then
  --num_codes outputs G(source, F(z, domain)), the same codes in every row.

Images are validation images of the run's dataset, enlarged (--scale, nearest neighbour).
"""
import argparse
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image, ImageDraw, ImageFont  # noqa: E402

from bench.demo_quality import load_val_images, to_tensor, training_seconds  # noqa: E402
from core.errors import UserError, exit_on_user_error  # noqa: E402
from core.io.images import to_uint8  # noqa: E402
from core.nn.fan import fan_masks  # noqa: E402

__all__ = ['reference_grid', 'latent_grid', 'caption', 'main']

GAP = 4  # pixels between the two grids and around the caption


def _tile(rows):
    """A list of rows of (H, W, 3) uint8 images (None: blank) -> one uint8 array."""
    h, w = next(im for row in rows for im in row if im is not None).shape[:2]
    blank = np.full((h, w, 3), 255, np.uint8)
    return np.concatenate([np.concatenate([blank if im is None else im for im in row], axis=1) for row in rows])


@torch.no_grad()
def reference_grid(nets, images, w_hpf=0, per_domain=2):
    """Sources down, references across: G(source, E(reference, reference's domain))."""
    domains = list(images)
    picks = [(j, images[d][k]) for j, d in enumerate(domains) for k in range(per_domain)]
    device = next(nets.generator.parameters()).device
    x_all = to_tensor([im for _, im in picks], device)  # the same images serve as sources and references
    y_ref = torch.tensor([j for j, _ in picks], device=device)
    s_ref = nets.style_encoder(x_all, y_ref)
    rows = [[None] + [im for _, im in picks]]
    for i, (_, src) in enumerate(picks):
        x = x_all[i:i + 1].expand(len(picks), -1, -1, -1)
        out = to_uint8(nets.generator(x, s_ref, masks=fan_masks(nets, w_hpf, x)))
        rows.append([src] + list(out))
    return _tile(rows)


@torch.no_grad()
def latent_grid(nets, images, latent_dim, w_hpf=0, num_codes=6, seed=0):
    """For each domain's first source, one row per target domain: source, then outputs of
    ``num_codes`` latent codes (the same codes in every row)."""
    domains = list(images)
    device = next(nets.generator.parameters()).device
    z = torch.randn(num_codes, latent_dim, generator=torch.Generator().manual_seed(seed)).to(device)
    styles = [nets.mapping_network(z, torch.full((num_codes,), j, dtype=torch.long, device=device))
              for j in range(len(domains))]  # one set per target domain, shared by every source
    rows = []
    for d in domains:
        src = images[d][0]
        x = to_tensor([src] * num_codes, device)
        masks = fan_masks(nets, w_hpf, x)
        rows += [[src] + list(to_uint8(nets.generator(x, s, masks=masks))) for s in styles]
    return _tile(rows)


def caption(step, seed, seconds=None, quality=None):
    """One or two lines: the run and, given demo_quality's JSON, its scores."""
    run = f'demo run: seed {seed}, {step:,} iterations'
    if seconds:
        run += f', {int(seconds // 60)}m{int(seconds % 60):02d}s of training ({step / seconds:.2f} it/s)'
    lines = [run, 'left: sources down, references across; right: per source, one row per target domain, '
                  'the same latent codes in every row']
    if quality:
        lines.append(f'shape accuracy {quality["latent_shape_acc"]:.0%} latent, {quality["ref_shape_acc"]:.0%} reference; '
                     f'colour following {quality["ref_colour_follow"]:.0%}; '
                     f'latent colour spread {quality["latent_diversity_ratio"]:.2f} of real images '
                     f'(bench/demo_quality.py)')
    return lines


def compose(left, right, lines, scale):
    def big(a):
        return np.kron(a, np.ones((scale, scale, 1), np.uint8))

    left, right = big(left), big(right)
    h = max(left.shape[0], right.shape[0])
    w = left.shape[1] + GAP * scale + right.shape[1]
    font = ImageFont.load_default()
    line_h = 14
    canvas = Image.new('RGB', (w, h + GAP * 2 + line_h * len(lines)), (255, 255, 255))
    canvas.paste(Image.fromarray(left), (0, 0))
    canvas.paste(Image.fromarray(right), (left.shape[1] + GAP * scale, 0))
    draw = ImageDraw.Draw(canvas)
    for i, text in enumerate(lines):
        draw.text((GAP, h + GAP + i * line_h), text, fill=(0, 0, 0), font=font)
    return canvas


def main(argv=None):
    from core.cli.arguments import parse_args
    from core.cli.config_files import CONFIG_FILENAME, load_config
    from core.use.load_run import load_run_networks

    own = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    own.add_argument('--out', default='assets/demo.png', help='PNG file to write')
    own.add_argument('--quality', default=None, help="bench/demo_quality.py's JSON of the same checkpoint")
    own.add_argument('--per_domain', type=int, default=2, help='reference grid: sources and references per domain')
    own.add_argument('--num_codes', type=int, default=6, help='latent grid: latent codes per row')
    own.add_argument('--scale', type=int, default=3, help='enlargement of the images (nearest neighbour)')
    own.add_argument('--picture_seed', type=int, default=0, help='seed of the latent codes')
    mine, rest = own.parse_known_args(list(sys.argv[1:] if argv is None else argv))
    if min(mine.per_domain, mine.num_codes, mine.scale) < 1:
        raise UserError('--per_domain, --num_codes and --scale must be >= 1')
    if '--mode' not in rest:
        rest += ['--mode', 'sample']
    args = parse_args(rest)
    nets, step = load_run_networks(args)
    for m in nets.values():
        m.eval()
    images = load_val_images(args.val_img_dir, args.img_size, max(mine.per_domain, 1))
    quality = None
    if mine.quality:
        with open(mine.quality, encoding='utf-8') as f:
            quality = json.load(f)
        if isinstance(quality, list):  # an --all_checkpoints curve: this step's entry
            quality = next((q for q in quality if q['step'] == step), None)
        if quality is None or quality.get('step') != step:
            raise UserError(f"'{mine.quality}' scores another checkpoint than step {step}; "
                            f"run bench/demo_quality.py on this one")
    seconds = training_seconds(args.checkpoint_dir).get(step)
    run_file = os.path.join(args.checkpoint_dir, CONFIG_FILENAME)  # the training seed, not this command's
    seed = load_config(run_file).get('seed', args.seed) if os.path.isfile(run_file) else args.seed
    picture = compose(reference_grid(nets, images, args.w_hpf, mine.per_domain),
                      latent_grid(nets, images, args.latent_dim, args.w_hpf, mine.num_codes, mine.picture_seed),
                      caption(step, seed, seconds, quality), mine.scale)
    os.makedirs(os.path.dirname(os.path.abspath(mine.out)), exist_ok=True)
    tmp = mine.out + '.part'
    picture.save(tmp, format='PNG')
    os.replace(tmp, mine.out)
    print(f'wrote {mine.out} ({picture.size[0]}x{picture.size[1]}, step {step})')
    return mine.out


if __name__ == '__main__':
    exit_on_user_error(main)
