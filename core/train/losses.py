"""StarGAN v2 objective: functions of tensors, networks and loss weights (no ``args``).

The official combiners ``compute_d_loss(nets, args, ...)`` / ``compute_g_loss(nets, args, ...)``
live in the compatibility layer (``core.solver``) and call these. The parts come back as
detached tensors (no device sync per loss; ``float()`` them to log). Under ``--amp`` the
networks run in bf16/fp16 but every loss and the R1 penalty are reduced in float32
(``.float()`` is a no-op on float32 tensors: default runs are unchanged).
"""
from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from munch import Munch

from core.nn.fan import Masks, fan_masks

__all__ = ['adv_loss', 'r1_reg', 'l1', 'eager', 'target_style', 'discriminator_loss', 'generator_loss']


def adv_loss(logits: torch.Tensor, target: int) -> torch.Tensor:
    """Non-saturating adversarial loss: BCE with logits against an all-``target`` label."""
    assert target in (0, 1)
    logits = logits.float()
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, float(target)))


def r1_reg(d_out: torch.Tensor, x_in: torch.Tensor, scale: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Zero-centred R1 penalty on real images: 0.5 * batch mean of sum of squared input gradients.

    ``scale`` (a 0-dim tensor: the GradScaler's loss scale under ``--amp fp16``): the input
    gradient is taken of the scaled output and unscaled after, in float32, so that small
    gradients do not underflow in the fp16 activations (PyTorch's recipe for gradient
    penalties under a GradScaler); an overflow gives an inf penalty, which the scaler skips."""
    out = d_out.float().sum()
    if scale is not None:
        out = out * scale
    grad, = torch.autograd.grad(outputs=out, inputs=x_in, create_graph=True, retain_graph=True)
    grad = grad.float()
    if scale is not None:
        grad = grad / scale
    return 0.5 * grad.pow(2).reshape(x_in.size(0), -1).sum(1).mean(0)


def l1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.mean(torch.abs(a.float() - b.float()))


def eager(net: nn.Module) -> nn.Module:
    """The module that ``torch.compile`` wrapped (its ``_orig_mod``), or ``net`` itself when it
    is not compiled."""
    return getattr(net, '_orig_mod', net)


def target_style(nets: Munch, y_trg: torch.Tensor, z_trg: Optional[torch.Tensor] = None,
                 x_ref: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Target style from a latent code (mapping network) or a reference image (style encoder)."""
    assert (z_trg is None) != (x_ref is None), 'give exactly one of z_trg, x_ref'
    if z_trg is not None:
        return nets.mapping_network(z_trg, y_trg)
    return nets.style_encoder(x_ref, y_trg)


def discriminator_loss(nets: Munch, x_real: torch.Tensor, y_org: torch.Tensor, y_trg: torch.Tensor,
                       x_fake: torch.Tensor, lambda_reg: float,
                       r1_scale: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, Munch]:
    """D's loss on a real batch and a fake one (``x_fake``, detached here): real and fake
    adversarial terms plus ``lambda_reg`` times R1 on the real images. ``r1_scale``: the loss
    scale under ``--amp fp16`` (see ``r1_reg``). Returns ``(loss, Munch(real, fake, reg))``."""
    # official: x_real.requires_grad_(), which made every later backward compute an input
    # gradient nobody reads; R1 takes its own leaf instead (the same values and gradients)
    x_in = x_real.detach().requires_grad_()
    # --compile: R1 needs a double backward, which compiled graphs lack: the eager D
    out = eager(nets.discriminator)(x_in, y_org)
    loss_real = adv_loss(out, 1)
    loss_reg = r1_reg(out, x_in, scale=r1_scale)
    loss_fake = adv_loss(nets.discriminator(x_fake.detach(), y_trg), 0)
    loss = loss_real + loss_fake + lambda_reg * loss_reg
    return loss, Munch(real=loss_real.detach(), fake=loss_fake.detach(), reg=loss_reg.detach())


def generator_loss(nets: Munch, x_real: torch.Tensor, y_org: torch.Tensor, y_trg: torch.Tensor,
                   s_trg: torch.Tensor, x_fake: torch.Tensor, s_trg2: torch.Tensor, masks: Masks, *,
                   lambda_sty: float, lambda_ds: float, lambda_cyc: float, w_hpf: float) -> Tuple[torch.Tensor, Munch]:
    """G's loss for the fake ``x_fake = G(x_real, s_trg)`` (made with gradients by the caller)
    and a second target style ``s_trg2`` (diversity): adversarial, style reconstruction,
    diversity (subtracted) and cycle terms. ``masks``: the FAN masks of ``x_real`` (None when
    ``w_hpf`` is 0). Returns ``(loss, Munch(adv, sty, ds, cyc))``."""
    loss_adv = adv_loss(nets.discriminator(x_fake, y_trg), 1)
    loss_sty = l1(nets.style_encoder(x_fake, y_trg), s_trg)

    x_fake2 = nets.generator(x_real, s_trg2, masks=masks).detach()
    loss_ds = l1(x_fake, x_fake2)

    # cycle: masks recomputed from the fake image (official)
    masks_fake = fan_masks(nets, w_hpf, x_fake)
    s_org = nets.style_encoder(x_real, y_org)
    x_rec = nets.generator(x_fake, s_org, masks=masks_fake)
    loss_cyc = l1(x_rec, x_real)

    loss = loss_adv + lambda_sty * loss_sty - lambda_ds * loss_ds + lambda_cyc * loss_cyc
    return loss, Munch(adv=loss_adv.detach(), sty=loss_sty.detach(), ds=loss_ds.detach(), cyc=loss_cyc.detach())
