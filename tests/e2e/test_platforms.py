"""Windows, simulated on Linux (tests/platform_sim.py: no fcntl, an msvcrt that locks, no
os.fchmod, no SIGUSR1 or SIGHUP): a whole tiny run of main.py, train, sample, translate and
export, in subprocesses, gives what it gives on Linux."""
import json
import os
import stat
import subprocess
import sys

import pytest
from helpers import ROOT, TESTS, make_dataset, run_args
from PIL import Image

pytestmark = pytest.mark.slow  # four main.py subprocesses

SIMULATED = 'import platform_sim; platform_sim.run_main()'


def main_py(*args, log, simulated=True):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, TESTS]), PLATFORM_SIM_LOG=str(log), OMP_NUM_THREADS='1')
    head = ['-c', SIMULATED] if simulated else [os.path.join(ROOT, 'main.py')]
    done = subprocess.run([sys.executable, *head, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def test_the_simulation_takes_away_what_windows_lacks(tmp_path):
    probe = ("import platform_sim, os, signal, sys; platform_sim.install()\n"
             "try:\n    import fcntl\nexcept ImportError:\n    print('no fcntl')\n"
             "print(hasattr(os, 'fchmod'), hasattr(signal, 'SIGUSR1'), hasattr(signal, 'SIGTERM'))")
    env = dict(os.environ, PYTHONPATH=TESTS)
    out = subprocess.run([sys.executable, '-c', probe], env=env, capture_output=True, text=True, timeout=60).stdout
    assert out.split('\n')[:2] == ['no fcntl', 'False False True']


def test_train_sample_translate_export_without_fcntl_fchmod_sigusr1(tmp_path):
    data = make_dataset(tmp_path / 'data', n=4)
    log = tmp_path / 'msvcrt.log'
    umask = os.umask(0o027)
    try:
        main_py(*run_args(data, tmp_path, '--total_iters', '2', '--print_every', '1', '--sample_every', '2',
                          '--save_every', '2'), log=log)
    finally:
        os.umask(umask)
    ckpt = tmp_path / 'ckpt'
    for kind in ('nets', 'nets_ema', 'optims', 'state'):  # atomic writes without os.fchmod: the umask's mode
        assert stat.S_IMODE(os.stat(ckpt / f'000002_{kind}.ckpt').st_mode) == 0o640
    assert json.loads((ckpt / '.lock').read_text())['pid'] > 0  # the run lock, taken through msvcrt
    calls = [line.split() for line in log.read_text().splitlines()]
    assert calls and calls[0][0] == '2' and {c[2] for c in calls} == {'1'}  # LK_NBLCK of one byte
    assert sorted(os.listdir(tmp_path / 'samples'))[0].startswith('000002_')

    run = ['--num_workers', '0', '--checkpoint_dir', str(ckpt)]
    main_py('--mode', 'sample', *run, '--src_dir', str(data / 'val'), '--ref_dir', str(data / 'val'),
            '--val_batch_size', '2', '--num_outs_per_domain', '1', '--sample_outputs', 'reference',
            '--result_dir', str(tmp_path / 'sampled'), log=log)
    assert Image.open(tmp_path / 'sampled' / 'reference.jpg').size[0] > 32
    main_py('--mode', 'translate', *run, '--src', str(data / 'val' / 'cat'), '--trg_domain', 'dog',
            '--out', str(tmp_path / 'translated'), log=log)
    assert sorted(os.listdir(tmp_path / 'translated')) == sorted(os.listdir(data / 'val' / 'cat'))
    main_py('--mode', 'export', '--format', 'hf', *run, '--result_dir', str(tmp_path / 'hf'), log=log)
    assert {'config.json', 'model.safetensors'} <= set(os.listdir(tmp_path / 'hf'))
    # what Linux gives from the same run: the same translation, byte for byte
    main_py('--mode', 'translate', *run, '--src', str(data / 'val' / 'cat'), '--trg_domain', 'dog',
            '--out', str(tmp_path / 'linux'), log=log, simulated=False)
    for name in os.listdir(tmp_path / 'linux'):
        assert (tmp_path / 'linux' / name).read_bytes() == (tmp_path / 'translated' / name).read_bytes()
