"""torch.hub (hubconf.py, issue 21 item 2), offline: the entry points through
``torch.hub.load(ROOT, ..., source='local')`` on local weights files, the download path on a
file:// URL into a temporary torch.hub folder (progress, hash check, strict check, the cache),
the official configurations against the official state-dict manifest, download.sh's URLs."""
import json
import os
import re

import pytest
import torch
from helpers import ROOT, SHARED_GOLDENS
from tiny_run import make_image, sparse_heatmaps
from weights_by_name import fill_by_name

import hubconf
from core.api import StarGANv2
from core.errors import UserError
from core.io.ckpt_files import atomic_save, state_dicts
from core.nn.networks import INFERENCE, Generator, ModelConfig, build_networks

# a small stand-in for the released files: the official configuration with these keywords changed
TINY = dict(img_size=32, dim_in=8, max_conv_dim=32, style_dim=16, latent_dim=8)


def release_file(folder, name, with_fan=True, **changes):
    """``folder/100000_nets_ema.ckpt`` of the release ``name`` at the TINY size, filled by name
    (with the FAN for celeba_hq unless ``with_fan`` is off); returns (path, nets)."""
    cfg = hubconf.RELEASES[name].config
    cfg = ModelConfig(**{**cfg.__dict__, **TINY, **changes})
    nets = build_networks(cfg)
    for net in nets.values():
        fill_by_name(net)
    if 'fan' in nets:
        sparse_heatmaps(nets.fan)
    saved = nets if with_fan else {k: nets[k] for k in INFERENCE}
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, '100000_nets_ema.ckpt')
    atomic_save(state_dicts(saved), path)
    return path, nets


@pytest.fixture(scope='module')
def photo(tmp_path_factory):
    return make_image(tmp_path_factory.mktemp('photo') / 'photo.png', size=40)


@pytest.fixture
def hub_dir(tmp_path, monkeypatch):
    """torch.hub's folder in tmp_path (nothing of the real one is read or written)."""
    monkeypatch.setattr(torch.hub, '_hub_dir', str(tmp_path / 'hub'))
    return tmp_path / 'hub'


def test_the_entry_points_are_the_only_public_callables():
    """torch.hub.list() (GitHub repositories only) lists every public callable of hubconf.py."""
    listed = sorted(f for f in dir(hubconf) if callable(getattr(hubconf, f)) and not f.startswith('_'))
    assert listed == ['afhq', 'celeba_hq', 'discriminator', 'generator', 'mapping_network', 'style_encoder']
    assert all(getattr(hubconf, f).__doc__ for f in listed)


def test_afhq_from_a_local_weights_file(tmp_path, photo, one_thread):
    path, nets = release_file(tmp_path / 'w', 'afhq')
    model = torch.hub.load(ROOT, 'afhq', source='local', weights=path, **TINY)
    assert isinstance(model, StarGANv2) and model.domains == ['cat', 'dog', 'wild'] and model.step == 100000
    assert model.config.w_hpf == 0 and model.device == torch.device('cpu')
    s = model.style(photo, 'dog')
    with torch.no_grad():
        x = model.images(photo)
        assert torch.equal(s, nets.style_encoder(x, torch.tensor([1])))
        assert torch.equal(model.generate(photo, s), nets.generator(x, s))
    with pytest.raises(UserError, match='another configuration'):  # the official size does not fit the tiny file
        torch.hub.load(ROOT, 'afhq', source='local', weights=path)
    with pytest.raises(UserError, match='not a model setting'):
        torch.hub.load(ROOT, 'afhq', source='local', weights=path, image_size=32)
    os.rename(path, tmp_path / 'w' / 'afhq.ckpt')
    with pytest.raises(UserError, match="must keep a checkpoint's name"):
        torch.hub.load(ROOT, 'afhq', source='local', weights=tmp_path / 'w' / 'afhq.ckpt', **TINY)
    with pytest.raises(UserError, match='is not a file'):
        torch.hub.load(ROOT, 'afhq', source='local', weights=tmp_path / 'absent' / '100000_nets_ema.ckpt', **TINY)


def test_celeba_hq_takes_its_fan_from_the_checkpoint_or_wing_path(tmp_path, photo, one_thread):
    path, nets = release_file(tmp_path / 'with_fan', 'celeba_hq')
    model = hubconf.celeba_hq(weights=path, **TINY)
    assert model.domains == ['female', 'male'] and model.config.w_hpf == 1
    with torch.no_grad():
        x = model.images(photo)
        s = model.latent_style('male', 1, seed=0)
        masks = nets.fan.get_heatmap(x)
        assert torch.equal(model.generate(x, s), nets.generator(x, s, masks=masks))
    # a checkpoint without the FAN: wing.ckpt's format ({'state_dict': ...}) from wing_path
    bare, _ = release_file(tmp_path / 'no_fan', 'celeba_hq', with_fan=False)
    with pytest.raises(UserError, match='FAN weights not found'):
        hubconf.celeba_hq(weights=bare, **TINY)
    torch.save({'state_dict': nets.fan.state_dict()}, tmp_path / 'wing.ckpt')
    model = hubconf.celeba_hq(weights=bare, wing_path=str(tmp_path / 'wing.ckpt'), **TINY)
    with torch.no_grad():
        assert torch.equal(model.generate(x, s), nets.generator(x, s, masks=masks))


