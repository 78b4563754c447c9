"""core/io/run_folder.py: the run lock on POSIX (fcntl) and on Windows (msvcrt, simulated here:
tests/platform_sim.py); without either, the run trains unlocked with a warning. The lock names
its holder, never follows a symbolic link and never empties or overwrites a file it did not make."""
import fcntl
import json
import os
import subprocess
import sys

import platform_sim
import pytest
from helpers import ROOT

import core.io.run_folder as run_folder
from core.errors import UserError
from core.io.run_folder import LOCK_NAME, RunLock


@pytest.fixture
def windows(monkeypatch):
    """fcntl cannot be imported; msvcrt locks (simulated); returns the msvcrt calls."""
    calls = []
    monkeypatch.setitem(sys.modules, 'msvcrt', platform_sim.fake_msvcrt(fcntl, calls))
    monkeypatch.setitem(sys.modules, 'fcntl', None)
    return calls


def test_modules_import_without_fcntl():
    code = ("import sys; sys.modules['fcntl'] = None\n"
            "import core.io.run_folder, core.datasets.demo_shapes, core.train.loop, core.io.ckpt_files, core.io.files\n"
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
        assert calls and all(n == 1 and pos == run_folder._WINDOWS_LOCK_BYTE for _, pos, n in calls)
        assert json.loads((tmp_path / '.lock').read_text())['pid'] == os.getpid()  # the text is at the start


def test_lock_file_waits_and_unlocks_on_windows(tmp_path, windows):
    path = str(tmp_path / 'f')
    a = os.open(path, os.O_RDWR | os.O_CREAT)
    b = os.open(path, os.O_RDWR)
    try:
        os.lseek(a, 3, os.SEEK_SET)
        run_folder.lock_file(a, wait=True)
        assert os.lseek(a, 0, os.SEEK_CUR) == 3  # the file position is kept
        with pytest.raises(OSError) as e:
            run_folder.lock_file(b)
        assert e.value.errno in run_folder._HELD
        run_folder.unlock_file(a)
        run_folder.lock_file(b)
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
    from core.datasets.demo_shapes import make_shapes_dataset
    info = make_shapes_dataset(tmp_path / 'd', img_size=16, n_train=2, n_val=1)
    assert info['generated'] and len(os.listdir(tmp_path / 'd' / 'train')) > 0
    assert [mode for mode, _, _ in windows] == [2, 0]  # locked, then unlocked
    assert make_shapes_dataset(tmp_path / 'd', img_size=16, n_train=2, n_val=1)['generated'] is False


def test_the_lock_names_its_holder_and_is_reused_by_the_next_run(tmp_path):
    with RunLock(str(tmp_path)):
        holder = json.loads((tmp_path / LOCK_NAME).read_text())
        assert holder['pid'] == os.getpid() and set(holder) == {'pid', 'host', 'since'}
        with pytest.raises(UserError, match=f'in use by another training run \\(pid {os.getpid()} on '):
            with RunLock(str(tmp_path)):
                pass
    (tmp_path / LOCK_NAME).write_text(json.dumps({'pid': 12345678, 'host': 'elsewhere', 'since': 'long ago'}))
    with RunLock(str(tmp_path)):  # the previous holder's text is replaced, from the start of the file
        assert json.loads((tmp_path / LOCK_NAME).read_bytes())['pid'] == os.getpid()
    (tmp_path / LOCK_NAME).write_text('')  # an empty lock file (a run killed before it wrote)
    with RunLock(str(tmp_path)):
        assert json.loads((tmp_path / LOCK_NAME).read_text())['pid'] == os.getpid()


@pytest.mark.parametrize('nofollow', [True, False], ids=['posix', 'no O_NOFOLLOW (Windows)'])
@pytest.mark.parametrize('target', ['file', 'absent'])
def test_a_lock_that_is_a_symbolic_link_is_refused_and_its_target_kept(tmp_path, target, nofollow, monkeypatch):
    """``.lock -> ../file`` left ``file`` holding only the lock's text; a link to nothing
    made the file it points to. Also where ``os.O_NOFOLLOW`` does not exist."""
    if not nofollow:
        monkeypatch.delattr(os, 'O_NOFOLLOW')
    run = tmp_path / 'run'
    run.mkdir()
    (tmp_path / 'file').write_text('precious data')
    os.symlink(os.path.join('..', target), run / LOCK_NAME)
    with pytest.raises(UserError, match=f'{LOCK_NAME} is a symbolic link .*remove the link') as e:
        with RunLock(str(run)):
            pass
    assert '\n' not in str(e.value)
    assert (tmp_path / 'file').read_text() == 'precious data' and not (tmp_path / 'absent').exists()
    assert os.path.islink(run / LOCK_NAME)


@pytest.mark.parametrize('what', ['hard link', 'other data', 'folder'])
def test_a_lock_file_the_project_did_not_make_is_left_as_it_is(tmp_path, what):
    run = tmp_path / 'run'
    run.mkdir()
    (tmp_path / 'file').write_text('precious data')
    if what == 'hard link':
        os.link(tmp_path / 'file', run / LOCK_NAME)
    elif what == 'other data':
        (run / LOCK_NAME).write_text('precious data')
    else:
        (run / LOCK_NAME).mkdir()
    with pytest.raises(UserError) as e:
        with RunLock(str(run)):
            pass
    assert '\n' not in str(e.value) and str(run / LOCK_NAME) in str(e.value)
    assert (tmp_path / 'file').read_text() == 'precious data'
    if what != 'folder':
        assert (run / LOCK_NAME).read_text() == 'precious data'
    with RunLock(str(tmp_path / 'elsewhere')):  # and a lock where nothing is in the way works
        pass
