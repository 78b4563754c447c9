"""The whole GPU table in one command (under 8 minutes on one H100/H200), written as markdown
and JSON, after a short CUDA sanity section for a first run on a new machine:

    python bench/gpu_report.py --official ~/stargan-v2 --out gpu_report     # on the GPU
    python bench/gpu_report.py --smoke                                       # CPU, tiny, CI

Sections (each a function of the device, so ``--smoke`` runs the same code on the CPU):

1. sanity: torch / CUDA / cuDNN versions and the device; a 2-process DDP smoke (``mp.spawn``;
   nccl with two GPUs or more, else gloo: NCCL cannot put two ranks on one GPU) training a
   few iterations at tiny widths with w_hpf 0 and 1, checking finite losses and the same
   weights on both ranks; the TF32 switches as the evaluation's networks see them.
2. training, 256 px, batch 8 (bench/train_speed.py ``measure``): official fp32, project fp32,
   bf16, bf16 + channels_last, bf16 + channels_last + compile (the compile time is the
   compiled row's warm-up, reported apart): iterations/s, images/s, peak memory (counted,
   and CUDA's max_memory_allocated), fraction of the device's bf16 peak.
3. the training loader's images/s with all the machine's cores as workers (bench/train_speed.py
   ``loader_speed``, JPEGs as large as AFHQ's).
4. one evaluation (bench/eval_speed.py): a fixed number of generated images, FID + LPIPS the
   official way against ours, with name-filled Inception / AlexNet weights (offline).

``--smoke``: CPU, 32 px, tiny widths, one thread, one iteration each, compile with the 'eager'
backend (dynamo without code generation), a diagonal Frechet distance in the evaluation
(scipy's sqrtm of 2048 x 2048 takes 10-40 s per call on 2 cores). Without ``--official`` the official rows are skipped
(said in the output), in both modes; a missing ``--official`` path is a one-line error.
"""
import argparse
import contextlib
import datetime
import json
import os
import shutil
import socket
import sys
import tempfile
import time

import torch
import torch.multiprocessing as mp

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench import eval_speed, train_speed  # noqa: E402
from core.errors import UserError, exit_on_user_error  # noqa: E402
from core.io.files import atomic_write  # noqa: E402

# (amp, channels_last, compile, grad_checkpoint) of the project rows, in table order
ROWS = (('none', 0, 0, 0), ('bf16', 0, 0, 0), ('bf16', 1, 0, 0), ('bf16', 1, 1, 0))


# ---------------------------------------------------------------- 1. sanity
def versions(device):
    """torch, CUDA, cuDNN versions and the device's name."""
    out = dict(torch=torch.__version__, cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version(),
               device=str(device), python=sys.version.split()[0], cpu_cores=os.cpu_count())
    if device.type == 'cuda':
        props = torch.cuda.get_device_properties(device)
        out.update(name=props.name, memory_gib=round(props.total_memory / 2 ** 30, 1),
                   capability=f'{props.major}.{props.minor}', gpus=torch.cuda.device_count())
    else:
        out.update(name='cpu')
    return out


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


TINY_DDP = dict(img_size=32, dim_in=8, max_conv_dim=32, style_dim=16, latent_dim=8, num_domains=2, batch_size=4)


