"""Hub folders to and from the Hub (core/use/hub_transport.py): a Hub repository id resolves
through huggingface_hub's cache offline; `--push_to_hub` uploads, private unless asked (HfApi
monkeypatched: no test needs the network)."""
import hashlib
import os
import socket

import pytest
import torch
from hub_helpers import export_args, one_line, outputs
from tiny_run import STEP

import core.use.hub_folder as hub
import core.use.hub_transport as transport
from core.cli.arguments import parse_args
from core.errors import UserError
from core.use.export import run as export_run

# ---------------------------------------------------------------------------- export --format hf, --push_to_hub

class FakeApi:
    """HfApi stand-in: records the calls; ``fail`` makes upload_folder raise it."""
    calls: list = []
    fail = None

    def create_repo(self, repo_id, **kwargs):
        FakeApi.calls.append(('create_repo', repo_id, kwargs))
        return f'https://huggingface.co/{repo_id}'

    def upload_folder(self, **kwargs):
        if FakeApi.fail is not None:
            raise FakeApi.fail
        FakeApi.calls.append(('upload_folder', kwargs['repo_id'], kwargs))
        FakeApi.uploaded = sorted(os.listdir(kwargs['folder_path']))


@pytest.fixture
def fake_hub(monkeypatch):
    import huggingface_hub
    FakeApi.calls, FakeApi.fail = [], None
    monkeypatch.setattr(huggingface_hub, 'HfApi', FakeApi)
    return FakeApi


def test_push_to_hub_creates_the_repository_and_uploads_the_folder(runs, tmp_path, fake_hub):
    ckpt, _, _, _ = runs(0, 32)
    export_run(export_args(ckpt, tmp_path / 'hf', '--push_to_hub', 'me/stargan-v2-tiny'))
    assert [c[:2] for c in fake_hub.calls] == [('create_repo', 'me/stargan-v2-tiny'), ('upload_folder', 'me/stargan-v2-tiny')]
    assert fake_hub.calls[0][2]['exist_ok'] is True and fake_hub.calls[1][2]['repo_type'] == 'model'
    assert fake_hub.calls[1][2]['folder_path'] == str(tmp_path / 'hf')
    assert fake_hub.uploaded == ['README.md', 'config.json', 'model.safetensors']


def test_a_failed_upload_is_one_line_and_keeps_the_folder(runs, tmp_path, fake_hub):
    class LocalTokenNotFoundError(Exception):  # huggingface_hub's name for "not logged in"
        pass
    ckpt, _, _, _ = runs(0, 32)
    fake_hub.fail = LocalTokenNotFoundError('Token is required (`token=True`), but no token found.\nmore')
    with pytest.raises(UserError, match="upload .* to the Hub repository 'me/x' failed .*hf auth login") as e:
        export_run(export_args(ckpt, tmp_path / 'hf', '--push_to_hub', 'me/x'))
    one_line(e)
    assert hub.load_hub_folder(tmp_path / 'hf', 'cpu')[2]['step'] == STEP
    fake_hub.fail = OSError('Network is unreachable')
    with pytest.raises(UserError, match=r'\(OSError: Network is unreachable\); check the network'):
        transport.push_folder(tmp_path / 'hf', 'me/x')


def test_push_to_hub_is_checked_before_the_networks_load(runs, tmp_path, monkeypatch):
    import sys

    import core.use.load_run
    ckpt, _, _, _ = runs(0, 32)
    monkeypatch.setattr(core.use.load_run, 'load_run_networks', lambda *a, **k: pytest.fail('networks loaded'))
    with pytest.raises(UserError, match="--push_to_hub 'not a repo' is not a Hub repository id"):
        export_run(export_args(ckpt, tmp_path / 'hf', '--push_to_hub', 'not a repo'))
    with pytest.raises(UserError, match='--push_to_hub uploads a Hub folder: add --format hf'):
        export_run(parse_args(['--mode', 'export', '--format', 'onnx', '--checkpoint_dir', str(ckpt), '--push_to_hub', 'a/b']))
    with pytest.raises(UserError, match='is --checkpoint_dir itself'):
        export_run(export_args(ckpt, ckpt))
    monkeypatch.setitem(sys.modules, 'huggingface_hub', None)  # not installed
    with pytest.raises(UserError, match='--push_to_hub needs huggingface_hub: pip install huggingface_hub'):
        export_run(export_args(ckpt, tmp_path / 'hf', '--push_to_hub', 'me/x'))
    assert not (tmp_path / 'hf').exists()


class VisibleApi(FakeApi):
    """FakeApi whose repositories are as create_repo made them (or ``existing`` ones as they were)."""
    existing: dict = {}

    def create_repo(self, repo_id, **kwargs):
        VisibleApi.existing.setdefault(repo_id, kwargs.get('private'))
        return super().create_repo(repo_id, **kwargs)

    def repo_info(self, repo_id, **kwargs):
        from types import SimpleNamespace
        return SimpleNamespace(private=VisibleApi.existing[repo_id])


