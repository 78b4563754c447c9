"""Downloads what StarGAN v2 needs, as ``download.sh`` does, without bash (Windows, or any
machine with only Python): the same targets, URLs, paths, checks and exit statuses.

    python download.py pretrained-network-celeba-hq  # -> expr/checkpoints/celeba_hq/100000_nets_ema.ckpt
    python download.py pretrained-network-afhq       # -> expr/checkpoints/afhq/100000_nets_ema.ckpt
    python download.py wing                          # -> expr/checkpoints/{wing.ckpt,celeba_lm_mean.npz}
    python download.py celeba-hq-dataset             # -> data/celeba_hq/{train,val}
    python download.py afhq-dataset                  # -> data/afhq/{train,val}
    python download.py afhq-v2-dataset               # -> data/afhq_v2/
    python download.py assets                        # sample photos -> assets/representative/

celeba-hq-model and afhq-model are our older names of the two pretrained networks. Every
file goes to NAME.part first (a broken download resumes from there when run again), is
checked (not empty, not an HTML error page, zips tested member by member, checkpoints loaded
with torch.load, .npz files read with numpy) and only then renamed to NAME; a NAME already
there is checked the same way and fetched again when broken. Archives are unpacked into a
temporary folder beside the target (``data/.unzip.PID.*``), renamed into place when complete;
Ctrl-C, SIGTERM or a failure removes it, and a later run removes one left by a killed run.
Exit status: 0 done, 1 a download failed (the message names the file, its URL and where to put
a copy by hand), 2 unknown argument. ``STARGAN_DOWNLOAD_FROM=DIR``: copy from
``DIR/<target path>`` instead of the network. Only the standard library is needed (torch and
numpy for the checkpoint and .npz checks, skipped with a note without them).
"""
from __future__ import annotations

import os
import shutil
import signal
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from typing import NoReturn

ROOT = os.path.dirname(os.path.abspath(__file__))
DROPBOX = 'https://www.dropbox.com/s'
ASSETS_URL = 'https://github.com/clovaai/stargan-v2/archive/refs/heads/master.zip'

# target -> what it fetches: ('file', url, path), ('dataset', url, name) or ('assets', url, zip path)
TARGETS: dict[str, list[tuple[str, str, str]]] = {
    'pretrained-network-celeba-hq': [('file', f'{DROPBOX}/96fmei6c93o8b8t/100000_nets_ema.ckpt?dl=1',
                                      'expr/checkpoints/celeba_hq/100000_nets_ema.ckpt')],
    'pretrained-network-afhq': [('file', f'{DROPBOX}/etwm810v25h42sn/100000_nets_ema.ckpt?dl=1',
                                 'expr/checkpoints/afhq/100000_nets_ema.ckpt')],
    'wing': [('file', f'{DROPBOX}/tjxpypwpt38926e/wing.ckpt?dl=1', 'expr/checkpoints/wing.ckpt'),
             ('file', f'{DROPBOX}/91fth49gyb7xksk/celeba_lm_mean.npz?dl=1', 'expr/checkpoints/celeba_lm_mean.npz')],
    'celeba-hq-dataset': [('dataset', f'{DROPBOX}/f7pvjij2xlpff59/celeba_hq.zip?dl=1', 'celeba_hq')],
    'afhq-dataset': [('dataset', f'{DROPBOX}/t9l9o3vsx2jai3z/afhq.zip?dl=1', 'afhq')],
    'afhq-v2-dataset': [('dataset', f'{DROPBOX}/vkzjokiwof5h8w6/afhq_v2.zip?dl=1', 'afhq_v2')],
    'assets': [('assets', ASSETS_URL, 'assets/stargan-v2-master.zip')],
}
ALIASES = {'celeba-hq-model': 'pretrained-network-celeba-hq', 'afhq-model': 'pretrained-network-afhq'}
ASSETS_MEMBERS = 'stargan-v2-master/assets/representative/'
RETRIES = 3
CHUNK = 1 << 20


class Failed(Exception):
    """A download that failed: exit status 1 (the message is already printed)."""


def usage() -> str:
    return ('usage: python download.py NAME, NAME one of:\n'
            '  pretrained-network-celeba-hq (alias celeba-hq-model), pretrained-network-afhq (alias afhq-model),\n'
            '  wing, celeba-hq-dataset, afhq-dataset, afhq-v2-dataset, assets')


