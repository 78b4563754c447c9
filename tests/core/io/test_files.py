"""core.io.files: atomic writes keep the umask's permissions and turn a full disk into one line
(checkpoints, sample grids, config, JSON, log lines); output folders are checked before work."""
import errno
import json
import os
import stat

import pytest
import torch

import core.io.files as files
from core.errors import UserError
from core.io.ckpt_files import atomic_save
from core.io.files import append_line, atomic_write, check_output_dir, current_umask, write_json
from core.io.images import save_image


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
    monkeypatch.setattr(files, 'open', lambda *a, **k: (_ for _ in ()).throw(OSError('no /proc')), raising=False)
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
        files.check_outside(str(case_insensitive / out), str(src), '--out', '--src')
    assert ("' is the input" in str(e.value)) == (out == 'Photos')
    files.check_outside(str(case_insensitive / 'elsewhere'), str(src), '--out', '--src')  # outside: fine


def test_check_no_overwrite_compares_files_not_spellings(case_insensitive):
    src = case_insensitive / 'photos' / 'a.png'
    with pytest.raises(UserError, match='would overwrite an input'):
        files.check_no_overwrite([(str(src), str(case_insensitive / 'Photos' / 'a.png'))], '--out')
    with pytest.raises(UserError, match='would overwrite an input'):  # the reference, given in another case
        files.check_no_overwrite([(str(case_insensitive / 'x.png'), str(src))], '--out',
                                  inputs=[str(case_insensitive / 'Photos' / 'a.png')])
    files.check_no_overwrite([(str(src), str(case_insensitive / 'Photos' / 'b.png'))], '--out')  # a new file: fine


# ---------------------------------------------------------------------------- a full disk at any save

def _no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, 'No space left on device')


CONFIG = 'img_size: 256\n' * 10
RESULT = {'FID': 12.5}
WRITES = {  # what each save writes, through the one writer: (call, what the message says it needs)
    'config': (lambda path: atomic_write(path, lambda f: f.write(CONFIG), binary=False),
               f'at least {len(CONFIG)} bytes'),
    'json': (lambda path: write_json(RESULT, path), f'at least {len(json.dumps(RESULT, indent=4))} bytes'),
    'sample grid': (lambda path: save_image(torch.zeros(4, 3, 16, 16), 2, path), 'about '),
    'onnx': (lambda path: atomic_write(path, lambda f: f.write(b'\0' * 5000)), f'at least {5000 / 1024:.3g} KiB'),
}


@pytest.mark.parametrize('kind', WRITES)
def test_a_full_disk_at_any_atomic_write_is_one_line_and_keeps_the_old_file(tmp_path, monkeypatch, kind):
    """The disk fills when the data goes out (here at fsync, as NFS reports it): one line naming
    the file, the bytes it needs and the space free; the earlier file is kept, no temporary."""
    write, need = WRITES[kind]
    path = str(tmp_path / ('out.jpg' if kind == 'sample grid' else 'out.txt'))
    with open(path, 'w') as f:
        f.write('earlier')
    monkeypatch.setattr(os, 'fsync', _no_space)
    with pytest.raises(UserError) as e:
        write(path)
    msg = str(e.value)
    assert '\n' not in msg and msg.startswith(f'cannot write {path}: No space left on device; it needs ')
    assert need in msg and 'free there: free some space' in msg
    assert os.listdir(tmp_path) == [os.path.basename(path)]
    assert open(path).read() == 'earlier'


def test_an_error_a_writer_raises_while_handling_a_full_disk_is_one_line(tmp_path):
    """Writers that turn the OSError into their own exception (torch's zip writer raises a
    RuntimeError while handling it) still end in the one line; other errors pass unchanged."""
    def wrapped(f):
        f.write(b'x' * 100)
        try:
            _no_space()
        except OSError:
            raise RuntimeError('unexpected pos 704 vs 598')

    with pytest.raises(UserError, match=r'out.bin: No space left on device; it needs at least 100 bytes'):
        atomic_write(str(tmp_path / 'out.bin'), wrapped)
    with pytest.raises(ValueError, match='not a disk'):
        atomic_write(str(tmp_path / 'out.bin'), lambda f: (_ for _ in ()).throw(ValueError('not a disk')))
    assert os.listdir(tmp_path) == []


