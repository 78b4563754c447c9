"""torchrun-style training with 2 CPU processes (gloo) equals one process on the same global batch,
also launched as two torchrun "nodes" on loopback."""
import json
import os
import socket
import subprocess
import sys

import pytest
import torch
import torch.multiprocessing as mp
from helpers import ROOT, make_dataset, run_args

import main as cli

pytestmark = pytest.mark.slow  # two training processes


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _worker(rank, world_size, port, argv):
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    assert cli.main(argv) == 0


def _runs_worker(rank, world_size, runs):
    """Several torchrun-style runs one after another in the same two processes (one start-up
    for the whole matrix), each with its own process group on its own port."""
    aot_eager()
    for port, argv in runs:
        _worker(rank, world_size, port, argv)


def aot_eager():
    """--compile through dynamo and AOT autograd without inductor's code generation (which
    takes many minutes on a 2-core CPU), as in tests/core/train/test_step.py."""
    real_compile = torch.compile
    torch.compile = lambda model: real_compile(model, backend='aot_eager')


def first_log(run):
    return json.loads((run / 'ckpt' / 'log.jsonl').read_text().splitlines()[0])


def test_two_processes_match_one(tmp_path):
    data = make_dataset(tmp_path / 'data', n=4)
    common = ['--total_iters', '2', '--batch_size', '4', '--print_every', '1', '--sample_every', '0',
              '--save_every', '2', '--device', 'cpu']
    single, double = tmp_path / 'single', tmp_path / 'double'
    assert cli.main(run_args(data, single, *common)) == 0
    mp.spawn(_worker, args=(2, _free_port(), run_args(data, double, *common)), nprocs=2, join=True)
    assert_matches_single(single, double)


def assert_matches_single(single, double, rel=1e-4):
    """The two-process run ``double`` equals ``single`` within the training tolerance
    (``rel``: of the first iteration's losses)."""
    # first iteration: identical data and init, so the rank-averaged losses equal the single
    # process's (without gradient averaging D/ref_real is already 0.7 % off)
    ours, theirs = first_log(double), first_log(single)
    for key, value in theirs.items():
        if key != 'time':
            assert ours[key] == pytest.approx(value, rel=rel, abs=1e-7), key
    # after that training is chaotic (float summation order flips tiny gradients), but Adam's
    # t-th step with beta1 = 0 moves a weight by at most lr sqrt((1 - beta2^t) / (1 - beta2))
    # (the newest squared gradient carries weight 1 - beta2 in the second moment). G and D
    # take 2 steps per iteration; the EMA mixes in (1 - beta) of the weights after each one.
    from core.cli.config_files import load_config
    run = load_config(str(single / 'ckpt' / 'config.yaml'))
    lr, beta, beta2 = max(run['lr'], run['f_lr']), run['ema_beta'], run['beta2']
    step_bound = [lr * ((1 - beta2 ** t) / (1 - beta2)) ** 0.5 for t in (1, 2, 3, 4)]
    after = [2 * sum(step_bound[:2]), 2 * sum(step_bound)]  # two runs apart after iterations 1, 2
    bounds = (('nets', after[1]), ('nets_ema', (1 - beta) * (beta * after[0] + after[1])))
    for kind, bound in bounds:
        a = torch.load(single / 'ckpt' / f'000002_{kind}.ckpt', weights_only=True)
        b = torch.load(double / 'ckpt' / f'000002_{kind}.ckpt', weights_only=True)
        assert a.keys() == b.keys()
        for name in a:
            assert a[name].keys() == b[name].keys()  # unwrapped: no 'module.' prefix
            for key in a[name]:
                gap = (a[name][key].double() - b[name][key].double()).abs().max().item()
                assert gap <= bound, f'{double.name}: {kind} {name}.{key}: {gap:.2e} > {bound:.2e}'


