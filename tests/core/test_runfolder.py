"""core.runfolder: the run lock names its holder, never follows a symbolic link and never
empties or overwrites a file it did not make."""
import json
import os

import pytest

from core.errors import UserError
from core.runfolder import LOCK_NAME, RunLock


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


@pytest.mark.parametrize('target', ['file', 'absent'])
def test_a_lock_that_is_a_symbolic_link_is_refused_and_its_target_kept(tmp_path, target):
    """``.lock -> ../file`` left ``file`` holding only the lock's text; a link to nothing
    made the file it points to."""
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
