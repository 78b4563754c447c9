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
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import torch
from helpers import ROOT, assert_files_equal, make_dataset, run_args, small_disk
from PIL import Image
from tiny_run import make_checkpoint, make_image

import core.io.ckpt_files as ckpt_mod
import main as cli
from core.io.ckpt_files import complete_steps
from core.io.run_folder import RunLock

pytestmark = pytest.mark.slow  # every test runs main.py, download.sh or a server, or a whole training run

FINAL = ('nets', 'nets_ema', 'optims', 'state')


@pytest.fixture(scope='module')
def data(one_thread, tmp_path_factory):
    """Training data; one thread here as in the training subprocesses (OMP_NUM_THREADS=1), for
    the bitwise comparisons (and tiny tensors only spin threads on a loaded machine)."""
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


def test_a_disk_that_fills_at_the_second_set_on_a_real_file_system(data, tmp_path, capsys):
    """A run folder on a real small file system (a tmpfs) where the first set fits and the
    second does not: one line naming the file, the bytes needed and free (torch's zip writer
    raises a RuntimeError there, while handling the OSError); the first set complete, no
    temporary or partial file. With room made, the same command continues and ends."""
    flags = ['--print_every', '1', '--sample_every', '0', '--save_every', '2', '--resume_iter', 'latest']
    probe = tmp_path / 'probe'
    assert cli.main(run_args(data, probe, '--total_iters', '2', *flags)) == 0
    one_set = sum(f.stat().st_size for f in (probe / 'ckpt').glob('000002_*.ckpt'))
    half_nets = (probe / 'ckpt' / '000002_nets.ckpt').stat().st_size // 2
    # the second set's first file stops half-way
    with small_disk(tmp_path / 'disk', one_set + half_nets) as disk:
        capsys.readouterr()
        assert cli.main(run_args(data, disk, '--total_iters', '4', *flags)) == 2
        captured = capsys.readouterr()
        err = [line for line in captured.err.splitlines() if line.startswith('error: ')]
        assert len(err) == 1 and 'Traceback' not in captured.err, captured.err[-2000:]
        assert err[0].startswith(f'error: cannot write {disk / "ckpt" / "000004_"}')
        assert 'No space left on device; it needs about ' in err[0] and 'free there:' in err[0]
        assert '--resume_iter latest' in err[0]
        files = os.listdir(disk / 'ckpt')
        assert not [f for f in files if f.endswith('.tmp') or f.startswith('000004_')], files
        assert complete_steps(str(disk / 'ckpt')) == [2]
        for kind in FINAL:
            assert_files_equal(probe / 'ckpt' / f'000002_{kind}.ckpt', disk / 'ckpt' / f'000002_{kind}.ckpt')
        subprocess.run(['mount', '-o', f'remount,size={one_set * 3}', str(disk)], check=True, timeout=30)
        assert cli.main(run_args(data, disk, '--total_iters', '4', *flags)) == 0  # room made: the same command
        assert complete_steps(str(disk / 'ckpt')) == [2, 4]


def test_keep_last_after_a_resume_keeps_the_resume_point_and_latest_continues_the_new_branch(data, tmp_path, capsys):
    """Train to 4, then resume from 2 to 3 with --keep_last 2: the sets 3 and 4 of the abandoned
    run move aside (one line says where, byte for byte kept), 2 (the resume point) and the new 3
    stay; --resume_iter latest then continues the new branch from 3, not the abandoned 4."""
    base = ['--print_every', '1', '--sample_every', '0', '--save_every', '1']
    ckpt = tmp_path / 'ckpt'
    assert cli.main(run_args(data, tmp_path, *base, '--total_iters', '4')) == 0
    later = {f: (ckpt / f).read_bytes() for f in os.listdir(ckpt) if f.startswith(('000003_', '000004_'))}
    capsys.readouterr()
    assert cli.main(run_args(data, tmp_path, *base, '--resume_iter', '2', '--total_iters', '3', '--keep_last', '2')) == 0
    notes = [line for line in capsys.readouterr().out.splitlines() if 'abandoned' in line]
    aside = [d for d in os.listdir(ckpt) if d.startswith('abandoned-')]
    assert len(aside) == 1 and len(notes) == 1 and str(ckpt / aside[0]) in notes[0]
    assert complete_steps(str(ckpt)) == [2, 3]
    assert {f: (ckpt / aside[0] / f).read_bytes() for f in os.listdir(ckpt / aside[0])} == later
    assert cli.main(run_args(data, tmp_path, *base, '--resume_iter', 'latest', '--total_iters', '5',
                             '--keep_last', '2')) == 0
    assert complete_steps(str(ckpt)) == [3, 4, 5]  # the newest two, and 3: where this run resumed
    steps = [json.loads(line)['step'] for line in (ckpt / 'log.jsonl').read_text().splitlines()]
    assert steps == [1, 2, 3, 4] + [3] + [4, 5]  # the requeue went on from the new 3


