"""The training loop: ``Trainer`` builds the networks once on one device and trains them
(resume, checkpoints, sample grids, evaluation, logging, stop signals, several processes);
``run(args)`` is ``--mode train``. One iteration is ``core.train.step.train_step``.

The official ``Solver`` (``core.solver``) is this class with the official sample/evaluate
methods on top.
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime
import functools
import json
import math
import os
import signal
import time
from argparse import Namespace
from types import FrameType
from typing import Any, Callable, Dict, Mapping, NamedTuple, Optional, Tuple

import torch
from munch import Munch
from tqdm import tqdm

import core.io.ckpt_files as ckpt
import core.train.distributed as distributed
from core.cli.arguments import LATEST, with_defaults
from core.cli.config_files import save_config
from core.cli.flags import StepOrLatest
from core.datasets.folders import list_domains
from core.datasets.pipeline import InputFetcher, get_test_loader, get_train_loader, without_workers
from core.device import configure_training, data_workers, fused_optimizers, select_device
from core.errors import UserError
from core.io.files import StrPath, append_line
from core.io.images import CheckedImages, ImageReadError
from core.io.run_folder import RunLock, check_free_space, check_writable
from core.nn.fan import load_fan
from core.nn.networks import TRAINED, ModelConfig, build_networks, ema_copies
from core.train.step import (
    TrainConfig,
    build_optimizers,
    init_weights,
    make_scaler,
    match_optimizer_layout,
    prepare_inputs,
    speed_nets,
    to_memory_format,
    train_step,
)
from core.use.sample_grids import GridConfig, training_grids

__all__ = ['Trainer', 'TrainingDiverged', 'resume_start', 'run']


class TrainingDiverged(UserError):
    pass


def resume_start(run_dir: StrPath, resume_iter: StepOrLatest) -> int:
    """The iteration training starts from: ``resume_iter``, or for 'latest' the newest
    complete checkpoint set in ``run_dir`` (0, a fresh start, when there is none)."""
    if resume_iter == LATEST:
        return ckpt.latest_step(run_dir) or 0
    return resume_iter


# Ctrl-C, and what schedulers send before they stop a job: SLURM's --signal (often USR1) and
# preemption (TERM), Kubernetes and `docker stop` (TERM), torchrun passing one on (its own).
STOP_SIGNALS = tuple(getattr(signal, name) for name in ('SIGINT', 'SIGTERM', 'SIGUSR1') if hasattr(signal, name))


class _StopFlag:
    """The first stop signal asks the loop to stop after the current iteration (and save).
    A second Ctrl-C interrupts at once, except under torchrun: there every worker gets one
    Ctrl-C twice (from the terminal and from torchrun), so repeats are ignored, as are
    repeated SIGTERM/SIGUSR1 (schedulers may resend them)."""

    def __init__(self, launched_by_torchrun: bool = False) -> None:
        self.torchrun = launched_by_torchrun
        self.signum: Optional[int] = None  # the first stop signal received

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def request(self, signum: int) -> None:
        if self.signum is None:
            self.signum = signum

    def __enter__(self) -> _StopFlag:
        self._previous = {sig: signal.signal(sig, self._handle) for sig in STOP_SIGNALS}
        return self

    def _handle(self, signum: int, frame: Optional[FrameType]) -> None:
        if self.requested and signum == signal.SIGINT and not self.torchrun:
            raise KeyboardInterrupt
        self.request(signum)

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class Trainer:
    """Trains the networks of ``args`` (parsed flags; ``TrainConfig`` holds what a step reads).

    Everything a run holds is made once: here what depends on the arguments alone (the
    configuration, device, process group, networks, EMA copies, optimisers, fp16 loss
    scaler); in ``_prepare`` what depends on the loaders and the run folder (``_Run``)."""

    # save_hook(step, point): called inside each checkpoint save (see core.io.ckpt_files.save_checkpoint)
    save_hook: Optional[Callable[[int, str], None]] = None

    def __init__(self, args: Namespace | Munch) -> None:
        self.args = args = with_defaults(args)  # scripts written for the official main.py lack our extra flags
        self.hp = hp = TrainConfig.from_args(args)
        device = select_device(args.device)  # the one device decision
        # several processes only when torchrun launched this one
        self.dist = distributed.from_env(args.batch_size, device)
        self.device = self.dist.device(device)
        configure_training(self.device)
        torch.manual_seed(args.seed)
        nets = build_networks(hp.model, training=True)  # FAN weights: see _load_fan
        nets_ema = ema_copies(nets)  # sharing the FAN of nets
        init_weights(nets)  # He init after the EMA copies were taken (official)
        self.nets = Munch({k: v.to(self.device) for k, v in nets.items()})
        self.nets_ema = Munch({k: v.to(self.device) for k, v in nets_ema.items()})
        # fused Adam on CUDA (a resume loads its moments into these: the setting is kept)
        self.optims = build_optimizers(self.nets, hp, fused=fused_optimizers(self.device))
        self.scaler = make_scaler(hp, self.device)  # --amp fp16, else None

    # ------------------------------------------------------------------ state
    def _load_fan(self, saved: Mapping[str, Any]) -> None:
        """FAN weights come from the checkpoint when it has them (``saved``), else from --wing_path."""
        if self.args.w_hpf > 0 and 'fan' not in saved:
            load_fan(self.nets.fan, self.args.wing_path)

    def _train_state(self, step: int, fetcher: InputFetcher, position: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        """What exact resume needs beyond the networks: data position (``position``: one
        taken earlier), RNG states, the fp16 loss scale."""
        position = fetcher.state_dict() if position is None else position
        state = {'step': step, 'fetcher': position, 'torch_rng': torch.get_rng_state()}
        if self.device.type == 'cuda':
            state['cuda_rng'] = torch.cuda.get_rng_state(self.device)
        if self.scaler is not None:  # --amp fp16: the loss scale resumes too
            state['grad_scaler'] = self.scaler.state_dict()
        return state

    def _resume(self, step: int, fetcher: InputFetcher) -> None:
        args = self.args
        ckpt.check_complete(args.checkpoint_dir, step)  # a save cut short is never resumed from
        saved = ckpt.load_modules(ckpt.ckpt_path(args.checkpoint_dir, step, ckpt.NETS), self.nets)
        self._load_fan(saved)
        state = ckpt.load_checkpoint(args.checkpoint_dir, step, nets_ema=self.nets_ema, optims=self.optims)
        if state is None:
            tqdm.write(f'note: {ckpt.ckpt_path(args.checkpoint_dir, step, ckpt.STATE)} not found (official '
                       f'checkpoint): networks and optimisers restored, the data order restarts')
            return
        fetcher.load_state_dict(state['fetcher'])
        if self.scaler is not None and 'grad_scaler' in state:
            self.scaler.load_state_dict(state['grad_scaler'])
        torch.set_rng_state(state['torch_rng'])
        if 'cuda_rng' in state and self.device.type == 'cuda':
            torch.cuda.set_rng_state(state['cuda_rng'], self.device)

    # ------------------------------------------------------------------ checkpoints
    def _checked_save(self, run: _Run, step: int, position: Optional[Dict[str, Any]] = None) -> None:
        """The one save path of the loop: the non-finite check (every rank: never a checkpoint
        holding NaN), then the complete set of ``step`` (rank 0) with the data position
        ``position`` (None: the fetcher's now), then --keep_last's pruning of older sets."""
        run.finite.check(run.last_saved, self.args.checkpoint_dir)
        if self.dist.is_main:
            hook = None if self.save_hook is None else functools.partial(self.save_hook, step)
            ckpt.save_checkpoint(self.args.checkpoint_dir, step, self.nets, self.nets_ema, self.optims,
                                 state=self._train_state(step, run.fetcher, position), hook=hook)
            ckpt.prune(self.args.checkpoint_dir, self.args.keep_last, keep=(run.start, step))
        run.last_saved = step

    def _save_before_stopping(self, run: _Run, done: int, position: Dict[str, Any]) -> str:
        """Saves the ``done`` iterations (with the data position ``position``, before the batch
        that is not trained on) unless they are saved already; says what is kept."""
        if done > run.last_saved:
            self._checked_save(run, done, position)
            return f'saved iteration {done}'
        return f'iteration {run.last_saved} is the last saved' if run.last_saved else 'nothing was saved'

    # ------------------------------------------------------------------ train
    def train(self, loaders: Munch) -> Tuple[int, Optional[int]]:
        """Trains from ``--resume_iter`` (a step, 0, or 'latest') to ``--total_iters``; returns
        the iterations done and the stop signal that ended training early (None: none). One run
        writes into a run folder at a time (``RunLock``); nothing in it changes until every
        check has passed (``_preflight``, the resume's own checks)."""
        run_dir = self.args.checkpoint_dir
        lock = RunLock(run_dir) if self.dist.is_main else contextlib.nullcontext()
        with lock:
            start = resume_start(run_dir, self.args.resume_iter)
            run = self._prepare(loaders, start)
            try:
                done, stopped = self._loop(run, start)
            finally:
                run.logger.close()
                self.dist.close()
        if stopped and self.dist.is_main:
            name = signal.Signals(stopped).name
            if done:
                print(f'interrupted by {name}: saved iteration {done} in {run_dir}; '
                      f'resume with --resume_iter {done} (or latest)', flush=True)
            else:  # stopped before the first iteration of a fresh run
                print(f'interrupted by {name} before the first iteration: nothing was saved; '
                      f'run the same command again', flush=True)
        return done, stopped

    def _prepare(self, loaders: Munch, start: int) -> _Run:
        """What a run from ``start`` holds beside the Trainer, made once before its first
        iteration: the data fetcher, the fixed batch of the sample grids, the state loaded
        (the checkpoint set of ``start``, or the FAN weights of a fresh run), the run folder's
        configuration, the networks the step calls and the logger."""
        args = self.args
        run_dir = args.checkpoint_dir
        # each rank reads only its rows of every global batch (the data position stays global)
        fetcher = InputFetcher(loaders.src, loaders.ref, args.latent_dim, 'train', self.device, seed=args.seed,
                               rank=self.dist.rank, world_size=self.dist.world_size)
        if self.dist.is_main:
            self._preflight(start)
        # the fixed batch of the sample grids (rank 0 draws them), read here, leaving no workers behind
        inputs_val = (next(InputFetcher(without_workers(loaders.val), None, args.latent_dim, 'val', self.device,
                                        seed=args.seed)) if self.dist.is_main else Munch())
        if start > 0:
            self._resume(start, fetcher)
        else:
            self._load_fan({})
        if self.dist.is_main:  # later sets of another branch move aside; the run remembers its architecture
            note = ckpt.set_aside_later(run_dir, start)
            if note:
                print(note, flush=True)
            model = ModelConfig.from_args(args, domain_names=args.domain_names or list_domains(args.train_img_dir))
            save_config(args, run_dir, domain_names=','.join(model.names()))

        # parallel wrappers go outside the networks, after loading (checkpoints stay unwrapped)
        # --channels_last / --compile apply to the training networks (EMA copies stay as they are)
        train_nets = speed_nets(self.nets, self.hp, wrap=lambda nets: self.dist.wrap(nets, self.device))
        to_memory_format(self.nets_ema, self.hp)  # the EMA update then runs as multi-tensor kernels
        match_optimizer_layout(self.optims)  # moments loaded in another layout than the parameters now have
        logger = _Logger(run_dir, start, args.total_iters, enabled=self.dist.is_main)
        return _Run(start, fetcher, inputs_val, train_nets, logger, _FiniteWatch(self.dist), last_saved=start)

    def _preflight(self, start: int) -> None:
        """What the run will need later, checked before its first iteration: writable output
        folders, room for a checkpoint set, the evaluation weights when an evaluation will
        run (the FAN weights are checked as they load, also before)."""
        args = self.args
        happens = lambda every: every > 0 and args.total_iters // every > start // every
        check_writable(args.checkpoint_dir, '--checkpoint_dir')
        if happens(args.sample_every):
            check_writable(args.sample_dir, '--sample_dir')
        if happens(args.eval_every):
            check_writable(args.eval_dir, '--eval_dir')
            from metrics.eval import check_weights  # the metrics stack is loaded only when used
            check_weights(args)
        if args.total_iters > start:  # at least the final set is saved
            check_free_space(args.checkpoint_dir, ckpt.set_bytes(self.nets, self.nets_ema, TRAINED), 'a checkpoint set')

    def _next_batch(self, fetcher: InputFetcher, stop: _StopFlag) -> Tuple[Optional[Munch], Optional[_FetchFailure], int]:
        """This rank's next training batch, and what every rank agreed on before training on
        it: the first failure to read a batch on any rank (None: none failed; an image that does
        not decode, or anything else, such as a loader worker killed) and the stop signal any
        rank received (0: none). One host-side agreement per iteration, so a fault or a signal
        on one rank stops every rank in the same iteration."""
        batch: Optional[Munch] = None
        error: Optional[Exception] = None
        try:
            batch = next(fetcher)
        except Exception as e:
            error = e
        failed, signum = self.dist.agree(error is not None, stop.signum or 0)
        if not failed:
            return batch, None, signum
        mine = None if error is None else str(error) if isinstance(error, UserError) else \
            f'reading a training batch failed: {type(error).__name__}: {(str(error).strip().splitlines() or [""])[0]}'
        return batch, _FetchFailure(error, self.dist.first_message(mine)), signum

    def _loop(self, run: _Run, start: int) -> Tuple[int, Optional[int]]:
        """Iterations ``start`` to --total_iters; returns the iterations done and the stop
        signal that ended them early (None: none)."""
        args = self.args
        step = start
        with _StopFlag(launched_by_torchrun=distributed.launched_by_torchrun()) as stop:
            for step in range(start, args.total_iters):
                position = run.fetcher.state_dict()  # the data position before this iteration's batch
                batch, failure, signum = self._next_batch(run.fetcher, stop)
                if failure is not None:  # saved first, so that a resume once the file is replaced continues exactly
                    raise failure.exception(self._save_before_stopping(run, step, position), args.checkpoint_dir)
                if signum:  # every rank stops before the same iteration, the batch read is not used
                    stop.request(signum)
                    self._save_before_stopping(run, step, position)
                    break
                assert batch is not None
                logs = train_step(run.train_nets, self.nets_ema, self.optims, prepare_inputs(batch, self.hp), self.hp,
                                  step, scaler=self.scaler, no_sync=self.dist.no_sync)
                self._after_step(run, step + 1, logs)
            else:
                step = args.total_iters
        if step > run.last_saved and step == args.total_iters:
            self._checked_save(run, step)
        return step, stop.signum

    def _after_step(self, run: _Run, i: int, logs: Munch) -> None:
        """What follows iteration ``i`` (1-based): the non-finite watch, then on their
        iterations the log line, the sample grid, the checkpoint set and the evaluation."""
        args = self.args
        run.finite.update(logs, i)
        if args.print_every and i % args.print_every == 0:
            run.finite.check(run.last_saved, args.checkpoint_dir)
            run.logger.log(i, self.dist.mean(logs))
        if args.sample_every and i % args.sample_every == 0 and self.dist.is_main:
            sample_nets = self.nets if args.sample_from == 'online' else self.nets_ema
            training_grids(sample_nets, run.inputs_val, i, args.sample_dir, GridConfig.from_args(args))
        if args.save_every and i % args.save_every == 0:
            self._checked_save(run, i)
        if args.eval_every and i % args.eval_every == 0:
            run.finite.check(run.last_saved, args.checkpoint_dir)  # collective: on every rank
            if self.dist.is_main:
                self.evaluate_ema(i)
        run.logger.tick()

    def evaluate_ema(self, step: int) -> None:
        """FID and LPIPS of the EMA networks being trained, as iteration ``step``."""
        from metrics.eval import evaluate_networks  # the metrics stack is loaded only when used
        evaluate_networks(self.nets_ema, self.args, step)


@dataclasses.dataclass
class _Run:
    """What one ``Trainer.train`` holds beside the Trainer (made by ``Trainer._prepare``): the
    iteration it started from (--keep_last never removes its set), the data fetcher, the fixed
    batch of the sample grids, the networks the step calls (speed switches and parallel wrappers
    around ``Trainer.nets``), the logger, the non-finite watch, and the last iteration saved (or
    resumed from)."""
    start: int
    fetcher: InputFetcher
    inputs_val: Munch
    train_nets: Munch
    logger: _Logger
    finite: _FiniteWatch
    last_saved: int


class _FetchFailure(NamedTuple):
    """A batch that some rank could not read: this rank's own exception (None when another rank
    failed) and the message of the first rank that failed."""
    error: Optional[Exception]
    message: str

    def exception(self, kept: str, run_dir: StrPath) -> Exception:
        """The exception that stops training: one line naming the batch and what is ``kept``
        in ``run_dir``; an unexpected failure of this rank's own loader keeps its traceback."""
        if self.error is not None and not isinstance(self.error, UserError):
            return self.error
        kind = ImageReadError if isinstance(self.error, ImageReadError) else UserError
        return kind(f'{self.message} ({kept} in {run_dir}; then resume with --resume_iter latest)')


class _FiniteWatch:
    """The non-finite check without a host sync per iteration: ``update`` records, on the
    losses' device, the first iteration whose losses were not all finite and their values
    then; ``check`` (logging steps, before every save) reads that back once (and across
    ranks under torchrun) and raises TrainingDiverged naming that iteration."""

    def __init__(self, dist):
        self.dist = dist
        self.keys = self.first_bad = self.bad_values = None

    def update(self, logs, i):
        keys = [k for k, v in logs.items() if torch.is_tensor(v)]  # python floats (lambda_ds) are finite
        device = logs[keys[0]].device
        values = torch.stack([logs[k].detach().to(device, torch.float32).reshape(()) for k in keys])
        if self.first_bad is None:
            self.keys = keys
            self.first_bad = torch.zeros((), dtype=torch.long, device=device)  # 0: all finite so far
            self.bad_values = torch.zeros_like(values)
        new = torch.logical_and(self.first_bad == 0, ~torch.isfinite(values).all())
        self.first_bad = torch.where(new, i, self.first_bad)
        self.bad_values = torch.where(new, values, self.bad_values)

    def check(self, last_saved, run_dir):
        if self.first_bad is None:
            return
        step = self.dist.first_nonzero(self.first_bad)
        if not step:
            return
        bad = ', '.join(f'{k}={v}' for k, v in zip(self.keys, self.bad_values.tolist()) if not math.isfinite(v))
        bad = bad or 'on another process'
        kept = f'the last good checkpoint is iteration {last_saved} in {run_dir}' if last_saved else 'no checkpoint was written'
        raise TrainingDiverged(f'non-finite loss at iteration {step} ({bad}); stopped, {kept}; '
                               f'lower --lr or raise --lambda_reg and resume')


class _Logger:
    """Progress bar, log lines, log.jsonl and (when installed) TensorBoard scalars."""

    def __init__(self, run_dir, start, total, enabled=True):
        self.start_time = time.time()
        self.total = total
        self.enabled = enabled
        self.bar = tqdm(total=total, initial=start, dynamic_ncols=True, desc='train', unit='it', disable=not enabled)
        self.jsonl = os.path.join(run_dir, 'log.jsonl')  # a line at a time, whole or not at all
        if enabled:
            open(self.jsonl, 'a').close()
        self.tb = None
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter
                self.tb = SummaryWriter(os.path.join(run_dir, 'tensorboard'))
            except ImportError:  # tensorboard is optional
                pass

    def log(self, i, logs):
        if not self.enabled:
            return
        values = {k: float(v) for k, v in logs.items()}
        elapsed = str(datetime.timedelta(seconds=int(time.time() - self.start_time)))
        line = f'Elapsed time [{elapsed}], Iteration [{i}/{self.total}], ' + \
            ' '.join(f'{k}: [{v:.4f}]' for k, v in values.items())
        tqdm.write(line)
        append_line(self.jsonl, json.dumps({'step': i, 'time': round(time.time() - self.start_time, 3), **values}))
        if self.tb is not None:
            for k, v in values.items():
                self.tb.add_scalar(k, v, i)

    def tick(self):
        self.bar.update(1)

    def close(self):
        self.bar.close()
        if self.tb is not None:
            self.tb.close()


def run(args: Namespace | Munch) -> int:
    """``--mode train``: the loaders of ``--train_img_dir`` / ``--val_img_dir`` (the demo first
    makes its dataset), then ``Trainer.train``. Returns the exit status: 0, or 128 + the signal
    that stopped training after saving, as a shell reports it (a requeue script reads it)."""
    if args.demo_data:  # the demo makes its own dataset (configs/demo.yaml)
        from core.datasets.demo_shapes import make_shapes_dataset
        make_shapes_dataset(args.demo_data, img_size=args.img_size)
    # pinned memory follows --device; uint8 pixels from the workers, [-1, 1] on the device (same values)
    # one up-front check of the training images for both loaders (checked)
    common = dict(img_size=args.img_size, batch_size=args.batch_size, prob=args.randcrop_prob, seed=args.seed,
                  num_domains=args.num_domains, device=args.device, uint8=True, checked=CheckedImages())
    # a reference decodes two images per row, a source one: --num_workers auto splits the cores so
    loaders = Munch(src=get_train_loader(args.train_img_dir, 'source', num_workers=data_workers(args.num_workers, 1 / 3),
                                         **common),
                    ref=get_train_loader(args.train_img_dir, 'reference', num_workers=data_workers(args.num_workers, 2 / 3),
                                         **common),
                    val=get_test_loader(args.val_img_dir, img_size=args.img_size, batch_size=args.val_batch_size,
                                        shuffle=True, num_workers=0, seed=args.seed,  # read once, in this process
                                        num_domains=args.num_domains, device=args.device))
    _, stopped = Trainer(args).train(loaders)
    return 128 + stopped if stopped else 0