def _ddp_worker(rank, world_size, port, device_type, backend, iters, w_hpfs, results):
    """One rank: the project's train_step under DDP on this rank's half of a fixed global batch."""
    import torch.distributed as dist
    from munch import Munch

    import core.train.distributed as distributed
    from core.cli.arguments import with_defaults
    from core.model import build_model
    from core.train.step import TrainConfig, build_optimizers, init_weights, speed_nets, train_step
    # the process group, device and wrappers of a torchrun worker (core.train.distributed)
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world_size),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    group = distributed.from_env(TINY_DDP['batch_size'], torch.device(device_type if backend == 'nccl' else 'cpu'))
    device = group.device(torch.device(device_type)) if backend == 'nccl' else torch.device(device_type)
    out = {}
    try:
        for w_hpf in w_hpfs:
            try:
                args = with_defaults(Munch(TINY_DDP, w_hpf=float(w_hpf), wing_path=None, ds_iter=10))
                torch.manual_seed(0)
                nets, nets_ema = build_model(args)
                init_weights(nets)
                nets = Munch({k: v.to(device) for k, v in nets.items()})
                nets_ema = Munch({k: v.to(device) for k, v in nets_ema.items()})
                if 'fan' in nets:
                    nets_ema.fan = nets.fan
                hp = TrainConfig.from_args(args)
                optims = build_optimizers(nets, hp)
                train_nets = speed_nets(nets, hp, wrap=lambda ns: group.wrap(ns, device))
                g = torch.Generator().manual_seed(1)
                n, size, half = args.batch_size, args.img_size, args.batch_size // world_size
                batch = Munch(x_src=torch.rand(n, 3, size, size, generator=g) * 2 - 1, y_src=torch.arange(n) % 2,
                              x_ref=torch.rand(n, 3, size, size, generator=g) * 2 - 1,
                              x_ref2=torch.rand(n, 3, size, size, generator=g) * 2 - 1, y_ref=(torch.arange(n) + 1) % 2,
                              z_trg=torch.randn(n, 8, generator=g), z_trg2=torch.randn(n, 8, generator=g))
                mine = Munch({k: v[rank * half:(rank + 1) * half].to(device) for k, v in batch.items()})
                finite = True
                for step in range(iters):
                    logs = train_step(train_nets, nets_ema, optims, Munch(mine), hp, step, no_sync=group.no_sync)
                    finite &= all(bool(torch.isfinite(torch.as_tensor(v)).all()) for v in logs.values())
                flat = torch.cat([p.detach().reshape(-1).float() for k in optims for p in nets[k].parameters()])
                lowest, highest = flat.clone(), flat.clone()
                dist.all_reduce(lowest, op=dist.ReduceOp.MIN)
                dist.all_reduce(highest, op=dist.ReduceOp.MAX)
                out[w_hpf] = dict(ok=bool(finite) and torch.equal(lowest, highest), finite=bool(finite),
                                  same_weights=torch.equal(lowest, highest))
            except Exception as e:  # reported per case, so one failure does not hide the other
                first = str(e).strip().splitlines()[0] if str(e).strip() else ''
                out[w_hpf] = dict(ok=False, error=f'{type(e).__name__}: {first}'[:300])
    finally:
        group.close()
    if rank == 0:
        results.update({str(k): v for k, v in out.items()})


def ddp_smoke(device, iters=2, w_hpfs=(0, 1)):
    """2-process DDP training (mp.spawn) of the tiny networks, per w_hpf: {'backend', cases}."""
    if device.type == 'cuda':
        backend = 'nccl' if torch.cuda.device_count() >= 2 else 'gloo'  # NCCL: one rank per GPU
    else:
        backend = 'gloo'
    manager = mp.Manager()
    results = manager.dict()
    t0 = time.perf_counter()
    mp.spawn(_ddp_worker, args=(2, _free_port(), device.type, backend, iters, tuple(w_hpfs), results),
             nprocs=2, join=True)
    cases = dict(results)
    manager.shutdown()
    return dict(backend=backend, iterations=iters, seconds=time.perf_counter() - t0,
                note='' if backend == 'nccl' or device.type != 'cuda' else 'one GPU: both ranks on it with gloo',
                cases=cases)


TF32_NAMES = ('cuda.matmul.allow_tf32', 'cudnn.allow_tf32')


def tf32_state():
    return {'cuda.matmul.allow_tf32': torch.backends.cuda.matmul.allow_tf32,
            'cudnn.allow_tf32': torch.backends.cudnn.allow_tf32}


@contextlib.contextmanager
def watch_tf32():
    """Records the TF32 switches each time an evaluation network (Inception for FID, AlexNet for
    LPIPS) runs a forward pass inside: {'fid': {...}, 'lpips': {...}}."""
    from metrics import fid, lpips
    seen = {}
    originals = fid.build_inception, lpips.build_lpips

    def watching(build, key):
        def built(*args, **kwargs):
            net = build(*args, **kwargs)
            if not getattr(net, '_tf32_watched', False):
                def note(module, inputs):
                    seen.setdefault(key, tf32_state())  # returns None: the inputs stay as they are
                # on the first sub-module: a hook on the network itself runs before its
                # forward, outside the block that sets the switches for it
                next(net.children()).register_forward_pre_hook(note)
                net._tf32_watched = True
            return net
        return built

    fid.build_inception = watching(originals[0], 'fid')
    lpips.build_lpips = watching(originals[1], 'lpips')
    try:
        yield seen
    finally:
        fid.build_inception, lpips.build_lpips = originals


