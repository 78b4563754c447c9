"""What a long training run checks and holds in its run folder (``--checkpoint_dir``):
one writer at a time (a lock that dies with its process), the checks made before the
first iteration, and the free space a checkpoint set needs.
"""
from __future__ import annotations

import datetime
import errno
import importlib
import json
import os
import socket
import stat
import time
from typing import Any, Self

from core.errors import UserError
from core.io.files import StrPath, free_space, size_text

LOCK_NAME = '.lock'
# errno of "another process holds the lock": fcntl.flock EWOULDBLOCK/EAGAIN, msvcrt.locking EACCES/EDEADLK
_HELD = frozenset({errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES, errno.EDEADLK})
# Windows locks a byte range, and other processes cannot read locked bytes: the lock takes one
# byte far past the holder's text, so that a second run can still read who holds it
_WINDOWS_LOCK_BYTE = 1 << 20


def _lock_module() -> tuple[str, Any]:
    """``('fcntl', module)`` (POSIX) or ``('msvcrt', module)`` (Windows); OSError (ENOLCK) where
    neither exists."""
    for name in ('fcntl', 'msvcrt'):
        try:
            return name, importlib.import_module(name)
        except ImportError:
            continue
    raise OSError(errno.ENOLCK, 'no file locking on this platform')


def lock_file(fd: int, wait: bool = False) -> None:
    """An exclusive lock on the open file ``fd``: POSIX ``fcntl.flock``, Windows
    ``msvcrt.locking``; both end with the process, however it ends. Without ``wait``, OSError
    with an errno of ``_HELD`` when another holds it; with ``wait``, waits for it."""
    name, mod = _lock_module()
    if name == 'fcntl':
        mod.flock(fd, mod.LOCK_EX | (0 if wait else mod.LOCK_NB))
        return
    where = os.lseek(fd, 0, os.SEEK_CUR)
    try:
        while True:
            os.lseek(fd, _WINDOWS_LOCK_BYTE, os.SEEK_SET)
            try:
                mod.locking(fd, mod.LK_NBLCK, 1)
                return
            except OSError as e:
                if not wait or e.errno not in _HELD:
                    raise
            time.sleep(0.1)
    finally:
        os.lseek(fd, where, os.SEEK_SET)


def unlock_file(fd: int) -> None:
    """Releases :func:`lock_file`'s lock (closing ``fd`` releases it too)."""
    name, mod = _lock_module()
    if name == 'fcntl':
        mod.flock(fd, mod.LOCK_UN)
        return
    where = os.lseek(fd, 0, os.SEEK_CUR)
    try:
        os.lseek(fd, _WINDOWS_LOCK_BYTE, os.SEEK_SET)
        mod.locking(fd, mod.LK_UNLCK, 1)
    finally:
        os.lseek(fd, where, os.SEEK_SET)


class RunLock:
    """An exclusive lock (:func:`lock_file`) on ``FOLDER/.lock`` for as long as the run trains. The kernel
    releases it when the process ends in any way (SIGKILL, a crash, a reboot), so a stale lock
    never blocks a restart; the file itself names the holder (pid, host, since) for the
    message a second run prints. (On a network file system without lock support the lock is
    not taken, with a warning.) The lock never follows a symbolic link and never writes into
    a file it did not make: a link, a hard-linked file or one holding other data is refused
    with one line, before anything is written; the holder's text goes in once the lock is
    held."""

    def __init__(self, folder: StrPath) -> None:
        self.path = os.path.join(folder, LOCK_NAME)
        self.fd: int | None = None

    def __enter__(self) -> Self:
        os.makedirs(os.path.dirname(self.path) or '.', exist_ok=True)
        fd = _open_lock_file(self.path)
        try:
            lock_file(fd)
        except OSError as e:
            if e.errno in _HELD:
                holder = _read_holder(fd)
                os.close(fd)
                raise UserError(f'{os.path.dirname(self.path)} is in use by another training run ({holder}); '
                                f'wait for it, stop it, or give this run another --checkpoint_dir') from None
            os.close(fd)  # no locks on this file system
            print(f'warning: cannot lock {self.path} ({e.strerror}); make sure no other run trains into this folder')
            return self
        if not _ours(fd):  # a file this project did not write: never emptied nor overwritten
            os.close(fd)
            raise UserError(f'{self.path} is not a lock file of this project (it holds other data, or is a hard '
                            f'link to another file): move it out of the folder, then run the same command again')
        os.ftruncate(fd, 0)  # held, and ours: the text of the previous holder goes
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, json.dumps({'pid': os.getpid(), 'host': socket.gethostname(),
                                 'since': datetime.datetime.now().isoformat(timespec='seconds')}).encode())
        self.fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None:
            os.close(self.fd)  # releases the lock (the file stays: it names the last holder)
            self.fd = None


