"""Hub folders (core/use/hub_folder.py, issue 21 item 3): `--mode export --format hf` writes
config.json + model.safetensors + a model card; the folder reloads to networks whose outputs
equal the checkpoint's bit for bit (w_hpf 0 and 1), through safetensors only (no pickle);
`--checkpoint_dir FOLDER` works in the modes that load a run; a Hub repository id resolves
through huggingface_hub's cache offline; `--push_to_hub` uploads (HfApi monkeypatched: no
test needs the network)."""
import hashlib
import json
import os
import pickle
import socket

import pytest
import torch
import yaml
from PIL import Image
from safetensors.torch import load_file, save_file

import core.use.hub_folder as hub
from metrics.eval import read_results
import main as cli
from core.cli.arguments import parse_args
from core.errors import UserError
from core.use.export import hub_metadata, run as export_run
from core.nn.fan import fan_masks
from core.use.load_run import load_networks, load_run_networks, resolve_step
from core.nn.networks import MODEL_KEYS, ModelConfig
from tiny_run import STEP, make_checkpoint, make_image

NAMES = ['cat', 'dog']
CASES = [pytest.param(0, 32, id='hpf0'), pytest.param(1, 64, id='hpf1')]  # the FAN always sees 256 px


def one_line(excinfo):
    text = str(excinfo.value)
    assert '\n' not in text, text
    return text


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    """``runs(w_hpf, img_size)`` -> (checkpoint folder, Hub folder, cfg, filled networks); each once per module."""
    done = {}

    def get(w_hpf, img_size):
        if (w_hpf, img_size) not in done:
            root = tmp_path_factory.mktemp(f'hub{w_hpf}')
            _, nets = make_checkpoint(root / 'ckpt', img_size=img_size, w_hpf=w_hpf, names=NAMES)
            cfg = ModelConfig(img_size=img_size, style_dim=16, latent_dim=8, num_domains=2, w_hpf=float(w_hpf), dim_in=8,
                              max_conv_dim=32, domain_names=tuple(NAMES))
            loaded = load_networks(cfg, str(root / 'ckpt'), STEP, 'cpu')
            hub.save_hub_folder(loaded, cfg, root / 'hf', step=STEP, extra={'source': f'ckpt/{STEP:06d}_nets_ema.ckpt'})
            done[(w_hpf, img_size)] = root / 'ckpt', root / 'hf', cfg, nets
        return done[(w_hpf, img_size)]
    return get


