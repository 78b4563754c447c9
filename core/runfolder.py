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
import shutil
import socket
import time
from typing import Any, Self

from core.errors import UserError
from core.fileio import StrPath

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
    not taken, with a warning.)"""

    def __init__(self, folder: StrPath) -> None:
        self.path = os.path.join(folder, LOCK_NAME)
        self.fd: int | None = None

    def __enter__(self) -> Self:
        os.makedirs(os.path.dirname(self.path) or '.', exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
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
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({'pid': os.getpid(), 'host': socket.gethostname(),
                                 'since': datetime.datetime.now().isoformat(timespec='seconds')}).encode())
        self.fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None:
            os.close(self.fd)  # releases the lock (the file stays: it names the last holder)
            self.fd = None


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


def gib(n: float) -> str:
    return f'{n / 2 ** 30:.2f} GiB'


def check_free_space(folder: StrPath, needed: int, what: str) -> None:
    """UserError unless the file system of ``folder`` has ``needed`` bytes free."""
    free = shutil.disk_usage(nearest_existing(folder)).free
    if free < needed:
        raise UserError(f'{folder} has {gib(free)} free but {what} needs about {gib(needed)}: '
                        f'free some space (or use --keep_last N, or another --checkpoint_dir)')
