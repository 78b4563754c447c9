"""Translate mode: one image (or a folder) through any official-format checkpoint.

    python main.py --mode translate --config configs/afhq.yaml --resume_iter 100000 \
        --src cat.jpg --ref dog.jpg --ref_domain dog --out out.jpg
    python main.py --mode translate ... --src cat.jpg --trg_domain wild --num_outs 4 --psi 0.7 --out out.jpg
    python main.py --mode translate ... --src cat.jpg --src_domain cat --trg_domain dog --strength 0.5 --out out.jpg

With several outputs per image they are laid side by side in one file. A folder as
``--src`` gives a folder as ``--out`` with the same file names in the same sub-folders; it
must lie outside ``--src``. All paths are checked before the networks load. ``--strength``
below 1 stops part of the way from the source's own style (read in ``--src_domain``) to the
target style. The images go through the Python API (``core.api.StarGANv2``): the target
styles are computed once, then every source is translated with them.
"""
import os
from typing import Any

import torch

from core.api import StarGANv2
from core.datasets.folders import IMG_EXTENSIONS, is_image_file, list_images
from core.errors import UserError
from core.io.files import check_no_overwrite, check_output_dir, check_outside, mirror_paths
from core.io.images import save_image
from core.nn.networks import ModelConfig
from core.nn.styles import need_source_domain
from core.use.inputs import domain_index
from core.use.load_run import load_run_networks

OUTPUT_EXTENSIONS = {e.lower() for e in IMG_EXTENSIONS}
NAMES_HINT = ', or give names with --domain_names'  # the end of the message on an unknown domain


def known_domains(args: Any) -> list[str]:
    """Domain names: --domain_names, else those stored with the run (read back into the
    arguments by parse_args), else indices."""
    return ModelConfig.from_args(args).names()


def plan(args: Any) -> list[tuple[str, str]]:
    """``[(source file, output file)]`` of a translate command, every path checked before any
    network loads: the source exists, a single output has an image extension, an output folder
    can be made and lies outside a source folder (its sub-folders are kept under it), no output
    is an input (a source or the reference)."""
    src, out = args.src, args.out
    if not src:
        raise UserError('--src is required: an image or a folder of images')
    if not out:
        raise UserError('--out is required: the output file (or folder when --src is a folder)')
    if args.ref and not os.path.isfile(args.ref):
        raise UserError(f"--ref '{args.ref}' does not exist")
    if os.path.isdir(src):
        paths = list_images(src)
        if not paths:
            raise UserError(f"no images in '{src}'")
        check_outside(out, src, '--out', '--src')
        check_output_dir(out, '--out')
        return mirror_paths(paths, src, out, '--out', inputs=[args.ref])
    if not os.path.isfile(src):
        raise UserError(f"--src '{src}' does not exist")
    if os.path.isdir(out):
        raise UserError(f"--out '{out}' is a folder; with one --src image give an output file name "
                        f"ending in .png or .jpg")
    if not is_image_file(out):
        raise UserError(f"--out '{out}' has no image extension; end it with .png or .jpg "
                        f"(any of {', '.join(sorted(OUTPUT_EXTENSIONS))})")
    check_output_dir(os.path.dirname(os.path.abspath(out)), '--out')
    jobs = [(src, out)]
    check_no_overwrite(jobs, '--out', inputs=[args.ref])
    return jobs


def source_domain(args: Any, names: list[str]) -> int | None:
    """The index of --src_domain, which a --strength below 1 needs (None when not given)."""
    need_source_domain(args.strength, args.src_domain, names, '--strength', '--src_domain')
    return None if args.src_domain is None else domain_index(args.src_domain, names, '--src_domain', NAMES_HINT)


@torch.no_grad()
def run(args: Any) -> None:
    """``--mode translate``: every job of ``plan(args)`` with one set of target styles."""
    jobs = plan(args)
    names = known_domains(args)
    if args.ref:
        y_trg = domain_index(args.ref_domain, names, '--ref_domain', NAMES_HINT)
    else:
        y_trg = domain_index(args.trg_domain, names, '--trg_domain', NAMES_HINT)
    y_src = source_domain(args, names)
    strength = args.strength
    nets, step = load_run_networks(args)
    model = StarGANv2(nets, ModelConfig.from_args(args), step)
    if args.ref:
        s_trg = model.style(args.ref, y_trg)
    else:
        s_trg = model.latent_style(y_trg, args.num_outs, args.psi, args.seed)
    how = '' if y_src is None or strength == 1 else f', strength {strength:g} from {names[y_src]}'
    for src, out in jobs:
        x_fake = model.translate(src, style=s_trg, strength=strength, source_domain=y_src, return_tensors=True)
        assert isinstance(x_fake, torch.Tensor)
        save_image(x_fake, x_fake.size(0), out)
        print(f'{src} -> {out} ({names[y_trg]}{how})')
