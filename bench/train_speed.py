"""Speed of one StarGAN v2 training iteration (after warm-up): s/iteration, images/s, peak
memory, model FLOPs and the fraction of the device's peak, one row per setting; with
``--official PATH`` the official loop is timed beside it (same machine, same process, same
initial weights and batch), the two alternated, and the ratio printed.

    python bench/train_speed.py --img_size 64 --batch_size 8 --device cpu --official /work/official
    python bench/train_speed.py --img_size 256 --device cuda --amp none bf16 --channels_last 0 1 \\
        --compile 0 1 --official ~/stargan-v2
    python bench/train_speed.py --config configs/demo.yaml --img_size 32 --batch_size 4 --amp none bf16
    python bench/train_speed.py --loader_only --img_size 256 --num_workers 0 2 4   # data loading alone
    python bench/train_speed.py --count_only --img_size 256 --batch_size 8 --amp none bf16 \
        --grad_checkpoint 0 1 --official ~/stargan-v2                  # memory alone, no GPU needed

Memory: every eager row's last warm-up iteration runs under bench/train_memory.py's count
(saved-for-backward tensors + parameters, gradients, Adam states; per phase), printed as
"peak memory counted" on any device, beside CUDA's max_memory_allocated on a GPU;
``--count_only`` counts on data-less FakeTensors instead of timing (docs/memory.md).
The official networks are taken out of their nn.DataParallel wrappers (one device, the one
chosen). Compiled rows fail loudly at torch.compile's recompile limit instead of running
eager past it.

Several values of --img_size/--batch_size/--amp/--channels_last/--compile/--grad_checkpoint give one row per
combination. Every row trains its own copy of the networks from the same He init (seed) on
the same fixed batch, so rows differ only in the setting.

The official loop (``--official PATH``, a user's checkout of clovaai/stargan-v2): its
``core`` package is imported from PATH under a private module table (``sys.modules`` is
swapped while it loads, so its ``core.*`` never meets ours; modules it imports but
training never uses, ``cv2`` and ``ffmpeg``, are stubbed when missing). Its ``Solver`` is
not used (its constructor and loop pick the device with ``torch.cuda.is_available()`` and
read data, checkpoints and metrics): the bench runs the official ``compute_d_loss``,
``compute_g_loss`` (with their per-loss ``.item()``) and ``moving_average`` in the order of
the official ``Solver.train`` (zero all grads, backward, step D; twice; then G+F+E, then G;
then the EMA), with its Adam settings, on the official ``build_model`` networks filled with
our initial weights. Nothing of it is copied into the project. Only w_hpf 0 (AFHQ setting)
is timed: the FAN needs wing.ckpt.
"""
import argparse
import contextlib
import importlib
import importlib.util
import itertools
import os
import shutil
import statistics
import sys
import tempfile
import time
import types
import warnings

import torch
from munch import Munch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.train_memory import count_iteration, format_phases, gib  # noqa: E402
from core.cli.arguments import parse_args  # noqa: E402
from core.cli.config_files import as_dict  # noqa: E402
from core.device import select_device  # noqa: E402
from core.model import build_model  # noqa: E402
from core.train.step import TrainConfig, build_optimizers, init_weights, make_scaler, prepare_inputs, speed_nets, train_step  # noqa: E402

# Dense peak FLOP/s from NVIDIA's datasheets (SXM parts), by the dtype the convolutions run in.
# fp32 rows use the TF32 tensor-core rate: cuDNN convolutions use TF32 by default
# (torch.backends.cudnn.allow_tf32 is True).
GPU_PEAKS = {  # name fragment: {amp: TFLOP/s}
    'H200': {'none': 494.7, 'bf16': 989.4, 'fp16': 989.4},
    'H100': {'none': 494.7, 'bf16': 989.4, 'fp16': 989.4},
    'A100': {'none': 156.0, 'bf16': 312.0, 'fp16': 312.0},
    'V100': {'none': 15.7, 'bf16': None, 'fp16': 125.0},
}


