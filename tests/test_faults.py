"""Faults of long runs on shared machines, each tried on a real command (a ``main.py``
process, or ``cli.main`` where the fault is injected), checking what was kept.

Training: preemption signals, restart with the same command, refused resumes, a second run
in the same folder, checks before step 1, a full disk, an image that fails to decode
mid-run. Other modes: outputs that would overwrite inputs, images as viewers show them,
the umask, the web demo's bounds, download.sh's broken files.
"""
import errno
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

import main as cli
from core import checkpoint as ckpt_mod
from core.checkpoint import complete_steps
from core.runfolder import RunLock
from helpers import ROOT, assert_files_equal, make_dataset, run_args

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures('one_thread')]

FINAL = ('nets', 'nets_ema', 'optims', 'state')


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp('data'))


def snapshot(folder):
    """{relative path: bytes} of every file under ``folder`` but the lock (which names its
    newest holder)."""
    out = {}
    for root, _, files in os.walk(folder):
        for name in files:
            if name == '.lock':
                continue
            path = os.path.join(root, name)
            with open(path, 'rb') as f:
                out[os.path.relpath(path, folder)] = f.read()
    return out


def start(data, run, *flags, torchrun=0):
    """``main.py`` training in a subprocess of its own session (a signal to its group reaches
    it as a terminal's Ctrl-C would); ``torchrun``: that many torchrun workers."""
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=ROOT)
    launcher = [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', str(torchrun),
                '--master_port', str(_free_port())] if torchrun else [sys.executable]
    run.mkdir(parents=True, exist_ok=True)
    log = open(run / 'output.txt', 'w')
    return subprocess.Popen([*launcher, 'main.py', *run_args(data, run, *flags)], cwd=ROOT, env=env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _free_port():
    import socket
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def wait_for_log(proc, run, lines, timeout=300):
    """Waits until log.jsonl has ``lines`` lines (training is under way); returns the last."""
    path = run / 'ckpt' / 'log.jsonl'
    deadline = time.monotonic() + timeout
    while True:
        if path.exists():
            text = path.read_text().splitlines()
            if len(text) >= lines:
                return json.loads(text[-1])
        assert proc.poll() is None, (run / 'output.txt').read_text()[-3000:]
        assert time.monotonic() < deadline, f'no {lines} log lines in {timeout} s'
        time.sleep(0.05)


def output(run):
    return (run / 'output.txt').read_text()


# ------------------------------------------------------------------ 1, 2: preemption and restart
LONG = ['--total_iters', '40', '--print_every', '1', '--sample_every', '0', '--save_every', '10',
        '--resume_iter', 'latest']


@pytest.mark.parametrize('sig', [signal.SIGTERM, signal.SIGUSR1])
def test_scheduler_signal_saves_the_current_iteration_and_the_same_command_continues(data, tmp_path, sig):
    """SIGTERM (preemption, docker stop) and SIGUSR1 (SLURM's --signal) save the iteration
    in progress, exit with 128 + the signal's number, and the unchanged command (with
    --resume_iter latest) continues from there to the end."""
    run = tmp_path / 'run'
    proc = start(data, run, *LONG)
    wait_for_log(proc, run, 3)
    proc.send_signal(sig)
    assert proc.wait(timeout=120) == 128 + sig, output(run)[-2000:]
    saved = complete_steps(str(run / 'ckpt'))
    assert len(saved) == 1 and 3 <= saved[0] < 40  # the iteration it was at, not a multiple of 10
    assert f'interrupted by {signal.Signals(sig).name}: saved iteration {saved[0]}' in output(run)
    proc = start(data, run, *LONG)
    assert proc.wait(timeout=300) == 0, output(run)[-2000:]
    assert complete_steps(str(run / 'ckpt'))[-1] == 40
    steps = [json.loads(line)['step'] for line in (run / 'ckpt' / 'log.jsonl').read_text().splitlines()]
    assert steps == list(range(1, saved[0] + 1)) + list(range(saved[0] + 1, 41))  # no iteration twice


def test_sigkill_at_any_iteration_then_the_same_command_ends_bit_for_bit_as_uninterrupted(data, tmp_path):
    """Killed outright (no save) at some iteration, restarted with the same command line: it
    continues from the newest complete set and ends with the files of a run never killed."""
    flags = ['--total_iters', '12', '--print_every', '1', '--sample_every', '0', '--save_every', '4',
             '--randcrop_prob', '0.5', '--resume_iter', 'latest']
    straight = tmp_path / 'straight'
    assert cli.main(run_args(data, straight, *flags)) == 0  # 'latest' in an empty folder: a fresh start
    run = tmp_path / 'run'
    proc = start(data, run, *flags)
    wait_for_log(proc, run, 6)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    assert complete_steps(str(run / 'ckpt'))[-1] in (4, 8)
    proc = start(data, run, *flags)  # the lock of the killed process is not in the way
    assert proc.wait(timeout=300) == 0, output(run)[-2000:]
    for kind in FINAL:
        assert_files_equal(straight / 'ckpt' / f'000012_{kind}.ckpt', run / 'ckpt' / f'000012_{kind}.ckpt')


def test_ctrl_c_under_torchrun_saves(data, tmp_path):
    """Ctrl-C under torchrun: each worker gets SIGINT from the terminal and again from
    torchrun; the repeat no longer interrupts the agreed save, which every rank reaches."""
    run = tmp_path / 'run'
    flags = ['--total_iters', '200', '--print_every', '1', '--sample_every', '0', '--save_every', '0',
             '--batch_size', '4', '--device', 'cpu']
    proc = start(data, run, *flags, torchrun=2)
    wait_for_log(proc, run, 2)
    os.killpg(proc.pid, signal.SIGINT)  # the whole process group, as a terminal does
    proc.wait(timeout=120)
    saved = complete_steps(str(run / 'ckpt'))
    assert len(saved) == 1 and 2 <= saved[0] < 200, output(run)[-3000:]
    assert 'interrupted by SIGINT' in output(run)


# ------------------------------------------------------------------ 3: refused resumes change nothing
@pytest.mark.parametrize('bad', [['--resume_iter', '7'], ['--resume_iter', '2', '--style_dim', '32'],
                                 ['--resume_iter', '2', '--wing_path', 'absent.ckpt', '--w_hpf', '1']])
def test_a_refused_resume_leaves_the_run_folder_byte_for_byte(data, tmp_path, capsys, bad):
    flags = ['--total_iters', '2', '--print_every', '1', '--sample_every', '0', '--save_every', '2']
    assert cli.main(run_args(data, tmp_path, *flags)) == 0
    before = snapshot(tmp_path / 'ckpt')
    capsys.readouterr()
    assert cli.main(run_args(data, tmp_path, *flags[:1], '4', *flags[2:], *bad)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('error: ')
    assert snapshot(tmp_path / 'ckpt') == before


# ------------------------------------------------------------------ 4: one writer per run folder
def test_a_second_run_in_the_same_folder_stops_naming_the_first(data, tmp_path, capsys):
    flags = ['--total_iters', '2', '--print_every', '0', '--sample_every', '0', '--save_every', '2']
    with RunLock(str(tmp_path / 'ckpt')):  # the first run, still training
        assert cli.main(run_args(data, tmp_path, *flags)) == 2
        err = capsys.readouterr().err.strip()
        assert f'in use by another training run (pid {os.getpid()} on ' in err and 'since' in err
        assert not (tmp_path / 'ckpt' / 'config.yaml').exists()
    assert cli.main(run_args(data, tmp_path, *flags)) == 0  # released with it


# ------------------------------------------------------------------ 5: checked before step 1
def _refused_before_step_one(data, tmp_path, capsys, *flags):
    base = ['--total_iters', '4', '--print_every', '1', '--sample_every', '2', '--save_every', '2']
    assert cli.main(run_args(data, tmp_path, *base, *flags)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    ckpt = tmp_path / 'ckpt'
    assert not ckpt.exists() or sorted(os.listdir(ckpt)) == ['.lock']  # no config.yaml, log or checkpoint
    return err[0]


def test_unwritable_sample_dir_is_refused_before_step_one(data, tmp_path, capsys):
    (tmp_path / 'a_file').write_text('')
    err = _refused_before_step_one(data, tmp_path, capsys, '--sample_dir', str(tmp_path / 'a_file' / 'samples'))
    assert '--sample_dir' in err and 'is a file' in err


def test_missing_evaluation_weights_are_refused_before_step_one(data, tmp_path, capsys):
    err = _refused_before_step_one(data, tmp_path, capsys, '--eval_every', '4',
                                   '--inception_path', str(tmp_path / 'absent.pth'))
    assert 'absent.pth' in err and '--inception_path' in err


def test_a_wing_path_without_fan_weights_is_refused(data, tmp_path, capsys):
    torch.save({'state_dict': {'conv.weight': torch.zeros(1)}}, tmp_path / 'other.ckpt')
    err = _refused_before_step_one(data, tmp_path, capsys, '--w_hpf', '1', '--wing_path', str(tmp_path / 'other.ckpt'))
    assert 'other.ckpt holds no FAN weights' in err


def test_too_little_free_space_is_refused_before_step_one(data, tmp_path, capsys, monkeypatch):
    import shutil
    monkeypatch.setattr(shutil, 'disk_usage', lambda p: shutil._ntuple_diskusage(10 ** 9, 10 ** 9 - 1000, 1000))
    err = _refused_before_step_one(data, tmp_path, capsys)
    assert 'free but a checkpoint set needs about' in err


# ------------------------------------------------------------------ 6: a full disk while saving
def test_disk_full_while_saving_keeps_every_earlier_set(data, tmp_path, capsys, monkeypatch):
    real_save = torch.save
    calls = []

    def save_until_full(obj, f, *a, **kw):
        calls.append(1)
        if len(calls) > 4:  # the second set: half a file goes out, then the disk is full
            f.write(b'x' * 1000)
            raise OSError(errno.ENOSPC, 'No space left on device')
        return real_save(obj, f, *a, **kw)

    monkeypatch.setattr(ckpt_mod.torch, 'save', save_until_full)
    flags = ['--total_iters', '4', '--print_every', '0', '--sample_every', '0', '--save_every', '2']
    assert cli.main(run_args(data, tmp_path, *flags)) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith('error: ')]
    assert len(err) == 1 and 'No space left on device' in err[0] and '000004_nets.ckpt' in err[0]
    assert 'needs about' in err[0]
    files = os.listdir(tmp_path / 'ckpt')
    assert not [f for f in files if f.endswith('.tmp')]  # no temporary or partial file
    assert complete_steps(str(tmp_path / 'ckpt')) == [2]


def test_keep_last_removes_older_complete_sets(data, tmp_path):
    flags = ['--total_iters', '6', '--print_every', '0', '--sample_every', '0', '--save_every', '2', '--keep_last', '2']
    assert cli.main(run_args(data, tmp_path, *flags)) == 0
    assert sorted(f for f in os.listdir(tmp_path / 'ckpt') if f.endswith('.ckpt')) == \
        [f'{s:06d}_{k}.ckpt' for s in (4, 6) for k in sorted(FINAL)]
