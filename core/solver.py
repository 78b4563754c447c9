"""The official ``core.solver`` names (compatibility layer: delegates only), for scripts
written against the official repository.

``Solver`` is ``core.train.loop.Trainer`` with the official ``sample`` and ``evaluate``;
``compute_d_loss`` / ``compute_g_loss`` keep the official signatures (``nets, args, ...``)
over ``core.train.losses``; ``moving_average``, ``adv_loss`` and ``r1_reg`` are ours under their
official names.
"""
from typing import Any, Optional, Sequence, Tuple

import torch
from munch import Munch

from core.cli.arguments import sample_outputs
from core.datasets.pipeline import InputFetcher
from core.nn.fan import Masks
from core.train.loop import Trainer
from core.train.losses import adv_loss, discriminator_loss, generator_loss, r1_reg, target_style  # noqa: F401 (official names)
from core.train.step import moving_average  # noqa: F401 (official name)
from core.use.load_run import load_run_networks
from core.use.sample_grids import GridConfig, write_samples

__all__ = ['Solver', 'compute_d_loss', 'compute_g_loss', 'moving_average', 'adv_loss', 'r1_reg']


class Solver(Trainer):
    """Trains (official name and signature). ``sample`` and ``evaluate`` load their networks
    through ``core.use.load_run`` like the command line does."""

    @torch.no_grad()
    def sample(self, loaders: Munch) -> None:
        """Sample mode on loaders of source and reference images (as upstream)."""
        args = self.args
        nets, _ = load_run_networks(args, self.device)
        src = next(InputFetcher(loaders.src, None, args.latent_dim, 'test', self.device))
        ref = next(InputFetcher(loaders.ref, None, args.latent_dim, 'test', self.device))
        write_samples(nets, src, ref, args.result_dir, GridConfig.from_args(args), sample_outputs(args))

    @torch.no_grad()
    def evaluate(self, step: Optional[int] = None) -> None:
        """FID and LPIPS of the checkpoint ``--resume_iter`` (no step, as upstream), or of the
        EMA networks being trained as iteration ``step``."""
        if step is not None:
            return self.evaluate_ema(step)
        from metrics.eval import evaluate_networks  # the metrics stack is loaded only when used
        nets, step = load_run_networks(self.args, self.device)
        evaluate_networks(nets, self.args, step)


def compute_d_loss(nets: Munch, args: Any, x_real: torch.Tensor, y_org: torch.Tensor, y_trg: torch.Tensor,
                   z_trg: Optional[torch.Tensor] = None, x_ref: Optional[torch.Tensor] = None,
                   masks: Masks = None) -> Tuple[torch.Tensor, Munch]:
    """The official discriminator loss: the fake made (without gradients) from ``z_trg`` or
    ``x_ref``, weighted by ``args.lambda_reg``."""
    with torch.no_grad():
        x_fake = nets.generator(x_real, target_style(nets, y_trg, z_trg, x_ref), masks=masks)
    return discriminator_loss(nets, x_real, y_org, y_trg, x_fake, args.lambda_reg)


def compute_g_loss(nets: Munch, args: Any, x_real: torch.Tensor, y_org: torch.Tensor, y_trg: torch.Tensor,
                   z_trgs: Optional[Sequence[torch.Tensor]] = None, x_refs: Optional[Sequence[torch.Tensor]] = None,
                   masks: Masks = None) -> Tuple[torch.Tensor, Munch]:
    """The official generator loss from two latent codes ``z_trgs`` or two references
    ``x_refs``, weighted by ``args`` (``args.lambda_ds`` as it is now: the official solver
    decays it in place)."""
    z_trg, z_trg2 = z_trgs if z_trgs is not None else (None, None)
    x_ref, x_ref2 = x_refs if x_refs is not None else (None, None)
    s_trg = target_style(nets, y_trg, z_trg, x_ref)
    x_fake = nets.generator(x_real, s_trg, masks=masks)
    return generator_loss(nets, x_real, y_org, y_trg, s_trg, x_fake, target_style(nets, y_trg, z_trg2, x_ref2), masks,
                          lambda_sty=args.lambda_sty, lambda_ds=args.lambda_ds, lambda_cyc=args.lambda_cyc,
                          w_hpf=args.w_hpf)
