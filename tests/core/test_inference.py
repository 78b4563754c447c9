"""The model configuration stored with a run and the one loader of networks for inference."""
import os

import pytest
import torch
import yaml

from core.ckpt import save_checkpoint
from core.config import parse_args
from core.errors import UserError
from core.ckpt import complete_steps
from core.inference import load_networks, resolve_step
from core.model import build_model
from core.networks import MODEL_KEYS, ModelConfig

TINY = dict(img_size=32, style_dim=16, latent_dim=8, num_domains=3, w_hpf=0.0, dim_in=8, max_conv_dim=32,
            to_rgb_norm=0)


def write_run(folder, **model):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / 'config.yaml').write_text(yaml.safe_dump({**model, 'domain_names': 'cat,dog,wild', 'lr': 0.5}))
    return folder


def test_model_config_from_args_and_names():
    args = parse_args(['--mode', 'train', '--img_size', '32', '--num_domains', '3', '--domain_names', 'a, b,c'])
    cfg = ModelConfig.from_args(args)
    assert (cfg.img_size, cfg.num_domains, cfg.max_conv_dim, cfg.dim_in) == (32, 3, 512, None)
    assert cfg.names() == ['a', 'b', 'c']
    assert ModelConfig.from_args(args, domain_names=['x', 'y', 'z']).domain_names == ('x', 'y', 'z')
    assert ModelConfig(num_domains=2).names() == ['0', '1']
    assert set(MODEL_KEYS) == {'img_size', 'style_dim', 'latent_dim', 'num_domains', 'w_hpf', 'dim_in',
                               'max_conv_dim', 'to_rgb_norm', 'domain_names'}
    assert cfg.to_rgb_norm is True  # official by default


@pytest.mark.parametrize('mode', ['sample', 'eval', 'translate'])
def test_run_modes_read_the_architecture_back(tmp_path, mode):
    run = write_run(tmp_path / 'run', **TINY)
    args = parse_args(['--mode', mode, '--checkpoint_dir', str(run)])
    assert {k: getattr(args, k) for k in TINY} == TINY
    assert args.domain_names == 'cat,dog,wild'
    assert args.lr == 1e-4  # only the model keys come back, not the training settings


def test_command_line_flags_win_over_the_run_and_the_run_over_config_files(tmp_path):
    run = write_run(tmp_path / 'run', **TINY)
    other = tmp_path / 'other.yaml'
    other.write_text(yaml.safe_dump({'img_size': 128, 'latent_dim': 4, 'checkpoint_dir': str(run)}))
    args = parse_args(['--mode', 'sample', '--config', str(other), '--latent_dim', '2'])
    assert args.img_size == 32  # the run beats --config
    assert args.latent_dim == 2  # a flag beats the run


def test_train_and_official_checkpoints_keep_their_flags(tmp_path):
    run = write_run(tmp_path / 'run', **TINY)
    assert parse_args(['--mode', 'train', '--checkpoint_dir', str(run)]).img_size == 256
    assert parse_args(['--mode', 'sample', '--checkpoint_dir', str(tmp_path / 'official'),
                       '--img_size', '64']).img_size == 64


def test_generator_without_to_rgb_norm_keeps_official_names_and_is_told_apart(tmp_path, one_thread):
    plain, bare = (build_model(ModelConfig(**{**TINY, 'to_rgb_norm': flag}))[1] for flag in (True, False))
    names = set(bare.generator.state_dict())
    assert set(plain.generator.state_dict()) - names == {'to_rgb.0.weight', 'to_rgb.0.bias'}
    assert 'to_rgb.2.weight' in names  # the 1x1 convolution keeps its official name
    x, s = torch.rand(2, 3, 32, 32), torch.randn(2, 16)
    with torch.no_grad():  # without the norm, the style moves the output's mean colour
        flat = torch.zeros_like(x)
        out = bare.generator(flat, s)
        assert (out[0].mean((1, 2)) - out[1].mean((1, 2))).abs().max() > 1e-3
    assert bare.generator(x, s).shape == x.shape
    saved_run(tmp_path, [5], ModelConfig(**TINY))
    with pytest.raises(UserError, match='another configuration .*to_rgb_norm=0'):
        load_networks(ModelConfig(**{**TINY, 'to_rgb_norm': True}), str(tmp_path), 5, 'cpu')
    assert not load_networks(ModelConfig(**TINY), str(tmp_path), 5, 'cpu').generator.to_rgb[0].state_dict()


