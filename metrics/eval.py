"""The paper's evaluation protocol: FID and LPIPS for every task (source -> target domain).

For each target domain and each other source domain, every validation image of the
source is translated ``num_outs_per_domain`` times, with styles from random latent
codes (``mode='latent'``) or from target validation images (``mode='reference'``).
LPIPS: mean over the pairs of outputs of a source batch, averaged over batches.
FID: target's training images vs the task's outputs, quantised as a saved PNG.
Results go to ``eval_dir``: ``FID_{step:05d}_{mode}.json``,
``LPIPS_{step:05d}_{mode}.json`` and one line per call in ``metrics.jsonl``.

Inception and LPIPS are built once per process; the statistics of the training
images are cached on disk; the outputs never need to be written (``save_eval_images``).
"""
from __future__ import annotations

import json
import os
import shutil
from argparse import Namespace
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from munch import Munch
from PIL import Image

from core.cli.arguments import with_defaults
from core.datasets.folders import list_domains
from core.datasets.order import derive_seed
from core.datasets.pipeline import get_eval_loader
from core.device import DeviceLike, data_workers
from core.io.files import write_json
from core.io.images import to_uint8
from core.nn.fan import fan_masks
from metrics import MetricsError, resolve_weights
from metrics.fid import (
    Features,
    InceptionPool3,
    activations_from_uint8,
    build_inception,
    frechet_distance,
    statistics,
    stats_from_folder,
)
from metrics.lpips import LPIPS, build_lpips, calculate_lpips_given_images

MODES = ('latent', 'reference')


def _cycle(loader: Any) -> Iterator[torch.Tensor]:
    """Batches of ``loader`` (a DataLoader of ``core.datasets.pipeline.get_eval_loader``) forever, a new shuffle each pass."""
    if len(loader) == 0:
        raise MetricsError(f"reference folder '{loader.dataset.root}' holds {len(loader.dataset)} "
                           f"images, fewer than val_batch_size {loader.batch_size}; "
                           f"add images or lower --val_batch_size")

    def batches() -> Iterator[torch.Tensor]:
        epoch = 0
        while True:
            loader.sampler.set_epoch(epoch)
            yield from loader
            epoch += 1
    return batches()


class Task:
    """One translation task ``{src}2{trg}``: its loaders and random codes, seeded by the task alone."""

    def __init__(self, args: Namespace | Munch, mode: str, src: str, trg: str, trg_idx: int,
                 device: DeviceLike = None) -> None:
        self.name = f'{src}2{trg}'
        self.trg_idx = trg_idx
        seed = derive_seed(args.seed, 'eval', mode, self.name)
        workers = data_workers(args.num_workers or 0, 1 / 2)  # two loaders
        self.sources = get_eval_loader(os.path.join(args.val_img_dir, src), args.img_size,
                                       args.val_batch_size, imagenet_normalize=False, shuffle=True,
                                       num_workers=workers, seed=derive_seed(seed, 'source'), device=device)
        self.refs: Iterator[torch.Tensor] | None = None
        if mode == 'reference':
            self.refs = _cycle(get_eval_loader(
                os.path.join(args.val_img_dir, trg), args.img_size, args.val_batch_size,
                imagenet_normalize=False, shuffle=True, num_workers=workers, drop_last=True,
                seed=derive_seed(seed, 'reference'), device=device))
        self.z = torch.Generator().manual_seed(derive_seed(seed, 'z'))


@torch.no_grad()
def translate_batch(nets: Munch, args: Namespace | Munch, task: Task, x_src: torch.Tensor) -> list[torch.Tensor]:
    """``num_outs_per_domain`` translations (each (N, 3, H, W)) of one source batch."""
    n = x_src.size(0)
    y_trg = torch.full((n,), task.trg_idx, dtype=torch.long, device=x_src.device)
    masks = fan_masks(nets, args.w_hpf, x_src)
    outs = []
    for _ in range(args.num_outs_per_domain):
        if task.refs is None:
            z = torch.randn(n, args.latent_dim, generator=task.z).to(x_src.device)
            s = nets.mapping_network(z, y_trg)
        else:
            x_ref = next(task.refs)[:n].to(x_src.device)
            s = nets.style_encoder(x_ref, y_trg)
        outs.append(nets.generator(x_src, s, masks=masks))
    return outs


def _save_pngs(folder: str, first: int, images: npt.NDArray[np.uint8]) -> None:
    """images (K, N, H, W, 3): output j of source first + k as ``{first+k+1:04d}_{j+1:02d}.png``."""
    for j, outs in enumerate(images):
        for k, img in enumerate(outs):
            Image.fromarray(img).save(os.path.join(folder, f'{first + k + 1:04d}_{j + 1:02d}.png'))