# ---------------------------------------------------------------- the official code
def load_official(path):
    """The official ``core.model`` and ``core.solver`` modules from the checkout at ``path``,
    loaded with a private ``sys.modules`` (ours are put back afterwards)."""
    if not os.path.isfile(os.path.join(path, 'core', 'solver.py')):
        sys.exit(f'--official {path}: no core/solver.py there; give a clovaai/stargan-v2 checkout')
    ours = {k: sys.modules.pop(k) for k in list(sys.modules)
            if k in ('core', 'metrics') or k.startswith(('core.', 'metrics.'))}
    stubs = [m for m in ('cv2', 'ffmpeg') if importlib.util.find_spec(m) is None]
    for m in stubs:  # imported at the top of official modules, never used by training
        sys.modules[m] = types.ModuleType(m)
    sys.path.insert(0, path)
    try:
        model = importlib.import_module('core.model')
        solver = importlib.import_module('core.solver')
    finally:
        sys.path.remove(path)
        for k in list(sys.modules):
            if k in ('core', 'metrics') or k.startswith(('core.', 'metrics.')) or k in stubs:
                del sys.modules[k]
        sys.modules.update(ours)
    return Munch(build_model=model.build_model, compute_d_loss=solver.compute_d_loss,
                 compute_g_loss=solver.compute_g_loss, moving_average=solver.moving_average)


def official_step(off, nets, nets_ema, optims, inputs, args):
    """One iteration in the order of the official Solver.train (losses read with .item())."""
    def reset():
        for o in optims.values():
            o.zero_grad()
    x_real, y_org = inputs.x_src, inputs.y_src
    x_ref, x_ref2, y_trg = inputs.x_ref, inputs.x_ref2, inputs.y_ref
    z_trg, z_trg2 = inputs.z_trg, inputs.z_trg2
    d_loss, _ = off.compute_d_loss(nets, args, x_real, y_org, y_trg, z_trg=z_trg, masks=None)
    reset()
    d_loss.backward()
    optims.discriminator.step()
    d_loss, _ = off.compute_d_loss(nets, args, x_real, y_org, y_trg, x_ref=x_ref, masks=None)
    reset()
    d_loss.backward()
    optims.discriminator.step()
    g_loss, _ = off.compute_g_loss(nets, args, x_real, y_org, y_trg, z_trgs=[z_trg, z_trg2], masks=None)
    reset()
    g_loss.backward()
    for name in ('generator', 'mapping_network', 'style_encoder'):
        optims[name].step()
    g_loss, _ = off.compute_g_loss(nets, args, x_real, y_org, y_trg, x_refs=[x_ref, x_ref2], masks=None)
    reset()
    g_loss.backward()
    optims.generator.step()
    for name in ('generator', 'mapping_network', 'style_encoder'):
        off.moving_average(nets[name], nets_ema[name], beta=0.999)


# ---------------------------------------------------------------- settings
def train_args(opt, img_size, batch_size, amp='none', channels_last=False, compile_=False, grad_checkpoint=False):
    argv = ['--mode', 'train', '--img_size', str(img_size), '--batch_size', str(batch_size),
            '--w_hpf', '0', '--device', opt.device, '--amp', amp, '--seed', str(opt.seed)]
    argv += ['--channels_last'] * channels_last + ['--compile'] * compile_ + ['--grad_checkpoint'] * grad_checkpoint
    if opt.config:
        argv += ['--config', opt.config]
    if opt.dim_in:
        argv += ['--dim_in', str(opt.dim_in)]
    if opt.max_conv_dim:
        argv += ['--max_conv_dim', str(opt.max_conv_dim)]
    return parse_args(argv)


