"""One loader of networks for inference (sample, translate, eval, serve, export).

    nets = load_networks(ModelConfig.from_args(args), args.checkpoint_dir, step, device)

Returns the EMA networks of ``{step}_nets_ema.ckpt`` (or the online G, F, E of
``{step}_nets.ckpt`` with ``which='online'``) on ``device`` in eval mode, with the FAN
(w_hpf > 0) from the checkpoint when it holds one, else from ``wing_path``.

``checkpoint_dir`` may also be a Hub folder (``config.json`` + ``model.safetensors``, written
by ``--mode export --format hf``; ``core.use.hub_folder``): its one set of EMA networks (and its
FAN) load from the safetensors file, its step is the one its ``config.json`` records, and
``which='online'`` is refused (the folder holds only EMA networks).
"""
from argparse import Namespace
from typing import Optional, Union

from munch import Munch

import core.io.ckpt_files as ckpt
from core.device import DeviceLike, as_device
from core.errors import UserError
from core.nn.fan import load_fan
from core.nn.networks import INFERENCE, ModelConfig, build_networks
from core.use.hub_folder import hub_step, is_hub_folder, load_hub_weights

__all__ = ['load_networks', 'resolve_step', 'load_run_networks']


def _file_kind(which: str) -> str:
    """The checkpoint file that holds the ``which`` ('ema' or 'online') networks."""
    return ckpt.NETS if which == 'online' else ckpt.NETS_EMA


def _hub_step(folder: str, step: Union[int, str, None], which: str) -> int:
    """The step of a Hub folder's networks; UserError for the online networks or another step."""
    if which == 'online':
        raise UserError(f"--checkpoint_dir '{folder}' is a Hub folder: it holds only the EMA networks; "
                        f"drop --sample_from online")
    saved = hub_step(folder)
    if isinstance(step, int) and step > 0 and step != saved:
        at = f'iteration {saved}' if saved is not None else 'one iteration (not recorded)'
        raise UserError(f"--checkpoint_dir '{folder}' is a Hub folder of {at} only, not {step}; "
                        f"drop --resume_iter")
    return saved if saved is not None else 0


def resolve_step(checkpoint_dir: str, step: Union[int, str, None], which: str = 'ema') -> int:
    """``step``, or the newest complete checkpoint set holding the file ``which`` needs when
    ``step`` is 0 (None, 'latest'); a save that was cut short is never taken. For a Hub folder:
    the step its config.json records (0 when it records none)."""
    if is_hub_folder(checkpoint_dir):
        return _hub_step(checkpoint_dir, step, which)
    if isinstance(step, int) and step > 0:  # else 0 or 'latest'
        return step
    kind = _file_kind(which)
    files = ckpt.saved_files(checkpoint_dir)
    steps = [s for s in ckpt.complete_steps(checkpoint_dir) if kind in files[s]]
    if not steps:
        raise UserError(f"no complete checkpoint with a *_{kind}.ckpt file in '{checkpoint_dir}'; train first, "
                        f"or point --checkpoint_dir at a run (and --resume_iter at its step)")
    return steps[-1]


def load_networks(cfg: ModelConfig, checkpoint_dir: str, step: Union[int, str, None], device: DeviceLike = None,
                  which: str = 'ema', wing_path: Optional[str] = None) -> Munch:
    """Networks of ``cfg`` loaded from ``checkpoint_dir`` (a run, or a Hub folder) at ``step``
    (0: the newest) for inference."""
    if which not in ('ema', 'online'):
        raise UserError(f"which must be 'ema' or 'online', not {which!r}")
    step = resolve_step(checkpoint_dir, step, which)
    nets = build_networks(cfg)
    if is_hub_folder(checkpoint_dir):  # the FAN (w_hpf > 0) is in the folder
        load_hub_weights(checkpoint_dir, nets)
    else:
        saved = ckpt.load_modules(ckpt.ckpt_path(checkpoint_dir, step, _file_kind(which)), nets,
                                  strict_names=list(INFERENCE))
        if cfg.w_hpf > 0 and 'fan' not in saved:  # FAN from the checkpoint when it has one, as upstream
            load_fan(nets.fan, wing_path)
    target = as_device(device)
    return Munch({name: net.to(target) for name, net in nets.items()})


def load_run_networks(args: Union[Namespace, Munch], device: DeviceLike = None) -> tuple[Munch, int]:
    """``(nets, step)`` from parsed arguments: ``--checkpoint_dir`` (a run or a Hub folder),
    ``--resume_iter`` (0: the newest), ``--sample_from``, ``--wing_path`` and the model flags
    (which parse_args has already filled from the run's config.yaml or the folder's config.json)."""
    step = resolve_step(args.checkpoint_dir, args.resume_iter, args.sample_from)
    nets = load_networks(ModelConfig.from_args(args), args.checkpoint_dir, step,
                         as_device(args.device if device is None else device),
                         which=args.sample_from, wing_path=args.wing_path)
    return nets, step
