"""A training process killed with SIGKILL while it writes a checkpoint loses nothing.

A real ``main.py --mode train`` process is paused at a chosen point of its second save
(tests/save_pause.py injects a hook into the save: before a file, or inside one with its
temporary copy half written) and killed there from outside. The previous set stays complete, the cut
one is never taken for a checkpoint, and resuming from the previous set ends with the same
files, bit for bit, as a run that was never interrupted.
"""
import os
import signal
import subprocess
import sys
import time

import pytest
from helpers import ROOT, assert_files_equal, make_dataset, run_args

import main as cli
from core.io.ckpt_files import complete_steps, latest_step

COMMON = ['--total_iters', '6', '--print_every', '0', '--sample_every', '0', '--save_every', '2',
          '--randcrop_prob', '0.5']
KINDS = ('nets', 'nets_ema', 'optims', 'state')
# before the first file, inside the first, between files, inside the last, before the commit
POINTS = ('before_nets', 'in_nets', 'before_optims', 'in_optims', 'before_state', 'in_state')
CUT = 4  # the save that is killed; 2 is the previous complete one

# One thread here and in the killed process: tiny tensors (threads only spin on a loaded
# machine), and the same arithmetic in both, for the bitwise comparison.
pytestmark = pytest.mark.usefixtures('one_thread')


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp('data'))


@pytest.fixture(scope='module')
def straight(one_thread, data, tmp_path_factory):
    """The uninterrupted run."""
    run = tmp_path_factory.mktemp('straight')
    assert cli.main(run_args(data, run, *COMMON)) == 0
    return run / 'ckpt'


def kill_during_save(data, run, point, timeout=300):
    """Starts training in a subprocess, waits until its save of step CUT reaches ``point``,
    SIGKILLs it there."""
    marker = run / 'paused'
    env = dict(os.environ, OMP_NUM_THREADS='1')
    with open(run / 'stderr.txt', 'w') as err:
        proc = subprocess.Popen([sys.executable, os.path.join('tests', 'save_pause.py'), str(CUT), point, str(marker),
                                 *run_args(data, run, *COMMON)], cwd=ROOT, env=env,
                                stdout=subprocess.DEVNULL, stderr=err)
    try:
        deadline = time.monotonic() + timeout
        while not marker.exists():
            assert proc.poll() is None, f'training ended before pausing: {(run / "stderr.txt").read_text()[-2000:]}'
            assert time.monotonic() < deadline, f'the save did not reach {point} in {timeout} s'
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=60) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.slow
@pytest.mark.parametrize('point', POINTS)
def test_sigkill_during_save_loses_nothing(data, straight, tmp_path, capsys, point):
    ckpt = tmp_path / 'ckpt'
    kill_during_save(data, tmp_path, point)
    files = set(os.listdir(ckpt))
    assert {f'000002_{kind}.ckpt' for kind in KINDS} <= files
    assert '000004_state.ckpt' not in files
    temps = [f for f in files if f.endswith('.tmp')]
    assert len(temps) == (1 if point.startswith('in_') else 0), files  # the half-written file
    assert complete_steps(str(ckpt)) == [2] and latest_step(str(ckpt)) == 2

    # the cut set is refused with one line naming the complete one
    assert cli.main(run_args(data, tmp_path, *COMMON, '--resume_iter', str(CUT))) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith('error: checkpoint 4') and '--resume_iter 2' in err[-1], err[-1]

    # resuming from the previous set ends exactly as the uninterrupted run
    assert cli.main(run_args(data, tmp_path, *COMMON, '--resume_iter', '2')) == 0
    for step in (4, 6):
        for kind in ('nets', 'nets_ema', 'optims'):
            assert_files_equal(straight / f'{step:06d}_{kind}.ckpt', ckpt / f'{step:06d}_{kind}.ckpt')
    assert not [f for f in os.listdir(ckpt) if f.endswith('.tmp')]  # the next save removed it
    assert complete_steps(str(ckpt)) == [2, 4, 6]
