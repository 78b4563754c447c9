"""core.fileio: atomic writes keep the umask's permissions; output folders are checked before work."""
import os
import stat

import pytest
import torch

from core import fileio
from core.ckpt import atomic_save
from core.errors import UserError
from core.fileio import atomic_write, check_output_dir, current_umask


@pytest.fixture(params=[0o027, 0o002, 0o077])
def umask(request):
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def mode_of(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_atomic_write_gives_the_mode_open_gives(tmp_path, umask):
    with open(tmp_path / 'plain.txt', 'w') as f:  # what open() makes under this umask
        f.write('x')
    atomic_write(str(tmp_path / 'atomic.txt'), lambda f: f.write('x'), binary=False)
    atomic_save({'a': torch.ones(1)}, str(tmp_path / 'x.ckpt'))
    assert mode_of(tmp_path / 'atomic.txt') == mode_of(tmp_path / 'plain.txt') == 0o666 & ~umask
    assert mode_of(tmp_path / 'x.ckpt') == 0o666 & ~umask
    assert sorted(os.listdir(tmp_path)) == ['atomic.txt', 'plain.txt', 'x.ckpt']  # no temporary left


def test_overwriting_takes_the_current_umask(tmp_path, umask):
    path = tmp_path / 'f.bin'
    old = os.umask(0o077)
    try:
        atomic_write(str(path), lambda f: f.write(b'1'))
    finally:
        os.umask(old)
    assert mode_of(path) == 0o600
    atomic_write(str(path), lambda f: f.write(b'2'))
    assert mode_of(path) == 0o666 & ~umask and path.read_bytes() == b'2'


def test_umask_read_without_proc(monkeypatch, umask):
    assert current_umask() == umask
    monkeypatch.setattr(fileio, 'open', lambda *a, **k: (_ for _ in ()).throw(OSError('no /proc')), raising=False)
    assert current_umask() == umask
    assert os.umask(umask) == umask  # left as it was


def test_check_output_dir_accepts_what_can_be_made_and_creates_nothing(tmp_path):
    assert check_output_dir(str(tmp_path / 'a' / 'b'), '--out') == str(tmp_path / 'a' / 'b')
    assert check_output_dir(str(tmp_path), '--out') == str(tmp_path)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize('where', ['itself', 'parent'])
def test_check_output_dir_refuses_a_file_in_the_way(tmp_path, where):
    (tmp_path / 'f').write_text('keep')
    path = tmp_path / 'f' if where == 'itself' else tmp_path / 'f' / 'sub'
    with pytest.raises(UserError, match='--result_dir .* not a folder') as e:
        check_output_dir(str(path), '--result_dir')
    assert '\n' not in str(e.value)
    assert (tmp_path / 'f').read_text() == 'keep'


def test_check_output_dir_refuses_a_read_only_folder(tmp_path, monkeypatch):
    ro = tmp_path / 'ro'
    ro.mkdir(mode=0o500)
    real_access = os.access
    # root may write anywhere: the permission answer is the kernel's for a normal user
    monkeypatch.setattr(os, 'access', lambda p, m: False if os.path.abspath(p) == str(ro) else real_access(p, m))
    with pytest.raises(UserError, match="no write permission on '.*ro'"):
        check_output_dir(str(ro / 'out'), '--out')
    assert os.listdir(ro) == []


def test_atomic_write_without_fchmod(tmp_path, umask, monkeypatch):
    """Windows before Python 3.13 has no os.fchmod: the mode is set on the path instead."""
    monkeypatch.delattr(os, 'fchmod')
    atomic_write(str(tmp_path / 'a.txt'), lambda f: f.write('x'), binary=False)
    atomic_save({'a': torch.ones(1)}, str(tmp_path / 'x.ckpt'))
    assert mode_of(tmp_path / 'a.txt') == mode_of(tmp_path / 'x.ckpt') == 0o666 & ~umask
    assert (tmp_path / 'a.txt').read_text() == 'x'
    assert sorted(os.listdir(tmp_path)) == ['a.txt', 'x.ckpt']


@pytest.fixture
def case_insensitive(tmp_path, monkeypatch):
    """A simulated case-insensitive disk (macOS, Windows): 'Photos' is the folder 'photos' (here a
    link), and realpath keeps the spelling typed, as it does there."""
    (tmp_path / 'photos' / 'sub').mkdir(parents=True)
    (tmp_path / 'photos' / 'a.png').write_bytes(b'png')
    os.symlink(tmp_path / 'photos', tmp_path / 'Photos')
    monkeypatch.setattr(os.path, 'realpath', lambda p, **k: os.path.abspath(p))
    return tmp_path


@pytest.mark.parametrize('out', ['Photos', 'Photos/sub', 'Photos/new/deeper'])
def test_check_outside_compares_files_not_spellings(case_insensitive, out):
    src = case_insensitive / 'photos'
    with pytest.raises(UserError, match="--out .* the input folder --src") as e:
        fileio.check_outside(str(case_insensitive / out), str(src), '--out', '--src')
    assert ("' is the input" in str(e.value)) == (out == 'Photos')
    fileio.check_outside(str(case_insensitive / 'elsewhere'), str(src), '--out', '--src')  # outside: fine


def test_check_no_overwrite_compares_files_not_spellings(case_insensitive):
    src = case_insensitive / 'photos' / 'a.png'
    with pytest.raises(UserError, match='would overwrite an input'):
        fileio.check_no_overwrite([(str(src), str(case_insensitive / 'Photos' / 'a.png'))], '--out')
    with pytest.raises(UserError, match='would overwrite an input'):  # the reference, given in another case
        fileio.check_no_overwrite([(str(case_insensitive / 'x.png'), str(src))], '--out',
                                  inputs=[str(case_insensitive / 'Photos' / 'a.png')])
    fileio.check_no_overwrite([(str(src), str(case_insensitive / 'Photos' / 'b.png'))], '--out')  # a new file: fine