def fixed_batch(args, device):
    g = torch.Generator().manual_seed(args.seed + 1)
    n, size = args.batch_size, args.img_size
    x = [torch.rand(n, 3, size, size, generator=g) * 2 - 1 for _ in range(3)]
    y = [torch.randint(0, args.num_domains, (n,), generator=g) for _ in range(2)]
    z = [torch.randn(n, args.latent_dim, generator=g) for _ in range(2)]
    batch = Munch(x_src=x[0], y_src=y[0], x_ref=x[1], x_ref2=x[2], y_ref=y[1], z_trg=z[0], z_trg2=z[1])
    return Munch({k: v.to(device) for k, v in batch.items()})


def initial_nets(args, device):
    torch.manual_seed(args.seed)
    nets, nets_ema = build_model(Munch(as_dict(args), wing_path=None))
    init_weights(nets)
    return Munch({k: place(v, device) for k, v in nets.items()}), Munch({k: place(v, device) for k, v in nets_ema.items()})


def place(module, device):
    """``module.to(device)``, skipped when it is there already (FakeTensor modules cannot be
    moved onto their own device)."""
    if all(t.device == device for t in itertools.chain(module.parameters(), module.buffers())):
        return module
    return module.to(device)


class Project:
    label = 'project'

    def __init__(self, args, device, compile_options=None):
        self.args, self.device = args, device
        self.hp = hp = TrainConfig.from_args(args)
        self.nets, self.nets_ema = initial_nets(args, device)
        self.optims = build_optimizers(self.nets, hp, fused=device.type == 'cuda')
        if args.compile:  # past torch.compile's recompile limit a graph silently runs eager: make that an error
            torch._dynamo.config.fail_on_recompile_limit_hit = True
        self.train_nets = speed_nets(self.nets, hp, compile_options=compile_options)
        self.scaler = make_scaler(hp, device)
        self.inputs = fixed_batch(args, device)
        self.i = 0
        switches = [args.amp] if args.amp != 'none' else ['fp32']
        switches += ['channels_last'] * args.channels_last + ['checkpoint'] * args.grad_checkpoint
        switches += ['compile'] * args.compile
        self.name = f'{self.label} {"+".join(switches)}'

    def step(self):
        inputs = prepare_inputs(Munch(self.inputs), self.hp)
        inputs.x_src = inputs.x_src.detach()  # a fresh leaf each iteration, as from the loader
        train_step(self.train_nets, self.nets_ema, self.optims, inputs, self.hp, self.i, scaler=self.scaler)
        self.i += 1


def unwrap(nets):
    """The networks inside the official nn.DataParallel wrappers (FAN's extra attribute kept)."""
    return Munch({k: v.module if isinstance(v, torch.nn.DataParallel) else v for k, v in nets.items()})


class Official:
    def __init__(self, off, args, device, init):
        self.off, self.args, self.name = off, Munch(as_dict(args)), 'official fp32'
        nets, nets_ema = off.build_model(Munch(img_size=args.img_size, style_dim=args.style_dim, w_hpf=0,
                                               latent_dim=args.latent_dim, num_domains=args.num_domains))
        # the official build_model wraps every network in nn.DataParallel, which would spread the
        # official loop over every visible GPU (and fail with --device cuda:1): time the modules alone
        nets, nets_ema = unwrap(nets), unwrap(nets_ema)
        for mine, theirs in ((init.nets, nets), (init.nets_ema, nets_ema)):
            for name in theirs:  # the same initial weights as the project's rows (names are equal)
                theirs[name].load_state_dict(mine[name].state_dict())
        self.nets = Munch({k: place(v, device) for k, v in nets.items()})
        self.nets_ema = Munch({k: place(v, device) for k, v in nets_ema.items()})
        self.optims = Munch({name: torch.optim.Adam(  # the official Adam settings
            self.nets[name].parameters(), lr=args.f_lr if name == 'mapping_network' else args.lr,
            betas=[args.beta1, args.beta2], weight_decay=args.weight_decay) for name in self.nets})
        self.inputs = fixed_batch(args, device)

    def step(self):
        inputs = Munch(self.inputs, x_src=self.inputs.x_src.detach())
        official_step(self.off, self.nets, self.nets_ema, self.optims, inputs, self.args)