def err(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def fail(file: str, url: str) -> NoReturn:
    err(f'error: could not download {file} from {url}')
    kept = ''
    if os.path.isfile(file + '.part') and os.path.getsize(file + '.part') > 0:
        kept = f' (the partial copy {file}.part is kept: run again to resume)'
    err(f'  download it by hand and put it at {os.path.join(os.getcwd(), file)}{kept}')
    raise Failed


def loads(path: str, name: str) -> bool:
    """A checkpoint torch.load reads, an .npz numpy reads (True, with a note, without them)."""
    try:
        import numpy as np
        if name.endswith('.ckpt'):
            import torch
    except ImportError:
        err(f'note: torch and numpy not found: {name} was not test-loaded')
        return True
    try:
        if name.endswith('.ckpt'):
            torch.load(path, map_location='cpu', weights_only=True)
        else:
            with np.load(path) as data:
                [data[k] for k in data.files]
    except Exception:
        return False
    return True


def broken(file: str, name: str | None = None) -> str | None:
    """Why ``file`` (to become ``name``) is broken, or None when it passes the checks."""
    name = name or file
    if not os.path.isfile(file) or os.path.getsize(file) == 0:
        return 'empty'
    with open(file, 'rb') as f:
        head = f.read(512).lower()
    if b'<!doctype html' in head or b'<html' in head:
        return 'an HTML page'
    if name.endswith('.zip'):
        try:
            with zipfile.ZipFile(file) as z:
                if z.testzip() is not None:
                    raise zipfile.BadZipFile
        except (zipfile.BadZipFile, OSError, EOFError, ValueError):
            return 'a zip that fails its test (unzip -t)'
    elif name.endswith('.ckpt') and not loads(file, name):
        return 'a checkpoint torch.load cannot read'
    elif name.endswith('.npz') and not loads(file, name):
        return 'an .npz numpy cannot read'
    return None


def _copy_from(url: str, part: str, local: str | None = None) -> None:
    """Appends to ``part`` what ``url`` (or the file ``local``) holds past its size (resuming);
    restarts a file the server will not resume. OSError / urllib errors when it cannot."""
    done = os.path.getsize(part) if os.path.exists(part) else 0
    if local is not None:
        with open(local, 'rb') as src, open(part, 'ab') as dst:
            src.seek(done)
            shutil.copyfileobj(src, dst, CHUNK)
        return
    request = urllib.request.Request(url, headers={'Range': f'bytes={done}-'} if done else {})
    try:
        response = urllib.request.urlopen(request, timeout=60)
    except urllib.error.HTTPError as e:
        if e.code == 416 and done:  # nothing left to resume: the .part is already whole
            return
        raise
    with response:
        resumed = done and response.status == 206
        with open(part, 'ab' if resumed else 'wb') as dst:
            shutil.copyfileobj(response, dst, CHUNK)


def fetch(url: str, file: str) -> None:
    """``url`` to ``file.part`` (resumed), checked, then renamed to ``file``."""
    part = file + '.part'
    if os.path.exists(file):
        why = broken(file)
        if why is None:
            print(f'{file} already there', flush=True)
            return
        err(f'{file} is there but broken ({why}): fetching it again')
        os.remove(file)
    os.makedirs(os.path.dirname(file), exist_ok=True)
    mirror = os.environ.get('STARGAN_DOWNLOAD_FROM')
    local = os.path.join(os.path.abspath(mirror), *file.split('/')) if mirror else None
    if local is not None:
        url = 'file://' + local
    print(f'downloading {file}', flush=True)
    for attempt in range(RETRIES + 1):
        try:
            _copy_from(url, part, local)
            break
        except urllib.error.HTTPError as e:  # the server answered: only its own failures may pass
            if e.code < 500 or attempt == RETRIES:
                fail(file, url)
        except (OSError, ValueError):  # no connection, a time-out, a missing local file
            if local is not None or attempt == RETRIES:
                fail(file, url)
        time.sleep(2 ** attempt)
    why = broken(part, file)
    if why is not None:
        err(f'error: {part} from {url} is not a valid file ({why}); removed it')
        if os.path.exists(part):
            os.remove(part)
        fail(file, url)
    os.replace(part, file)


def _alive(pid: int) -> bool:
    """Whether the process ``pid`` still runs (on Windows without os.kill, which would end it)."""
    if os.name == 'nt':
        import ctypes
        kernel32 = ctypes.windll.kernel32  # type: ignore[attr-defined]
        handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
        if not handle:
            return kernel32.GetLastError() == 5  # access denied: it exists
        code = ctypes.c_ulong()
        kernel32.GetExitCodeProcess(handle, ctypes.byref(code))
        kernel32.CloseHandle(handle)
        return code.value == 259  # STILL_ACTIVE
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale(folder: str) -> None:
    """Temporary folders left in ``folder`` by runs that were killed (their process is gone)."""
    for entry in os.listdir(folder):
        if not entry.startswith('.unzip.') or not os.path.isdir(os.path.join(folder, entry)):
            continue
        pid = entry[len('.unzip.'):].split('.')[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(os.path.join(folder, entry), ignore_errors=True)


def unzip_to(zip_path: str, dest: str, only: str = '') -> str:
    """Unpacks ``zip_path`` (the members under ``only``) into a new temporary folder in ``dest``;
    returns it. The caller removes it (``main`` does on any exit)."""
    os.makedirs(dest, exist_ok=True)
    remove_stale(dest)
    tmp = tempfile.mkdtemp(prefix=f'.unzip.{os.getpid()}.', dir=dest)
    _unpacking.append(tmp)
    try:
        with zipfile.ZipFile(zip_path) as z:
            for member in z.namelist():
                if member.startswith(only):
                    z.extract(member, tmp)
    except (zipfile.BadZipFile, OSError) as e:
        err(f'error: could not unpack {zip_path} ({e})')
        raise Failed from None
    return tmp


_unpacking: list[str] = []  # temporary folders being unpacked into (removed on any exit)


def dataset(url: str, name: str) -> None:
    """data/NAME.zip -> data/NAME/."""
    target = os.path.join('data', name)
    if os.path.isdir(target):
        print(f'data/{name} already there', flush=True)
        return
    fetch(url, f'data/{name}.zip')
    tmp = unzip_to(f'data/{name}.zip', 'data')
    entries = os.listdir(tmp)
    if len(entries) == 1 and entries[0] == name and os.path.isdir(os.path.join(tmp, name)):
        os.replace(os.path.join(tmp, name), target)
    else:
        os.replace(tmp, target)  # the archive has no top folder of that name
    shutil.rmtree(tmp, ignore_errors=True)
    os.remove(f'data/{name}.zip')
    print(f'data/{name} ready', flush=True)


def assets(url: str, zip_path: str) -> None:
    if os.path.isdir('assets/representative'):
        print('assets/representative already there', flush=True)
        return
    fetch(url, zip_path)
    tmp = unzip_to(zip_path, 'assets', ASSETS_MEMBERS)
    os.replace(os.path.join(tmp, *ASSETS_MEMBERS.strip('/').split('/')), 'assets/representative')
    shutil.rmtree(tmp, ignore_errors=True)
    os.remove(zip_path)
    print('assets/representative ready (photos (c) NAVER Corp., CC BY-NC 4.0)', flush=True)


def run(name: str) -> None:
    for kind, url, where in TARGETS[ALIASES.get(name, name)]:
        if kind == 'file':
            fetch(url, where)
        elif kind == 'dataset':
            dataset(url, where)
        else:
            assets(url, where)


def _exit_on(signum: int, frame: object) -> NoReturn:
    raise SystemExit(128 + signum)


def main(argv: list[str]) -> int:
    name = argv[0] if argv else ''
    if name in ('-h', '--help'):
        print(usage())
        return 0
    if name not in TARGETS and name not in ALIASES:
        if name:
            err(f"error: unknown argument '{name}'")
        err(usage())
        return 2
    os.chdir(ROOT)
    for sig in ('SIGTERM', 'SIGHUP'):  # those the platform has (Windows: SIGTERM only)
        if hasattr(signal, sig):
            signal.signal(getattr(signal, sig), _exit_on)
    try:
        run(name)
    except Failed:
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        for tmp in _unpacking:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