def test_the_download_goes_once_into_torch_hubs_folder_and_is_checked(tmp_path, hub_dir, monkeypatch, photo, one_thread):
    import hashlib
    source, nets = release_file(tmp_path / 'server', 'afhq')
    monkeypatch.setitem(hubconf.RELEASES, 'afhq', hubconf.RELEASES['afhq'].__class__(
        **{**hubconf.RELEASES['afhq'].__dict__, 'url': 'file://' + source}))
    calls = []
    real = torch.hub.download_url_to_file

    def download(url, dst, hash_prefix=None, progress=True):
        calls.append((url, hash_prefix, progress))
        return real(url, dst, hash_prefix=hash_prefix, progress=progress)
    monkeypatch.setattr(torch.hub, 'download_url_to_file', download)
    model = hubconf.afhq(progress=False, **TINY)
    cached = hub_dir / 'checkpoints' / 'stargan_v2' / 'afhq' / '100000_nets_ema.ckpt'
    assert calls == [('file://' + source, None, False)] and cached.is_file()
    assert sorted(os.listdir(cached.parent)) == ['100000_nets_ema.ckpt']  # no partial file left
    with torch.no_grad():
        assert torch.equal(model.style(photo, 'cat'), nets.style_encoder(model.images(photo), torch.tensor([0])))
    hubconf.afhq(progress=False, **TINY)  # the second time from the cache
    assert len(calls) == 1
    # a hash given is checked: the right one keeps the cached file, a wrong one fetches again and fails
    good = hashlib.sha256(open(source, 'rb').read()).hexdigest()
    hubconf.afhq(progress=False, sha256=good, **TINY)
    assert len(calls) == 1
    with pytest.raises(UserError, match='cannot download the afhq weights .*invalid hash value'):
        hubconf.afhq(progress=False, sha256='0' * 64, **TINY)
    assert calls[-1][1] == '0' * 64 and not os.listdir(cached.parent)  # nothing kept
    # a local file with a hash
    with pytest.raises(UserError, match='has SHA-256'):
        hubconf.afhq(weights=source, sha256='0' * 64, **TINY)
    assert hubconf.afhq(weights=source, sha256=good, **TINY).step == 100000


def test_a_download_that_is_not_the_release_is_removed(tmp_path, hub_dir, monkeypatch):
    other, _ = release_file(tmp_path / 'other', 'afhq', num_domains=2, domain_names=None)  # another model
    page = tmp_path / 'page.html'
    page.write_text('<html>a page, not a checkpoint</html>')
    folder = hub_dir / 'checkpoints' / 'stargan_v2' / 'afhq'
    for url, match in (('file://' + other, 'another configuration'), ('file://' + str(page), 'cannot read checkpoint')):
        monkeypatch.setitem(hubconf.RELEASES, 'afhq', hubconf.RELEASES['afhq'].__class__(
            **{**hubconf.RELEASES['afhq'].__dict__, 'url': url}))
        with pytest.raises(UserError, match=f'is not the released afhq model .*{match}.*removed') as e:
            hubconf.afhq(progress=False, **TINY)
        assert '\n' not in str(e.value) and not os.listdir(folder)
    monkeypatch.setitem(hubconf.RELEASES, 'afhq', hubconf.RELEASES['afhq'].__class__(
        **{**hubconf.RELEASES['afhq'].__dict__, 'url': 'file://' + str(tmp_path / 'absent.ckpt')}))
    with pytest.raises(UserError, match='cannot download the afhq weights .*bash download.sh pretrained-network-afhq'):
        hubconf.afhq(progress=False, **TINY)


def test_untrained_models_and_bare_networks(one_thread):
    model = torch.hub.load(ROOT, 'celeba_hq', source='local', pretrained=False, **TINY)
    assert isinstance(model, StarGANv2) and model.config.w_hpf == 1 and 'fan' in model.nets
    gen = torch.hub.load(ROOT, 'generator', source='local', w_hpf=0, **TINY)
    assert isinstance(gen, Generator)
    built = build_networks(ModelConfig(w_hpf=0, **TINY), training=True)
    for name in ('generator', 'mapping_network', 'style_encoder', 'discriminator'):
        net = getattr(hubconf, name)(w_hpf=0, **TINY)
        want = {k: v.shape for k, v in built[name].state_dict().items()}
        assert {k: v.shape for k, v in net.state_dict().items()} == want, name
    with pytest.raises(UserError, match='not a model setting'):
        hubconf.generator(size=32)


