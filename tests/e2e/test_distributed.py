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

import main as cli
from helpers import ROOT, make_dataset, run_args

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
    takes many minutes on a 2-core CPU), as in tests/core/test_trainer.py."""
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
    from core.config_file import load_config
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
    from core.fan import FAN
    from tiny_run import sparse_heatmaps
    from weights_by_name import fill_by_name
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
    at 3 %, as bf16 against fp32 in tests/core/test_trainer.py (the per-process batch
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
