"""download.sh and download.py (the same without bash) without the network:
STARGAN_DOWNLOAD_FROM points them at a local folder laid out like the targets, so argument
handling, exit codes, target paths, the .part files, resuming, the checks of broken files and
interrupted unpacking are tested through the scripts' real download path, each test for both."""
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import zipfile

import pytest
from helpers import ROOT, loadable, write_zip

pytestmark = pytest.mark.slow  # each test runs download.sh in a subprocess


# official argument (and our alias) -> the files it must leave, relative to the project root
FILES = {
    'pretrained-network-celeba-hq': ['expr/checkpoints/celeba_hq/100000_nets_ema.ckpt'],
    'pretrained-network-afhq': ['expr/checkpoints/afhq/100000_nets_ema.ckpt'],
    'celeba-hq-model': ['expr/checkpoints/celeba_hq/100000_nets_ema.ckpt'],
    'afhq-model': ['expr/checkpoints/afhq/100000_nets_ema.ckpt'],
    'wing': ['expr/checkpoints/wing.ckpt', 'expr/checkpoints/celeba_lm_mean.npz'],
}
DATASETS = {'celeba-hq-dataset': 'celeba_hq', 'afhq-dataset': 'afhq', 'afhq-v2-dataset': 'afhq_v2'}


@pytest.fixture
def mirror(tmp_path):
    """A local folder holding every file download.sh fetches, at its target path."""
    src = tmp_path / 'mirror'
    for files in FILES.values():
        for f in files:
            (src / f).parent.mkdir(parents=True, exist_ok=True)
            (src / f).write_bytes(loadable(f))
    write_zip(src / 'data' / 'celeba_hq.zip', {'celeba_hq/train/female/1.jpg': b'a', 'celeba_hq/val/male/2.jpg': b'b'})
    write_zip(src / 'data' / 'afhq.zip', {'afhq/train/cat/1.jpg': b'c', 'afhq/val/dog/2.jpg': b'd'})
    write_zip(src / 'data' / 'afhq_v2.zip', {'train/cat/1.png': b'e', 'test/wild/2.png': b'f'})  # no top folder
    write_zip(src / 'assets' / 'stargan-v2-master.zip', {
        'stargan-v2-master/assets/representative/celeba_hq/src/female/1.jpg': b'g',
        'stargan-v2-master/assets/teaser.jpg': b'h', 'stargan-v2-master/main.py': b'i'})
    return src


@pytest.fixture(params=['download.sh', 'download.py'])
def project(tmp_path, request):
    """A project folder holding one of the two scripts."""
    proj = tmp_path / 'project'
    proj.mkdir()
    shutil.copy(os.path.join(ROOT, request.param), proj / request.param)
    return proj


def command(project, *args):
    if (project / 'download.sh').exists():
        return ['bash', str(project / 'download.sh'), *args]
    return [sys.executable, str(project / 'download.py'), *args]


def run(project, *args, mirror=None):
    env = dict(os.environ)
    env.pop('STARGAN_DOWNLOAD_FROM', None)
    if mirror is not None:
        env['STARGAN_DOWNLOAD_FROM'] = str(mirror)
    return subprocess.run(command(project, *args), cwd='/', env=env, capture_output=True, text=True, timeout=60)


def leftovers(folder):
    return [os.path.join(d, f) for d, dirs, files in os.walk(folder) for f in files + dirs
            if f.endswith('.part') or f.startswith('.unzip')]


@pytest.mark.parametrize('name', sorted(FILES))
def test_network_arguments_fill_the_official_paths(project, mirror, name):
    r = run(project, name, mirror=mirror)
    assert r.returncode == 0, r.stderr
    for f in FILES[name]:
        assert (project / f).read_bytes() == (mirror / f).read_bytes()
    assert leftovers(project) == []


@pytest.mark.parametrize('name', sorted(DATASETS))
def test_dataset_arguments_unpack_into_data(project, mirror, name):
    r = run(project, name, mirror=mirror)
    assert r.returncode == 0, r.stderr
    folder = project / 'data' / DATASETS[name]
    with zipfile.ZipFile(mirror / 'data' / f'{DATASETS[name]}.zip') as z:
        for member in z.namelist():
            rel = member[len(DATASETS[name]) + 1:] if member.startswith(DATASETS[name] + '/') else member
            assert (folder / rel).read_bytes() == z.read(member)
    assert sorted(os.listdir(project / 'data')) == [DATASETS[name]]  # the zip is removed, nothing half-done left


def test_assets_are_the_official_repositorys_representative_folder(project, mirror):
    r = run(project, 'assets', mirror=mirror)
    assert r.returncode == 0, r.stderr
    assert (project / 'assets' / 'representative' / 'celeba_hq' / 'src' / 'female' / '1.jpg').read_bytes() == b'g'
    assert sorted(os.listdir(project / 'assets')) == ['representative']