def test_keep_last_removes_older_complete_sets(data, tmp_path):
    flags = ['--total_iters', '6', '--print_every', '0', '--sample_every', '0', '--save_every', '2', '--keep_last', '2']
    assert cli.main(run_args(data, tmp_path, *flags)) == 0
    assert sorted(f for f in os.listdir(tmp_path / 'ckpt') if f.endswith('.ckpt')) == \
        [f'{s:06d}_{k}.ckpt' for s in (4, 6) for k in sorted(FINAL)]


# ------------------------------------------------------------------ 7: an image that fails to decode mid-run
def test_an_image_damaged_mid_run_stops_with_one_line_after_saving(tmp_path):
    """Every training image is damaged (a PNG header, then nothing) while the run trains: it
    stops at the next batch with one line naming a file, after saving the iterations done;
    with the files restored, the same command ends bit for bit as a run never stopped."""
    flags = ['--total_iters', '30', '--print_every', '1', '--sample_every', '0', '--save_every', '30',
             '--resume_iter', 'latest']
    data = make_dataset(tmp_path / 'data')
    straight = tmp_path / 'straight'
    proc = start(data, straight, *flags)
    assert proc.wait(timeout=300) == 0, output(straight)[-2000:]
    images = sorted((data / 'train').rglob('*.png'))
    good = {p: p.read_bytes() for p in images}
    run = tmp_path / 'run'
    proc = start(data, run, *flags)
    wait_for_log(proc, run, 3)
    for p in images:
        p.write_bytes(good[p][:60])  # the signature and header survive, the pixel data is gone
    assert proc.wait(timeout=120) == 2, output(run)[-2000:]
    errors = [ln for ln in output(run).splitlines() if ln.startswith('error:')]
    assert len(errors) == 1 and 'Traceback' not in output(run), output(run)[-2000:]
    assert "cannot read image '" in errors[0] and str(data / 'train') in errors[0]
    saved = complete_steps(str(run / 'ckpt'))
    assert len(saved) == 1 and 3 <= saved[0] < 30 and f'saved iteration {saved[0]}' in errors[0]
    for p in images:
        p.write_bytes(good[p])
    proc = start(data, run, *flags)
    assert proc.wait(timeout=300) == 0, output(run)[-2000:]
    for kind in FINAL:
        assert_files_equal(straight / 'ckpt' / f'000030_{kind}.ckpt', run / 'ckpt' / f'000030_{kind}.ckpt')


# ================================================================== other modes (items 8-12)
def main_py(*args, umask=None, timeout=300):
    """``python main.py ARGS`` in a subprocess (under ``umask`` when given)."""
    env = dict(os.environ, PYTHONUNBUFFERED='1', GRADIO_ANALYTICS_ENABLED='False')
    return subprocess.run([sys.executable, 'main.py', *map(str, args)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout, preexec_fn=(lambda: os.umask(umask)) if umask is not None else None)


def one_line_error(r, *parts):
    """Exit status 2, one ``error:`` line naming ``parts``, no traceback."""
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith('error:')]
    assert r.returncode == 2, r.stderr[-2000:]
    assert len(errors) == 1 and 'Traceback' not in r.stderr, r.stderr[-2000:]
    for part in parts:
        assert part in errors[0], errors[0]
    return errors[0]


def snapshot_links(folder):
    """Every file under ``folder`` with its bytes (links not followed)."""
    out = {}
    for d, dirs, files in os.walk(folder):
        for f in files:
            p = os.path.join(d, f)
            out[os.path.relpath(p, folder)] = open(p, 'rb').read() if not os.path.islink(p) else os.readlink(p)
    return out


@pytest.fixture(scope='module')
def run_dir(tmp_path_factory):
    """A run folder (config.yaml and a 32 px two-domain checkpoint, domains cat and dog)."""
    root = tmp_path_factory.mktemp('faults')
    make_checkpoint(root / 'ckpt', img_size=32, num_domains=2, names=['cat', 'dog'])
    return root / 'ckpt'