def test_push_to_hub_creates_a_private_repository_unless_asked_and_says_which(runs, tmp_path, monkeypatch, capsys):
    import huggingface_hub
    ckpt, _, _, _ = runs(0, 32)
    FakeApi.calls, FakeApi.fail, VisibleApi.existing = [], None, {'me/old': False}
    monkeypatch.setattr(huggingface_hub, 'HfApi', VisibleApi)
    export_run(export_args(ckpt, tmp_path / 'a', '--push_to_hub', 'me/new'))
    assert FakeApi.calls[0][2]['private'] is True
    assert 'a PRIVATE repository' in capsys.readouterr().out
    export_run(export_args(ckpt, tmp_path / 'b', '--push_to_hub', 'me/pub', '--hub_public'))
    assert FakeApi.calls[-2][2]['private'] is False
    assert 'a PUBLIC repository: anyone can see' in capsys.readouterr().out
    export_run(export_args(ckpt, tmp_path / 'c', '--push_to_hub', 'me/old'))  # an existing public one stays public
    out = capsys.readouterr().out
    assert 'a PUBLIC repository' in out and 'its visibility was kept' in out
    with pytest.raises(UserError, match='--hub_public makes the repository of --push_to_hub public'):
        export_run(export_args(ckpt, tmp_path / 'd', '--hub_public'))


# ---------------------------------------------------------------------------- resolve_pretrained (offline)

@pytest.fixture
def no_network(monkeypatch):
    """Offline as HF_HUB_OFFLINE=1 makes it (the variable is read when huggingface_hub is
    imported, so its constant is set too), and any socket connection fails the test."""
    import huggingface_hub.constants
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    monkeypatch.setattr(huggingface_hub.constants, 'HF_HUB_OFFLINE', True)

    def refuse(*args, **kwargs):
        raise AssertionError('a test tried to reach the network')
    monkeypatch.setattr(socket.socket, 'connect', refuse)
    monkeypatch.setattr(socket, 'create_connection', refuse)


def cache_repo(cache, repo_id, folder, commit='0123456789abcdef0123456789abcdef01234567'):
    """huggingface_hub's cache layout of one download of ``folder`` as ``repo_id``: blobs named by
    their hash, snapshots/<commit>/ of links to them, refs/main naming the commit."""
    from huggingface_hub.file_download import repo_folder_name
    storage = cache / repo_folder_name(repo_id=repo_id, repo_type='model')
    (storage / 'blobs').mkdir(parents=True)
    (storage / 'snapshots' / commit).mkdir(parents=True)
    (storage / 'refs').mkdir()
    (storage / 'refs' / 'main').write_text(commit)
    for name in sorted(os.listdir(folder)):
        data = (folder / name).read_bytes()
        blob = storage / 'blobs' / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (storage / 'snapshots' / commit / name).symlink_to(os.path.relpath(blob, storage / 'snapshots' / commit))
    return storage / 'snapshots' / commit


def test_a_repo_id_in_the_cache_loads_offline(runs, tmp_path, no_network, one_thread):
    from huggingface_hub import scan_cache_dir
    _, folder, cfg, _ = runs(0, 32)
    snapshot = cache_repo(tmp_path / 'cache', 'me/stargan-v2-tiny', folder)
    info = scan_cache_dir(tmp_path / 'cache')  # huggingface_hub reads the layout as one of its own
    assert not info.warnings and [r.repo_id for r in info.repos] == ['me/stargan-v2-tiny']
    assert {f.file_name for r in info.repos for rev in r.revisions for f in rev.files} == set(hub.HUB_FILES)
    local = transport.resolve_pretrained('me/stargan-v2-tiny', cache_dir=tmp_path / 'cache')
    assert os.path.samefile(local, snapshot)
    nets, cfg2, meta = hub.load_hub_folder(local, 'cpu')
    assert cfg2 == cfg and meta['step'] == STEP
    want = outputs(hub.load_hub_folder(folder, 'cpu')[0], cfg)
    assert all(torch.equal(a, b) for a, b in zip(outputs(nets, cfg).values(), want.values()))
    # the command line takes the cached folder as --checkpoint_dir
    assert parse_args(['--mode', 'translate', '--checkpoint_dir', local]).img_size == 32


def test_a_repo_id_not_in_the_cache_offline_is_one_line(tmp_path, no_network):
    with pytest.raises(UserError, match="'me/absent' is not in the Hugging Face cache and the Hub cannot be reached") as e:
        transport.resolve_pretrained('me/absent', cache_dir=tmp_path / 'cache')
    one_line(e)


def test_resolve_pretrained_folders_and_bad_names(runs, tmp_path, monkeypatch):
    import huggingface_hub
    _, folder, _, _ = runs(0, 32)
    assert transport.resolve_pretrained(folder) == str(folder) and transport.resolve_pretrained(str(folder)) == str(folder)
    for name in (str(tmp_path / 'missing'), './missing', 'a/b/c'):
        with pytest.raises(UserError, match='is not a folder'):
            transport.resolve_pretrained(name)
    with pytest.raises(UserError, match='is not a Hub repository id'):
        transport.resolve_pretrained('bad name!')
    seen = []
    monkeypatch.setattr(huggingface_hub, 'snapshot_download', lambda repo, **kw: seen.append((repo, kw)) or str(folder))
    assert transport.resolve_pretrained('me/model', revision='v1') == str(folder)
    assert seen[0][0] == 'me/model' and seen[0][1]['revision'] == 'v1'
    assert set(seen[0][1]['allow_patterns']) == {'config.json', 'model.safetensors', 'README.md'}  # never pickled files

    class RepositoryNotFoundError(Exception):
        pass

    def missing(repo, **kw):
        raise RepositoryNotFoundError('404 Client Error.\nRepository Not Found')
    monkeypatch.setattr(huggingface_hub, 'snapshot_download', missing)
    with pytest.raises(UserError, match="no model repository 'me/model' on the Hugging Face Hub") as e:
        transport.resolve_pretrained('me/model')
    one_line(e)
