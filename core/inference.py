"""One loader of networks for inference (sample, translate, eval, serve, export).

    nets = load_networks(ModelConfig.from_args(args), args.checkpoint_dir, step, device)

Returns the EMA networks of ``{step}_nets_ema.ckpt`` (or the online G, F, E of
``{step}_nets.ckpt`` with ``which='online'``) on ``device`` in eval mode, with the FAN
(w_hpf > 0) from the checkpoint when it holds one, else from ``wing_path``.
"""
from typing import Optional

from munch import Munch

from core import ckpt as ckpt
from core.device import as_device
from core.errors import UserError
from core.networks import INFERENCE, ModelConfig, build_networks
from core.fan import load_fan

__all__ = ['load_networks', 'resolve_step', 'load_run_networks']


def _file_kind(which):
    """The checkpoint file that holds the ``which`` ('ema' or 'online') networks."""
    return ckpt.NETS if which == 'online' else ckpt.NETS_EMA


def resolve_step(checkpoint_dir, step, which='ema'):
    """``step``, or the newest complete checkpoint set holding the file ``which`` needs when
    ``step`` is 0 (None); a save that was cut short is never taken."""
    if isinstance(step, int) and step > 0:  # else 0 or 'latest'
        return step
    kind = _file_kind(which)
    files = ckpt.saved_files(checkpoint_dir)
    steps = [s for s in ckpt.complete_steps(checkpoint_dir) if kind in files[s]]
    if not steps:
        raise UserError(f"no complete checkpoint with a *_{kind}.ckpt file in '{checkpoint_dir}'; train first, "
                        f"or point --checkpoint_dir at a run (and --resume_iter at its step)")
    return steps[-1]


def load_networks(cfg: ModelConfig, checkpoint_dir: str, step: int, device=None, which: str = 'ema',
                  wing_path: Optional[str] = None) -> Munch:
    """Networks of ``cfg`` loaded from ``checkpoint_dir`` at ``step`` (0: the newest) for inference."""
    if which not in ('ema', 'online'):
        raise UserError(f"which must be 'ema' or 'online', not {which!r}")
    step = resolve_step(checkpoint_dir, step, which)
    nets = build_networks(cfg)
    saved = ckpt.load_modules(ckpt.ckpt_path(checkpoint_dir, step, _file_kind(which)), nets, strict_names=list(INFERENCE))
    if cfg.w_hpf > 0 and 'fan' not in saved:  # FAN from the checkpoint when it has one, as upstream
        load_fan(nets.fan, wing_path)
    device = as_device(device)
    return Munch({name: net.to(device) for name, net in nets.items()})


def load_run_networks(args, device=None):
    """``(nets, step)`` from parsed arguments: ``--checkpoint_dir``, ``--resume_iter`` (0: the
    newest), ``--sample_from``, ``--wing_path`` and the model flags (which parse_args has
    already filled from the run's config.yaml)."""
    step = resolve_step(args.checkpoint_dir, args.resume_iter, args.sample_from)
    nets = load_networks(ModelConfig.from_args(args), args.checkpoint_dir, step,
                         as_device(args.device if device is None else device),
                         which=args.sample_from, wing_path=args.wing_path)
    return nets, step