@pytest.fixture(scope='module')
def broken_run(run_dir, tmp_path_factory):
    """The same run with a checkpoint file that cannot be loaded: a command that stops with an
    error about an output path instead proves it checked the path before loading networks."""
    folder = tmp_path_factory.mktemp('broken') / 'ckpt'
    shutil.copytree(run_dir, folder)
    for f in os.listdir(folder):
        if f.endswith('.ckpt'):
            (folder / f).write_bytes(b'not a checkpoint')
    return folder


# ======================================================================= 8. images as viewers show them

def test_exif_rotated_and_transparent_sources_translate_as_shown(run_dir, tmp_path):
    """A sideways-stored photo with its EXIF orientation, and a transparent PNG, translate exactly as
    the upright photo and the picture on white that a viewer shows."""
    rng = np.random.default_rng(3)
    upright = rng.integers(0, 255, (40, 56, 3), dtype=np.uint8)
    Image.fromarray(upright).save(tmp_path / 'upright.png')
    exif = Image.Exif()
    exif[0x0112] = 6  # shown after a quarter turn clockwise
    Image.fromarray(np.ascontiguousarray(np.rot90(upright, 1))).save(tmp_path / 'sideways.png', exif=exif)
    alpha = rng.choice(np.array([0, 255], np.uint8), (40, 56))  # cut-out transparency: compositing is exact
    stored = np.where(alpha[..., None] == 255, upright, 0).astype(np.uint8)  # hidden pixels store black
    Image.fromarray(np.dstack([stored, alpha]), 'RGBA').save(tmp_path / 'transparent.png')
    on_white = np.where(alpha[..., None] == 255, upright, 255).astype(np.uint8)
    Image.fromarray(on_white).save(tmp_path / 'on_white.png')
    outs = {}
    for name in ('upright', 'sideways', 'transparent', 'on_white'):
        r = main_py('--mode', 'translate', '--checkpoint_dir', run_dir, '--device', 'cpu', '--src', tmp_path / f'{name}.png',
                    '--trg_domain', 'dog', '--out', tmp_path / 'out' / f'{name}.png')
        assert r.returncode == 0, r.stderr[-2000:]
        outs[name] = np.asarray(Image.open(tmp_path / 'out' / f'{name}.png'))
    assert np.array_equal(outs['sideways'], outs['upright'])
    assert np.array_equal(outs['transparent'], outs['on_white'])
    assert not np.array_equal(outs['upright'], outs['on_white'])  # the comparisons can tell images apart


def test_linked_domain_folders_sample_each_image_once_in_its_domain(run_dir, tmp_path):
    """Sample mode on folders holding a link loop (to the dataset root), a link into the other domain
    and two links to one outside folder: each image once, in its own domain."""
    src = tmp_path / 'src'
    for d, n in (('cat', 2), ('dog', 1)):
        for i in range(n):
            os.makedirs(src / d, exist_ok=True)
            make_image(src / d / f'{i}.png', size=32, seed=10 * len(d) + i)
    make_image(tmp_path / 'outside.png', size=32, seed=99)
    (tmp_path / 'shared').mkdir()
    shutil.copy(tmp_path / 'outside.png', tmp_path / 'shared' / 'x.png')
    os.symlink(src, src / 'cat' / 'loop')
    os.symlink(src / 'dog', src / 'cat' / 'dogs')
    os.symlink(tmp_path / 'shared', src / 'dog' / 'a')
    os.symlink(tmp_path / 'shared', src / 'dog' / 'b')
    kept = snapshot_links(src)
    r = main_py('--mode', 'sample', '--checkpoint_dir', run_dir, '--device', 'cpu', '--num_workers', 0, '--src_dir', src,
                '--ref_dir', src, '--result_dir', tmp_path / 'res', '--val_batch_size', 16, '--sample_outputs', 'reference')
    assert r.returncode == 0, r.stderr[-2000:]
    # the reference grid: a row and a column per image (2 cats + dog's own + the shared one) and the corner
    assert Image.open(tmp_path / 'res' / 'reference.jpg').size == (5 * 32, 5 * 32)
    assert snapshot_links(src) == kept


# ======================================================================= 9. outputs never overwrite inputs