@pytest.mark.slow
def test_two_nodes_on_loopback_match_one_process(tmp_path):
    """torchrun --nnodes 2 (one process per "node", c10d rendezvous on 127.0.0.1, gloo,
    --device cpu): the multi-node launch trains as the single process does."""
    data = make_dataset(tmp_path / 'data', n=4)
    common = ['--total_iters', '2', '--batch_size', '4', '--print_every', '1', '--sample_every', '0',
              '--save_every', '2', '--device', 'cpu']
    single, double = tmp_path / 'single', tmp_path / 'double'
    assert cli.main(run_args(data, single, *common)) == 0
    port = _free_port()
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=ROOT)
    nodes = [subprocess.Popen([sys.executable, '-m', 'torch.distributed.run', '--nnodes', '2',
                               '--node_rank', str(rank), '--rdzv_backend', 'c10d',
                               '--rdzv_endpoint', f'127.0.0.1:{port}', '--rdzv_id', 'loopback',
                               '--nproc_per_node', '1', 'main.py', *run_args(data, double, *common)],
                              cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for rank in (0, 1)]
    for node in nodes:
        out, _ = node.communicate(timeout=900)
        assert node.returncode == 0, out[-3000:]
    assert_matches_single(single, double)


# ---------------------------------------------------------------- the DDP matrix
def _wing(path):
    """wing.ckpt from name-filled FAN weights with sparse heat-maps (masks that vary)."""
    from tiny_run import sparse_heatmaps
    from weights_by_name import fill_by_name

    from core.nn.fan import FAN
    torch.save({'state_dict': sparse_heatmaps(fill_by_name(FAN())).state_dict()}, path)
    return path


TINY_WIDTHS = ['--img_size', '32', '--dim_in', '8', '--max_conv_dim', '32', '--style_dim', '16', '--latent_dim', '8']
MATRIX = [(w_hpf, amp, cl) for w_hpf in (0, 1) for amp in ('none', 'bf16') for cl in (0, 1)]
CONFIGS = ('afhq', 'celeba_hq', 'demo', 'fast')


def _matrix_cases(tmp_path):
    """(name, main.py flags) of every matrix case and every configs/*.yaml at tiny widths."""
    data2 = make_dataset(tmp_path / 'data2', n=4)
    data3 = make_dataset(tmp_path / 'data3', domains=('a', 'b', 'c'), n=4)
    wing = str(_wing(tmp_path / 'wing.ckpt'))
    common = ['--total_iters', '2', '--batch_size', '4', '--print_every', '1', '--sample_every', '0',
              '--save_every', '2', '--device', 'cpu', '--wing_path', wing]
    cases = []
    for w_hpf, amp, cl in MATRIX:
        flags = ['--w_hpf', str(w_hpf), '--amp', amp] + ['--channels_last'] * cl
        cases.append((f'w_hpf{w_hpf}-{amp}-cl{cl}', lambda run, flags=flags: run_args(data2, run, *common, *flags)))
    for name in CONFIGS:
        data = data3 if name in ('afhq', 'demo') else data2
        def argv(run, name=name, data=data):
            # the config first, then what makes it tiny and local (its data, its folders)
            return ['--config', os.path.join(ROOT, 'configs', f'{name}.yaml'), *run_args(data, run, *common),
                    *TINY_WIDTHS, '--demo_data', '', '--val_batch_size', '2', '--randcrop_prob', '0.5',
                    '--domain_names', ','.join(sorted(os.listdir(data / 'train')))]
        cases.append((name, argv))
    return cases


@pytest.mark.slow
def test_ddp_matrix_matches_one_process(tmp_path):
    """Two DDP processes (gloo) x {w_hpf 0, 1} x {fp32, bf16} x {channels_last off, on}, and
    every configuration in configs/ at tiny widths with its own switches (fast.yaml: bf16,
    channels_last and --compile, here through aot_eager), 2 iterations each: every run
    finishes (w_hpf 1 stopped in its second iteration before the generator's unused shortcuts
    were ignored) and equals the single-process run. In bf16 the first losses are compared
    at 3 %, as bf16 against fp32 in tests/core/train/test_step.py (the per-process batch
    changes how oneDNN blocks its bf16 sums); fp32 at 1e-4."""
    cases = _matrix_cases(tmp_path)
    for name, argv in cases:
        if name == 'fast':
            aot_eager_once = torch.compile
            aot_eager()
            try:
                assert cli.main(argv(tmp_path / 'single' / name)) == 0, name
            finally:
                torch.compile = aot_eager_once
        else:
            assert cli.main(argv(tmp_path / 'single' / name)) == 0, name
    runs = [(_free_port(), argv(tmp_path / 'double' / name)) for name, argv in cases]
    mp.spawn(_runs_worker, args=(2, runs), nprocs=2, join=True)
    for name, _ in cases:
        bf16 = 'bf16' in name or name == 'fast'
        assert_matches_single(tmp_path / 'single' / name, tmp_path / 'double' / name, rel=3e-2 if bf16 else 1e-4)


# ---------------------------------------------------------------- what each process reads
def _logged_worker(rank, world_size, runs):
    """torchrun-style runs in this process, each logging the training images it opens (in
    order, one path a line) to ``log.rank{rank}`` in its log folder. ``damage``: (call, path)
    makes the process overwrite ``path`` with a cut-off PNG just before its ``call``-th image
    read of the run (a file damaged mid-run, read by this process only). Exit statuses and
    error lines go to ``status.rank{rank}``."""
    import contextlib
    import io

    import core.datasets.pipeline
    real = core.datasets.pipeline.load_rgb
    for port, argv, logs, damage in runs:
        os.makedirs(logs, exist_ok=True)
        reads = []

        def logged(path, *a, **k):
            if os.sep + 'train' + os.sep in str(path):
                reads.append(str(path))
                if damage is not None and damage[0] == rank and len(reads) == damage[1]:
                    with open(damage[2], 'r+b') as f:
                        f.truncate(60)
                with open(os.path.join(logs, f'log.rank{rank}'), 'a') as f:
                    f.write(f'{path}\n')
            return real(path, *a, **k)

        core.datasets.pipeline.load_rgb = logged
        err = io.StringIO()
        os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port), RANK=str(rank),
                          WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank))
        torch.set_num_threads(1)
        with contextlib.redirect_stderr(err):
            status = cli.main(argv)
        with open(os.path.join(logs, f'status.rank{rank}'), 'w') as f:
            f.write(f'{status}\n{err.getvalue()}')
        core.datasets.pipeline.load_rgb = real


