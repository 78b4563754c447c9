"""core/runfolder.py: the run lock on POSIX (fcntl) and on Windows (msvcrt, simulated here:
tests/platform_sim.py); without either, the run trains unlocked with a warning."""
import fcntl
import json
import os
import subprocess
import sys

import pytest

import platform_sim
from core import runfolder
from core.errors import UserError
from core.runfolder import RunLock
from helpers import ROOT


@pytest.fixture
def windows(monkeypatch):
    """fcntl cannot be imported; msvcrt locks (simulated); returns the msvcrt calls."""
    calls = []
    monkeypatch.setitem(sys.modules, 'msvcrt', platform_sim.fake_msvcrt(fcntl, calls))
    monkeypatch.setitem(sys.modules, 'fcntl', None)
    return calls


def test_modules_import_without_fcntl():
    code = ("import sys; sys.modules['fcntl'] = None\n"
            "import core.runfolder, core.demo_data, core.training, core.ckpt, core.fileio\n"
            "print('imported')")
    done = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == 'imported', done.stderr[-2000:]


@pytest.mark.parametrize('platform', ['posix', 'windows'])
def test_second_run_is_refused_naming_the_holder(tmp_path, request, platform):
    calls = request.getfixturevalue('windows') if platform == 'windows' else None
    with RunLock(tmp_path) as first:
        holder = json.loads((tmp_path / '.lock').read_text())  # readable while locked
        assert holder['pid'] == os.getpid()
        with pytest.raises(UserError, match=f"in use by another training run \\(pid {os.getpid()} on "):
            with RunLock(tmp_path):
                pass
        assert first.fd is not None
    with RunLock(tmp_path) as again:  # released when the first ends
        assert again.fd is not None
    if calls is not None:  # Windows: one byte, past the holder's text, so that it stays readable
        assert calls and all(n == 1 and pos == runfolder._WINDOWS_LOCK_BYTE for _, pos, n in calls)
        assert json.loads((tmp_path / '.lock').read_text())['pid'] == os.getpid()  # the text is at the start


def test_lock_file_waits_and_unlocks_on_windows(tmp_path, windows):
    path = str(tmp_path / 'f')
    a = os.open(path, os.O_RDWR | os.O_CREAT)
    b = os.open(path, os.O_RDWR)
    try:
        os.lseek(a, 3, os.SEEK_SET)
        runfolder.lock_file(a, wait=True)
        assert os.lseek(a, 0, os.SEEK_CUR) == 3  # the file position is kept
        with pytest.raises(OSError) as e:
            runfolder.lock_file(b)
        assert e.value.errno in runfolder._HELD
        runfolder.unlock_file(a)
        runfolder.lock_file(b)
    finally:
        os.close(a)
        os.close(b)


def test_no_locking_at_all_trains_unlocked_with_a_warning(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, 'fcntl', None)
    monkeypatch.setitem(sys.modules, 'msvcrt', None)
    with RunLock(tmp_path) as lock:
        assert lock.fd is None
    assert 'warning: cannot lock' in capsys.readouterr().out


def test_demo_dataset_under_the_windows_lock(tmp_path, windows):
    from core.demo_data import make_shapes_dataset
    info = make_shapes_dataset(tmp_path / 'd', img_size=16, n_train=2, n_val=1)
    assert info['generated'] and len(os.listdir(tmp_path / 'd' / 'train')) > 0
    assert [mode for mode, _, _ in windows] == [2, 0]  # locked, then unlocked
    assert make_shapes_dataset(tmp_path / 'd', img_size=16, n_train=2, n_val=1)['generated'] is False
