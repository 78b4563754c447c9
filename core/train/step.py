"""One StarGAN v2 training iteration in the official order, and what it needs:
the typed hyper-parameters (``TrainConfig``), He init, optimisers, EMA and the schedules
(pure functions of the step), and the opt-in speed switches (``--amp``,
``--channels_last``, ``--grad_checkpoint``, ``--compile``).
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
from argparse import Namespace
from typing import Callable, ContextManager, Iterable, Optional, Tuple

import torch
import torch.nn as nn
from munch import Munch

from core.nn.fan import fan_masks
from core.nn.networks import INFERENCE, TRAINED, ModelConfig
from core.train.losses import discriminator_loss, generator_loss, target_style
from core.train.recompute import recompute_nets


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """The hyper-parameters a training step reads (flag names; defaults = the official ones)."""
    model: ModelConfig = ModelConfig()
    total_iters: int = 100000
    lr: float = 1e-4
    f_lr: float = 1e-6
    beta1: float = 0.0
    beta2: float = 0.99
    weight_decay: float = 1e-4
    ema_beta: float = 0.999
    lr_decay_iter: int = 0
    # loss weights; lambda_ds decays to 0 over ds_iter iterations (lambda_ds_at)
    lambda_reg: float = 1.0
    lambda_cyc: float = 1.0
    lambda_sty: float = 1.0
    lambda_ds: float = 1.0
    ds_iter: int = 100000
    # speed switches (opt-in)
    amp: str = 'none'
    channels_last: bool = False
    compile: bool = False
    grad_checkpoint: bool = False

    @classmethod
    def from_args(cls, args: Namespace | Munch) -> TrainConfig:
        """From complete parsed arguments (``parse_args``, or ``with_defaults`` for official-style
        ones: the one place where missing flags take their defaults)."""
        missing = [f.name for f in dataclasses.fields(cls) if f.name != 'model' and not hasattr(args, f.name)]
        if missing:
            raise TypeError(f'TrainConfig.from_args: the arguments lack {", ".join(missing)} (complete them with with_defaults)')
        known = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if f.name != 'model'}
        return cls(model=ModelConfig.from_args(args), **known)

    @property
    def w_hpf(self) -> float:
        return self.model.w_hpf


def he_init(module: nn.Module) -> None:
    if isinstance(module, (nn.Conv2d, nn.Linear)):
        nn.init.kaiming_normal_(module.weight, mode='fan_in', nonlinearity='relu')
        if module.bias is not None:
            nn.init.constant_(module.bias, 0)


def init_weights(nets: Munch) -> None:
    """He init on G, F, E, D in that order (never FAN, never the EMA copies)."""
    for name in TRAINED:
        nets[name].apply(he_init)


def base_lr(name: str, hp: TrainConfig) -> float:
    """The learning rate of network ``name``: f_lr for the mapping network, lr for the others."""
    return hp.f_lr if name == 'mapping_network' else hp.lr


def build_optimizers(nets: Munch, hp: TrainConfig, fused: bool = False) -> Munch:
    """Adam per trained network (L2 weight decay, not AdamW); f_lr for the mapping network.
    ``fused``: one fused kernel per step (the trainer asks for it on CUDA only); the same
    update up to float rounding."""
    extra = dict(fused=True) if fused else {}
    return Munch({name: torch.optim.Adam(
        nets[name].parameters(),
        lr=base_lr(name, hp),
        betas=(hp.beta1, hp.beta2),
        weight_decay=hp.weight_decay, **extra) for name in TRAINED})


@torch.no_grad()
def moving_average(model: nn.Module, model_test: nn.Module, beta: float = 0.999) -> None:
    """p_ema <- lerp(p, p_ema, beta) for every parameter (buffers are not averaged)."""
    for param, param_test in zip(model.parameters(), model_test.parameters()):
        param_test.copy_(torch.lerp(param, param_test, beta))


@torch.no_grad()
def ema_update(nets: Munch, nets_ema: Munch, beta: float = 0.999, names: Iterable[str] = INFERENCE) -> None:
    """``moving_average`` of every averaged network as multi-tensor ops (one lerp, one copy
    over all parameters): the same lerp(p, p_ema, beta), bit for bit, in a few kernels."""
    params, params_ema = [], []
    for name in names:
        params += list(nets[name].parameters())
        params_ema += list(nets_ema[name].parameters())
    torch._foreach_copy_(params_ema, torch._foreach_lerp(params, params_ema, beta))


# ------------------------------------------------------------------ speed switches (opt-in)
AMP_DTYPES = {'bf16': torch.bfloat16, 'fp16': torch.float16}


def autocast(hp: TrainConfig, device_type: str) -> ContextManager:
    """Autocast for the network forward passes under --amp bf16/fp16 (else a no-op)."""
    if hp.amp == 'none':
        return contextlib.nullcontext()
    return torch.autocast(device_type, dtype=AMP_DTYPES[hp.amp])


def make_scaler(hp: TrainConfig, device: torch.device | str) -> Optional[torch.amp.GradScaler]:
    """A GradScaler for --amp fp16 (one, shared by the four optimiser steps of an
    iteration and updated after each of them), else None."""
    if hp.amp != 'fp16':
        return None
    # R1 scales the discriminator's output itself (core.train.losses.r1_reg): its input gradient
    # per output is 1, so the default first scale (2**16) overflows fp16 (max 65504) and
    # only halves after skipped steps; 2**10 leaves room and still lifts tiny gradients
    return torch.amp.GradScaler(torch.device(device).type, init_scale=2.0 ** 10)


def to_memory_format(modules: Munch, hp: TrainConfig) -> None:
    """--channels_last: ``modules`` (a dict of networks) converted in place (same values)."""
    if hp.channels_last:
        for net in modules.values():
            net.to(memory_format=torch.channels_last)


def match_optimizer_layout(optims: Munch) -> None:
    """Adam's moments in the memory layout of their parameters. A resume can load them in
    another one (saved with another --channels_last, or converted before the networks
    were): fused Adam refuses mismatched layouts, and the foreach kernels would split. The
    values stay as they are."""
    for optim in optims.values():
        for p, state in optim.state.items():
            for key, value in state.items():
                if torch.is_tensor(value) and value.shape == p.shape and value.stride() != p.stride():
                    state[key] = torch.empty_like(p, dtype=value.dtype).copy_(value)


def speed_nets(nets: Munch, hp: TrainConfig, wrap: Optional[Callable[[Munch], Munch]] = None,
               compile_options: Optional[dict] = None) -> Munch:
    """The networks the training step calls: --channels_last converts G, F, E, D (and the
    FAN) in place, --grad_checkpoint makes the blocks of G, D and E recompute in backward
    (in place, same parameters); then ``wrap`` (e.g. the DDP wrappers, which must see the final memory
    format); then --compile wraps G, F, E, D in torch.compile (the R1 pass calls the eager
    discriminator under it: ``core.train.losses.eager``). ``compile_options``: keyword
    arguments for torch.compile (e.g. a backend for the benches' smoke runs). Without
    switches or wrap: ``nets`` itself (the result has the same keys as ``nets``)."""
    to_memory_format(nets, hp)
    if hp.grad_checkpoint:  # recompute the blocks in backward (core/train/recompute.py)
        recompute_nets(nets)
    if wrap is not None:
        nets = wrap(nets)
    if not hp.compile:
        return nets
    out = Munch(nets)
    for name in TRAINED:
        out[name] = torch.compile(nets[name], **(compile_options or {}))
    return out


def prepare_inputs(inputs: Munch, hp: TrainConfig) -> Munch:
    """--channels_last: the image batches in channels-last memory format (same values)."""
    if not hp.channels_last:
        return inputs
    return Munch({k: v.contiguous(memory_format=torch.channels_last) if v.dim() == 4 else v
                  for k, v in inputs.items()})


@functools.lru_cache(maxsize=16)
def _ds_schedule(initial: float, ds_iter: int) -> Tuple[float, ...]:
    values = [initial]
    if ds_iter > 0:
        lam, delta = initial, initial / ds_iter
        while lam > 0:  # official: subtract while positive (may end slightly below 0)
            lam -= delta
            values.append(lam)
    return tuple(values)


def lambda_ds_at(step: int, initial: float, ds_iter: int) -> float:
    """lambda_ds used by iteration ``step`` (0-based): ``initial`` decreased by
    initial / ds_iter after each earlier iteration while it was > 0, in the same
    float arithmetic as the official in-place decrement."""
    values = _ds_schedule(float(initial), int(ds_iter))
    return values[min(step, len(values) - 1)]


def lr_scale_at(step: int, total_iters: int, decay_iter: int) -> float:
    """Factor on every learning rate at iteration ``step`` (0-based): 1, then over the last
    ``decay_iter`` iterations linearly down to 1 / decay_iter (0: always 1, as the paper)."""
    if decay_iter <= 0:
        return 1.0
    return min(1.0, (total_iters - step) / decay_iter)


def set_lr(optims: Munch, hp: TrainConfig, step: int) -> None:
    """--lr_decay_iter: each optimiser's rate for ``step`` (a pure function of the step, so a
    resumed run continues the schedule); nothing is touched when the schedule is off."""
    if hp.lr_decay_iter <= 0:
        return
    scale = lr_scale_at(step, hp.total_iters, hp.lr_decay_iter)
    for name, optim in optims.items():
        for group in optim.param_groups:
            group['lr'] = base_lr(name, hp) * scale


def _step(optims: Munch, loss: torch.Tensor, names: Iterable[str], scaler: Optional[torch.amp.GradScaler] = None) -> None:
    for optim in optims.values():  # zero every optimiser before each backward (official)
        optim.zero_grad()
    if scaler is None:
        loss.backward()
        for name in names:
            optims[name].step()
        return
    scaler.scale(loss).backward()
    for name in names:
        scaler.step(optims[name])
    scaler.update()


def no_context(nets: Munch, names: Iterable[str]) -> ContextManager:
    """The ``no_sync`` of one process: a context that does nothing (there is nothing to average)."""
    return contextlib.nullcontext()


def train_step(nets: Munch, nets_ema: Munch, optims: Munch, inputs: Munch, hp: TrainConfig, step: int,
               scaler: Optional[torch.amp.GradScaler] = None, no_sync: Callable[..., ContextManager] = no_context) -> Munch:
    """One iteration; returns the official log dict (floats are still tensors, never read
    back to the host here). ``scaler``: the --amp fp16 GradScaler (make_scaler).
    ``no_sync(nets, names)``: a context in which backward passes need not average the
    gradients of ``names`` across processes (``Distributed.no_sync``); the generator steps
    use it for the networks they do not update."""
    x_real, y_org = inputs.x_src, inputs.y_src
    x_ref, x_ref2, y_trg = inputs.x_ref, inputs.x_ref2, inputs.y_ref
    z_trg, z_trg2 = inputs.z_trg, inputs.z_trg2
    lambda_ds = lambda_ds_at(step, hp.lambda_ds, hp.ds_iter)
    set_lr(optims, hp, step)
    # --amp fp16: R1 takes the input gradient of the scaled output (see core.train.losses.r1_reg)
    r1_scale = None if scaler is None else scaler.scale(torch.ones((), device=x_real.device))
    g_weights = dict(lambda_sty=hp.lambda_sty, lambda_ds=lambda_ds, lambda_cyc=hp.lambda_cyc, w_hpf=hp.w_hpf)

    # masks come from x_real once per iteration and serve all four losses (official)
    masks = fan_masks(nets, hp.w_hpf, x_real)  # float32 also under --amp (see fan_masks)
    amp = functools.partial(autocast, hp, x_real.device.type)  # forward passes only

    # the latent-guided fake, made once: G and F do not change before the generator step uses
    # it (official: made again there), so it keeps its graph for that step
    with amp():
        s_latent = nets.mapping_network(z_trg, y_trg)
        x_latent = nets.generator(x_real, s_latent, masks=masks)
        d_loss, d_latent = discriminator_loss(nets, x_real, y_org, y_trg, x_latent, hp.lambda_reg, r1_scale)
    _step(optims, d_loss, ['discriminator'], scaler)
    with amp():
        with torch.no_grad():
            x_fake = nets.generator(x_real, nets.style_encoder(x_ref, y_trg), masks=masks)
        d_loss, d_ref = discriminator_loss(nets, x_real, y_org, y_trg, x_fake, hp.lambda_reg, r1_scale)
    _step(optims, d_loss, ['discriminator'], scaler)

    # official: the latent-guided step updates G, F and E ...
    with no_sync(nets, ['discriminator']):
        with amp():
            g_loss, g_latent = generator_loss(nets, x_real, y_org, y_trg, s_latent, x_latent,
                                              target_style(nets, y_trg, z_trg=z_trg2), masks, **g_weights)
        _step(optims, g_loss, ['generator', 'mapping_network', 'style_encoder'], scaler)
    # ... the reference-guided step only G
    with no_sync(nets, ['discriminator', 'style_encoder']):
        with amp():
            s_ref = nets.style_encoder(x_ref, y_trg)
            x_fake = nets.generator(x_real, s_ref, masks=masks)
            g_loss, g_ref = generator_loss(nets, x_real, y_org, y_trg, s_ref, x_fake,
                                           target_style(nets, y_trg, x_ref=x_ref2), masks, **g_weights)
        _step(optims, g_loss, ['generator'], scaler)

    ema_update(nets, nets_ema, beta=hp.ema_beta)

    logs = Munch()
    for prefix, parts in (('D/latent_', d_latent), ('D/ref_', d_ref), ('G/latent_', g_latent), ('G/ref_', g_ref)):
        for key, value in parts.items():
            logs[prefix + key] = value
    logs['G/lambda_ds'] = lambda_ds_at(step + 1, hp.lambda_ds, hp.ds_iter)  # after the decay, as logged upstream
    return logs
