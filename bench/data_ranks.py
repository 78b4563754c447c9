"""The training data path under several processes: what each rank decodes and how fast.

    python bench/data_ranks.py --nproc 1 2 --batch_size 16 --img_size 256 --photo_size 512
    python bench/data_ranks.py --data data/afhq/train --nproc 1 2 4 --batch_size 32 --step_time 0.15

For each process count N (and each --reads value) N processes start together (gloo process
group on the CPU, as torchrun starts them), each builds the training loaders as
``--mode train`` does and draws --iters batches through the ``InputFetcher``. Per rank the
bench reports the training images it decodes per iteration (counted) and the images/s its
loaders deliver; with --num_workers 0 (the rank decodes itself) also the CPU time per image
(the process's CPU time, which a loaded machine changes far less than wall time), and from
it the cores of decoding one GPU needs at --step_time seconds per iteration (images per rank
per iteration x CPU seconds per image / step time).

``--reads shared`` is the training loop's path (each rank reads only its rows of the global
batch); ``--reads whole`` reads the whole global batch on every rank and keeps the rows, the
cost before ranks read their shares, for comparison. ``--num_workers 0`` decodes in the rank
itself, one core per rank: that is the per-core rate. Without --data the bench writes
--images JPEGs of --photo_size px in two domains (AFHQ: 512 px; CelebA-HQ: 1024 px).
"""
import argparse
import os
import shutil
import socket
import sys
import tempfile
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.train_speed import write_photos  # noqa: E402


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _rank(rank, world_size, port, opt, folder, reads, out):
    """One rank: its loaders, --iters timed batches; (decoded per iteration, seconds) to ``out``."""
    import core.datasets.pipeline
    from core.datasets.order import Share
    from core.datasets.pipeline import InputFetcher, get_train_loader
    from core.io.images import CheckedImages
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group('gloo', rank=rank, world_size=world_size)
    import multiprocessing
    decoded = multiprocessing.Value('l', 0)  # shared with the loader workers (forked from this process)
    real = core.datasets.pipeline.load_rgb  # the name the datasets read images through

    def counted(path, *a, **k):
        with decoded.get_lock():
            decoded.value += 1
        return real(path, *a, **k)

    core.datasets.pipeline.load_rgb = counted
    common = dict(checked=CheckedImages(), img_size=opt.img_size, batch_size=opt.batch_size, num_workers=opt.num_workers, seed=0,
                  device='cpu', prob=0.5, uint8=True)  # as --mode train builds them
    shared = reads == 'shared'
    fetcher = InputFetcher(get_train_loader(folder, 'source', **common), get_train_loader(folder, 'reference', **common),
                           16, 'train', 'cpu', seed=0, rank=rank if shared else 0, world_size=world_size if shared else 1)
    rows = Share(opt.batch_size, rank, world_size).rows(opt.batch_size)
    take = (lambda: next(fetcher)) if shared else (lambda: {k: v[rows] for k, v in next(fetcher).items()})
    take()  # workers started, first batch
    dist.barrier()
    before = decoded.value
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(opt.iters):
        batch = take()
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    assert batch['x_src'].size(0) == opt.batch_size // world_size
    # workers read ahead: the images decoded while the timed batches were drawn, per batch
    out.put((rank, (decoded.value - before) / opt.iters, seconds, cpu))
    dist.destroy_process_group()


def measure(opt, folder, nproc, reads):
    """[(rank, decoded images per iteration, seconds and CPU seconds for --iters iterations)] of one row."""
    ctx = mp.get_context('spawn')
    out = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_rank, args=(r, nproc, port, opt, folder, reads, out)) for r in range(nproc)]
    for p in procs:
        p.start()
    results = sorted(out.get(timeout=900) for _ in procs)
    for p in procs:
        p.join()
        if p.exitcode:
            raise SystemExit(f'a rank failed (exit {p.exitcode})')
    return results


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('--data', default=None, metavar='DIR', help='domain folders to read (else generated JPEGs)')
    p.add_argument('--nproc', type=int, nargs='+', default=[1, 2])
    p.add_argument('--reads', nargs='+', default=['whole', 'shared'], choices=['whole', 'shared'])
    p.add_argument('--batch_size', type=int, default=16, help='the global batch')
    p.add_argument('--img_size', type=int, default=256)
    p.add_argument('--num_workers', type=int, default=0, help='per loader and rank (0: decode in the rank, one core)')
    p.add_argument('--iters', type=int, default=5)
    p.add_argument('--step_time', type=float, default=0.15, help='GPU seconds per iteration to provision for')
    p.add_argument('--images', type=int, default=64, help='generated JPEGs (without --data)')
    p.add_argument('--photo_size', type=int, default=512, help='side of the generated JPEGs')
    opt = p.parse_args(argv)
    for n in opt.nproc:
        if opt.batch_size % n:
            p.error(f'--batch_size {opt.batch_size} is not divisible by --nproc {n}')
    return opt


def main(argv=None):
    opt = parse(argv)
    work = None
    folder = opt.data
    if folder is None:
        work = tempfile.mkdtemp(prefix='data_ranks_')
        write_photos(work, opt.images // 2, opt.photo_size)
        folder = work
        source = f'{opt.images} generated JPEGs of {opt.photo_size} px'
    else:
        source = folder
    try:
        print(f'# {source} -> {opt.img_size} px, global batch {opt.batch_size}, --num_workers {opt.num_workers}, '
              f'{opt.iters} iterations; {os.cpu_count()} cores visible; load average {os.getloadavg()[0]:.2f}')
        print('| processes | reads | images decoded per rank per iteration | decoded per iteration, all ranks '
              f'| per rank images/s (slowest) | CPU ms per image | cores per GPU at {opt.step_time} s/iteration |')
        print('|---|---|---|---|---|---|---|')
        for nproc in opt.nproc:
            for reads in opt.reads:
                results = measure(opt, folder, nproc, reads)
                per_rank = max(r[1] for r in results)
                rate = min(r[1] * opt.iters / r[2] for r in results)
                if opt.num_workers == 0:  # the rank decodes itself: its CPU time is the decoding's
                    cpu_per_image = max(r[3] / (r[1] * opt.iters) for r in results)
                    cpu, cores = f'{1e3 * cpu_per_image:.2f}', f'{per_rank * cpu_per_image / opt.step_time:.2f}'
                else:
                    cpu = cores = 'n/a (workers)'
                print(f'| {nproc} | {reads} | {per_rank:g} | {sum(r[1] for r in results):g} | {rate:.1f} | {cpu} '
                      f'| {cores} |', flush=True)
    finally:
        if work is not None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == '__main__':
    main()