# ---------------------------------------------------------------- measuring
def sync(device):
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def count_flops(args, device):
    """FLOPs of one eager fp32 iteration (forward, backward and the R1 double backward of
    all four optimiser steps), with torch.utils.flop_counter's per-operator formulas.
    (FlopCounterMode itself cannot be used: its module tracker fails inside the R1
    ``autograd.grad``; a dispatch mode applies the same registry.)"""
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils.flop_counter import flop_registry

    class Count(TorchDispatchMode):
        total = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            out = func(*args, **kwargs)
            formula = flop_registry.get(func._overloadpacket)
            if formula is not None:
                Count.total += formula(*args, **kwargs, out_val=out)
            return out

    plain = Munch(as_dict(args), amp='none', channels_last=False, compile=False)
    runner = Project(plain, device)
    with Count():
        runner.step()
    return Count.total


def cpu_peak(dtype, seconds=1.0):
    """Measured peak of this CPU: a 1024 x 1024 matmul in ``dtype``, repeated (FLOP/s)."""
    a = torch.randn(1024, 1024).to(dtype)
    b = torch.randn(1024, 1024).to(dtype)
    torch.mm(a, b)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        torch.mm(a, b)
        n += 1
    return 2 * 1024 ** 3 * n / (time.perf_counter() - t0)


def device_peak(device, amp, cache={}):
    """(peak FLOP/s, where it comes from) for this device and precision; (None, why) if unknown."""
    if device.type == 'cpu':
        dtype = {'none': torch.float32, 'bf16': torch.bfloat16, 'fp16': torch.float16}[amp]
        if amp not in cache:
            cache[amp] = cpu_peak(dtype)
        return cache[amp], f'measured {str(dtype)[6:]} 1024^2 matmul on this CPU'
    if device.type == 'cuda':
        name = torch.cuda.get_device_name(device)
        for key, peaks in GPU_PEAKS.items():
            if key in name and peaks.get(amp):
                return peaks[amp] * 1e12, f'{key} datasheet dense {"TF32" if amp == "none" else amp}'
        return None, f'no datasheet peak known for {name}'
    return None, 'n/a'


def memory_mark(device):
    if device.type != 'cuda':
        return None
    return torch.cuda.memory_allocated(device)


def timed(runner, iters, device):
    """(seconds per iteration, peak bytes of this runner or None) over ``iters`` iterations."""
    before = memory_mark(device)
    if before is not None:
        torch.cuda.reset_peak_memory_stats(device)
    sync(device)
    t0 = time.perf_counter()
    for _ in range(iters):
        runner.step()
    sync(device)
    seconds = (time.perf_counter() - t0) / iters
    peak = None
    if before is not None:  # this runner's own resident memory + what the iterations added on top
        peak = torch.cuda.max_memory_allocated(device) - before + runner.resident
    return seconds, peak


def count_step(runner):
    """One iteration of ``runner`` under bench/train_memory.py's MemoryCount; its report."""
    return count_iteration(runner.step, runner.nets, runner.optims, runner.inputs)


def counted(runner):
    """Whether the memory count applies: eager rows only (a compiled graph saves what its
    fused kernels need, and the saved-tensor hooks would make dynamo recompile)."""
    return not getattr(getattr(runner, 'args', None), 'compile', False)


def setup(runner_fn, device, warmup, count=True):
    """Build a runner, run its warm-up iterations (compilation happens here; the last one,
    of an eager row, under the memory count: ``runner.count``; with no warm-up, one counted
    iteration all the same) and note its resident memory (weights, optimiser states, batch)
    for the peak column."""
    before = memory_mark(device)
    runner = runner_fn()
    runner.count = None
    for i in range(max(warmup, 1 if count and counted(runner) else 0)):  # --warmup 0: one counted iteration
        if count and i == max(warmup, 1) - 1 and counted(runner):
            runner.count = count_step(runner)
        else:
            runner.step()
    sync(device)
    runner.resident = (memory_mark(device) - before) if before is not None else 0
    return runner