# ---------------------------------------------------------------- 2.-4. the table
def training_rows(opt, device, off):
    """The training rows of bench/train_speed.py's ``measure`` at the report's size."""
    speed_opt = train_speed.parse(['--device', str(device), '--warmup', str(opt.warmup), '--iters', str(opt.iters),
                                   '--rounds', str(opt.rounds)] + (opt.tiny_widths if opt.smoke else []))
    options = dict(backend='eager') if opt.smoke else None  # smoke: dynamo without code generation
    failures = []
    rows = train_speed.measure(speed_opt, device, opt.img_size, opt.batch_size, off, compile_options=options,
                               log=lambda line: print(line, flush=True), combos=ROWS, failures=failures)
    bf16_peak, source = train_speed.device_peak(device, 'bf16')
    for r in rows:
        r['its'] = 1 / r['s']
        r['frac_bf16'] = r['flops'] / r['s'] / bf16_peak if (r['flops'] and bf16_peak) else None
        r['bf16_peak_source'] = source
    compiled = [r for r in rows if r['name'].endswith('compile')]
    eager = {r['name']: r for r in rows}
    for r in compiled:  # the compile time: warm-up of the compiled row less that of the same row eager
        twin = eager.get(r['name'][:-len('+compile')])
        r['compile_s'] = r['setup_s'] - twin['setup_s'] if twin else r['setup_s']
    return rows, failures