def _reads(logs, rank=0):
    path = os.path.join(logs, f'log.rank{rank}')
    return open(path).read().split() if os.path.exists(path) else []


def _per_iteration(reads, per):
    """The reads cut into iterations of ``per`` images."""
    assert len(reads) % per == 0, (len(reads), per)
    return [sorted(reads[i:i + per]) for i in range(0, len(reads), per)]


def _in_one(argv, logs):
    """A one-process run (in a process of its own, as the torchrun ones) logging its reads."""
    ctx = mp.get_context('spawn')
    p = ctx.Process(target=_logged_worker, args=(0, 1, [(_free_port(), argv, logs, None)]))
    p.start()
    p.join(600)
    if p.exitcode is None:
        p.kill()
    assert p.exitcode == 0
    assert open(os.path.join(logs, 'status.rank0')).read().split('\n')[0] == '0'


@pytest.mark.slow
def test_two_processes_each_read_half_and_a_save_continues_in_either_count(tmp_path):
    """Under torchrun with 2 processes each rank opens half the training images one process
    opens in the same iterations, and the two together open exactly those. A run saved by 2
    processes and continued by 1 reads exactly what a 1-process run continued from its own
    save reads, and one saved by 1 and continued by 2 reads, rank by rank, its half of that."""
    data = make_dataset(tmp_path / 'data', n=6)
    B = 4
    common = ['--batch_size', str(B), '--print_every', '0', '--sample_every', '0', '--save_every', '2',
              '--device', 'cpu']
    run = lambda name, total, resume: run_args(data, tmp_path / name, *common, '--total_iters', str(total),
                                               '--resume_iter', str(resume))
    logs = lambda name: str(tmp_path / 'logs' / name)
    # one process: 0 -> 2, then (in a copy of its folder, and in the folder itself) 2 -> 5,
    # which crosses an epoch boundary (12 images: 3 batches of 4 an epoch)
    import shutil
    _in_one(run('one', 2, 0), logs('one_a'))
    shutil.copytree(tmp_path / 'one' / 'ckpt', tmp_path / 'one_then_two' / 'ckpt')
    _in_one(run('one', 5, 2), logs('one_b'))
    # two processes: 0 -> 2 in a new run, and 2 -> 5 from the one process's save
    runs = [(_free_port(), run('two', 2, 0), logs('two_a'), None),
            (_free_port(), run('one_then_two', 5, 2), logs('one_then_two'), None)]
    mp.spawn(_logged_worker, args=(2, runs), nprocs=2, join=True)
    for name in ('two_a', 'one_then_two'):
        for rank in (0, 1):
            assert open(os.path.join(logs(name), f'status.rank{rank}')).read().split('\n')[0] == '0'
    # then one process continues the two processes' save
    _in_one(run('two', 5, 2), logs('two_then_one'))

    one_a, one_b = _reads(logs('one_a')), _reads(logs('one_b'))
    assert len(one_a) == 2 * 3 * B and len(one_b) == 3 * 3 * B
    for name, single in (('two_a', one_a), ('one_then_two', one_b)):
        r0, r1 = _reads(logs(name), 0), _reads(logs(name), 1)
        assert len(r0) == len(r1) == len(single) // 2  # each rank opens half
        for it0, it1, it in zip(_per_iteration(r0, 3 * B // 2), _per_iteration(r1, 3 * B // 2),
                                _per_iteration(single, 3 * B)):
            assert sorted(it0 + it1) == it  # together, exactly one process's images, iteration by iteration
    assert _reads(logs('two_then_one')) == one_b  # saved by 2, continued by 1: the one-process reads


@pytest.mark.slow
def test_an_image_damaged_in_one_ranks_share_stops_every_rank_at_once(tmp_path):
    """A file that only rank 1 reads in iteration 3 is damaged just before rank 1 reads it:
    both ranks agree in that iteration, rank 0 saves iterations 1-2 with the data position
    before the failed batch, and every rank stops with the one line naming the file, without
    waiting for the process group's timeout."""
    import time
    data = make_dataset(tmp_path / 'data', n=8)
    B, k = 4, 3
    common = ['--batch_size', str(B), '--print_every', '0', '--sample_every', '0', '--save_every', '0',
              '--device', 'cpu', '--total_iters', '6']
    # which images each rank opens in iteration k (a one-process run's reads, cut into rows)
    _in_one(run_args(data, tmp_path / 'plan', *common), str(tmp_path / 'plan_logs'))
    per = 3 * B
    iteration = _reads(str(tmp_path / 'plan_logs'))[(k - 1) * per:k * per]
    src, ref = iteration[:B], iteration[B:]  # B sources, then B (reference, second reference) pairs
    rank1 = set(src[B // 2:] + ref[B:])
    rank0 = set(src[:B // 2] + ref[:B])
    only1 = sorted(rank1 - rank0)
    assert only1, 'no image of iteration 3 is read by rank 1 alone; change the dataset seed'
    target = only1[0]
    first = (k - 1) * 3 * B // 2 + 1  # rank 1's first read of iteration k
    logs = str(tmp_path / 'logs')
    began = time.time()
    ctx = mp.start_processes(_logged_worker, args=(2, [(_free_port(), run_args(data, tmp_path / 'run', *common),
                                                       logs, (1, first, target))]),
                             nprocs=2, join=False, start_method='spawn')
    deadline = began + 300  # far below the process group's time-out (hours)
    while not ctx.join(timeout=max(deadline - time.time(), 1)):
        if time.time() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail('the ranks did not stop within 300 s: one waited for the other')
    lines = []
    for rank in (0, 1):
        status, *err = open(os.path.join(logs, f'status.rank{rank}')).read().split('\n')
        assert status == '2', (rank, err)
        errors = [ln for ln in err if ln.startswith('error:')]
        assert len(errors) == 1 and 'Traceback' not in '\n'.join(err), err
        lines.append(errors[0])
    assert lines[0] == lines[1]
    assert f"cannot read image '{target}'" in lines[0] and f'saved iteration {k - 1}' in lines[0]
    from core.io.ckpt_files import complete_steps
    assert complete_steps(str(tmp_path / 'run' / 'ckpt')) == [k - 1]
    assert len(_reads(logs, 0)) == k * 3 * B // 2  # rank 0 read its share of iteration k, then stopped