@contextlib.contextmanager
def fake_tensors():
    """Tensors without data, for the memory count alone: every tensor made inside is a CPU
    FakeTensor (shape, dtype, device; no data, no kernel runs), so one 512 px iteration is
    counted in seconds on any machine. (A fake CUDA device is not possible without a GPU:
    the autograd engine needs a real CUDA context for backward.) ``Tensor.item`` answers
    1.0 inside, because the official losses read their values."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    item = torch.Tensor.item
    torch.Tensor.item = lambda self: 1.0  # (Adam reads its step count too: 1, never 0)
    try:
        with FakeTensorMode(allow_non_fake_inputs=True), warnings.catch_warnings():
            warnings.filterwarnings('ignore', message='Accessing the data pointer of FakeTensor')  # deepcopy asks
            yield torch.device('cpu')
    finally:
        torch.Tensor.item = item


@contextlib.contextmanager
def loud_compile(name):
    """A compiled row that reaches torch.compile's recompile limit fails here, loudly (Project sets
    torch._dynamo.config.fail_on_recompile_limit_hit): past the limit dynamo would run the frame
    eager without a word, and the row would time something else than its name says."""
    try:
        yield
    except torch._dynamo.exc.FailOnRecompileLimitHit as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise SystemExit(f'{name}: torch.compile reached its recompile limit (torch._dynamo.config.recompile_limit '
                         f'= {torch._dynamo.config.recompile_limit}), so part of it would run eager; the row is not '
                         f'timed. Dynamo said: {first}') from None


def settings(opt):
    """(amp, channels_last, compile, grad_checkpoint) of every project row."""
    return list(itertools.product(opt.amp, opt.channels_last, opt.compile, opt.grad_checkpoint))


def measure(opt, device, img_size, batch_size, off=None, compile_options=None, log=print, combos=None,
            failures=None):
    """The rows of one image size and batch: every project setting (and the official loop
    with ``off``), built, warmed up (memory counted in the last warm-up iteration), then
    timed in alternation. ``combos``: (amp, channels_last, compile, grad_checkpoint) tuples
    instead of every combination of the options. ``failures``: a list that takes the rows
    stopped at the recompile limit (name, error) while the others go on; without it such a
    row stops the bench. Returns a list of row dicts."""

    @contextlib.contextmanager
    def guarded(name):
        try:
            with loud_compile(name):
                yield
        except SystemExit as e:
            if failures is None:
                raise
            log(f'# FAILED {e}')
            failures.append(dict(name=name, error=str(e)))

    base = train_args(opt, img_size, batch_size)
    t0 = time.perf_counter()
    flops = count_flops(base, device) if not opt.no_flops else None
    log(f'# {img_size} px, batch {batch_size}: FLOPs counted in {time.perf_counter() - t0:.0f} s')
    runners = []
    for amp, cl, comp, ckpt in combos or settings(opt):
        args = train_args(opt, img_size, batch_size, amp, bool(cl), bool(comp), bool(ckpt))
        t0 = time.perf_counter()
        before = len(runners)
        with guarded(f'{img_size} px, batch {batch_size}, {amp} channels_last={cl} compile={comp}'):
            runners.append(setup(lambda: Project(args, device, compile_options), device, opt.warmup))
        if len(runners) == before:
            continue
        runners[-1].setup_s = time.perf_counter() - t0
        log(f'# {runners[-1].name}: built and warmed up in {runners[-1].setup_s:.0f} s')
    official = None
    if off is not None:
        init = Munch(zip(('nets', 'nets_ema'), initial_nets(base, device)))
        t0 = time.perf_counter()
        official = setup(lambda: Official(off, base, device, init), device, opt.warmup)
        official.setup_s = time.perf_counter() - t0
    everyone = runners + ([official] if official else [])
    times = {id(r): [] for r in everyone}
    peaks = {id(r): 0 for r in everyone}
    for _ in range(opt.rounds):  # alternate: every runner once per round
        for r in list(everyone):
            done = False
            with guarded(r.name):
                seconds, peak = timed(r, opt.iters, device)
                done = True
            if not done:
                everyone.remove(r)
                continue
            times[id(r)].append(seconds)
            peaks[id(r)] = max(peaks[id(r)], peak or 0)
    rows = []
    for r in everyone:
        s = statistics.median(times[id(r)])
        ratio = None
        if official is not None:  # per round (adjacent in time), then the median
            ratio = statistics.median(o / p for o, p in zip(times[id(official)], times[id(r)]))
        amp = getattr(getattr(r, 'args', None), 'amp', 'none')
        peak, source = device_peak(device, amp)
        rows.append(dict(size=img_size, batch=batch_size, name=r.name, s=s, spread=(min(times[id(r)]),
                         max(times[id(r)])), ips=batch_size / s, mem=peaks[id(r)] if device.type == 'cuda' else None,
                         count=r.count, flops=flops, frac=(flops / s / peak) if (flops and peak) else None, peak=peak,
                         source=source, ratio=ratio, setup_s=r.setup_s, amp=amp))
    return rows


def run_training(opt):
    device = select_device(opt.device)
    if opt.threads:
        torch.set_num_threads(opt.threads)
    off = load_official(os.path.expanduser(opt.official)) if opt.official else None
    print(f'# {machine(device)}; torch {torch.__version__}; {torch.get_num_threads()} threads; '
          f'load average before: {os.getloadavg()[0]:.2f}')
    print(f'# command: python {" ".join(sys.argv)}')
    rows = []
    for img_size, batch_size in itertools.product(opt.img_size, opt.batch_size):
        rows += measure(opt, device, img_size, batch_size, off)
    print(f'# load average after: {os.getloadavg()[0]:.2f}; {opt.rounds} rounds x {opt.iters} iterations '
          f'after {opt.warmup} warm-up; median (min-max) s/iteration; memory counted in the last warm-up '
          f'iteration (bench/train_memory.py; eager rows)')
    print_table(rows)


def count_rows(opt, off=None, log=print):
    """Memory counts only (no timing) on data-less tensors (``fake_tensors``): one warm-up and
    one counted iteration per row, of every size, batch and setting, official loop included."""
    rows = []
    for img_size, batch_size in itertools.product(opt.img_size, opt.batch_size):
        for amp, cl, comp, ckpt in settings(opt) + ([(None,) * 4] if off is not None else []):
            t0 = time.perf_counter()
            with fake_tensors() as device:
                if amp is None:
                    base = train_args(opt, img_size, batch_size)
                    init = Munch(zip(('nets', 'nets_ema'), initial_nets(base, device)))
                    runner = Official(off, base, device, init)
                else:
                    runner = Project(train_args(opt, img_size, batch_size, amp, bool(cl), False, bool(ckpt)), device)
                runner.step()  # the optimiser states exist from the first step on
                report = count_step(runner)
            rows.append(dict(size=img_size, batch=batch_size, name=runner.name, count=report))
            log(f'# {img_size} px, batch {batch_size}, {runner.name}: counted in {time.perf_counter() - t0:.0f} s')
    return rows


def run_count(opt):
    off = load_official(os.path.expanduser(opt.official)) if opt.official else None
    if opt.compile != [0]:
        print('# --count_only: compile is not counted (eager rows only); the rows without it are')
        opt.compile = [0]
    print(f'# memory count on data-less CPU tensors (FakeTensorMode; CPU autocast rules), torch {torch.__version__}')
    print(f'# command: python {" ".join(sys.argv)}')
    rows = count_rows(opt, off)
    print_count_table(rows)


def print_count_table(rows):
    print('| img | batch | setting | counted peak | per phase: D latent / D ref / G latent / G ref (GiB) '
          '| of which at the peak: parameters + gradients + Adam states / saved activations |')
    print('|---|---|---|---|---|---|')
    for r in rows:
        c = r['count']
        top = max(c['phases'], key=lambda p: p['peak'])['parts']
        resident = top['params'] + top['grads'] + top['states'] + top['inputs']
        print(f'| {r["size"]} | {r["batch"]} | {r["name"]} | {gib(c["peak"]):.2f} GiB | {format_phases(c)} '
              f'| {gib(resident):.2f} / {gib(top["saved"]):.2f} GiB |')


def machine(device):
    if device.type == 'cuda':
        return f'device {torch.cuda.get_device_name(device)}'
    return f'device cpu ({os.cpu_count()} cores visible)'


def memory_cells(r):
    """(counted peak, CUDA max_memory_allocated) cells of a row."""
    counted_cell = f'{gib(r["count"]["peak"]):.2f} GiB' if r.get('count') else 'n/a (compiled)'
    cuda_cell = f'{gib(r["mem"]):.2f} GiB' if r.get('mem') else 'n/a (CPU)'
    return counted_cell, cuda_cell


def print_table(rows):
    print('| img | batch | setting | s/iteration (min-max) | images/s | peak memory counted | CUDA peak allocated '
          '| GFLOP/iteration | of peak (assumed peak) | official / this |')
    print('|---|---|---|---|---|---|---|---|---|---|')
    for r in rows:
        counted_cell, cuda_cell = memory_cells(r)
        fl = f'{r["flops"] / 1e9:.1f}' if r['flops'] else 'n/a'
        frac = (f'{100 * r["frac"]:.1f} % ({r["peak"] / 1e9:.0f} GFLOP/s, {r["source"]})'
                if r['frac'] is not None else f'n/a ({r["source"]})')
        ratio = f'{r["ratio"]:.2f}x' if r['ratio'] is not None else ''
        print(f'| {r["size"]} | {r["batch"]} | {r["name"]} | {r["s"]:.3f} ({r["spread"][0]:.3f}-{r["spread"][1]:.3f}) '
              f'| {r["ips"]:.2f} | {counted_cell} | {cuda_cell} | {fl} | {frac} | {ratio} |')


# ---------------------------------------------------------------- data loading alone
def write_photos(root, n_per_domain, size, seed=0):
    """JPEG images (smooth noise) in two domain folders, as large as the dataset's photos."""
    from PIL import Image
    g = torch.Generator().manual_seed(seed)
    for d in ('a', 'b'):
        os.makedirs(os.path.join(root, d), exist_ok=True)
        for i in range(n_per_domain):
            low = torch.rand(1, 3, 16, 16, generator=g)
            x = torch.nn.functional.interpolate(low, size=size, mode='bilinear', align_corners=False)[0]
            img = (x * 255).round().byte().permute(1, 2, 0).numpy()
            Image.fromarray(img).save(os.path.join(root, d, f'{i:04d}.jpg'), quality=95)


