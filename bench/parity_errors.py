"""Largest observed error against the goldens, per kind (the margins behind the parity tests).

    python bench/parity_errors.py [GOLDENS_DIR]      # default: ../shared/goldens, else tests/goldens

Uses the parity tests' own helpers, so it measures exactly what they compare.
"""
import copy
import glob
import os
import sys

import torch
from munch import Munch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, 'tests')]

from helpers import filled_nets, loss_args, masks_of  # noqa: E402
from weights_by_name import checksum  # noqa: E402

from core.model import build_model  # noqa: E402
from core.nn.fan import heatmaps_to_masks  # noqa: E402
from core.solver import compute_d_loss, compute_g_loss  # noqa: E402
from core.train.step import TrainConfig, build_optimizers, init_weights, train_step  # noqa: E402


def rel(got, exp):
    return abs(float(got) - exp) / abs(exp) if exp else abs(float(got))


def tensor_err(got, exp):
    return ((got.double() - exp.double()).abs().max() / exp.double().abs().max()).item()


def forward(case):
    nets, args = filled_nets(case)
    i, o = case['inputs'], case['outputs']
    with torch.no_grad():
        got = dict(s_latent=nets.mapping_network(i['z_trg'], i['y_ref']), s_ref=nets.style_encoder(i['x_ref'], i['y_ref']),
                   d_out=nets.discriminator(i['x_src'], i['y_src']))
        masks = masks_of(nets, args, i['x_src'])
        if masks is not None:
            got['masks0'], got['masks1'] = masks
        got['x_fake'] = nets.generator(i['x_src'], got['s_ref'], masks=masks)
    return max(tensor_err(got[k], v) for k, v in o.items())


def masks(case):
    m0, m1 = heatmaps_to_masks(case['heatmaps'])
    return max(tensor_err(m0, case['masks0']), tensor_err(m1, case['masks1']))


def losses(case):
    nets, _ = filled_nets(case)
    args, inp = loss_args(case), Munch(case['inputs'])
    x = inp.x_src.clone()
    m = masks_of(nets, args, x)
    out = {'d_latent': compute_d_loss(nets, args, x, inp.y_src, inp.y_ref, z_trg=inp.z_trg, masks=m),
           'd_ref': compute_d_loss(nets, args, x, inp.y_src, inp.y_ref, x_ref=inp.x_ref, masks=m),
           'g_latent': compute_g_loss(nets, args, x, inp.y_src, inp.y_ref, z_trgs=[inp.z_trg, inp.z_trg2], masks=m),
           'g_ref': compute_g_loss(nets, args, x, inp.y_src, inp.y_ref, x_refs=[inp.x_ref, inp.x_ref2], masks=m)}
    errs = []
    for name, (total, parts) in out.items():
        errs.append(rel(total.detach(), case['losses'][name]['total']))
        errs += [rel(v, case['losses'][name][k]) for k, v in parts.items()]
    return max(errs)


def _checksum_err(net, expected, fields=(1, 2)):
    sd = net.state_dict()
    return max(rel(checksum(sd[k])[i], v[i]) for k, v in expected.items() for i in fields if v[i])


def train(case):
    nets, _ = filled_nets(case)
    nets_ema = Munch({k: copy.deepcopy(nets[k]) for k in ('generator', 'mapping_network', 'style_encoder')})
    if 'fan' in nets:
        nets_ema.fan = nets.fan
    b1, b2 = case['betas']
    args = loss_args(case, ds_iter=case['ds_iter'], lr=case['lr'], f_lr=case['f_lr'], beta1=b1, beta2=b2,
                     weight_decay=case['weight_decay'], ema_beta=case['ema_beta'])
    hp = TrainConfig.from_args(args)
    optims = build_optimizers(nets, hp)
    log_err, lam_err = 0.0, 0.0
    for step, batch in enumerate(case['batches']):
        logs = train_step(nets, nets_ema, optims, Munch({k: v.clone() for k, v in batch.items()}), hp, step)
        lam_err = max(lam_err, abs(logs['G/lambda_ds'] - case['logs'][step]['lambda_ds']))
        if step == 0:
            log_err = max(rel(logs[f'{g}_{p}'], v) for g, parts in case['logs'][0].items() if g != 'lambda_ds'
                          for p, v in parts.items())
    params = max(_checksum_err(nets[n], e) for n, e in case['params'].items())
    ema = max(_checksum_err(nets_ema[n], e) for n, e in case['params_ema'].items())
    return f'logs[0] {log_err:.1e}, lambda_ds {lam_err:.1e} abs, params {params:.1e}, params_ema {ema:.1e}'


def init(case):
    args = Munch({k: case[k] for k in ('img_size', 'style_dim', 'latent_dim', 'num_domains', 'w_hpf')}, wing_path=None)
    torch.manual_seed(case['seed'])
    nets, nets_ema = build_model(args)
    init_weights(nets)
    groups = [(nets[n], e) for n, e in case['params'].items()] + \
        [(nets_ema[n], e) for n, e in case['params_ema'].items()]
    sums = max(abs(checksum(net.state_dict()[k])[0] - v[0]) / v[1]
               for net, e in groups for k, v in e.items() if v[1])
    return f'[1],[2] {max(_checksum_err(net, e) for net, e in groups):.1e} relative, [0] {sums:.1e} x abs-sum'



KINDS = dict(forward=forward, masks=masks, losses=losses, train=train, init=init)

if __name__ == '__main__':
    shared = os.path.join(ROOT, '..', 'shared', 'goldens')
    folder = sys.argv[1] if len(sys.argv) > 1 else (shared if os.path.isdir(shared) else os.path.join(ROOT, 'tests', 'goldens'))
    for path in sorted(glob.glob(os.path.join(folder, '*.pt'))):
        kind = os.path.basename(path).split('_')[0]
        if kind in KINDS:
            err = KINDS[kind](torch.load(path, weights_only=False))
            print(f'{os.path.basename(path):32s} {err if isinstance(err, str) else f"{err:.1e}"}', flush=True)
