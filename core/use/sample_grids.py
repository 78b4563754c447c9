"""Sample grids from (EMA) networks: cycle consistency, latent-guided, reference-guided.

Images are tensors in [-1, 1]; every function follows the device of its inputs.
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Sequence
from typing import Any, List

import torch
from munch import Munch

from core.cli.arguments import DEFAULT_SAMPLE_OUTPUTS, parse_sample_outputs, sample_outputs
from core.device import data_workers
from core.io.files import StrPath
from core.io.images import save_image
from core.nn.fan import fan_masks
from core.nn.styles import mean_style, shared_latents, truncated_style
from core.use.video import video_latent, video_ref


@dataclasses.dataclass(frozen=True)
class GridConfig:
    """What the sample grids read of the arguments: the high-pass weight, the domains, the
    latent codes per domain and the seed of their draws."""
    w_hpf: float
    num_domains: int
    latent_dim: int
    num_outs_per_domain: int
    seed: int

    @classmethod
    def from_args(cls, args: Any) -> GridConfig:
        """From parsed arguments (a Namespace or Munch holding these fields)."""
        return cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls)})


@torch.no_grad()
def translate_and_reconstruct(nets: Munch, w_hpf: float, x_src: torch.Tensor, y_src: torch.Tensor,
                              x_ref: torch.Tensor, y_ref: torch.Tensor, filename: StrPath) -> None:
    """Rows: the sources, the references, the sources in the references' styles, and those
    translated back with the sources' own styles."""
    masks = fan_masks(nets, w_hpf, x_src)
    s_ref = nets.style_encoder(x_ref, y_ref)
    x_fake = nets.generator(x_src, s_ref, masks=masks)
    s_src = nets.style_encoder(x_src, y_src)
    x_rec = nets.generator(x_fake, s_src, masks=fan_masks(nets, w_hpf, x_fake))
    save_image(torch.cat([x_src, x_ref, x_fake, x_rec]), x_src.size(0), filename)


@torch.no_grad()
def translate_using_latent(nets: Munch, w_hpf: float, x_src: torch.Tensor, y_trg_list: Sequence[torch.Tensor],
                           z_trg_list: Iterable[torch.Tensor], psi: float, filename: StrPath,
                           mean_styles: Sequence[torch.Tensor]) -> None:
    """Rows: the sources, then per target domain one row per latent code, truncated towards
    the domain's mean style (``mean_styles``: one per ``y_trg_list`` entry) by ``psi``."""
    masks = fan_masks(nets, w_hpf, x_src)
    rows = [x_src]
    for y_trg, s_avg in zip(y_trg_list, mean_styles, strict=True):
        for z_trg in z_trg_list:
            s_trg = truncated_style(nets, s_avg, z_trg, y_trg, psi)
            rows.append(nets.generator(x_src, s_trg, masks=masks))
    save_image(torch.cat(rows), x_src.size(0), filename)


@torch.no_grad()
def translate_using_reference(nets: Munch, w_hpf: float, x_src: torch.Tensor, x_ref: torch.Tensor, y_ref: torch.Tensor,
                              filename: StrPath) -> None:
    """A white top-left cell, the sources on the first row, then per reference a row of
    the reference followed by the sources translated with its style."""
    n = x_src.size(0)
    masks = fan_masks(nets, w_hpf, x_src)
    rows = [torch.cat([torch.ones_like(x_src[:1]), x_src])]
    s_ref = nets.style_encoder(x_ref, y_ref)
    for i in range(x_ref.size(0)):
        x_fake = nets.generator(x_src, s_ref[i:i + 1].expand(n, -1), masks=masks)
        rows.append(torch.cat([x_ref[i:i + 1], x_fake]))
    save_image(torch.cat(rows), n + 1, filename)


@torch.no_grad()
def training_grids(nets: Munch, inputs: Munch, step: int, sample_dir: StrPath, grid: GridConfig) -> None:
    """The official training-time grids of ``step`` into ``sample_dir``. Random codes come from
    a private generator seeded by (``grid.seed``, step): sampling never moves the training RNG."""
    generator = torch.Generator().manual_seed(grid.seed * 1_000_003 + step)
    x_src, y_src, x_ref, y_ref = inputs.x_src, inputs.y_src, inputs.x_ref, inputs.y_ref
    device, n = x_src.device, x_src.size(0)
    out = lambda name: os.path.join(sample_dir, f'{step:06d}_{name}.jpg')
    translate_and_reconstruct(nets, grid.w_hpf, x_src, y_src, x_ref, y_ref, out('cycle_consistency'))
    y_trg_list = [torch.full((n,), y, dtype=torch.long, device=device) for y in range(min(grid.num_domains, 5))]
    z_trg_list = shared_latents(grid.num_outs_per_domain, n, grid.latent_dim, generator, device)
    mean_styles = [mean_style(nets, y[0], grid.latent_dim, generator=generator) for y in y_trg_list]
    for psi in (0.5, 0.7, 1.0):
        translate_using_latent(nets, grid.w_hpf, x_src, y_trg_list, z_trg_list, psi, out(f'latent_psi_{psi:.1f}'), mean_styles)
    translate_using_reference(nets, grid.w_hpf, x_src, x_ref, y_ref, out('reference'))