def saved_run(folder, steps, cfg):
    nets, nets_ema = build_model(cfg)
    for step in steps:
        for p in nets_ema.generator.parameters():
            p.data.fill_(step)
        save_checkpoint(str(folder), step, nets, nets_ema)
    return nets, nets_ema


def test_load_networks_newest_step_ema_or_online(tmp_path, one_thread):
    cfg = ModelConfig(**TINY)
    nets, _ = saved_run(tmp_path, [3, 10, 7], cfg)
    assert complete_steps(str(tmp_path)) == [3, 7, 10]
    assert resolve_step(str(tmp_path), 0) == 10 and resolve_step(str(tmp_path), 3) == 3
    ema = load_networks(cfg, str(tmp_path), 0, 'cpu')
    assert sorted(ema) == ['generator', 'mapping_network', 'style_encoder']
    assert all(torch.all(p == 10) for p in ema.generator.parameters())
    assert not ema.generator.training
    online = load_networks(cfg, str(tmp_path), 7, 'cpu', which='online')
    for key, value in online.generator.state_dict().items():
        assert torch.equal(value, nets.generator.state_dict()[key])


def test_load_networks_errors_are_one_line(tmp_path):
    with pytest.raises(UserError, match='no complete checkpoint with a \\*_nets_ema.ckpt file'):
        load_networks(ModelConfig(**TINY), str(tmp_path), 0)
    saved_run(tmp_path, [1], ModelConfig(**TINY))
    with pytest.raises(UserError, match='another configuration') as err:
        load_networks(ModelConfig(**{**TINY, 'num_domains': 2}), str(tmp_path), 1)
    assert '\n' not in str(err.value)
    with pytest.raises(UserError, match="which must be 'ema' or 'online'"):
        load_networks(ModelConfig(**TINY), str(tmp_path), 1, which='best')


def test_w_hpf_models_take_the_fan_from_the_checkpoint(tmp_path):
    from weights_by_name import value_for
    cfg = ModelConfig(**{**TINY, 'img_size': 64, 'num_domains': 2, 'w_hpf': 1.0})
    nets, nets_ema = build_model(cfg)
    nets.fan.load_state_dict({k: value_for(k, v) for k, v in nets.fan.state_dict().items()})
    save_checkpoint(str(tmp_path), 5, nets, nets_ema)
    loaded = load_networks(cfg, str(tmp_path), 5, 'cpu', wing_path=None)
    for key, value in nets.fan.state_dict().items():
        assert torch.equal(loaded.fan.state_dict()[key], value)


def test_a_new_number_of_domains_drops_the_runs_names(tmp_path):
    run = write_run(tmp_path / 'run', **TINY)
    args = parse_args(['--mode', 'translate', '--checkpoint_dir', str(run), '--num_domains', '2'])
    assert args.num_domains == 2 and args.domain_names is None


@pytest.mark.parametrize('config, names', [('configs/afhq.yaml', ['cat', 'dog', 'wild']),
                                           ('configs/celeba_hq.yaml', ['female', 'male'])])
def test_paper_configs_name_the_released_models_domains(tmp_path, config, names):
    """The released checkpoints have no config.yaml: the paper configs give their domain names."""
    args = parse_args(['--mode', 'translate', '--config', config, '--checkpoint_dir', str(tmp_path)])
    assert ModelConfig.from_args(args).names() == names


# ---------------------------------------------------------------- translate: outputs never overwrite inputs (issue 19, item 9)

def photos(root, names=('a/x.png', 'b/x.png', 'y.jpg')):
    from tiny_run import make_image
    for i, name in enumerate(names):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        make_image(root / name, size=16, seed=i)
    return {name: (root / name).read_bytes() for name in names}


