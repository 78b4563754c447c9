"""Solver: builds the networks once on one device and runs train / sample / eval.

Official names are kept importable from here (``Solver``, ``compute_d_loss``,
``compute_g_loss``, ``moving_average``, ``adv_loss``, ``r1_reg``), so scripts written
against the official repository keep working.
"""
import datetime
import json
import math
import os
import signal
import time

import torch
from munch import Munch
from tqdm import tqdm

from core import checkpoint as ckpt
from core import distributed
from core.config import as_dict, save_config
from core.device import select_device
from core.data_loader import InputFetcher, list_domains
from core.errors import UserError
from core.losses import adv_loss, compute_d_loss, compute_g_loss, r1_reg  # noqa: F401 (official names)
from core.model import build_model
from core.sampling import (debug_image, mean_style, shared_latents, translate_using_latent,
                           translate_using_reference)
from core.trainer import (build_optimizers, init_weights, make_scaler, moving_average,  # noqa: F401
                          prepare_inputs, speed_nets, train_step)
from core.wing import load_fan

__all__ = ['Solver', 'compute_d_loss', 'compute_g_loss', 'moving_average', 'adv_loss', 'r1_reg']


_STOP_POLL = 10  # iterations between Ctrl-C agreements across torchrun processes


class TrainingDiverged(UserError):
    pass


class _StopFlag:
    """First Ctrl-C asks the loop to stop after the current iteration (and save);
    a second one interrupts at once."""

    def __init__(self):
        self.requested = False

    def __enter__(self):
        self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc):
        signal.signal(signal.SIGINT, self._previous)