def test_a_log_line_on_a_full_disk_is_one_line_and_leaves_no_partial_line(tmp_path, monkeypatch):
    log = tmp_path / 'log.jsonl'
    append_line(str(log), json.dumps({'step': 1}))
    real_write = os.write

    def half_then_full(fd, data):  # half the line fits, then the disk is full
        if len(data) > 4:
            return real_write(fd, bytes(data[:len(data) // 2]))
        raise OSError(errno.ENOSPC, 'No space left on device')

    monkeypatch.setattr(os, 'write', half_then_full)
    line = json.dumps({'step': 2, 'loss': 0.5})
    with pytest.raises(UserError) as e:
        append_line(str(log), line)
    monkeypatch.undo()
    msg = str(e.value)
    assert '\n' not in msg and f'cannot write {log}: No space left on device; it needs {len(line) + 1} bytes' in msg
    assert log.read_text() == '{"step": 1}\n'  # cut back: every line whole
    append_line(str(log), line)
    assert [json.loads(x)['step'] for x in log.read_text().splitlines()] == [1, 2]


@pytest.mark.parametrize('umask', [0o027])
def test_append_line_makes_the_file_open_would(tmp_path, umask):
    old = os.umask(umask)
    try:
        append_line(str(tmp_path / 'log.jsonl'), 'x')
    finally:
        os.umask(old)
    assert mode_of(tmp_path / 'log.jsonl') == 0o666 & ~umask


def test_a_sample_grid_is_written_atomically_in_the_format_of_its_extension(tmp_path):
    from PIL import Image
    grid = torch.rand(4, 3, 8, 8) * 2 - 1
    save_image(grid, 2, str(tmp_path / 'sub' / 'g.png'))
    save_image(grid, 2, tmp_path / 'g.JPG')
    assert Image.open(tmp_path / 'sub' / 'g.png').format == 'PNG' and Image.open(tmp_path / 'g.JPG').format == 'JPEG'
    assert Image.open(tmp_path / 'g.JPG').size == (16, 16)
    with pytest.raises(ValueError, match='unknown image file extension'):
        save_image(grid, 2, str(tmp_path / 'g.notanimage'))
    assert sorted(os.listdir(tmp_path)) == ['g.JPG', 'sub']


def test_read_small_file_reads_small_text_and_refuses_big_undecodable_or_deep_files(tmp_path, monkeypatch):

    ok = tmp_path / 'ok.json'
    ok.write_text('{"a": [1, 2]}')
    assert files.read_small_file(str(ok), json.load, 'ok.json', 'a settings file', 'write it again') == {'a': [1, 2]}
    monkeypatch.setattr(files, 'SMALL_FILE_BYTES', 8)
    with pytest.raises(UserError, match=r'^ok.json is 13 bytes, more than a settings file has \(0 KiB at most\); '
                                        r'write it again$'):
        files.read_small_file(str(ok), json.load, 'ok.json', 'a settings file', 'write it again')
    monkeypatch.undo()
    latin = tmp_path / 'latin.json'
    latin.write_bytes(b'{"a": "\xe9"}')
    with pytest.raises(UserError, match=r'^cannot read latin.json: .*; write it again$'):
        files.read_small_file(str(latin), json.load, 'latin.json', 'a settings file', 'write it again')
    deep = tmp_path / 'deep.json'
    deep.write_text('[' * 100_000 + ']' * 100_000)
    with pytest.raises(UserError, match=r'^deep.json is nested too deeply to be a settings file; write it again$'):
        files.read_small_file(str(deep), json.load, 'deep.json', 'a settings file', 'write it again')