def outputs(nets, cfg, seed=0):
    """Style codes of both kinds and the translated images (FAN masks for w_hpf > 0), same seed."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(2, 3, cfg.img_size, cfg.img_size, generator=gen) * 2 - 1
    z = torch.randn(2, cfg.latent_dim, generator=gen)
    y = torch.tensor([0, 1])
    with torch.no_grad():
        s_map = nets.mapping_network(z, y)
        s_enc = nets.style_encoder(x, y)
        masks = fan_masks(nets, cfg.w_hpf, x)
        return dict(s_map=s_map, s_enc=s_enc, x_map=nets.generator(x, s_map, masks=masks),
                    x_enc=nets.generator(x, s_enc, masks=masks), **({'masks0': masks[0]} if masks else {}))


# ---------------------------------------------------------------------------- the folder and its reload

@pytest.mark.parametrize('w_hpf,img_size', CASES)
def test_reload_gives_the_checkpoints_outputs_bit_for_bit(runs, w_hpf, img_size, one_thread):
    ckpt, folder, cfg, _ = runs(w_hpf, img_size)
    assert sorted(os.listdir(folder)) == ['README.md', 'config.json', 'model.safetensors']
    original = load_networks(cfg, str(ckpt), STEP, 'cpu')
    reloaded, cfg2, meta = hub.load_hub_folder(folder, 'cpu')
    assert cfg2 == cfg and meta['step'] == STEP
    assert sorted(reloaded) == sorted(original) == sorted(['generator', 'mapping_network', 'style_encoder']
                                                          + (['fan'] if w_hpf else []))
    assert not any(net.training for net in reloaded.values())
    for name, net in original.items():
        theirs = reloaded[name].state_dict()
        for key, value in net.state_dict().items():
            assert torch.equal(theirs[key], value), f'{name}.{key}'
    want, got = outputs(original, cfg), outputs(reloaded, cfg)
    if w_hpf:
        assert 0.05 < want['masks0'].mean() < 0.95  # the masks are not a constant image
    for key in want:
        assert torch.equal(got[key], want[key]), key
    # the loader of every mode (load_networks) takes the folder too, the FAN from it (no wing.ckpt)
    via_loader = load_networks(cfg, str(folder), 0, 'cpu', wing_path='/nonexistent/wing.ckpt')
    assert all(torch.equal(a, b) for a, b in zip(outputs(via_loader, cfg).values(), want.values()))


@pytest.mark.parametrize('w_hpf,img_size', CASES)
def test_safetensors_keys_are_the_official_ones_per_network(runs, w_hpf, img_size):
    _, folder, cfg, nets = runs(w_hpf, img_size)
    state = load_file(str(folder / 'model.safetensors'))
    expected = {f'{name}.{key}' for name in ('generator', 'mapping_network', 'style_encoder', 'fan')[:3 + w_hpf]
                for key in nets[name].state_dict()}
    assert set(state) == expected
    assert 'generator.from_rgb.weight' in state and 'mapping_network.unshared.1.6.bias' in state
    assert ('fan.conv1.conv.weight' in state) == bool(w_hpf)
    assert not any(k.startswith('discriminator') for k in state)


def test_config_json_holds_the_model_config_and_the_metadata(runs):
    _, folder, cfg, _ = runs(0, 32)
    meta = json.loads((folder / 'config.json').read_text())
    assert meta['format'] == 'stargan-v2' and meta['format_version'] == hub.FORMAT_VERSION
    assert {k: meta[k] for k in MODEL_KEYS} == dict(img_size=32, style_dim=16, latent_dim=8, num_domains=2, w_hpf=0.0,
                                                    dim_in=8, max_conv_dim=32, to_rgb_norm=True, domain_names=NAMES)
    assert meta['step'] == STEP and meta['source'] == f'ckpt/{STEP:06d}_nets_ema.ckpt' and meta['weights'] == 'ema'
    assert meta['networks'] == ['generator', 'mapping_network', 'style_encoder']
    assert meta['training_data']['license'] == 'unknown'
    assert hub.config_from_hub(meta) == cfg
    assert hub.is_hub_folder(folder) and not hub.is_hub_folder(folder.parent / 'ckpt') and not hub.is_hub_folder(None)


def card_parts(text):
    assert text.startswith('---\n')
    front, body = text[4:].split('\n---\n', 1)
    return yaml.safe_load(front), body


def test_model_card_front_matter_and_contents(runs):
    _, folder, _, _ = runs(1, 64)
    front, body = card_parts((folder / 'README.md').read_text())
    assert front['library_name'] == 'pytorch' and front['license'] == 'unknown'
    assert {'stargan-v2', 'image-to-image'} <= set(front['tags']) and front['pipeline_tag'] == 'image-to-image'
    assert '0: cat, 1: dog' in body and '64 x 64' in body and f'| iterations | {STEP} |' in body
    assert 'fan' in body and 'unknown, fill in' in body
    assert f'No evaluation of iteration {STEP}' in body


@pytest.mark.parametrize('train_dir,demo,license_,name', [
    ('data/afhq/train', None, 'cc-by-nc-4.0', 'AFHQ'),
    ('/data/AFHQ_v2/train', None, 'cc-by-nc-4.0', 'AFHQ'),
    ('data/celeba_hq/train', None, 'other', 'CelebA-HQ'),
    ('expr/demo/data/train', 'expr/demo/data', 'unknown', "this project's generated shapes (core/datasets/demo_shapes.py)"),
    ('/home/me/photos/train', None, 'unknown', 'unknown'),
    (None, None, 'unknown', 'unknown'),
])
def test_the_licence_of_the_training_data(train_dir, demo, license_, name):
    data = hub.training_data(train_dir, demo)
    assert (data['license'], data['name']) == (license_, name)
    meta = dict(format_version=1, img_size=32, num_domains=2, style_dim=16, latent_dim=8, w_hpf=0, domain_names=None,
                step=5, training_data=data, networks=['generator'])
    front, body = card_parts(hub.model_card(meta))
    assert front['license'] == license_
    if license_ == 'other':  # the Hub wants a name and a link for other licences
        assert front['license_name'] and front['license_link'].startswith('https://')
        assert 'non-commercial research' in body
    if name == 'AFHQ':
        assert 'CC BY-NC 4.0' in body
    if name == 'unknown':
        assert 'unknown, fill in' in body


def write_eval(folder, step, seed=0):
    """What --mode eval writes (metrics.eval's own writer): FID/LPIPS JSON files and metrics.jsonl."""
    from munch import Munch

    from metrics.eval import _write
    for mode in ('latent', 'reference'):
        fid = {f'FID_{mode}/cat2dog': 40.0 + seed, f'FID_{mode}/dog2cat': 50.0, f'FID_{mode}/mean': 45.0 + seed / 2}
        lpips = {f'LPIPS_{mode}/cat2dog': 0.25, f'LPIPS_{mode}/dog2cat': 0.35, f'LPIPS_{mode}/mean': 0.3}
        _write(Munch(eval_dir=str(folder)), step, mode, fid, lpips)


def test_metrics_of_the_exported_step_come_from_the_eval_folder(tmp_path):
    write_eval(tmp_path / 'eval', STEP)
    write_eval(tmp_path / 'eval', STEP + 1, seed=9)
    metrics = read_results(tmp_path / 'eval', STEP)
    assert metrics['FID_latent/mean'] == 45.0 and metrics['LPIPS_reference/dog2cat'] == 0.35
    assert metrics['from'] == 'eval/{FID,LPIPS}_00003_*.json'
    assert read_results(tmp_path / 'eval', 99) is None and read_results(tmp_path / 'none', STEP) is None
    for f in (tmp_path / 'eval').glob('*.json'):  # metrics.jsonl alone (the last line of a mode wins)
        f.unlink()
    with open(tmp_path / 'eval' / 'metrics.jsonl', 'a') as f:
        f.write('{"step": 3, "mode": "lat')  # a line cut short is skipped
    assert read_results(tmp_path / 'eval', STEP + 1)['FID_latent/mean'] == 49.5
    assert read_results(tmp_path / 'eval', STEP)['from'] == 'eval/metrics.jsonl'
    meta = dict(format_version=1, img_size=32, num_domains=2, style_dim=16, latent_dim=8, w_hpf=0, domain_names=NAMES,
                step=STEP, metrics=read_results(tmp_path / 'eval', STEP), networks=[])
    _, body = card_parts(hub.model_card(meta))
    assert '| task | FID_latent | LPIPS_latent | FID_reference | LPIPS_reference |' in body
    assert '| cat2dog | 40.00 | 0.2500 | 40.00 | 0.2500 |' in body
    assert body.index('| cat2dog') < body.index('| mean |')


def test_export_metadata_names_data_and_metrics_of_the_run(tmp_path):
    make_checkpoint(tmp_path / 'run', names=NAMES)
    cfg = yaml.safe_load((tmp_path / 'run' / 'config.yaml').read_text())
    cfg.update(train_img_dir='data/afhq/train', eval_dir=str(tmp_path / 'run_eval'))
    (tmp_path / 'run' / 'config.yaml').write_text(yaml.safe_dump(cfg))
    write_eval(tmp_path / 'run_eval', STEP)
    args = parse_args(['--mode', 'export', '--format', 'hf', '--checkpoint_dir', str(tmp_path / 'run'),
                       '--eval_dir', str(tmp_path / 'elsewhere')])
    meta = hub_metadata(args, STEP)
    assert meta['training_data']['name'] == 'AFHQ' and meta['source'] == f'run/{STEP:06d}_nets_ema.ckpt'
    assert meta['metrics']['FID_latent/mean'] == 45.0  # --eval_dir had none: the run's recorded eval_dir
    write_eval(tmp_path / 'elsewhere', STEP, seed=4)
    assert hub_metadata(args, STEP)['metrics']['FID_latent/mean'] == 47.0  # --eval_dir first
    assert hub_metadata(args, STEP + 1)['metrics'] is None  # never the metrics of another step
    # an official checkpoint (no config.yaml): --train_img_dir (here from the paper's config) names the data
    make_checkpoint(tmp_path / 'official', with_config=False)
    args = parse_args(['--mode', 'export', '--config', 'configs/celeba_hq.yaml', '--checkpoint_dir',
                       str(tmp_path / 'official'), '--eval_dir', str(tmp_path / 'none')])
    assert hub_metadata(args, STEP)['training_data']['name'] == 'CelebA-HQ'


# ---------------------------------------------------------------------------- no pickle

def test_loading_a_hub_folder_runs_no_pickle(runs, monkeypatch, one_thread):
    ckpt, folder, cfg, _ = runs(1, 64)
    want = outputs(load_networks(cfg, str(ckpt), STEP, 'cpu'), cfg)

    def refuse(*args, **kwargs):
        raise AssertionError('pickle ran while loading a Hub folder')
    monkeypatch.setattr(torch, 'load', refuse)
    for name in ('load', 'loads', 'Unpickler'):
        monkeypatch.setattr(pickle, name, refuse)
    nets, _, _ = hub.load_hub_folder(folder, 'cpu')
    args = parse_args(['--mode', 'translate', '--checkpoint_dir', str(folder), '--device', 'cpu'])
    run_nets, step = load_run_networks(args)
    assert step == STEP
    for loaded in (nets, run_nets):
        assert all(torch.equal(a, b) for a, b in zip(outputs(loaded, cfg).values(), want.values()))
    with pytest.raises(UserError, match='pickle ran'):  # the guard works: a checkpoint needs torch.load
        load_networks(cfg, str(ckpt), STEP, 'cpu')


# ---------------------------------------------------------------------------- strict loading, one-line errors

def test_a_file_of_other_keys_or_shapes_fails_in_one_line_naming_it(runs, tmp_path):
    _, folder, _, _ = runs(0, 32)
    state = load_file(str(folder / 'model.safetensors'))

    def broken(change):
        bad = tmp_path / change
        bad.mkdir()
        (bad / 'config.json').write_text((folder / 'config.json').read_text())
        edited = dict(state)
        if change == 'missing':
            del edited['generator.to_rgb.2.bias']
        elif change == 'unexpected':
            edited['discriminator.main.0.weight'] = torch.zeros(1)
        else:
            edited['style_encoder.unshared.0.weight'] = torch.zeros(3, 3)
        save_file(edited, str(bad / 'model.safetensors'))
        return bad

    for change, match in (('missing', '1 missing key .e.g. generator.to_rgb.2.bias'),
                          ('unexpected', '1 unexpected key .e.g. discriminator.main.0.weight'),
                          ('shape', r'1 of another shape .e.g. style_encoder.unshared.0.weight: 3x3 in the file, 16x32 here')):
        with pytest.raises(UserError, match=match) as e:
            hub.load_hub_folder(broken(change), 'cpu')
        one_line(e)
    # model flags that contradict config.json fail when the weights load
    args = parse_args(['--mode', 'translate', '--checkpoint_dir', str(folder), '--style_dim', '8', '--device', 'cpu'])
    with pytest.raises(UserError, match='contradict .*config.json') as e:
        load_run_networks(args)
    one_line(e)


@pytest.mark.parametrize('case,match', [
    ('no_config', 'has no config.json'),
    ('no_weights', 'has no model.safetensors'),
    ('not_json', 'cannot read .*config.json'),
    ('other_format', "format 'diffusers'"),
    ('newer', 'format_version 99'),
    ('bad_key', "'img_size' in .*config.json must be a power of two from 16 to 1024, not 'big'"),
    ('names', "'domain_names' in .*config.json gives 3 names but 'num_domains' in .*config.json is 2"),
    ('garbage_weights', 'model.safetensors is not a safetensors file'),
])
def test_broken_folders_fail_in_one_line(runs, tmp_path, case, match):
    _, folder, _, _ = runs(0, 32)
    meta = json.loads((folder / 'config.json').read_text())
    (tmp_path / 'model.safetensors').write_bytes((folder / 'model.safetensors').read_bytes())
    (tmp_path / 'config.json').write_text(json.dumps(meta))
    if case == 'no_config':
        (tmp_path / 'config.json').unlink()
    elif case == 'no_weights':
        (tmp_path / 'model.safetensors').unlink()
    elif case == 'not_json':
        (tmp_path / 'config.json').write_text('{"format": ')
    elif case == 'garbage_weights':
        (tmp_path / 'model.safetensors').write_bytes(b'not a safetensors file')
    else:
        meta.update({'other_format': {'format': 'diffusers'}, 'newer': {'format_version': 99},
                     'bad_key': {'img_size': 'big'}, 'names': {'domain_names': ['a', 'b', 'c']}}[case])
        (tmp_path / 'config.json').write_text(json.dumps(meta))
    with pytest.raises(UserError, match=match) as e:
        hub.load_hub_folder(tmp_path, 'cpu')
    one_line(e)


# ---------------------------------------------------------------------------- --checkpoint_dir FOLDER

@pytest.mark.parametrize('mode', ['sample', 'eval', 'translate', 'serve', 'export'])
def test_every_mode_that_loads_a_run_reads_the_folders_config(runs, mode):
    _, folder, cfg, _ = runs(0, 32)
    args = parse_args(['--mode', mode, '--checkpoint_dir', str(folder)])
    assert ModelConfig.from_args(args) == cfg
    assert args.domain_names == 'cat,dog' and args.to_rgb_norm == 1 and args.w_hpf == 0.0
    args = parse_args(['--mode', mode, '--checkpoint_dir', str(folder), '--latent_dim', '4'])
    assert args.latent_dim == 4 and args.img_size == 32  # the command line still wins
    assert parse_args(['--mode', 'train', '--checkpoint_dir', str(folder)]).img_size == 256  # train does not load it


def test_the_step_comes_from_the_folder_and_online_is_refused(runs, tmp_path):
    _, folder, _, _ = runs(0, 32)
    assert resolve_step(str(folder), 0) == STEP and resolve_step(str(folder), 'latest') == STEP
    assert resolve_step(str(folder), STEP) == STEP
    with pytest.raises(UserError, match=f'Hub folder of iteration {STEP} only, not 7; drop --resume_iter') as e:
        resolve_step(str(folder), 7)
    one_line(e)
    with pytest.raises(UserError, match='holds only the EMA networks; drop --sample_from online') as e:
        load_run_networks(parse_args(['--mode', 'sample', '--checkpoint_dir', str(folder), '--sample_from', 'online']))
    one_line(e)
    # a folder exported without a step loads at step 0
    nets, cfg, _ = hub.load_hub_folder(folder, 'cpu')
    hub.save_hub_folder(nets, cfg, tmp_path / 'nostep')
    assert resolve_step(str(tmp_path / 'nostep'), 0) == 0 and hub.hub_step(tmp_path / 'nostep') is None


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


def export_args(ckpt, out, *extra):
    return parse_args(['--mode', 'export', '--format', 'hf', '--checkpoint_dir', str(ckpt), '--out', str(out),
                       '--device', 'cpu', '--eval_dir', str(out) + '_eval', *extra])


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
        hub.push_folder(tmp_path / 'hf', 'me/x')


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
    local = hub.resolve_pretrained('me/stargan-v2-tiny', cache_dir=tmp_path / 'cache')
    assert os.path.samefile(local, snapshot)
    nets, cfg2, meta = hub.load_hub_folder(local, 'cpu')
    assert cfg2 == cfg and meta['step'] == STEP
    want = outputs(hub.load_hub_folder(folder, 'cpu')[0], cfg)
    assert all(torch.equal(a, b) for a, b in zip(outputs(nets, cfg).values(), want.values()))
    # the command line takes the cached folder as --checkpoint_dir
    assert parse_args(['--mode', 'translate', '--checkpoint_dir', local]).img_size == 32


def test_a_repo_id_not_in_the_cache_offline_is_one_line(tmp_path, no_network):
    with pytest.raises(UserError, match="'me/absent' is not in the Hugging Face cache and the Hub cannot be reached") as e:
        hub.resolve_pretrained('me/absent', cache_dir=tmp_path / 'cache')
    one_line(e)


def test_resolve_pretrained_folders_and_bad_names(runs, tmp_path, monkeypatch):
    import huggingface_hub
    _, folder, _, _ = runs(0, 32)
    assert hub.resolve_pretrained(folder) == str(folder) and hub.resolve_pretrained(str(folder)) == str(folder)
    for name in (str(tmp_path / 'missing'), './missing', 'a/b/c'):
        with pytest.raises(UserError, match='is not a folder'):
            hub.resolve_pretrained(name)
    with pytest.raises(UserError, match='is not a Hub repository id'):
        hub.resolve_pretrained('bad name!')
    seen = []
    monkeypatch.setattr(huggingface_hub, 'snapshot_download', lambda repo, **kw: seen.append((repo, kw)) or str(folder))
    assert hub.resolve_pretrained('me/model', revision='v1') == str(folder)
    assert seen[0][0] == 'me/model' and seen[0][1]['revision'] == 'v1'
    assert set(seen[0][1]['allow_patterns']) == {'config.json', 'model.safetensors', 'README.md'}  # never pickled files

    class RepositoryNotFoundError(Exception):
        pass

    def missing(repo, **kw):
        raise RepositoryNotFoundError('404 Client Error.\nRepository Not Found')
    monkeypatch.setattr(huggingface_hub, 'snapshot_download', missing)
    with pytest.raises(UserError, match="no model repository 'me/model' on the Hugging Face Hub") as e:
        hub.resolve_pretrained('me/model')
    one_line(e)


# ---------------------------------------------------------------------------- the command line, end to end

@pytest.mark.slow
@pytest.mark.parametrize('w_hpf,img_size', CASES)
def test_cli_export_then_translate_from_the_folder_gives_the_same_image(tmp_path, w_hpf, img_size, one_thread):
    make_checkpoint(tmp_path / 'ckpt', img_size=img_size, w_hpf=w_hpf, names=NAMES)
    assert cli.main(['--mode', 'export', '--format', 'hf', '--checkpoint_dir', str(tmp_path / 'ckpt'),
                     '--out', str(tmp_path / 'hf'), '--device', 'cpu', '--eval_dir', str(tmp_path / 'eval')]) == 0
    src = make_image(tmp_path / 'src.png', size=70)
    make_image(tmp_path / 'ref.png', size=50, seed=1)
    for guide in (['--trg_domain', 'dog', '--num_outs', '2', '--psi', '0.7'], ['--ref', str(tmp_path / 'ref.png'),
                                                                              '--ref_domain', 'cat']):
        images = []
        for where in ('ckpt', 'hf'):
            out = tmp_path / f'{where}_{guide[0][2:]}.png'
            assert cli.main(['--mode', 'translate', '--checkpoint_dir', str(tmp_path / where), '--src', str(src),
                             '--out', str(out), '--device', 'cpu', '--seed', '5', *guide]) == 0
            images.append(out.read_bytes())
        assert images[0] == images[1]
    # and the folder exports again (to ONNX or Hub) like a run
    assert cli.main(['--mode', 'export', '--format', 'hf', '--checkpoint_dir', str(tmp_path / 'hf'),
                     '--out', str(tmp_path / 'hf2'), '--device', 'cpu']) == 0
    assert (tmp_path / 'hf2' / 'model.safetensors').read_bytes() == (tmp_path / 'hf' / 'model.safetensors').read_bytes()


@pytest.mark.slow
def test_cli_errors_for_a_hub_folder_are_one_line(runs, tmp_path, capsys):
    _, folder, _, _ = runs(0, 32)
    rc = cli.main(['--mode', 'sample', '--checkpoint_dir', str(folder), '--sample_from', 'online',
                   '--out', str(tmp_path / 'out'), '--device', 'cpu'])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and 'drop --sample_from online' in err[0]


def test_the_model_cards_python_example_runs(runs, tmp_path, one_thread):
    """The card's Python block, with this folder for FOLDER_OR_REPO_ID and a real image, gives
    the PIL images it says."""
    _, folder, _, _ = runs(0, 64)
    body = (folder / 'README.md').read_text()
    code = body.split('```python\n', 1)[1].split('```', 1)[0]
    photo = tmp_path / 'photo.png'
    Image.new('RGB', (40, 30), (200, 40, 90)).save(photo)
    scope = {}
    exec(code.replace('FOLDER_OR_REPO_ID', str(folder)).replace('photo.jpg', str(photo)), scope)
    assert len(scope['images']) == 4 and all(isinstance(im, Image.Image) and im.size == (64, 64)
                                              for im in scope['images'])


# ---------------------------------------------------------------------------- hostile or broken folders (issue 29)

def copy_folder(folder, dest, **changes):
    """A copy of the Hub folder ``folder`` whose config.json has ``changes``."""
    dest.mkdir()
    meta = json.loads((folder / 'config.json').read_text())
    meta.update(changes)
    (dest / 'config.json').write_text(json.dumps(meta))
    (dest / 'model.safetensors').write_bytes((folder / 'model.safetensors').read_bytes())
    return dest


@pytest.mark.parametrize('changes,match', [
    ({'style_dim': 10 ** 12}, "'style_dim' in .*config.json must be an integer from 1 to 2048, not 1000000000000"),
    ({'num_domains': 10000, 'domain_names': None}, "'num_domains' in .*config.json must be an integer from 1 to 256"),
    ({'img_size': 1}, "'img_size' in .*config.json must be a power of two from 16 to 1024, not 1"),
    ({'img_size': '128'}, "'img_size' in .*config.json must be a power of two .*, not '128'"),
    ({'domain_names': ['a,b', 'c']}, "domain name 'a,b' is not usable; .*without commas"),
    ({'domain_names': ['cat', 'cat']}, "'domain_names' in .*config.json names 'cat' twice"),
    ({'domain_names': 'cat,dog'}, "'domain_names' in .*config.json must be a list of names or null, not a string"),
    ({'w_hpf': 'high'}, "'w_hpf' in .*config.json must be a number"),
])
def test_a_hostile_config_json_is_refused_before_anything_is_built(runs, tmp_path, monkeypatch, changes, match):
    """A 200-byte config.json asking for sizes that would allocate tens of GiB (or a value of
    another type, or names that a comma list cannot hold): one line, no network built."""
    _, folder, _, _ = runs(0, 32)
    bad = copy_folder(folder, tmp_path / 'bad', **changes)
    monkeypatch.setattr(hub, 'build_networks', lambda *a, **k: pytest.fail('networks were built'))
    with pytest.raises(UserError, match=match) as e:
        hub.load_hub_folder(bad, 'cpu')
    one_line(e)
    with pytest.raises(UserError, match=match):  # the command line reads the same config.json
        parse_args(['--mode', 'translate', '--checkpoint_dir', str(bad)])


def test_a_deeply_nested_or_huge_config_json_is_one_line(runs, tmp_path):
    _, folder, _, _ = runs(0, 32)
    bad = copy_folder(folder, tmp_path / 'deep')
    (bad / 'config.json').write_text('{"format": ' + '[' * 100000 + ']' * 100000 + '}')
    with pytest.raises(UserError, match='config.json is nested too deeply') as e:
        hub.load_hub_folder(bad, 'cpu')
    one_line(e)
    (bad / 'config.json').write_text('{"format": "stargan-v2", "pad": "' + 'x' * (2 << 20) + '"}')
    with pytest.raises(UserError, match=r'config.json is \d+ bytes, more than a config.json has'):
        hub.load_hub_folder(bad, 'cpu')


def test_the_safetensors_header_is_checked_before_any_tensor_loads(runs, tmp_path, monkeypatch):
    """Keys, shapes and kinds of number come from the header (8 bytes of length, then JSON):
    a file with other keys is refused without reading its tensors (a hostile file could hold
    gigabytes of unexpected ones)."""
    import safetensors.torch
    _, folder, _, _ = runs(0, 32)
    state = load_file(str(folder / 'model.safetensors'))
    header = hub.read_safetensors_header(str(folder / 'model.safetensors'))
    assert {k: (d, tuple(s)) for k, (d, s) in header.items()} == {k: ('F32', tuple(v.shape)) for k, v in state.items()}
    loads = []
    real = safetensors.torch.load_file
    monkeypatch.setattr(safetensors.torch, 'load_file', lambda *a, **k: loads.append(a) or real(*a, **k))
    for name, edited, match in (
            ('unexpected', {**state, 'extra.weight': torch.zeros(1000, 1000)}, '1 unexpected key .e.g. extra.weight'),
            ('kind', {**state, 'generator.to_rgb.2.bias': torch.zeros(3, dtype=torch.int32)},
             '1 of another kind of number .e.g. generator.to_rgb.2.bias: I32 in the file, float32 here')):
        bad = copy_folder(folder, tmp_path / name)
        save_file(edited, str(bad / 'model.safetensors'))
        with pytest.raises(UserError, match=match) as e:
            hub.load_hub_folder(bad, 'cpu')
        one_line(e)
    assert loads == []  # refused from the header alone
    hub.load_hub_folder(folder, 'cpu')
    assert len(loads) == 1  # a good file loads after its header passed
    bad = copy_folder(folder, tmp_path / 'deep_header')
    text = b'{"a": ' + b'[' * 100000 + b']' * 100000 + b'}'
    (bad / 'model.safetensors').write_bytes(len(text).to_bytes(8, 'little') + text)
    with pytest.raises(UserError, match='is not a safetensors file .a header nested too deeply'):
        hub.load_hub_folder(bad, 'cpu')


def test_a_foreign_config_json_beside_checkpoints_is_not_a_hub_folder(runs, tmp_path):
    """A run or official checkpoints with some other tool's config.json beside them load as a run."""
    ckpt, _, cfg, _ = runs(0, 32)
    run = tmp_path / 'run'
    run.mkdir()
    (run / f'{STEP:06d}_nets_ema.ckpt').write_bytes((ckpt / f'{STEP:06d}_nets_ema.ckpt').read_bytes())
    (run / 'config.json').write_text(json.dumps({'model_type': 'something else', 'hidden_size': 7}))
    assert not hub.is_hub_folder(run)
    assert resolve_step(str(run), 0) == STEP
    load_networks(cfg, str(run), STEP, 'cpu')
    # ours, or any config.json in a folder without checkpoints, is a Hub folder (and its loader says what is wrong)
    (run / 'config.json').write_text(json.dumps({'format': 'stargan-v2'}))
    assert hub.is_hub_folder(run)
    other = tmp_path / 'other'
    other.mkdir()
    (other / 'config.json').write_text('{}')
    assert hub.is_hub_folder(other)


def test_reexporting_a_folder_with_edited_card_fields_works(runs, tmp_path):
    """config.json fields that only the card reads, changed by hand or by another writer
    (a string for training_data, a list for metrics, a number for source): the export keeps
    what is valid and says 'unknown' for the rest."""
    _, folder, _, _ = runs(0, 32)
    for i, changes in enumerate([
            dict(training_data='CC-BY', metrics=[1, 2], source=5),
            dict(training_data={'name': 'AFHQ', 'license': 'other', 'text': 'x'}, metrics={'FID_latent/mean': 'bad'}),
            dict(training_data={'name': 3}, metrics={'FID_latent/mean': 12.5, 'from': 7}, source=None)]):
        bad = copy_folder(folder, tmp_path / f'edited{i}', **changes)
        export_run(export_args(bad, tmp_path / f"out{i}"))
        card = (tmp_path / f'out{i}' / 'README.md').read_text()
        front, body = card_parts(card)
        assert front['license'] == 'unknown' and 'unknown, fill in' in body
        written = json.loads((tmp_path / f'out{i}' / 'config.json').read_text())
        assert isinstance(written['source'], str) and written['training_data']['license'] == 'unknown'
        assert written.get('metrics') in (None, {'FID_latent/mean': 12.5})
        hub.load_hub_folder(tmp_path / f'out{i}', 'cpu')


def test_the_cards_commands_quote_the_domain_names():
    import ast
    import shlex
    names = ["it's", 'a b', '$(touch x)']
    meta = dict(format_version=1, img_size=32, num_domains=3, style_dim=16, latent_dim=8, w_hpf=0, domain_names=names,
                step=5, networks=['generator'])
    card = hub.model_card(meta)
    command = next(line for line in card.splitlines() if '--trg_domain' in line)
    words = shlex.split(command)
    assert words[words.index('--trg_domain') + 1] == names[-1]
    python = next(line for line in card.splitlines() if 'model.translate(' in line)
    call = ast.parse(python.split('  #')[0].split('= ', 1)[1]).body[0].value
    assert ast.literal_eval(next(k.value for k in call.keywords if k.arg == 'domain')) == names[-1]


def test_the_demo_licence_needs_whole_path_components():
    data = hub.training_data('expr/demo/data_celeba/train', 'expr/demo/data')
    assert data['name'] == 'CelebA-HQ'
    assert hub.training_data('expr/demo/data/train', 'expr/demo/data/')['license'] == 'unknown'
    assert hub.training_data('./expr/demo/data/train/cat', 'expr/demo/data')['name'].startswith("this project's")


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


def test_export_metadata_of_a_run_with_odd_recorded_paths(tmp_path):
    """A run's config.yaml edited so that train_img_dir or eval_dir are not paths: the export
    says 'unknown' for the data and looks for metrics elsewhere."""
    make_checkpoint(tmp_path / 'run', names=NAMES)
    cfg = yaml.safe_load((tmp_path / 'run' / 'config.yaml').read_text())
    cfg.update(train_img_dir=['data', 'afhq'], demo_data=3, eval_dir={'a': 1})
    (tmp_path / 'run' / 'config.yaml').write_text(yaml.safe_dump(cfg))
    args = parse_args(['--mode', 'export', '--format', 'hf', '--checkpoint_dir', str(tmp_path / 'run'),
                       '--eval_dir', str(tmp_path / 'none')])
    meta = hub_metadata(args, STEP)
    assert meta['training_data']['license'] == 'unknown' and meta['metrics'] is None