class Solver:
    def __init__(self, args):
        self.args = args
        # several processes only when torchrun launched a training run
        device = select_device(args.device)  # the one device decision
        self.dist = distributed.from_env(args.batch_size, device) if args.mode == 'train' else distributed.Single()
        self.device = self.dist.device(device)
        torch.manual_seed(args.seed)
        nets, nets_ema = build_model(Munch(as_dict(args), wing_path=None))  # FAN weights: see _ensure_fan
        if args.mode == 'train':
            init_weights(nets)  # He init after the EMA copies were taken (official)
            self.optims = build_optimizers(nets, args)
        self.nets = Munch({k: v.to(self.device) for k, v in nets.items()})
        self.nets_ema = Munch({k: v.to(self.device) for k, v in nets_ema.items()})
        if 'fan' in nets:
            self.nets_ema.fan = self.nets.fan

    # ------------------------------------------------------------------ checkpoints
    def _ensure_fan(self, saved):
        """FAN weights come from the checkpoint when it has them, else from --wing_path."""
        if self.args.w_hpf > 0 and 'fan' not in saved:
            load_fan(self.nets.fan, self.args.wing_path)

    def load_ema(self, step):
        """Networks for sample / eval / translate into ``nets_ema``: the EMA copies, or the
        online G, F, E of ``{step}_nets.ckpt`` with ``--sample_from online``."""
        kind = ckpt.NETS if getattr(self.args, 'sample_from', 'ema') == 'online' else ckpt.NETS_EMA
        saved = ckpt.load_modules(ckpt.ckpt_path(self.args.checkpoint_dir, step, kind), self.nets_ema)
        self._ensure_fan(saved)

    def _train_state(self, step, fetcher):
        state = {'step': step, 'fetcher': fetcher.state_dict(), 'torch_rng': torch.get_rng_state()}
        if self.device.type == 'cuda':
            state['cuda_rng'] = torch.cuda.get_rng_state(self.device)
        if getattr(self, 'scaler', None) is not None:  # --amp fp16: the loss scale resumes too
            state['grad_scaler'] = self.scaler.state_dict()
        return state

    def save(self, step, fetcher):
        if not self.dist.is_main:
            return
        ckpt.save_checkpoint(self.args.checkpoint_dir, step, self.nets, self.nets_ema, self.optims,
                             state=self._train_state(step, fetcher))

    def _resume(self, step, fetcher):
        args = self.args
        saved = ckpt.load_modules(ckpt.ckpt_path(args.checkpoint_dir, step, ckpt.NETS), self.nets)
        self._ensure_fan(saved)
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

    # ------------------------------------------------------------------ train
    def train(self, loaders):
        args = self.args
        run_dir = args.checkpoint_dir
        if not getattr(args, 'domain_names', None):
            args.domain_names = ','.join(list_domains(args.train_img_dir))
        if self.dist.is_main:
            save_config(args, run_dir)
        fetcher = InputFetcher(loaders.src, loaders.ref, args.latent_dim, 'train', self.device, seed=args.seed)
        inputs_val = next(InputFetcher(loaders.val, None, args.latent_dim, 'val', self.device, seed=args.seed))
        if self.device.type == 'cuda':  # fused Adam on CUDA only (equal up to rounding); fresh, so no state is lost
            self.optims = build_optimizers(self.nets, args, fused=True)
        self.scaler = make_scaler(args, self.device)

        start = args.resume_iter
        if start > 0:
            self._resume(start, fetcher)
        elif args.w_hpf > 0:
            load_fan(self.nets.fan, args.wing_path)

        # parallel wrappers go outside the networks, after loading (checkpoints stay unwrapped)
        # --channels_last / --compile apply to the training networks (EMA copies stay as they are)
        self.train_nets = speed_nets(self.nets, args, wrap=lambda nets: self.dist.wrap(nets, self.device))
        logger = _Logger(run_dir, start, args.total_iters, enabled=self.dist.is_main)
        try:
            done, stopped = self._loop(fetcher, inputs_val, logger)
        finally:
            logger.close()
            self.dist.close()
        if stopped and self.dist.is_main:
            print(f'interrupted: saved iteration {done} in {run_dir}; resume with --resume_iter {done}')
        return done

    def _loop(self, fetcher, inputs_val, logger):
        args = self.args
        start = last_saved = step = args.resume_iter
        extra = {'scaler': self.scaler} if self.scaler is not None else {}
        finite = _FiniteWatch(self.dist)  # on the device: read on logging steps and before saving
        with _StopFlag() as stop:
            for step in range(start, args.total_iters):
                inputs = prepare_inputs(self.dist.shard(next(fetcher)), args)
                logs = train_step(self.train_nets, self.nets_ema, self.optims, inputs, args, step, **extra)
                i = step + 1
                finite.update(logs, i)
                if args.print_every and i % args.print_every == 0:
                    finite.check(last_saved, args.checkpoint_dir)
                    logger.log(i, self.dist.mean(logs))
                if args.sample_every and i % args.sample_every == 0 and self.dist.is_main:
                    sample_nets = self.nets if getattr(args, 'sample_from', 'ema') == 'online' else self.nets_ema
                    debug_image(sample_nets, args, inputs_val, i)
                if args.save_every and i % args.save_every == 0:
                    finite.check(last_saved, args.checkpoint_dir)  # never a checkpoint holding NaN
                    self.save(i, fetcher)
                    last_saved = i
                if args.eval_every and i % args.eval_every == 0:
                    finite.check(last_saved, args.checkpoint_dir)  # collective: on every rank
                    if self.dist.is_main:
                        self.evaluate(step=i)
                logger.tick()
                # every rank stops at the same iteration; several ranks agree every _STOP_POLL
                # iterations only (the collective would sync the device each iteration)
                poll = self.dist.world_size == 1 or i % _STOP_POLL == 0
                if poll and self.dist.any(stop.requested):
                    stop.requested = True
                    break
            else:
                step = args.total_iters - 1
        done = step + 1
        if done > last_saved and (stop.requested or done == args.total_iters):
            finite.check(last_saved, args.checkpoint_dir)
            self.save(done, fetcher)
        return done, stop.requested

    # ------------------------------------------------------------------ sample / eval
    @torch.no_grad()
    def sample(self, loaders):
        args = self.args
        self.load_ema(args.resume_iter)
        os.makedirs(args.result_dir, exist_ok=True)
        src = next(InputFetcher(loaders.src, None, args.latent_dim, 'test', self.device))
        ref = next(InputFetcher(loaders.ref, None, args.latent_dim, 'test', self.device))
        nets = self.nets_ema
        translate_using_reference(nets, args, src.x, ref.x, ref.y, os.path.join(args.result_dir, 'reference.jpg'))
        generator = torch.Generator().manual_seed(args.seed)
        n = src.x.size(0)
        z_trg_list = shared_latents(args, n, generator, self.device)
        for y in range(args.num_domains):
            y_trg = torch.full((n,), y, dtype=torch.long, device=self.device)
            s_avg = mean_style(nets, args, y, generator=generator)
            for psi in (0.5, 0.7, 1.0):
                translate_using_latent(nets, args, src.x, [y_trg], z_trg_list, psi,
                                       os.path.join(args.result_dir, f'latent_{y}_psi_{psi:.1f}.jpg'),
                                       mean_styles=[s_avg])
        try:
            from core.video import video_latent, video_ref
        except ImportError:  # streamed videos need imageio-ffmpeg (requirements.txt)
            raise UserError('videos need imageio-ffmpeg: pip install imageio-ffmpeg') from None
        video_ref(nets, args, src.x, ref.x, ref.y, os.path.join(args.result_dir, 'video_ref.mp4'))
        y_trg_list = [torch.full((n,), y, dtype=torch.long, device=self.device) for y in range(args.num_domains)]
        video_latent(nets, args, src.x, y_trg_list, z_trg_list, 1.0, os.path.join(args.result_dir, 'video_latent.mp4'),
                     generator=generator)

    @torch.no_grad()
    def evaluate(self, step=None):
        from metrics.eval import calculate_metrics  # the metrics stack is loaded only when used
        args = self.args
        if step is None:
            step = args.resume_iter
            self.load_ema(step)
        for mode in ('latent', 'reference'):
            calculate_metrics(self.nets_ema, args, step, mode)


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
        self.jsonl = open(os.path.join(run_dir, 'log.jsonl'), 'a') if enabled else None
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
        self.jsonl.write(json.dumps({'step': i, 'time': round(time.time() - self.start_time, 3), **values}) + '\n')
        self.jsonl.flush()
        if self.tb is not None:
            for k, v in values.items():
                self.tb.add_scalar(k, v, i)

    def tick(self):
        self.bar.update(1)

    def close(self):
        self.bar.close()
        if self.jsonl is not None:
            self.jsonl.close()
        if self.tb is not None:
            self.tb.close()
