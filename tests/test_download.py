"""download.sh without the network: STARGAN_DOWNLOAD_FROM points it at a local folder laid
out like the targets, so argument handling, exit codes, target paths, the .part files and
resuming are tested through the script's real download path."""
import os
import shutil
import subprocess
import zipfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# official argument (and our alias) -> the files it must leave, relative to the project root
FILES = {
    'pretrained-network-celeba-hq': ['expr/checkpoints/celeba_hq/100000_nets_ema.ckpt'],
    'pretrained-network-afhq': ['expr/checkpoints/afhq/100000_nets_ema.ckpt'],
    'celeba-hq-model': ['expr/checkpoints/celeba_hq/100000_nets_ema.ckpt'],
    'afhq-model': ['expr/checkpoints/afhq/100000_nets_ema.ckpt'],
    'wing': ['expr/checkpoints/wing.ckpt', 'expr/checkpoints/celeba_lm_mean.npz'],
}
DATASETS = {'celeba-hq-dataset': 'celeba_hq', 'afhq-dataset': 'afhq', 'afhq-v2-dataset': 'afhq_v2'}


def write_zip(path, members):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with zipfile.ZipFile(path, 'w') as z:
        for name, data in members.items():
            z.writestr(name, data)


@pytest.fixture
def mirror(tmp_path):
    """A local folder holding every file download.sh fetches, at its target path."""
    src = tmp_path / 'mirror'
    for files in FILES.values():
        for f in files:
            (src / f).parent.mkdir(parents=True, exist_ok=True)
            (src / f).write_bytes(f.encode() * 300)  # distinct content per file
    write_zip(src / 'data' / 'celeba_hq.zip', {'celeba_hq/train/female/1.jpg': b'a', 'celeba_hq/val/male/2.jpg': b'b'})
    write_zip(src / 'data' / 'afhq.zip', {'afhq/train/cat/1.jpg': b'c', 'afhq/val/dog/2.jpg': b'd'})
    write_zip(src / 'data' / 'afhq_v2.zip', {'train/cat/1.png': b'e', 'test/wild/2.png': b'f'})  # no top folder
    write_zip(src / 'assets' / 'stargan-v2-master.zip', {
        'stargan-v2-master/assets/representative/celeba_hq/src/female/1.jpg': b'g',
        'stargan-v2-master/assets/teaser.jpg': b'h', 'stargan-v2-master/main.py': b'i'})
    return src


@pytest.fixture
def project(tmp_path):
    proj = tmp_path / 'project'
    proj.mkdir()
    shutil.copy(os.path.join(ROOT, 'download.sh'), proj / 'download.sh')
    return proj


def run(project, *args, mirror=None):
    env = dict(os.environ)
    env.pop('STARGAN_DOWNLOAD_FROM', None)
    if mirror is not None:
        env['STARGAN_DOWNLOAD_FROM'] = str(mirror)
    return subprocess.run(['bash', str(project / 'download.sh'), *args], cwd='/', env=env,
                          capture_output=True, text=True, timeout=60)


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
    (project / target).parent.mkdir(parents=True)
    (project / (target + '.part')).write_bytes(b'X' * 1000)  # first 1000 bytes "already downloaded"
    r = run(project, 'wing', mirror=mirror)
    assert r.returncode == 0, r.stderr
    # only the rest was fetched: the stale first bytes prove the .part was continued, not restarted
    assert (project / target).read_bytes() == b'X' * 1000 + full[1000:]
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