def translate_plan(src, out, ref=None):
    from munch import Munch

    from core.translate import plan
    return plan(Munch(src=str(src), out=str(out), ref=str(ref) if ref else None))


def test_translate_keeps_sub_folders_so_names_never_collide(tmp_path):
    photos(tmp_path / 'src')
    jobs = translate_plan(tmp_path / 'src', tmp_path / 'out')
    assert [(os.path.relpath(s, tmp_path / 'src'), os.path.relpath(o, tmp_path / 'out')) for s, o in jobs] == \
        [('a/x.png', 'a/x.png'), ('b/x.png', 'b/x.png'), ('y.jpg', 'y.jpg')]
    assert not (tmp_path / 'out').exists()  # checked, not made


@pytest.mark.parametrize('out', ['src', 'src/out', 'src/a', 'link_to_src/out'])
def test_translate_refuses_an_output_folder_in_the_input_folder(tmp_path, out):
    kept = photos(tmp_path / 'src')
    (tmp_path / 'link_to_src').symlink_to(tmp_path / 'src')
    with pytest.raises(UserError, match=r"--out .* (is|lies inside) the input folder --src") as e:
        translate_plan(tmp_path / 'src', tmp_path / out)
    assert '\n' not in str(e.value)
    assert {n: (tmp_path / 'src' / n).read_bytes() for n in kept} == kept


def test_an_input_folder_inside_the_output_is_fine_unless_a_file_would_be_overwritten(tmp_path):
    photos(tmp_path / 'out' / 'in', ('p.png', 'q/r.png'))
    assert len(translate_plan(tmp_path / 'out' / 'in', tmp_path / 'out')) == 2
    photos(tmp_path / 'out2' / 'in', ('in/p.png', 'p.png'))  # out2/in/p.png would be written from in/in/p.png
    with pytest.raises(UserError, match='would overwrite an input image'):
        translate_plan(tmp_path / 'out2' / 'in', tmp_path / 'out2')


@pytest.mark.parametrize('case,match', [('no_extension', 'has no image extension'), ('same_as_src', 'overwrite an input'),
                                        ('same_as_ref', 'overwrite an input'), ('folder', 'is a folder'),
                                        ('under_a_file', 'not a folder')])
def test_translate_checks_a_single_output_path(tmp_path, case, match):
    kept = photos(tmp_path, ('src.png', 'ref.png'))
    (tmp_path / 'dir').mkdir()
    out = {'no_extension': tmp_path / 'result', 'same_as_src': tmp_path / 'src.png', 'same_as_ref': tmp_path / 'ref.png',
           'folder': tmp_path / 'dir', 'under_a_file': tmp_path / 'src.png' / 'o.png'}[case]
    with pytest.raises(UserError, match=match):
        translate_plan(tmp_path / 'src.png', out, ref=tmp_path / 'ref.png')
    assert {n: (tmp_path / n).read_bytes() for n in kept} == kept


def test_translate_checks_paths_before_the_networks_load(tmp_path, monkeypatch, capsys):
    import core.translate
    import main as cli
    photos(tmp_path / 'src')
    monkeypatch.setattr(core.translate, 'load_run_networks', lambda *a, **k: pytest.fail('networks loaded'))
    rc = cli.main(['--mode', 'translate', '--checkpoint_dir', str(tmp_path / 'ckpt'), '--src', str(tmp_path / 'src'),
                   '--trg_domain', '1', '--out', str(tmp_path / 'src' / 'out')])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and 'lies inside the input folder' in err[0]
    rc = cli.main(['--mode', 'translate', '--checkpoint_dir', str(tmp_path / 'ckpt'), '--src', str(tmp_path / 'src' / 'y.jpg'),
                   '--trg_domain', '1', '--out', str(tmp_path / 'out')])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and 'no image extension' in err[0]
    assert not (tmp_path / 'src' / 'out').exists() and not (tmp_path / 'out').exists()