@pytest.mark.parametrize('args', [['pretrained-network'], ['--mode'], []])
def test_unknown_argument_lists_the_arguments_and_exits_2(project, args):
    r = run(project, *args)
    assert r.returncode == 2
    for name in ('pretrained-network-celeba-hq', 'pretrained-network-afhq', 'wing', 'celeba-hq-dataset',
                 'afhq-dataset', 'afhq-v2-dataset', 'assets', 'celeba-hq-model', 'afhq-model'):
        assert name in r.stderr
    assert not (project / 'expr').exists() and not (project / 'data').exists()


def test_a_partial_download_is_resumed(project, mirror):
    target = 'expr/checkpoints/wing.ckpt'
    full = (mirror / target).read_bytes()
    (mirror / target).write_bytes(b'Y' * 1000 + full[1000:])  # the source's first bytes now differ ...
    (project / target).parent.mkdir(parents=True)
    (project / (target + '.part')).write_bytes(full[:1000])  # ... from the 1000 "already downloaded"
    r = run(project, 'wing', mirror=mirror)
    assert r.returncode == 0, r.stderr
    # only the rest was fetched: the file is whole (and loads), which a restart from byte 0 would not give
    assert (project / target).read_bytes() == full
    assert not (project / (target + '.part')).exists()


def test_a_failed_download_names_file_url_and_where_to_put_it(project, mirror):
    os.remove(mirror / 'expr' / 'checkpoints' / 'afhq' / '100000_nets_ema.ckpt')
    r = run(project, 'pretrained-network-afhq', mirror=mirror)
    assert r.returncode == 1
    assert 'expr/checkpoints/afhq/100000_nets_ema.ckpt' in r.stderr
    assert 'file://' + str(mirror) in r.stderr and 'put it at ' + str(project) in r.stderr
    assert not (project / 'expr' / 'checkpoints' / 'afhq' / '100000_nets_ema.ckpt').exists()


def test_an_html_error_page_is_not_kept_under_the_final_name(project, mirror):
    (mirror / 'expr' / 'checkpoints' / 'wing.ckpt').write_text('<!DOCTYPE html><html>gone</html>')
    r = run(project, 'wing', mirror=mirror)
    assert r.returncode == 1 and 'not a valid file' in r.stderr
    assert not (project / 'expr' / 'checkpoints' / 'wing.ckpt').exists()
    assert leftovers(project) == []


