"""StarGAN v2 objective: pure tensor functions, plus the two official combiners.

``compute_d_loss`` / ``compute_g_loss`` keep the official names and signatures; the
parts come back as detached tensors (no device sync per loss; ``float()`` them to log).
Under ``--amp`` the networks run in bf16/fp16 but every loss and the R1 penalty are
reduced in float32 (``.float()`` is a no-op on float32 tensors: default runs are unchanged).
"""
import torch
import torch.nn.functional as F
from munch import Munch

from core.fan import fan_masks


def adv_loss(logits, target):
    """Non-saturating adversarial loss: BCE with logits against an all-``target`` label."""
    assert target in (0, 1)
    logits = logits.float()
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, float(target)))


def r1_reg(d_out, x_in, scale=None):
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


def l1(a, b):
    return torch.mean(torch.abs(a.float() - b.float()))


def _style(nets, y_trg, z_trg=None, x_ref=None):
    """Target style from a latent code (mapping network) or a reference image (style encoder)."""
    assert (z_trg is None) != (x_ref is None), 'give exactly one of z_trg, x_ref'
    if z_trg is not None:
        return nets.mapping_network(z_trg, y_trg)
    return nets.style_encoder(x_ref, y_trg)


def compute_d_loss(nets, args, x_real, y_org, y_trg, z_trg=None, x_ref=None, masks=None, r1_scale=None,
                   x_fake=None):
    """``r1_scale``: the loss scale under ``--amp fp16`` (see ``r1_reg``). ``x_fake``: the fake
    image when the caller already made it (the trainer reuses the latent-guided one for the
    generator step), else made here from ``z_trg`` or ``x_ref``."""
    # official: x_real.requires_grad_(), which made every later backward compute an input
    # gradient nobody reads; R1 takes its own leaf instead (the same values and gradients)
    x_in = x_real.detach().requires_grad_()
    # --compile: R1 needs a double backward, which compiled graphs lack: the eager D
    out = nets.get('discriminator_r1', nets.discriminator)(x_in, y_org)
    loss_real = adv_loss(out, 1)
    loss_reg = r1_reg(out, x_in, scale=r1_scale)

    if x_fake is None:
        with torch.no_grad():
            s_trg = _style(nets, y_trg, z_trg, x_ref)
            x_fake = nets.generator(x_real, s_trg, masks=masks)
    loss_fake = adv_loss(nets.discriminator(x_fake.detach(), y_trg), 0)

    loss = loss_real + loss_fake + args.lambda_reg * loss_reg
    return loss, Munch(real=loss_real.detach(), fake=loss_fake.detach(), reg=loss_reg.detach())


def compute_g_loss(nets, args, x_real, y_org, y_trg, z_trgs=None, x_refs=None, masks=None, lambda_ds=None,
                   fake=None):
    """``lambda_ds`` overrides ``args.lambda_ds`` (the trainer passes ``lambda_ds_at(step)``).
    ``fake``: ``(s_trg, x_fake)`` of the first code or reference, made (with gradients) by
    the caller with the same networks, else made here."""
    z_trg, z_trg2 = z_trgs if z_trgs is not None else (None, None)
    x_ref, x_ref2 = x_refs if x_refs is not None else (None, None)
    lambda_ds = args.lambda_ds if lambda_ds is None else lambda_ds

    if fake is None:
        s_trg = _style(nets, y_trg, z_trg, x_ref)
        x_fake = nets.generator(x_real, s_trg, masks=masks)
    else:
        s_trg, x_fake = fake
    loss_adv = adv_loss(nets.discriminator(x_fake, y_trg), 1)

    loss_sty = l1(nets.style_encoder(x_fake, y_trg), s_trg)

    s_trg2 = _style(nets, y_trg, z_trg2, x_ref2)
    x_fake2 = nets.generator(x_real, s_trg2, masks=masks).detach()
    loss_ds = l1(x_fake, x_fake2)

    # cycle: masks recomputed from the fake image (official)
    masks_fake = fan_masks(nets, args.w_hpf, x_fake)
    s_org = nets.style_encoder(x_real, y_org)
    x_rec = nets.generator(x_fake, s_org, masks=masks_fake)
    loss_cyc = l1(x_rec, x_real)

    loss = loss_adv + args.lambda_sty * loss_sty - lambda_ds * loss_ds + args.lambda_cyc * loss_cyc
    return loss, Munch(adv=loss_adv.detach(), sty=loss_sty.detach(),
                       ds=loss_ds.detach(), cyc=loss_cyc.detach())