def loader_speed(folder, img_size, batch, workers, device, batches):
    """Iterations/s of the training inputs (source + reference loaders through the
    InputFetcher, as the training loop draws them) from the domain folders in ``folder``."""
    from core.datasets.pipeline import InputFetcher, get_train_loader
    from core.io.images import CheckedImages
    common = dict(img_size=img_size, batch_size=batch, num_workers=workers, seed=0, device=device, uint8=True,
                  checked=CheckedImages())  # both loaders: one check of the dataset
    fetcher = InputFetcher(get_train_loader(folder, 'source', **common),
                           get_train_loader(folder, 'reference', **common), 16, 'train', device, seed=0)
    next(fetcher)  # workers started, first batch
    sync(device)
    t0 = time.perf_counter()
    for _ in range(batches):
        next(fetcher)
    sync(device)
    return batches / (time.perf_counter() - t0)


def run_loader(opt):
    """Images/s of the training inputs alone (source + reference loaders through the
    InputFetcher, as the training loop draws them), per --num_workers value."""
    device = select_device(opt.device)
    work = tempfile.mkdtemp(prefix='loader_speed_')
    try:
        write_photos(work, opt.loader_images // 2, opt.photo_size)
        print(f'# {machine(device)}; {opt.loader_images} JPEGs of {opt.photo_size} px -> '
              f'{opt.img_size[0]} px crops; load average {os.getloadavg()[0]:.2f}')
        print('| num_workers | batch | iterations/s (src + 2 refs) | source images/s | all images/s |')
        print('|---|---|---|---|---|')
        for workers in opt.num_workers:
            for batch in opt.batch_size:
                its = loader_speed(work, opt.img_size[0], batch, workers, device, opt.loader_batches)
                print(f'| {workers} | {batch} | {its:.2f} | {its * batch:.1f} | {3 * its * batch:.1f} |')
    finally:
        shutil.rmtree(work, ignore_errors=True)


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('--img_size', type=int, nargs='+', default=[256])
    p.add_argument('--batch_size', type=int, nargs='+', default=[8])
    p.add_argument('--device', default='auto')
    p.add_argument('--amp', nargs='+', default=['none'], choices=['none', 'bf16', 'fp16'])
    p.add_argument('--channels_last', type=int, nargs='+', default=[0], choices=[0, 1])
    p.add_argument('--compile', type=int, nargs='+', default=[0], choices=[0, 1])
    p.add_argument('--grad_checkpoint', type=int, nargs='+', default=[0], choices=[0, 1],
                   help='activation checkpointing (recompute in backward) off/on')
    p.add_argument('--count_only', action='store_true', help='no timing: count the training memory of every row '
                   'on data-less tensors (no GPU needed; seconds per row at 512 px)')
    p.add_argument('--official', default=None, metavar='PATH', help='a clovaai/stargan-v2 checkout to time beside')
    p.add_argument('--warmup', type=int, default=2, help='untimed iterations per setting (compilation)')
    p.add_argument('--iters', type=int, default=3, help='timed iterations per setting and round')
    p.add_argument('--rounds', type=int, default=3, help='alternations of all settings')
    p.add_argument('--threads', type=int, default=0, help='torch threads (0: torch default; 1 on a loaded '
                   'machine, where idle-spinning threads make every row 10-100x slower)')
    p.add_argument('--seed', type=int, default=777)
    p.add_argument('--config', default=None, metavar='FILE', help='a training config for the other values '
                   '(e.g. configs/demo.yaml); the flags above override it; not with --official')
    p.add_argument('--dim_in', type=int, default=None, help='narrower networks (project rows only; '
                   'not with --official, whose width is fixed)')
    p.add_argument('--max_conv_dim', type=int, default=None)
    p.add_argument('--no_flops', action='store_true', help='skip the FLOP count (one more eager iteration)')
    p.add_argument('--loader_only', action='store_true', help='time the training data loading alone')
    p.add_argument('--num_workers', type=int, nargs='+', default=[0, 2, 4])
    p.add_argument('--loader_images', type=int, default=64)
    p.add_argument('--loader_batches', type=int, default=20)
    p.add_argument('--photo_size', type=int, default=512, help='side of the generated JPEGs (AFHQ: 512)')
    opt = p.parse_args(argv)
    if opt.official and (opt.dim_in or opt.max_conv_dim or opt.config):
        p.error('--dim_in/--max_conv_dim/--config change the networks: not with --official (its widths are fixed)')
    return opt


def main(argv=None):
    opt = parse(argv)
    if opt.loader_only:
        run_loader(opt)
    elif opt.count_only:
        run_count(opt)
    else:
        run_training(opt)


if __name__ == '__main__':
    main()