def test_translate_into_its_own_source_folder_is_refused_before_loading(broken_run, tmp_path):
    src = tmp_path / 'photos'
    for sub in ('a', 'b'):
        os.makedirs(src / sub)
        make_image(src / sub / 'x.png', size=32, seed=len(sub))
    kept = snapshot_links(src)
    for out in (src, src / 'translated'):
        r = main_py('--mode', 'translate', '--checkpoint_dir', broken_run, '--src', src, '--trg_domain', 'dog', '--out', out)
        one_line_error(r, '--out', 'the input folder --src')
        assert snapshot_links(src) == kept  # the photos untouched, nothing added
    r = main_py('--mode', 'translate', '--checkpoint_dir', broken_run, '--src', src / 'a' / 'x.png', '--trg_domain', 'dog',
                '--out', tmp_path / 'result')
    one_line_error(r, "--out '", 'no image extension')
    r = main_py('--mode', 'translate', '--checkpoint_dir', broken_run, '--src', src / 'a' / 'x.png', '--trg_domain', 'dog',
                '--out', src / 'a' / 'x.png')
    one_line_error(r, 'would overwrite an input image')
    assert snapshot_links(src) == kept and not (tmp_path / 'result').exists()
    # the control: with good paths the same command reaches the broken checkpoint
    r = main_py('--mode', 'translate', '--checkpoint_dir', broken_run, '--src', src, '--trg_domain', 'dog',
                '--out', tmp_path / 'out')
    assert r.returncode == 2 and 'ckpt' in r.stderr and '--out' not in r.stderr.splitlines()[-1]


def test_translate_keeps_sub_folders_so_same_names_never_collide(run_dir, tmp_path):
    src = tmp_path / 'photos'
    for i, sub in enumerate(('a', 'b', 'b/c')):
        os.makedirs(src / sub)
        make_image(src / sub / 'x.png', size=32, seed=i)
    kept = snapshot_links(src)
    r = main_py('--mode', 'translate', '--checkpoint_dir', run_dir, '--device', 'cpu', '--src', src, '--trg_domain', 'dog',
                '--out', tmp_path / 'out')
    assert r.returncode == 0, r.stderr[-2000:]
    outs = snapshot_links(tmp_path / 'out')
    assert sorted(outs) == ['a/x.png', 'b/c/x.png', 'b/x.png']
    assert len(set(outs.values())) == 3  # three translations of three photos, none overwritten
    assert snapshot_links(src) == kept


def test_align_into_its_input_folder_is_refused_before_the_fan_loads(tmp_path):
    inp = tmp_path / 'faces'
    inp.mkdir()
    make_image(inp / 'face.jpg', size=64)
    kept = snapshot_links(inp)
    (tmp_path / 'wing.ckpt').write_bytes(b'not FAN weights')  # loading it would be an error about the weights
    from helpers import face_like_landmarks
    np.savez(tmp_path / 'lm.npz', mean=face_like_landmarks())
    r = main_py('--mode', 'align', '--inp_dir', inp, '--out_dir', inp / 'aligned', '--wing_path', tmp_path / 'wing.ckpt',
                '--lm_path', tmp_path / 'lm.npz')
    one_line_error(r, '--out_dir', 'lies inside the input folder --inp_dir')
    assert snapshot_links(inp) == kept


def test_export_result_dir_that_cannot_be_made_is_refused_before_loading(broken_run, tmp_path):
    (tmp_path / 'a_file').write_text('keep')
    r = main_py('--mode', 'export', '--format', 'onnx', '--checkpoint_dir', broken_run,
                '--result_dir', tmp_path / 'a_file' / 'onnx')
    one_line_error(r, '--result_dir', 'not a folder')
    assert (tmp_path / 'a_file').read_text() == 'keep'


# ======================================================================= 10. files follow the umask

@pytest.mark.parametrize('umask', [0o027, 0o002])
def test_a_run_writes_files_the_group_can_read(tmp_path, umask):
    data = make_dataset(tmp_path / 'data', n=2, size=32)
    r = main_py(*run_args(data, tmp_path, '--total_iters', 1, '--save_every', 1, '--sample_every', 0, '--print_every', 0,
                          '--device', 'cpu'), umask=umask)
    assert r.returncode == 0, r.stderr[-2000:]
    files = [os.path.join(d, f) for d, _, fs in os.walk(tmp_path / 'ckpt') for f in fs]
    assert any(f.endswith('_nets_ema.ckpt') for f in files) and any(f.endswith('config.yaml') for f in files)
    for f in files:
        assert stat.S_IMODE(os.stat(f).st_mode) == 0o666 & ~umask, f


# ======================================================================= 11. web demo