def test_a_broken_zip_is_not_unpacked(project, mirror):
    data = (mirror / 'data' / 'afhq.zip').read_bytes()
    (mirror / 'data' / 'afhq.zip').write_bytes(data[:len(data) // 2])
    r = run(project, 'afhq-dataset', mirror=mirror)
    assert r.returncode == 1
    assert not (project / 'data' / 'afhq').exists() and not (project / 'data' / 'afhq.zip').exists()


def test_a_file_already_there_is_not_fetched_again(project, mirror):
    assert run(project, 'pretrained-network-celeba-hq', mirror=mirror).returncode == 0
    target = 'expr/checkpoints/celeba_hq/100000_nets_ema.ckpt'
    (mirror / target).write_bytes(b'newer')
    r = run(project, 'celeba-hq-model', mirror=mirror)
    assert r.returncode == 0 and 'already there' in r.stdout
    assert (project / target).read_bytes() != b'newer'


# ---------------------------------------------------------------- broken files, interrupted unpacking (issue 19, item 12)

BROKEN = {'empty': b'', 'html': b'<!DOCTYPE html><html><body>quota exceeded</body></html>',
          'garbage': bytes(range(256)) * 8}


@pytest.mark.parametrize('kind', sorted(BROKEN) + ['truncated'])
@pytest.mark.parametrize('target', ['expr/checkpoints/wing.ckpt', 'expr/checkpoints/celeba_lm_mean.npz'])
def test_a_broken_file_already_there_is_fetched_again(project, mirror, kind, target):
    good = (mirror / target).read_bytes()
    (project / target).parent.mkdir(parents=True)
    (project / target).write_bytes(good[:len(good) // 2] if kind == 'truncated' else BROKEN[kind])
    r = run(project, 'wing', mirror=mirror)
    assert r.returncode == 0, r.stderr
    assert f'{target} is there but broken' in r.stderr
    assert (project / target).read_bytes() == good
    assert leftovers(project) == []


def test_a_zip_already_there_that_fails_its_test_is_fetched_again(project, mirror):
    good = (mirror / 'data' / 'afhq.zip').read_bytes()
    (project / 'data').mkdir()
    (project / 'data' / 'afhq.zip').write_bytes(good[:len(good) - 30])  # cut short: unzip -t fails
    r = run(project, 'afhq-dataset', mirror=mirror)
    assert r.returncode == 0, r.stderr
    assert 'data/afhq.zip is there but broken (a zip that fails' in r.stderr and 'unzip -t)' in r.stderr
    assert (project / 'data' / 'afhq' / 'train' / 'cat' / '1.jpg').read_bytes() == b'c'
    assert sorted(os.listdir(project / 'data')) == ['afhq']


def test_a_checkpoint_that_does_not_load_is_not_kept(project, mirror):
    target = 'expr/checkpoints/afhq/100000_nets_ema.ckpt'
    good = (mirror / target).read_bytes()
    (mirror / target).write_bytes(good[:len(good) // 2])
    r = run(project, 'afhq-model', mirror=mirror)
    assert r.returncode == 1 and 'torch.load cannot read' in r.stderr
    assert not (project / target).exists() and leftovers(project) == []


# download.py under an unzip that writes one file, then unpacks for ever (as slow_unzip for download.sh)
SLOW_EXTRACT = """
import os, runpy, sys, time, zipfile
def extract(self, member, path=None, *a, **k):
    os.makedirs(os.path.join(path, 'afhq', 'train'), exist_ok=True)
    open(os.path.join(path, 'afhq', 'train', 'half.jpg'), 'w').write('partial')
    time.sleep(60)
zipfile.ZipFile.extract = extract
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name='__main__')
"""


@pytest.fixture
def slow_unzip(tmp_path):
    """A PATH whose unzip tests archives as unzip does but unpacks for ever, after writing one file."""
    real = shutil.which('unzip')
    stub = tmp_path / 'bin' / 'unzip'
    stub.parent.mkdir()
    stub.write_text(f'''#!/bin/bash
for a in "$@"; do case "$a" in -t*) exec {real} "$@" ;; esac; done
while [ $# -gt 0 ]; do [ "$1" = -d ] && dest=$2; shift; done
mkdir -p "$dest/afhq/train" && echo partial > "$dest/afhq/train/half.jpg"
exec sleep 60
''')
    stub.chmod(0o755)
    return f'{stub.parent}:{os.environ["PATH"]}'


@pytest.mark.parametrize('sig', [signal.SIGTERM, signal.SIGINT])
def test_an_interrupted_unzip_leaves_nothing_behind(project, mirror, slow_unzip, sig):
    env = dict(os.environ, STARGAN_DOWNLOAD_FROM=str(mirror), PATH=slow_unzip)
    cmd = command(project, 'afhq-dataset')
    if cmd[0] == sys.executable:
        cmd = [sys.executable, '-c', SLOW_EXTRACT, *cmd[1:]]
    proc = subprocess.Popen(cmd, cwd='/', env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not [f for _, _, files in os.walk(project / 'data') for f in files if f == 'half.jpg']:  # unpacking began
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.1)
    proc.send_signal(sig)
    proc.wait(timeout=20)
    assert proc.returncode == 128 + sig
    assert sorted(os.listdir(project / 'data')) == ['afhq.zip']  # the checked download stays, nothing half-unpacked
    r = run(project, 'afhq-dataset', mirror=mirror)  # then a plain run finishes from the zip
    assert r.returncode == 0 and 'already there' in r.stdout, r.stderr
    assert sorted(os.listdir(project / 'data')) == ['afhq']


def test_the_next_run_removes_what_a_killed_unzip_left(project, mirror):
    dead = subprocess.Popen(['true'])
    dead.wait()  # a process id that no longer runs
    stale = project / 'data' / f'.unzip.{dead.pid}.abcdef'
    (stale / 'afhq' / 'train').mkdir(parents=True)
    (stale / 'afhq' / 'train' / 'half.jpg').write_bytes(b'partial')
    live = project / 'data' / f'.unzip.{os.getpid()}.ghijkl'  # a run still going (this process): left alone
    live.mkdir()
    r = run(project, 'afhq-dataset', mirror=mirror)
    assert r.returncode == 0, r.stderr
    assert sorted(os.listdir(project / 'data')) == ['.unzip.' + str(os.getpid()) + '.ghijkl', 'afhq']


# ---------------------------------------------------------------- download.py: the same targets as download.sh

def _targets_of_download_sh():
    """{argument: [(url, path or dataset name)]} as download.sh's case statement reads."""
    text = open(os.path.join(ROOT, 'download.sh'), encoding='utf-8').read()
    values = {'DROPBOX': re.search(r'^DROPBOX=(\S+)', text, re.M).group(1),
              'ASSETS_URL': re.search(r'^ASSETS_URL=(\S+)', text, re.M).group(1)}
    body = text[text.index('case "${1:-}" in'):text.index('    -h|--help)')]
    found, names = {}, []
    for line in body.splitlines()[1:]:
        head = re.match(r'^    ([a-z0-9|-]+)\)', line)
        if head:
            names = head.group(1).split('|')
            continue
        for call in re.finditer(r'\b(fetch|dataset) "([^"]+)" (\S+)', line):
            url = re.sub(r'\$(\w+)', lambda m: values[m.group(1)], call.group(2))
            for name in names:
                found.setdefault(name, []).append((url, call.group(3)))
    return found


def test_download_py_has_download_shs_targets_and_urls():
    import download
    expected = _targets_of_download_sh()
    got = {name: [(url, where) for _, url, where in download.TARGETS[download.ALIASES.get(name, name)]]
           for name in [*download.TARGETS, *download.ALIASES]}
    assert len(expected) == 9 and got == expected
