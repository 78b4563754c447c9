"""Hub folders (core/use/hub_folder.py): `--mode export --format hf` writes config.json +
model.safetensors + a model card; the folder reloads to networks whose outputs equal the
checkpoint's bit for bit (w_hpf 0 and 1), through safetensors only (no pickle); a foreign or
hostile folder fails in one line before anything is built; `--checkpoint_dir FOLDER` works in
the modes that load a run."""
import json
import os
import pickle

import pytest
import torch
from hub_helpers import CASES, NAMES, copy_folder, one_line, outputs
from safetensors.torch import load_file, save_file
from tiny_run import STEP, make_checkpoint, make_image

import core.use.hub_folder as hub
import main as cli
from core.cli.arguments import parse_args
from core.errors import UserError
from core.nn.networks import MODEL_KEYS, ModelConfig
from core.use.load_run import load_networks, load_run_networks, resolve_step

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


# ---------------------------------------------------------------------------- hostile or broken folders

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
