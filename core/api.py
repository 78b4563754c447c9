"""The Python API: a trained StarGAN v2 in a notebook or a script, without argparse.

    from core.api import StarGANv2

    model = StarGANv2.from_run('expr/demo/checkpoints')            # the newest step, on cuda when there is one
    images = model.translate('cat.jpg', domain='dog', num=4, psi=0.7, seed=0)   # 4 PIL images
    images = model.translate(photo, reference='dog.jpg', reference_domain='dog')
    images = model.translate(photo, domain='dog', strength=0.5, source_domain='cat')  # half way to a dog
    s = model.style(dog_photos, 'dog')                             # (N, style_dim) style codes
    x = model.generate(photos, s)                                  # (N, 3, S, S) in [-1, 1]

Images are PIL images, numpy arrays (H, W[, 3 or 4]) of uint8, file paths, or float tensors
(3, H, W) or (N, 3, H, W) in [-1, 1]; a list of them is a batch (read by ``core.use.inputs``).
Domains are names or indices.

This is the one path of translation: translate mode (``core.use.translate``) and the web demo
(``core.use.serve``) call it, so the API gives their pixels for the same seed and inputs.
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import Any, cast

import torch
from munch import Munch
from PIL import Image

from core.cli.arguments import run_values
from core.device import DeviceLike, as_device
from core.errors import UserError
from core.nn.fan import Masks, fan_masks
from core.nn.networks import MODEL_KEYS, ModelConfig
from core.nn.styles import check_strength, domain_mean_style, need_source_domain, truncated_style
from core.use.hub_transport import resolve_pretrained
from core.use.inputs import Domain, ImageInput, Images, as_batch, domain_index, to_pil  # noqa: F401 (public names)
from core.use.load_run import load_networks, resolve_step

__all__ = ['StarGANv2', 'ImageInput', 'Images', 'Domain', 'as_batch', 'domain_index', 'model_config', 'to_pil']


def model_config(base: ModelConfig | None = None, **overrides: Any) -> ModelConfig:
    """``base`` (default: the official ``ModelConfig()``) with ModelConfig keywords replaced;
    ``domain_names`` as a list or a comma-separated string, and a new ``num_domains`` without
    new names drops the base's names. A one-line UserError for any other keyword, or names
    that do not fit the number of domains."""
    unknown = sorted(set(overrides) - set(MODEL_KEYS))
    if unknown:
        raise UserError(f'{", ".join(unknown)}: not a model setting; use ModelConfig keywords '
                        f'({", ".join(MODEL_KEYS)})')
    values = dataclasses.asdict(base or ModelConfig())
    if 'num_domains' in overrides and 'domain_names' not in overrides:
        values['domain_names'] = None
    values.update(overrides)
    return ModelConfig.from_args(Munch(values))  # checked by ModelConfig (core.nn.networks.check_model_values)


def _run_config(checkpoint_dir: str, config: ModelConfig | None, overrides: dict[str, Any]) -> ModelConfig:
    """The ModelConfig of a run: ``config`` when given, else the model keys of the run's
    config.yaml (none for official checkpoints: the official defaults), then ``overrides``
    (ModelConfig keywords) on top, as command-line flags are (``core.cli.arguments.run_values``)."""
    if config is None:
        config = ModelConfig.from_args(Munch(run_values('translate', checkpoint_dir, given=frozenset(overrides))))
    return model_config(config, **overrides)


class StarGANv2:
    """Inference networks of a trained StarGAN v2 (generator, mapping network, style encoder,
    and the FAN when ``config.w_hpf > 0``) with the configuration they were built with.

    Every method runs without gradients, keeps no state between calls (each draws its random
    codes from its own seeded generator), and follows the networks' device."""

    def __init__(self, nets: Munch, cfg: ModelConfig, step: int | None = None) -> None:
        self.nets, self.config, self.step = nets, cfg, step

    # ------------------------------------------------------------------ loading

    @classmethod
    def from_run(cls, checkpoint_dir: str | os.PathLike[str], step: int | None = None, device: DeviceLike = 'auto',
                 which: str = 'ema', wing_path: str | None = None, config: ModelConfig | None = None,
                 **overrides: Any) -> StarGANv2:
        """The networks of a run folder (``--checkpoint_dir``) at ``step`` (None: the newest
        complete one), ``which`` 'ema' (``*_nets_ema.ckpt``) or 'online' (``*_nets.ckpt``), on
        ``device`` ('auto': cuda when available, as the command line decides); or of a Hub
        folder (``config.json`` + ``model.safetensors``: its one step, EMA networks only). The
        configuration is the run's config.yaml (a Hub folder's config.json); official
        checkpoints have none: give ``config`` or ModelConfig keywords (``img_size=256,
        num_domains=3, w_hpf=0, domain_names='cat,dog,wild'``), which override the stored values. A w_hpf model's FAN
        comes from the checkpoint when it holds one, else from ``wing_path``."""
        folder = os.path.expanduser(os.fspath(checkpoint_dir))
        if not os.path.isdir(folder):
            raise UserError(f"no run folder '{folder}'; give the folder that holds the *_nets_ema.ckpt files "
                            f"(or a Hub folder)")
        cfg = _run_config(folder, config, overrides)
        dev = as_device(device)
        step = resolve_step(folder, step or 0, which)
        nets = load_networks(cfg, folder, step, dev, which=which, wing_path=wing_path)
        return cls(nets, cfg, step)

    @classmethod
    def from_pretrained(cls, folder_or_hub_id: str | os.PathLike[str], step: int | None = None,
                        device: DeviceLike = 'auto', which: str = 'ema', wing_path: str | None = None,
                        config: ModelConfig | None = None, revision: str | None = None,
                        cache_dir: str | os.PathLike[str] | None = None, **overrides: Any) -> StarGANv2:
        """A local folder (a Hub folder written by ``--mode export --format hf``, or a run folder:
        see ``from_run``), or else the id of a Hugging Face Hub repository ('owner/name', at
        ``revision``) fetched with ``huggingface_hub`` into its cache (``cache_dir``), which
        also serves it offline (``HF_HUB_OFFLINE=1``) once cached
        (``core.use.hub_transport.resolve_pretrained``)."""
        folder = resolve_pretrained(folder_or_hub_id, revision=revision, cache_dir=cache_dir)
        return cls.from_run(folder, step=step, device=device, which=which, wing_path=wing_path, config=config,
                            **overrides)

    # ------------------------------------------------------------------ what it is

    @property
    def domains(self) -> list[str]:
        """The domain names (the indices as strings when the run has none)."""
        return self.config.names()

    @property
    def device(self) -> torch.device:
        return next(self.nets.generator.parameters()).device

    def __repr__(self) -> str:
        c = self.config
        step = '' if self.step is None else f', step {self.step}'
        return (f'StarGANv2(domains {self.domains}, {c.img_size} px, style_dim {c.style_dim}, '
                f'w_hpf {c.w_hpf:g}{step}, on {self.device})')

    def domain_index(self, domain: Domain | None, what: str = 'domain') -> int:
        """The index of a domain given by name or index (UserError naming ``what`` if it is none)."""
        return domain_index(domain, self.domains, what)

    def images(self, images: Images) -> torch.Tensor:
        """``images`` (any accepted kind, or a list) as an (N, 3, S, S) batch in [-1, 1] on the model's device."""
        return as_batch(images, self.config.img_size, self.device)

    def _labels(self, domain: Domain | Sequence[Domain] | None, n: int, what: str) -> torch.Tensor:
        """(n,) domain indices: one domain for every image, or one per image."""
        if isinstance(domain, (list, tuple)):
            if len(domain) != n:
                raise UserError(f'{what} gives {len(domain)} domains for {n} images; give one, or one per image')
            return torch.tensor([self.domain_index(d, what) for d in domain], device=self.device)
        return torch.full((n,), self.domain_index(cast('Domain | None', domain), what), dtype=torch.long,
                          device=self.device)

    # ------------------------------------------------------------------ styles and images

    @torch.no_grad()
    def latent_style(self, domain: Domain, num: int = 1, psi: float = 1.0, seed: int = 0) -> torch.Tensor:
        """``num`` style codes (num, style_dim) of ``domain`` from latent codes drawn with
        ``seed``, truncated towards the domain's mean style by ``psi`` (1: none, 0: the mean).
        The mean style's 10,000 codes are drawn first from the same generator, then the
        ``num`` codes, all on the CPU, so the styles are the same on every device."""
        y = self.domain_index(domain)
        if int(num) < 1:
            raise UserError(f'num must be >= 1, not {num}')
        device = self.device
        generator = torch.Generator().manual_seed(int(seed))
        y_trg = torch.full((int(num),), y, device=device)
        s_avg = domain_mean_style(self.nets.mapping_network, y, self.config.latent_dim, device, generator=generator)
        z = torch.randn(int(num), self.config.latent_dim, generator=generator).to(device)
        return truncated_style(self.nets, s_avg, z, y_trg, float(psi))

    @torch.no_grad()
    def style(self, image: Images, domain: Domain | Sequence[Domain]) -> torch.Tensor:
        """Style codes (N, style_dim) of the images (any accepted kind, or a list), each read
        by the style encoder in ``domain`` (one domain, or one per image)."""
        x = self.images(image)
        return self.nets.style_encoder(x, self._labels(domain, x.size(0), 'domain'))

    def _style_codes(self, s: torch.Tensor, rows: str) -> torch.Tensor:
        """Style codes ``s`` on the model's device; a UserError unless they are (``rows``, style_dim)."""
        if s.dim() != 2 or s.size(1) != self.config.style_dim:
            raise UserError(f'style codes must be ({rows}, {self.config.style_dim}), not {tuple(s.shape)}')
        return s.to(self.device)

    def masks(self, x: torch.Tensor) -> Masks:
        """The generator's FAN masks of the batch ``x`` for w_hpf > 0 models, else None."""
        return fan_masks(self.nets, self.config.w_hpf, x)

    @torch.no_grad()
    def generate(self, x: Images, s: torch.Tensor) -> torch.Tensor:
        """The generator on images ``x`` (N) with style codes ``s`` (M, style_dim): pairwise when
        N == M, one image with each style when N == 1, each image with the one style when
        M == 1; (max(N, M), 3, S, S) in [-1, 1]. A w_hpf > 0 model computes the masks of
        ``x`` with the FAN (once per image)."""
        x = self.images(x)
        s = self._style_codes(s, 'M')
        n, m = x.size(0), s.size(0)
        if n != m and n != 1 and m != 1:
            raise UserError(f'{n} images and {m} style codes: give as many of each, or one of either')
        if m == 1 and n > 1:
            s = s.expand(n, -1)
        return self._generate(x, s, s.size(0) if n == 1 else 1)

    def _generate(self, x: torch.Tensor, s: torch.Tensor, k: int) -> torch.Tensor:
        """Each of the N images of ``x`` with its ``k`` styles of ``s`` (N * k, source-major); the
        FAN masks are computed once per image."""
        masks = self.masks(x)
        if x.size(0) == 1:  # one image: expanded views, as translate mode always did
            def repeat(t: torch.Tensor) -> torch.Tensor:
                return t.expand(k, -1, -1, -1)
        else:
            def repeat(t: torch.Tensor) -> torch.Tensor:
                return t.repeat_interleave(k, dim=0) if k > 1 else t
        x = repeat(x)
        masks = None if masks is None else (repeat(masks[0]), repeat(masks[1]))
        return self.nets.generator(x, s, masks=masks)

    def target_style(self, domain: Domain | None = None, num: int = 1, psi: float = 1.0, seed: int = 0,
                     reference: Images | None = None, reference_domain: Domain | Sequence[Domain] | None = None
                     ) -> torch.Tensor:
        """The target styles of ``translate``: ``num`` latent styles of ``domain`` (seed, psi), or
        the styles of the ``reference`` image(s) read in ``reference_domain``."""
        if reference is not None:
            if domain is not None:
                raise UserError('give a target domain (random styles) or a reference image with reference_domain, '
                                'not both')
            if int(num) != 1:
                raise UserError(f'num={num} with a reference: a reference image gives one style; '
                                f'give several reference images for several styles')
            if reference_domain is None:
                raise UserError("reference_domain is required with a reference image: the domain it shows "
                                f"({', '.join(self.domains)})")
            return self.style(reference, reference_domain)
        if reference_domain is not None:
            raise UserError('reference_domain was given without a reference image; give reference= too, '
                            'or domain= for random styles')
        if domain is None:
            raise UserError(f'give the target domain ({", ".join(self.domains)}) or a reference image')
        return self.latent_style(domain, num, psi, seed)

    @torch.no_grad()
    def translate(self, image: Images, domain: Domain | None = None, num: int = 1, psi: float = 1.0, seed: int = 0,
                  reference: Images | None = None, reference_domain: Domain | Sequence[Domain] | None = None,
                  strength: float = 1.0, source_domain: Domain | Sequence[Domain] | None = None,
                  return_tensors: bool = False, style: torch.Tensor | None = None
                  ) -> list[Image.Image] | torch.Tensor:
        """The image(s) translated into ``domain`` with ``num`` random styles (``seed``,
        truncation ``psi``), or with the style of each ``reference`` image of
        ``reference_domain``, or with given style codes ``style`` (k, style_dim), e.g. from
        ``latent_style`` or ``style``, to reuse them over many images.

        ``strength`` in [0, 1] moves along the straight line in style space from the source's
        own style (the style encoder on the source in ``source_domain``, which a strength
        below 1 needs) to the target style: 1 (default) is the plain translation, 0 the
        source's own style. Returns the k outputs of each source, source by source: a list
        of PIL images, or with ``return_tensors`` a tensor (N * k, 3, S, S) in [-1, 1]."""
        strength = check_strength(strength)
        need_source_domain(strength, source_domain, self.domains)
        x = self.images(image)
        if style is None:
            s_trg = self.target_style(domain, num, psi, seed, reference, reference_domain)
        elif domain is not None or reference is not None:
            raise UserError('give style codes (style=) or a target (domain= or reference=), not both')
        else:
            s_trg = self._style_codes(style, 'k')
        n, k = x.size(0), s_trg.size(0)
        s = s_trg if n == 1 else s_trg.repeat(n, 1)
        if strength < 1:
            s_src = self.nets.style_encoder(x, self._labels(source_domain, n, 'source_domain'))
            s_src = s_src.expand(k, -1) if n == 1 else s_src.repeat_interleave(k, dim=0)
            s = torch.lerp(s_src, s, strength)
        out = self._generate(x, s, k)
        return out if return_tensors else to_pil(out)
