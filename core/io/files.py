"""Atomic file writes: a crash never leaves a truncated file under the final name.

A written file gets the permissions ``open()`` would give it (``0o666`` less the process's
umask), not the ``0o600`` of a temporary file, so a group sharing a folder can read it.
A write that fails (a full disk, a quota, a file-size limit, an I/O error) leaves no temporary
file and becomes one :class:`~core.errors.UserError` line naming the file, the bytes it needs
and what is free (:func:`atomic_write`, :func:`append_line`).
Also: checks that an output folder can be made, before any work starts.
"""
from __future__ import annotations

import errno
import io
import json
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import IO, Any, TypeAlias, TypeVar

from core.errors import UserError

# a file system path as the functions here take it (``os.fspath`` gives the str)
StrPath: TypeAlias = str | os.PathLike[str]
_P = TypeVar('_P', str, os.PathLike[str])  # a function that returns its path argument returns it as given

_umask_lock = threading.Lock()


def current_umask() -> int:
    """The process's umask, read without changing it where Linux shows it (/proc/self/status);
    elsewhere set and restored at once under a lock."""
    try:
        with open('/proc/self/status', encoding='ascii') as f:
            for line in f:
                if line.startswith('Umask:'):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _umask_lock:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode ``open(path, 'w')`` gives a new file: 0o666 less the umask."""
    return 0o666 & ~current_umask()


def _chmod(fd: int, path: str, mode: int) -> None:
    """The permissions ``mode`` on the open file ``fd`` at ``path``: ``os.fchmod`` where it
    exists (POSIX; Windows from Python 3.13), else ``os.chmod`` on the path."""
    fchmod = getattr(os, 'fchmod', None)
    if fchmod is not None:
        fchmod(fd, mode)
    else:
        os.chmod(path, mode)


# errors that say the file system has no room for the write (ENOSPC), the user's quota is used
# up (EDQUOT, not on every platform) or the file exceeds the process's size limit (EFBIG)
NO_SPACE = frozenset(code for code in (errno.ENOSPC, getattr(errno, 'EDQUOT', None), errno.EFBIG)
                     if code is not None)


class _Counting(io.BufferedWriter):
    """A buffered file that counts the bytes handed to it: what a failed write needed at least
    (all of it for one-shot writes such as text and JSON)."""

    handed = 0

    def write(self, data: Any) -> int:
        self.handed += memoryview(data).nbytes
        return super().write(data)


def write_error(e: BaseException) -> OSError | None:
    """The OSError behind ``e``: ``e`` itself or one it was raised from or while handling (torch's
    zip writer raises a RuntimeError while handling the OSError of a full disk); None if none."""
    seen: set[int] = set()
    cause: BaseException | None = e
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, OSError):
            return cause
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return None


def size_text(n: float) -> str:
    """A byte count for people: ``812 bytes``, ``14.2 KiB``, ``3.07 MiB``, ``1.25 GiB``."""
    if n < 1024:
        return f'{int(n)} bytes'
    for unit in ('KiB', 'MiB', 'GiB', 'TiB'):
        n /= 1024
        if n < 1024 or unit == 'TiB':
            return f'{n:.3g} {unit}' if n < 100 else f'{n:.0f} {unit}'
    raise AssertionError('unreachable')


def free_space(path: StrPath) -> int:
    """Bytes free for this user on the file system of ``path`` (or of its nearest existing folder)."""
    folder = os.path.abspath(path)
    while not os.path.isdir(folder) and os.path.dirname(folder) != folder:
        folder = os.path.dirname(folder)
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return 0


def write_failed(path: StrPath, error: OSError, need: str, fix: str) -> str:
    """The one line of a write of ``path`` that failed with ``error``: for a full disk, a quota
    or a size limit, what the file needs (``need``, e.g. 'about 1.2 GiB') and the space free
    there; then ``fix``."""
    reason = error.strerror or str(error) or type(error).__name__
    if error.errno in NO_SPACE:
        return f'cannot write {path}: {reason}; it needs {need}, with {size_text(free_space(path))} free there: {fix}'
    return f'cannot write {path}: {reason}: {fix}'


FIX = 'free some space (or fix the folder), then run the same command again'


def atomic_write(path: _P, write: Callable[[IO[Any]], object], binary: bool = True,
                 size: int | None = None, fix: str = FIX) -> _P:
    """Calls ``write(f)`` on a temporary file beside ``path``, syncs it, then renames it to ``path``
    (with the permissions of a file that ``open()`` creates, see :func:`file_mode`).

    When writing fails with an OSError (also one that the writer turned into another
    exception, as torch's zip writer does), the temporary file is removed and the error becomes
    a UserError: one line naming ``path``, what it needs (about ``size`` when the caller knows
    it, else at least the bytes handed to the file), the space free, and ``fix``. An earlier
    ``path`` is kept as it was."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix='.' + os.path.basename(path), suffix='.tmp')
    counting = _Counting(io.FileIO(fd, 'w'))
    try:
        with counting if binary else io.TextIOWrapper(counting, encoding='utf-8') as f:
            write(f)
            f.flush()
            _chmod(f.fileno(), tmp, file_mode())
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.remove(tmp)
        error = write_error(e) if isinstance(e, Exception) and not isinstance(e, UserError) else None
        if error is None:
            raise
        need = f'about {size_text(size)}' if size is not None else f'at least {size_text(counting.handed)}'
        raise UserError(write_failed(path, error, need, fix)) from None
    return path


def append_line(path: StrPath, line: str, fix: str = FIX) -> None:
    """Appends ``line`` and a newline to ``path`` (made with ``open()``'s permissions when new):
    the whole line or nothing. When the write fails (a full disk), the file is cut back to its
    previous end and the error is one UserError line, as for :func:`atomic_write`."""
    data = memoryview((line + '\n').encode('utf-8'))
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        end = os.fstat(fd).st_size
        try:
            while data:
                data = data[os.write(fd, data):]
        except OSError as e:
            os.ftruncate(fd, end)
            raise UserError(write_failed(path, e, size_text(len(line.encode('utf-8')) + 1), fix)) from None
    finally:
        os.close(fd)


def write_json(values: Mapping[str, Any], path: _P) -> _P:
    """Writes the dict ``values`` to ``path`` as indented JSON, atomically; returns ``path``."""
    text = json.dumps(values, indent=4, sort_keys=False)
    return atomic_write(path, lambda f: f.write(text), binary=False)


def check_output_dir(path: _P | None, flag: str) -> _P:
    """UserError (one line, naming ``flag``) unless ``path`` is a writable folder or one that can be
    made: its nearest existing ancestor is a folder this process may write in. Creates nothing."""
    if not path:
        raise UserError(f'{flag} is required: an output folder')
    probe = os.path.abspath(path)
    while not os.path.lexists(probe):
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe):
        what = 'is' if probe == os.path.abspath(path) else f"cannot be made: '{probe}' is"
        raise UserError(f"{flag} '{path}' {what} not a folder (a file or a broken link); choose another path")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UserError(f"{flag} '{path}' cannot be written: no write permission on '{probe}'; "
                        f"choose another folder or change its permissions")
    return path


