"""Translate mode: one image (or a folder) through any official-format checkpoint.

    python main.py --mode translate --config configs/afhq.yaml --resume_iter 100000 \
        --src cat.jpg --ref dog.jpg --ref_domain dog --out out.jpg
    python main.py --mode translate ... --src cat.jpg --trg_domain wild --num_outs 4 --psi 0.7 --out out.jpg

With several outputs per image they are laid side by side in one file. A folder as
``--src`` gives a folder as ``--out`` with the same file names in the same sub-folders; it
must lie outside ``--src``. All paths are checked before the networks load.
"""
import os
from typing import Any

import torch

from core.data import IMG_EXTENSIONS, is_image_file, list_images, load_rgb, plain_transform
from core.errors import UserError
from core.fileio import check_no_overwrite, check_output_dir, check_outside, mirror_paths
from core.inference import load_run_networks
from core.networks import ModelConfig
from core.fan import fan_masks
from core.images import save_image
from core.styles import mean_style, truncated_style


OUTPUT_EXTENSIONS = {e.lower() for e in IMG_EXTENSIONS}


def known_domains(args):
    """Domain names: --domain_names, else those stored with the run (read back into the
    arguments by parse_args), else indices."""
    return ModelConfig.from_args(args).names()


def domain_index(value, names, flag):
    if value is None:
        raise UserError(f'{flag} is required: a domain name ({", ".join(names)}) or index')
    if value in names:
        return names.index(value)
    if str(value).isdigit() and int(value) < len(names):
        return int(value)
    raise UserError(f"{flag} '{value}' is not a domain of this model; use one of {', '.join(names)} "
                    f"(or an index), or give names with --domain_names")


def load_image(path, img_size, device, max_pixels=None):
    """One image file (any size and format PIL reads) as a (1, 3, img_size, img_size) batch
    in [-1, 1]; ImageReadError (a UserError) when it cannot be read, ImageTooLargeError when
    it has more than ``max_pixels`` pixels (checked before decoding)."""
    return plain_transform(img_size)(load_rgb(path, max_pixels)).unsqueeze(0).to(device)


def reference_style(nets, x_ref, y_ref):
    """Style code (1, style_dim) of the reference image ``x_ref`` of domain index ``y_ref``."""
    return nets.style_encoder(x_ref, torch.tensor([y_ref], device=x_ref.device))


def latent_style(nets, args, y_trg, num_outs, seed, psi):
    """``num_outs`` style codes of domain ``y_trg`` from latent codes drawn with ``seed``,
    truncated towards the domain's mean style by ``psi`` (1: none). ``args``: anything with
    ``latent_dim`` (the parsed arguments, or the run's ModelConfig)."""
    device = next(nets.mapping_network.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    y = torch.full((num_outs,), y_trg, device=device)
    s_avg = mean_style(nets, args, y_trg, generator=generator)
    z = torch.randn(num_outs, args.latent_dim, generator=generator).to(device)
    return truncated_style(nets, s_avg, z, y, psi)


def translate_image(nets, args, x, s_trg):
    """The source ``x`` (1, 3, H, W) translated with each style of ``s_trg`` (n, style_dim):
    (n, 3, H, W); w_hpf > 0 models compute the source's masks with the FAN. ``args``: anything
    with ``w_hpf`` (the parsed arguments, or the run's ModelConfig)."""
    masks = fan_masks(nets, args.w_hpf, x)
    n = s_trg.size(0)
    masks = None if masks is None else [m.expand(n, -1, -1, -1) for m in masks]
    return nets.generator(x.expand(n, -1, -1, -1), s_trg, masks=masks)


def plan(args):
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


@torch.no_grad()
def run(args: Any) -> None:
    """``--mode translate``: every job of ``plan(args)`` with one target style."""
    jobs = plan(args)
    names = known_domains(args)
    if args.ref:
        y_trg = domain_index(args.ref_domain, names, '--ref_domain')
    else:
        y_trg = domain_index(args.trg_domain, names, '--trg_domain')
    nets, _ = load_run_networks(args)
    device = next(nets.generator.parameters()).device
    if args.ref:
        s_trg = reference_style(nets, load_image(args.ref, args.img_size, device), y_trg)
    else:
        s_trg = latent_style(nets, args, y_trg, args.num_outs, args.seed, args.psi)
    for src, out in jobs:
        x_fake = translate_image(nets, args, load_image(src, args.img_size, device), s_trg)
        save_image(x_fake, x_fake.size(0), out)
        print(f'{src} -> {out} ({names[y_trg]})')