def _open_lock_file(path: str) -> int:
    """The lock file opened for reading and writing, made when absent (never emptied here), and
    never through a symbolic link: a link named ``.lock`` is refused with one line, as is
    anything but a regular file. (Where ``O_NOFOLLOW`` does not exist, Windows, the link is
    looked for before opening.)"""
    def link_refused() -> UserError:
        return UserError(f'{path} is a symbolic link (to {os.readlink(path)}): a run never writes through one; '
                         f'remove the link (the run makes its own lock file), then run the same command again')

    if not hasattr(os, 'O_NOFOLLOW') and os.path.islink(path):
        raise link_refused()
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, 'O_NOFOLLOW', 0) | getattr(os, 'O_CLOEXEC', 0), 0o666)
    except OSError as e:
        if os.path.islink(path):
            raise link_refused() from None
        raise UserError(f'cannot open the lock file {path}: {e.strerror or e}; '
                        f'choose a writable --checkpoint_dir') from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise UserError(f'{path} is not a regular file; remove it (the run makes its own lock file), '
                        f'then run the same command again')
    return fd


def _ours(fd: int) -> bool:
    """Whether the open lock file is one this project wrote: a single link to it (a hard link
    would be another file's data too), and empty or holding a holder's JSON."""
    info = os.fstat(fd)
    if info.st_nlink > 1:
        return False
    if info.st_size == 0:
        return True
    if info.st_size > 4096:
        return False
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        return set(json.loads(os.read(fd, 4096).decode())) == {'pid', 'host', 'since'}
    except (OSError, ValueError, TypeError):
        return False


def _read_holder(fd: int) -> str:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        info = json.loads(os.read(fd, 4096).decode() or '{}')
        return f"pid {info['pid']} on {info['host']} since {info['since']}"
    except (OSError, ValueError, KeyError):
        return 'holder unknown'


def nearest_existing(path: StrPath) -> str:
    """``path`` or its nearest ancestor that exists."""
    path = os.path.abspath(path)
    while not os.path.exists(path):
        path = os.path.dirname(path)
    return path


def check_writable(path: StrPath, flag: str) -> None:
    """UserError naming ``flag`` unless ``path`` is (or can be created as) a writable folder.
    Nothing is created."""
    existing = nearest_existing(path)
    if not os.path.isdir(existing):
        raise UserError(f'{flag} {path}: {existing} is a file, not a folder; choose another {flag}')
    if not os.access(existing, os.W_OK | os.X_OK):
        what = 'folder' if existing == os.path.abspath(path) else f'folder (it would be made inside {existing})'
        raise UserError(f'{flag} {path}: cannot write to this {what}; choose a writable {flag}')


def check_free_space(folder: StrPath, needed: int, what: str) -> None:
    """UserError unless the file system of ``folder`` has ``needed`` bytes free."""
    free = free_space(folder)
    if free < needed:
        raise UserError(f'{folder} has {size_text(free)} free but {what} needs about {size_text(needed)}: '
                        f'free some space (or use --keep_last N, or another --checkpoint_dir)')