@torch.no_grad()
def evaluate_task(nets: Munch, args: Namespace | Munch, task: Task, inception: InceptionPool3, lpips_net: LPIPS,
                  device: torch.device) -> tuple[Features, float]:
    """(Inception activations of all outputs, mean LPIPS over source batches) of one task."""
    folder = None
    if args.save_eval_images:
        folder = os.path.join(args.eval_dir, task.name)
        shutil.rmtree(folder, ignore_errors=True)
        os.makedirs(folder)
    actvs, lpips_values, seen = [], [], 0
    for x_src in task.sources:
        outs = translate_batch(nets, args, task, x_src.to(device))
        lpips_values.append(calculate_lpips_given_images(outs, net=lpips_net))
        images = np.stack([to_uint8(x) for x in outs])
        if folder:
            _save_pngs(folder, seen, images)
        actvs.append(activations_from_uint8(images.reshape(-1, *images.shape[2:]), args.img_size,
                                            args.val_batch_size, inception))
        seen += x_src.size(0)
    return np.concatenate(actvs), float(np.mean(lpips_values))


def _check(nets: Munch, args: Namespace | Munch, mode: str, domains: Sequence[str]) -> None:
    if mode not in MODES:
        raise MetricsError(f"unknown eval mode {mode!r}; use 'latent' or 'reference'")
    if len(domains) != args.num_domains:
        raise MetricsError(f"'{args.val_img_dir}' has {len(domains)} domain folders but "
                           f"num_domains is {args.num_domains}; fix the folder or --num_domains")
    if len(domains) < 2:
        raise MetricsError(f"'{args.val_img_dir}' needs at least 2 domain folders, found {len(domains)}")
    if args.num_outs_per_domain < 2:
        raise MetricsError(f'num_outs_per_domain is {args.num_outs_per_domain}; LPIPS needs >= 2')
    if args.w_hpf > 0 and getattr(nets, 'fan', None) is None:
        raise MetricsError(f'w_hpf is {args.w_hpf} but nets has no fan; build the FAN '
                           f'(--wing_path) or set --w_hpf 0')


RESULTS_LOG = 'metrics.jsonl'  # one line per evaluation, beside the JSON files


def result_file(eval_dir: str | os.PathLike[str], kind: str, step: int, mode: str) -> str:
    """The JSON file of ``kind`` ('FID' or 'LPIPS') values of one evaluation."""
    return os.path.join(eval_dir, f'{kind}_{step:05d}_{mode}.json')


def _write(args: Namespace | Munch, step: int, mode: str, fid_values: dict[str, float],
           lpips_values: dict[str, float]) -> None:
    os.makedirs(args.eval_dir, exist_ok=True)
    for kind, values in (('FID', fid_values), ('LPIPS', lpips_values)):
        write_json(values, result_file(args.eval_dir, kind, step, mode))  # atomic
    with open(os.path.join(args.eval_dir, RESULTS_LOG), 'a') as f:
        f.write(json.dumps({'step': step, 'mode': mode, **fid_values, **lpips_values}) + '\n')


def read_results(folder: str | os.PathLike[str] | None, step: int | None) -> dict[str, Any] | None:
    """The FID and LPIPS values of iteration ``step`` that ``_write`` (``--mode eval``, or training's
    evaluations) put into ``folder``: its ``FID_{step:05d}_{mode}.json`` and
    ``LPIPS_{step:05d}_{mode}.json`` files, else the lines of that step in ``metrics.jsonl``
    (the last line per mode); None when there are none. The dict says ``from`` where."""
    if folder is None or step is None or not os.path.isdir(folder):
        return None
    found: dict[str, Any] = {}
    for kind in ('FID', 'LPIPS'):
        for mode in MODES:
            path = result_file(folder, kind, step, mode)
            try:
                with open(path, encoding='utf-8') as f:
                    values = json.load(f)
            except (OSError, ValueError):
                continue
            if isinstance(values, dict):
                found.update({k: v for k, v in values.items() if isinstance(v, (int, float))})
    where = f'{{FID,LPIPS}}_{step:05d}_*.json' if found else None
    if not found:
        by_mode: dict[str, dict[str, Any]] = {}
        try:
            with open(os.path.join(folder, RESULTS_LOG), encoding='utf-8') as f:
                for line in f:
                    try:
                        row = json.loads(line)
                    except ValueError:
                        continue  # a line cut short
                    if isinstance(row, dict) and row.get('step') == step:
                        by_mode[str(row.get('mode'))] = {k: v for k, v in row.items()
                                                         if k not in ('step', 'mode') and isinstance(v, (int, float))}
        except OSError:
            return None
        for values in by_mode.values():
            found.update(values)
        where = RESULTS_LOG
    if not found:
        return None
    return {**found, 'from': f'{os.path.basename(os.path.abspath(folder))}/{where}'}