def loader_row(opt, device):
    """Images/s of the training inputs with every core as a loader worker."""
    workers = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()
    work = tempfile.mkdtemp(prefix='gpu_report_loader_')
    try:
        train_speed.write_photos(work, opt.loader_images // 2, opt.photo_size)
        its = train_speed.loader_speed(work, opt.img_size, opt.batch_size, workers, device, opt.loader_batches)
        same = same_batches_as_cpu(work, opt.img_size, opt.batch_size, device)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return dict(workers=workers, photo_size=opt.photo_size, img_size=opt.img_size, batch=opt.batch_size,
                its=its, source_images_s=its * opt.batch_size, all_images_s=3 * its * opt.batch_size,
                same_as_cpu=same)


def same_batches_as_cpu(folder, img_size, batch, device, batches=3):
    """The training fetcher's batches on ``device`` (uint8 pixels copied on the copy stream, made
    [-1, 1] there) equal the CPU fetcher's, bit for bit."""
    from core.datasets.pipeline import InputFetcher, get_train_loader
    from core.io.images import CheckedImages

    def draw(dev):
        common = dict(checked=CheckedImages(), img_size=img_size, batch_size=batch, num_workers=0, seed=0, device=dev, uint8=True)
        fetcher = InputFetcher(get_train_loader(folder, 'source', **common),
                               get_train_loader(folder, 'reference', **common), 16, 'train', dev, seed=0)
        return [{k: v.cpu() for k, v in next(fetcher).items()} for _ in range(batches)]

    return all(torch.equal(a[k], b[k]) for a, b in zip(draw(device), draw(torch.device('cpu'))) for k in a)


def diagonal_frechet_distance(mu, cov, mu2, cov2):
    """--smoke only: the Frechet distance of the diagonal Gaussians (scipy's sqrtm of a 2048 x 2048
    product takes 10-40 s per call on 2 cores, and the smoke evaluation makes four)."""
    import numpy as np
    var, var2 = np.diag(np.atleast_2d(cov)), np.diag(np.atleast_2d(cov2))
    return float(np.sum((np.atleast_1d(mu) - np.atleast_1d(mu2)) ** 2) + np.sum(var + var2 - 2 * np.sqrt(var * var2)))


@contextlib.contextmanager
def cheap_frechet(enabled):
    from metrics import eval as meval
    from metrics import fid
    originals = fid.frechet_distance, meval.frechet_distance
    if enabled:
        fid.frechet_distance = meval.frechet_distance = diagonal_frechet_distance
    try:
        yield
    finally:
        fid.frechet_distance, meval.frechet_distance = originals


def eval_row(opt, device):
    """bench/eval_speed.py on a fixed number of images (official way against ours)."""
    argv = ['--name_filled_weights', '--device', str(device), '--modes', 'reference', '--num_domains', '2',
            '--img_size', str(opt.eval_img_size), '--train_per_domain', str(opt.eval_train),
            '--val_per_domain', str(opt.eval_val), '--num_outs_per_domain', str(opt.eval_outs),
            '--val_batch_size', str(opt.eval_batch)]
    if opt.smoke:
        argv += ['--dim_in', '8', '--max_conv_dim', '32']
    else:  # the official widths at this size
        argv += ['--dim_in', str(2 ** 14 // opt.eval_img_size), '--max_conv_dim', '512', '--style_dim', '64',
                 '--latent_dim', '16']
    with watch_tf32() as seen, cheap_frechet(opt.smoke):
        result = eval_speed.main(argv)
    result['frechet'] = 'diagonal (smoke)' if opt.smoke else 'scipy sqrtm (official formula)'
    result['tf32_during_eval'] = dict(seen)
    return result


# ---------------------------------------------------------------- output
def markdown(report):
    v = report['sanity']['versions']
    lines = [f'# GPU report ({"SMOKE, CPU, tiny: not a measurement" if report["smoke"] else v["name"]})', '',
             f'- command: `{report["command"]}`',
             f'- {v["name"]}, torch {v["torch"]}, CUDA {v["cuda"]}, cuDNN {v["cudnn"]}, {v["cpu_cores"]} CPU cores; '
             f'{report["date"]}; total {report["total_s"]:.0f} s']
    ddp = report['sanity']['ddp']
    for w_hpf, case in ddp['cases'].items():
        state = 'ok' if case.get('ok') else f'FAILED {case.get("error") or case}'
        lines.append(f'- DDP smoke ({ddp["backend"]}, 2 processes, {ddp["iterations"]} iterations, w_hpf {w_hpf}): {state}')
    if ddp.get('note'):
        lines.append(f'- DDP note: {ddp["note"]}')
    tf32 = report['eval'].get('tf32_during_eval', {})
    for net, flags in tf32.items():
        lines.append(f'- TF32 during eval ({net}): ' + ', '.join(f'{k}={val}' for k, val in flags.items()))
    if report['skipped']:
        lines.append(f'- skipped: {report["skipped"]}')
    t = report['training']
    lines += ['', f'## Training, {t["img_size"]} px, batch {t["batch"]}', '',
              '| setting | iterations/s | images/s | peak memory (counted) | CUDA max allocated | of bf16 peak '
              '| official / this | warm-up (compile) |', '|---|---|---|---|---|---|---|---|']
    for r in t['rows']:
        counted, cuda = train_speed.memory_cells(r)
        frac = f'{100 * r["frac_bf16"]:.1f} %' if r['frac_bf16'] is not None else 'n/a'
        ratio = f'{r["ratio"]:.2f}x' if r['ratio'] is not None else ''
        warm = f'{r["setup_s"]:.0f} s' + (f' (compile {r["compile_s"]:.0f} s)' if 'compile_s' in r else '')
        lines.append(f'| {r["name"]} | {r["its"]:.2f} | {r["ips"]:.1f} | {counted} | {cuda} | {frac} | {ratio} | {warm} |')
    for f in t['failed']:
        lines.append(f'| {f["name"]} | FAILED: {f["error"]} |||||||')
    if t['rows']:
        lines.append(f'\nbf16 peak: {t["rows"][0]["bf16_peak_source"]}; GFLOP/iteration {t["rows"][0]["flops"] / 1e9:.1f} '
                     f'(eager fp32 count)')
    ld = report['loader']
    lines += ['', '## Training loader', '', f'{ld["workers"]} workers, {ld["photo_size"]} px JPEGs -> {ld["img_size"]} px, '
              f'batch {ld["batch"]}: {ld["its"]:.1f} iterations/s, {ld["source_images_s"]:.0f} source images/s '
              f'({ld["all_images_s"]:.0f} with the two reference batches); batches on the device equal the '
              f'CPU ones bit for bit: {ld["same_as_cpu"]}']
    e = report['eval']
    lines += ['', '## Evaluation', '', f'{e["generated_images"]} generated images ({e["tasks"]} tasks, modes '
              f'{", ".join(e["modes"])}, {e["img_size"]} px): official way {e["official_s"]:.1f} s, ours '
              f'{e["ours_s"]:.1f} s, {e["speedup"]:.2f}x; metrics agree to {e["max_rel_diff"]:.1e} (relative); '
              f'Frechet distance: {e["frechet"]}']
    return '\n'.join(lines) + '\n'


def jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, float) or isinstance(obj, (int, str, bool)) or obj is None:
        return obj
    return str(obj)


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('--smoke', action='store_true', help='the same code paths on the CPU at a tiny size (CI)')
    p.add_argument('--official', default=None, metavar='PATH', help='a clovaai/stargan-v2 checkout (the official '
                   'rows are skipped without it)')
    p.add_argument('--device', default=None, help='default: cuda (cpu with --smoke)')
    p.add_argument('--out', default='gpu_report', help='folder for gpu_report.md and gpu_report.json')
    p.add_argument('--img_size', type=int, default=None, help='default 256 (32 with --smoke)')
    p.add_argument('--batch_size', type=int, default=None, help='default 8 (2 with --smoke)')
    p.add_argument('--warmup', type=int, default=None, help='default 3 (1 with --smoke)')
    p.add_argument('--iters', type=int, default=None, help='timed iterations per round; default 10 (1 with --smoke)')
    p.add_argument('--rounds', type=int, default=None, help='default 3 (1 with --smoke)')
    p.add_argument('--ddp_iters', type=int, default=None, help='default 3 (1 with --smoke)')
    opt = p.parse_args(argv)
    smoke = opt.smoke
    defaults = dict(device='cpu' if smoke else 'cuda', img_size=32 if smoke else 256, batch_size=2 if smoke else 8,
                    warmup=1 if smoke else 3, iters=1 if smoke else 10, rounds=1 if smoke else 3,
                    ddp_iters=1 if smoke else 3)
    for k, v in defaults.items():
        if getattr(opt, k) is None:
            setattr(opt, k, v)
    # loader and evaluation sizes: AFHQ-sized JPEGs and a few hundred images on the GPU
    opt.photo_size, opt.loader_images, opt.loader_batches = (64, 8, 2) if smoke else (512, 64, 20)
    opt.eval_img_size, opt.eval_train, opt.eval_val, opt.eval_outs, opt.eval_batch = \
        (32, 4, 2, 2, 2) if smoke else (256, 64, 32, 10, 32)
    opt.tiny_widths = ['--dim_in', '8', '--max_conv_dim', '32'] if smoke and not opt.official else []
    if opt.official and not os.path.isfile(os.path.join(os.path.expanduser(opt.official), 'core', 'solver.py')):
        raise UserError(f'--official {opt.official}: no core/solver.py there; give a clovaai/stargan-v2 checkout '
                        f'or leave --official out (the official rows are then skipped)')
    return opt


def run(opt):
    from core.device import select_device
    t_start = time.perf_counter()
    device = select_device(opt.device)
    if opt.smoke:  # tiny tensors on a small shared CPU: idle-spinning threads only slow it down
        torch.set_num_threads(1)
    report = dict(smoke=opt.smoke, command='python ' + ' '.join(sys.argv), date=datetime.datetime.now().isoformat(
        timespec='seconds'), skipped='')
    print('# 1. sanity', flush=True)
    report['sanity'] = dict(versions=versions(device))
    print(json.dumps(report['sanity']['versions']), flush=True)
    report['sanity']['ddp'] = ddp_smoke(device, iters=opt.ddp_iters)
    print(f'# DDP smoke: {json.dumps(report["sanity"]["ddp"])}', flush=True)
    off = None
    if opt.official:
        off = train_speed.load_official(os.path.expanduser(opt.official))
    else:
        report['skipped'] = 'official training row (no --official PATH given)'
        print(f'# skipped: {report["skipped"]}', flush=True)
    print(f'# 2. training, {opt.img_size} px, batch {opt.batch_size}', flush=True)
    rows, failures = training_rows(opt, device, off)
    report['training'] = dict(img_size=opt.img_size, batch=opt.batch_size, rows=rows, failed=failures)
    print('# 3. training loader', flush=True)
    report['loader'] = loader_row(opt, device)
    print('# 4. evaluation', flush=True)
    report['eval'] = eval_row(opt, device)
    report['total_s'] = time.perf_counter() - t_start
    os.makedirs(opt.out, exist_ok=True)
    text = markdown(report)
    atomic_write(os.path.join(opt.out, 'gpu_report.md'), lambda f: f.write(text), binary=False)
    atomic_write(os.path.join(opt.out, 'gpu_report.json'),
                 lambda f: f.write(json.dumps(jsonable(report), indent=1)), binary=False)
    print(text)
    print(f'# written: {opt.out}/gpu_report.md, {opt.out}/gpu_report.json ({report["total_s"]:.0f} s)')
    failed = [w for w, c in report['sanity']['ddp']['cases'].items() if not c.get('ok')]
    return 1 if failed or failures else 0


def main(argv=None):
    return run(parse(argv))


if __name__ == '__main__':
    sys.exit(exit_on_user_error(main))