@pytest.mark.parametrize('name', ['afhq', 'celeba_hq'])
def test_the_official_configurations_have_the_official_keys_and_shapes(name):
    """The released files' networks (the official state-dict manifest, ../shared/goldens) are
    what the entry points build: built on the meta device, no memory, no time."""
    path = os.path.join(SHARED_GOLDENS, 'state_dict_manifest.json')
    if not os.path.isfile(path):
        pytest.skip('../shared/goldens/state_dict_manifest.json is absent')
    manifest = json.load(open(path))[name]
    with torch.device('meta'):
        nets = build_networks(hubconf.RELEASES[name].config)
    for net in list(INFERENCE) + (['fan'] if name == 'celeba_hq' else []):
        ours = {k: list(v.shape) for k, v in nets[net].state_dict().items()}
        official = manifest[net]
        if net == 'generator':
            ours.pop('hpf.filter', None)  # a fixed buffer (the released CelebA-HQ file lacks it; loading keeps ours)
            official = {k: v for k, v in official.items() if k != 'hpf.filter'}
        assert ours == official, net


def test_the_release_urls_are_download_shs():
    text = open(os.path.join(ROOT, 'download.sh'), encoding='utf-8').read()
    dropbox = re.search(r'^DROPBOX=(\S+)', text, re.M).group(1)
    for name, release in hubconf.RELEASES.items():
        line = re.search(rf'^\s*{re.escape(release.download_sh)}\|.*\n\s*fetch "([^"]+)" (\S+)', text, re.M)
        assert line, f'download.sh has no {release.download_sh}'
        assert line.group(1).replace('$DROPBOX', dropbox) == release.url, name
        assert line.group(2).endswith(f'/{name}/{release.filename}')


@pytest.mark.slow  # seconds: whole translations at the tested sizes
def test_afhq_at_the_official_size(tmp_path, photo, one_thread):
    """230 MB of name-filled weights at the official size, written and read back (5 s here)."""
    cfg = hubconf.RELEASES['afhq'].config
    nets = build_networks(cfg)
    for net in nets.values():
        fill_by_name(net)
    atomic_save(state_dicts(nets), str(tmp_path / '100000_nets_ema.ckpt'))
    model = torch.hub.load(ROOT, 'afhq', source='local', weights=str(tmp_path / '100000_nets_ema.ckpt'))
    assert model.config.img_size == 256 and model.config.dim_in is None
    with torch.no_grad():
        x = model.images(photo)
        s = nets.style_encoder(x, torch.tensor([2]))
        assert torch.equal(model.style(photo, 'wild'), s)
        assert torch.equal(model.generate(x, s), nets.generator(x, s))


def test_two_downloads_at_once_use_their_own_temporary_files(tmp_path, hub_dir, monkeypatch, photo):
    """Two threads fetch the same release at once (a file:// URL): each writes its own
    temporary file (they shared one name before, so one rename or check failed), both get the
    checked file, and no temporary file is left."""
    import threading
    source, nets = release_file(tmp_path / 'server', 'afhq')
    monkeypatch.setitem(hubconf.RELEASES, 'afhq', hubconf.RELEASES['afhq'].__class__(
        **{**hubconf.RELEASES['afhq'].__dict__, 'url': 'file://' + source}))
    real = torch.hub.download_url_to_file
    both_fetched = threading.Barrier(2, timeout=60)
    targets, results, failures = [], [], []

    def download(url, dst, hash_prefix=None, progress=True):
        targets.append(dst)
        real(url, dst, hash_prefix=hash_prefix, progress=progress)
        both_fetched.wait()  # both files are written before either is checked and renamed
    monkeypatch.setattr(torch.hub, 'download_url_to_file', download)

    def fetch():
        try:
            results.append(hubconf.afhq(progress=False, **TINY))
        except BaseException as e:  # noqa: BLE001 (reported below)
            failures.append(e)
    threads = [threading.Thread(target=fetch) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not failures, failures
    assert len(set(targets)) == 2 and len(results) == 2
    cached = hub_dir / 'checkpoints' / 'stargan_v2' / 'afhq'
    assert sorted(os.listdir(cached)) == ['100000_nets_ema.ckpt']
    with torch.no_grad():
        for model in results:
            assert torch.equal(model.style(photo, 'cat'), nets.style_encoder(model.images(photo), torch.tensor([0])))


@pytest.mark.parametrize('entry', ['generator', 'mapping_network', 'afhq'])
def test_sizes_out_of_bounds_are_one_line_before_anything_is_built(entry, monkeypatch, hub_dir):
    """torch.hub keywords go through the one check of a model configuration."""
    monkeypatch.setattr(torch.hub, 'download_url_to_file', lambda *a, **k: pytest.fail('downloaded'))
    kwargs = dict(pretrained=False) if entry == 'afhq' else {}
    for key, value, match in (('style_dim', 10 ** 12, 'style_dim must be an integer from 1 to 2048'),
                              ('num_domains', 10000, 'num_domains must be an integer from 1 to 256'),
                              ('img_size', '128', 'img_size must be a power of two')):
        with pytest.raises(UserError, match=match):
            getattr(hubconf, entry)(**kwargs, **{key: value})
