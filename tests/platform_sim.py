"""Windows simulated on Linux, for the tests of the platform code paths: ``fcntl`` cannot be
imported, an ``msvcrt`` module locks files (its ``locking`` made of ``fcntl.flock``, taken
before ``fcntl`` goes), ``os.fchmod`` is gone (Windows before Python 3.13), and so are the
signals Windows lacks (SIGUSR1, SIGHUP, ...).

    python -c "import platform_sim; platform_sim.run_main()" --mode train ...   # main.py under it
"""
import errno
import os
import signal
import sys
import types

# signals a Windows Python does not have (it has SIGINT, SIGTERM, SIGBREAK, SIGABRT, SIGFPE, SIGILL, SIGSEGV)
NOT_ON_WINDOWS = ('SIGUSR1', 'SIGUSR2', 'SIGHUP', 'SIGQUIT', 'SIGKILL', 'SIGALRM', 'SIGPIPE', 'SIGCHLD')


def fake_msvcrt(fcntl_module, calls=None):
    """A module with ``msvcrt.locking``'s behaviour: LK_NBLCK fails with EACCES while another
    open file holds the lock, LK_UNLCK releases it. ``calls`` (a list) records
    ``(mode, position, nbytes)`` of each call."""
    mod = types.ModuleType('msvcrt')
    mod.LK_UNLCK, mod.LK_LOCK, mod.LK_NBLCK, mod.LK_RLCK, mod.LK_NBRLCK = 0, 1, 2, 3, 4

    def locking(fd, mode, nbytes):
        if calls is not None:
            calls.append((mode, os.lseek(fd, 0, os.SEEK_CUR), nbytes))
        if mode == mod.LK_UNLCK:
            fcntl_module.flock(fd, fcntl_module.LOCK_UN)
            return
        try:
            fcntl_module.flock(fd, fcntl_module.LOCK_EX | (0 if mode == mod.LK_LOCK else fcntl_module.LOCK_NB))
        except BlockingIOError:
            raise OSError(errno.EACCES, 'Permission denied') from None

    mod.locking = locking
    return mod


class _Log(list):
    """``calls`` that also go, one line each, to the file ``path`` (for a test of a subprocess)."""

    def __init__(self, path):
        super().__init__()
        self.path = path

    def append(self, call):
        super().append(call)
        with open(self.path, 'a') as f:
            f.write(' '.join(map(str, call)) + '\n')


def install(calls=None):
    """Makes this process look like Windows to the project's code (see the module's text);
    ``PLATFORM_SIM_LOG=FILE`` in the environment: each msvcrt.locking call is written there."""
    import fcntl
    import subprocess  # noqa: F401  (it takes an importable msvcrt for Windows: imported first, as on Linux)
    if calls is None and os.environ.get('PLATFORM_SIM_LOG'):
        calls = _Log(os.environ['PLATFORM_SIM_LOG'])
    sys.modules['msvcrt'] = fake_msvcrt(fcntl, calls)
    sys.modules['fcntl'] = None  # import fcntl: ImportError
    if hasattr(os, 'fchmod'):
        del os.fchmod
    for name in NOT_ON_WINDOWS:
        if hasattr(signal, name):
            delattr(signal, name)


def run_main():
    """``main.py`` with the command line's arguments, under :func:`install`."""
    import runpy
    install()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    sys.argv = [os.path.join(root, 'main.py')] + sys.argv[1:]
    sys.path.insert(0, root)
    runpy.run_path(sys.argv[0], run_name='__main__')