def file_identity(path: StrPath) -> tuple[object, ...]:
    """What a path is, by file: ``(st_dev, st_ino)`` of what it leads to (links followed) when it
    exists, else its real path. Two spellings of one file (a link, or another case on a
    case-insensitive disk as macOS and Windows have) give one identity."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return ('path', os.path.realpath(path))
    if st.st_ino == 0:  # a file system without file numbers (some network shares): the spelling
        return ('path', os.path.realpath(path))
    return ('file', st.st_dev, st.st_ino)


def same_file(a: StrPath, b: StrPath) -> bool:
    """``a`` and ``b`` lead to one file or folder (by file, not by spelling; see :func:`file_identity`)."""
    return file_identity(a) == file_identity(b)


def is_inside(path: StrPath, folder: StrPath) -> bool:
    """``path`` is the folder ``folder`` or lies below it, compared by file, not by spelling:
    ``path`` (real path) or one of its existing ancestors is ``folder``'s file (a link, or
    another case on a case-insensitive disk, is the same folder)."""
    probe, real = os.path.realpath(path), os.path.realpath(folder)
    if probe == real or probe.startswith(real.rstrip(os.sep) + os.sep):  # the same spelling
        return True
    target = file_identity(folder)
    if target[0] == 'path':  # no such folder (or no file numbers): the spelling is all there is
        return False
    while True:
        if os.path.lexists(probe) and file_identity(probe) == target:
            return True
        parent = os.path.dirname(probe)
        if parent == probe:
            return False
        probe = parent


def check_outside(out: StrPath, folder: StrPath, out_flag: str, in_flag: str) -> None:
    """UserError unless the output ``out`` lies outside the input folder ``folder`` (compared by
    file, :func:`is_inside`: links and another case count), so that outputs can never mix with or
    overwrite the inputs."""
    if is_inside(out, folder):
        where = 'is' if same_file(out, folder) else 'lies inside'
        raise UserError(f"{out_flag} '{out}' {where} the input folder {in_flag} '{folder}': outputs would mix "
                        f"with or overwrite the inputs; choose an {out_flag} outside it")


def mirror_paths(paths: Iterable[_P], in_root: StrPath, out_root: StrPath, out_flag: str,
                 inputs: Iterable[StrPath | None] = ()) -> list[tuple[_P, str]]:
    """``[(path, output path)]``: each file of ``paths`` (under ``in_root``) at the same relative
    path under ``out_root``, so two files of one name in two sub-folders never collide. UserError
    when an output would be one of the inputs (``paths`` and ``inputs``)."""
    jobs = [(p, os.path.join(out_root, os.path.relpath(p, in_root))) for p in paths]
    check_no_overwrite(jobs, out_flag, inputs)
    return jobs


def check_no_overwrite(jobs: Sequence[tuple[StrPath, StrPath]], out_flag: str, inputs: Iterable[StrPath | None] = ()) -> None:
    """UserError when an output of ``jobs`` (``[(input, output)]``) is an input file (compared by
    file: a link, or another case on a case-insensitive disk, is the same file)."""
    input_files = {file_identity(p) for p, _ in jobs} | {file_identity(p) for p in inputs if p}
    for _, out in jobs:
        if file_identity(out) in input_files:
            raise UserError(f"{out_flag}: writing '{out}' would overwrite an input image; choose another {out_flag}")


SMALL_FILE_BYTES = 1 << 20  # a configuration file is a few KiB; anything over 1 MiB is not one


def read_small_file(path: str, parse: Callable[[IO[str]], Any], name: str, what: str, fix: str) -> Any:
    """``parse`` of the text file ``path`` (``name``: how messages name the file), read only when it
    is small (``SMALL_FILE_BYTES``). One-line UserError ending in ``fix`` for a file too big, one
    that cannot be read or is not UTF-8, and one nested too deeply to be ``what``; the parser's own
    errors are the caller's."""
    size = os.path.getsize(path)
    if size > SMALL_FILE_BYTES:
        raise UserError(f'{name} is {size} bytes, more than {what} has ({SMALL_FILE_BYTES // 1024} KiB at most); {fix}')
    try:
        with open(path, encoding='utf-8') as f:
            return parse(f)
    except RecursionError:
        raise UserError(f'{name} is nested too deeply to be {what}; {fix}') from None
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f'cannot read {name}: {str(e).splitlines()[0][:200]}; {fix}') from None