# --------------------------------------------------------------------------- sample mode

@torch.no_grad()
def write_samples(nets: Munch, src: Munch, ref: Munch, result_dir: StrPath, grid: GridConfig,
                  outputs: str | Sequence[str] = DEFAULT_SAMPLE_OUTPUTS) -> List[str]:
    """Sample mode's files into ``result_dir``; returns their paths in order.

    ``src``/``ref``: batches with ``x`` (N, 3, H, W) and ``y`` (N,) (InputFetcher 'test').
    ``outputs`` (names of SAMPLE_OUTPUTS, or their comma list): 'reference' -> reference.jpg, 'video_ref' ->
    video_ref.mp4, 'latent' -> latent_{y}_psi_{0.5,0.7,1.0}.jpg per domain,
    'video_latent' -> video_latent.mp4. Random codes come from a generator seeded with
    ``grid.seed`` anew for each output, so an output does not depend on which others are chosen;
    ``grid.num_outs_per_domain`` latent codes each.
    """
    outputs = parse_sample_outputs(outputs)
    out = lambda name: os.path.join(result_dir, name)
    os.makedirs(result_dir, exist_ok=True)
    device, n = src.x.device, src.x.size(0)
    written: List[str] = []
    if 'reference' in outputs:
        translate_using_reference(nets, grid.w_hpf, src.x, ref.x, ref.y, out('reference.jpg'))
        written.append(out('reference.jpg'))
    y_trg_list = [torch.full((n,), y, dtype=torch.long, device=device) for y in range(grid.num_domains)]

    # the same latent codes for every output, each output's draws independent of the others
    def codes() -> tuple[torch.Generator, torch.Tensor]:
        generator = torch.Generator().manual_seed(grid.seed)
        return generator, shared_latents(grid.num_outs_per_domain, n, grid.latent_dim, generator, device)

    if 'latent' in outputs:
        generator, z_trg_list = codes()
        for y, y_trg in enumerate(y_trg_list):
            s_avg = mean_style(nets, y, grid.latent_dim, generator=generator)
            for psi in (0.5, 0.7, 1.0):
                translate_using_latent(nets, grid.w_hpf, src.x, [y_trg], z_trg_list, psi, out(f'latent_{y}_psi_{psi:.1f}.jpg'),
                                       [s_avg])
                written.append(out(f'latent_{y}_psi_{psi:.1f}.jpg'))
    if 'video_ref' in outputs:  # videos need imageio-ffmpeg (a UserError when absent)
        written.append(video_ref(nets, grid.w_hpf, src.x, ref.x, ref.y, out('video_ref.mp4')))
    if 'video_latent' in outputs:
        generator, z_trg_list = codes()
        written.append(video_latent(nets, grid.w_hpf, src.x, y_trg_list, z_trg_list, 1.0, out('video_latent.mp4'),
                                    generator=generator))
    return written


@torch.no_grad()
def run(args: Any) -> None:
    """``--mode sample``: the first ``--val_batch_size`` images of ``--src_dir`` and ``--ref_dir``
    (in file order) through the run's networks; writes ``--sample_outputs`` into ``--out``
    (``--result_dir``)."""
    from core.datasets.pipeline import InputFetcher, get_test_loader
    from core.use.load_run import load_run_networks
    nets, _ = load_run_networks(args)
    device = next(nets.generator.parameters()).device
    common = dict(img_size=args.img_size, batch_size=args.val_batch_size, shuffle=False,
                  num_workers=data_workers(args.num_workers), num_domains=args.num_domains, device=args.device)
    src, ref = (next(InputFetcher(get_test_loader(root, **common), None, args.latent_dim, 'test', device))
                for root in (args.src_dir, args.ref_dir))
    write_samples(nets, src, ref, args.result_dir, GridConfig.from_args(args), sample_outputs(args))