def test_serve_refuses_oversized_uploads_and_answers_requests_at_once(run_dir, tmp_path):
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError
    from helpers import Server
    src = make_image(tmp_path / 'src.png', size=40, seed=1)
    other = make_image(tmp_path / 'other.png', size=40, seed=2)
    huge = tmp_path / 'huge.png'
    Image.new('L', (9000, 7000)).save(huge, compress_level=1)
    huge.write_bytes(huge.read_bytes()[:200])  # the header of 63 megapixels: decoding it would fail
    heavy = tmp_path / 'heavy.png'
    heavy.write_bytes(src.read_bytes() + os.urandom(26 * 2 ** 20))  # 26 MB
    server = Server(['--checkpoint_dir', str(run_dir)], tmp_path / 'serve.log').wait()
    try:
        client = Client(server.url, verbose=False)
        with pytest.raises(AppError, match='9000 x 7000 pixels, over the limit of 50 megapixels'):
            client.predict(handle_file(str(huge)), 'dog', 5, 0.7, 1, api_name='/latent')
        with pytest.raises(Exception, match=f'exceeds the maximum file size of {25 * 2 ** 20} bytes'):  # gradio's
            client.predict(handle_file(str(heavy)), 'dog', 5, 0.7, 1, api_name='/latent')
        requests = [(handle_file(str(src)), 'dog', 5, 0.7, 2), (handle_file(str(other)), 'cat', 9, 1.0, 2)]
        alone = [np.asarray(Image.open(client.predict(*q, api_name='/latent'))) for q in requests]
        got = [None, None]

        def ask(i):
            got[i] = np.asarray(Image.open(Client(server.url, verbose=False).predict(*requests[i], api_name='/latent')))
        threads = [threading.Thread(target=ask, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=180)
        assert not np.array_equal(alone[0], alone[1])
        assert all(np.array_equal(a, g) for a, g in zip(alone, got))
        assert server.proc.poll() is None  # still serving
    finally:
        server.stop()


# ======================================================================= 12. download.sh

def test_download_refetches_a_broken_checkpoint_and_an_interrupted_unzip_leaves_nothing(tmp_path):
    import signal
    import time

    import torch
    from helpers import loadable, write_zip
    project, mirror = tmp_path / 'project', tmp_path / 'mirror'
    project.mkdir()
    shutil.copy(os.path.join(ROOT, 'download.sh'), project / 'download.sh')
    target = 'expr/checkpoints/afhq/100000_nets_ema.ckpt'
    (mirror / target).parent.mkdir(parents=True)
    (mirror / target).write_bytes(loadable(target))
    write_zip(str(mirror / 'data' / 'afhq.zip'), {f'afhq/train/cat/{i}.jpg': bytes([i]) * 1000 for i in range(8)})
    env = dict(os.environ, STARGAN_DOWNLOAD_FROM=str(mirror))
    (project / target).parent.mkdir(parents=True)
    (project / target).write_text('<!DOCTYPE html><html>Dropbox: too many requests</html>')  # an earlier "download"
    r = subprocess.run(['bash', 'download.sh', 'afhq-model'], cwd=project, env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0 and 'is there but broken (an HTML page)' in r.stderr, r.stderr
    assert set(torch.load(project / target, weights_only=True)) == {'generator'}
    # a dataset whose unpacking is stopped (SIGTERM) half-way: an unzip that writes one file, then hangs
    stub = tmp_path / 'bin' / 'unzip'
    stub.parent.mkdir()
    stub.write_text(f'''#!/bin/bash
for a in "$@"; do case "$a" in -t*) exec {shutil.which('unzip')} "$@" ;; esac; done
while [ $# -gt 0 ]; do [ "$1" = -d ] && dest=$2; shift; done
mkdir -p "$dest/afhq/train/cat" && echo half > "$dest/afhq/train/cat/0.jpg" && exec sleep 60
''')
    stub.chmod(0o755)
    proc = subprocess.Popen(['bash', 'download.sh', 'afhq-dataset'], cwd=project, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=dict(env, PATH=f'{stub.parent}:{os.environ["PATH"]}'))
    deadline = time.time() + 60
    while not [f for _, _, files in os.walk(project / 'data') for f in files if f == '0.jpg']:
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    assert proc.returncode == 143
    assert os.listdir(project / 'data') == ['afhq.zip']  # the checked download is kept, no half-unpacked folder
    r = subprocess.run(['bash', 'download.sh', 'afhq-dataset'], cwd=project, env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert sorted(os.listdir(project / 'data' / 'afhq' / 'train' / 'cat')) == [f'{i}.jpg' for i in range(8)]