@torch.no_grad()
def calculate_metrics(nets: Munch, args: Namespace | Munch, step: int, mode: str,
                      cache_dir: str | None = None, verbose: bool = True
                      ) -> tuple[dict[str, float], dict[str, float]]:
    """FID and LPIPS of every task in ``mode`` ('latent' or 'reference'), written to ``args.eval_dir``.

    ``nets``: generator, mapping_network, style_encoder (and fan when ``args.w_hpf > 0``),
    usually the EMA networks. The device is the generator's. ``cache_dir`` holds the
    training-image statistics (default ``eval_dir/fid_stats``).
    Returns ``(fid_values, lpips_values)``, the dicts written to the JSON files. Flags that
    scripts written for the official ``main.py`` lack take this project's defaults.
    """
    args = with_defaults(args)
    domains = list_domains(args.val_img_dir)
    _check(nets, args, mode, domains)
    device = next(nets.generator.parameters()).device
    inception = build_inception(args.inception_path, device)
    lpips_net = build_lpips(args.alexnet_path, device)
    cache_dir = cache_dir or os.path.join(args.eval_dir, 'fid_stats')

    fid_values: dict[str, float] = {}
    lpips_values: dict[str, float] = {}
    pending: dict[str, Future[float]] = {}
    # the Frechet distance (scipy, CPU) of a task runs in a thread while the next task is generated
    with ThreadPoolExecutor(max_workers=1) as pool:
        for trg_idx, trg in enumerate(domains):
            real = stats_from_folder(os.path.join(args.train_img_dir, trg), args.img_size,
                                     args.val_batch_size, inception, cache_dir)
            for src in domains:
                if src == trg:
                    continue
                task = Task(args, mode, src, trg, trg_idx, device)
                actvs, lpips_value = evaluate_task(nets, args, task, inception, lpips_net, device)
                pending[f'FID_{mode}/{task.name}'] = pool.submit(frechet_distance, *real,
                                                                 *statistics(actvs))
                lpips_values[f'LPIPS_{mode}/{task.name}'] = lpips_value
                if verbose:
                    print(f'eval {mode} {task.name}: LPIPS {lpips_value:.4f}', flush=True)
        for key, future in pending.items():
            fid_values[key] = future.result()
            if verbose:
                print(f'eval {key}: {fid_values[key]:.4f}', flush=True)
    fid_values[f'FID_{mode}/mean'] = float(np.mean(list(fid_values.values())))
    lpips_values[f'LPIPS_{mode}/mean'] = float(np.mean(list(lpips_values.values())))
    _write(args, step, mode, fid_values, lpips_values)
    return fid_values, lpips_values


def check_weights(args: Namespace | Munch) -> None:
    """MissingWeightsError now, not at the first evaluation of a long run, when the Inception
    (FID) or AlexNet (LPIPS) weights cannot be had (fetched into torchvision's cache when
    possible, as the evaluation would)."""
    from metrics.fid import INCEPTION_WEIGHTS
    from metrics.lpips import ALEXNET_WEIGHTS
    resolve_weights(INCEPTION_WEIGHTS, args.inception_path, '--inception_path')
    resolve_weights(ALEXNET_WEIGHTS, args.alexnet_path, '--alexnet_path')


def evaluate_networks(nets: Munch, args: Namespace | Munch, step: int
                      ) -> dict[str, tuple[dict[str, float], dict[str, float]]]:
    """The paper's protocol: ``calculate_metrics`` in latent then reference mode."""
    return {mode: calculate_metrics(nets, args, step, mode) for mode in ('latent', 'reference')}


def calculate_fid_for_all_tasks(args: Namespace | Munch, domains: Sequence[str], step: int, mode: str) -> dict[str, float]:
    """FID of every task from images already written to ``{eval_dir}/{src}2{trg}`` (as
    ``calculate_metrics`` writes them with ``save_eval_images``) against the target's
    training images; writes ``FID_{step:05d}_{mode}.json`` and returns the values. Flags that
    scripts written for the official ``main.py`` lack take this project's defaults."""
    args = with_defaults(args)
    from metrics.fid import calculate_fid_given_paths
    fid_values: dict[str, float] = {}
    for trg in domains:
        for src in domains:
            if src == trg:
                continue
            fake = os.path.join(args.eval_dir, f'{src}2{trg}')
            if not os.path.isdir(fake):
                raise MetricsError(f"'{fake}' does not exist; run calculate_metrics with "
                                   f"save_eval_images (--save_eval_images) first")
            fid_values[f'FID_{mode}/{src}2{trg}'] = calculate_fid_given_paths(
                [os.path.join(args.train_img_dir, trg), fake], img_size=args.img_size,
                batch_size=args.val_batch_size, inception_path=args.inception_path)
    fid_values[f'FID_{mode}/mean'] = float(np.mean(list(fid_values.values())))
    write_json(fid_values, os.path.join(args.eval_dir, f'FID_{step:05d}_{mode}.json'))
    return fid_values


def run(args: Namespace | Munch) -> None:
    """``--mode eval``: FID and LPIPS of the run's checkpoint ``--resume_iter`` (0: the newest)."""
    from core.use.load_run import load_run_networks
    nets, step = load_run_networks(args)
    evaluate_networks(nets, args, step)
