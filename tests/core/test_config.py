"""core.config: official defaults, YAML defaults, overrides, errors, saved configs."""
import os

import pytest
import torch
import yaml

from core import config as C
from core import config_file
from core.flags import build_parser, flag_actions
from core.config import parse_args
from core.errors import UserError
from core.config_file import load_config, save_config
from core.device import select_device
from helpers import ROOT

CONFIGS = os.path.join(ROOT, 'configs')

# Every flag of the official StarGAN v2 main.py with its official default.
OFFICIAL_DEFAULTS = {
    'img_size': 256, 'num_domains': 2, 'latent_dim': 16, 'hidden_dim': 512, 'style_dim': 64,
    'lambda_reg': 1.0, 'lambda_cyc': 1.0, 'lambda_sty': 1.0, 'lambda_ds': 1.0,
    'ds_iter': 100000, 'w_hpf': 1.0, 'randcrop_prob': 0.5, 'total_iters': 100000,
    'resume_iter': 0, 'batch_size': 8, 'val_batch_size': 32, 'lr': 1e-4, 'f_lr': 1e-6,
    'beta1': 0.0, 'beta2': 0.99, 'weight_decay': 1e-4, 'num_outs_per_domain': 10,
    'num_workers': 4, 'seed': 777,
    'train_img_dir': 'data/celeba_hq/train', 'val_img_dir': 'data/celeba_hq/val',
    'sample_dir': 'expr/samples', 'checkpoint_dir': 'expr/checkpoints',
    'eval_dir': 'expr/eval', 'result_dir': 'expr/results',
    'src_dir': 'assets/representative/celeba_hq/src',
    'ref_dir': 'assets/representative/celeba_hq/ref',
    'inp_dir': 'assets/representative/custom/female',
    'out_dir': 'assets/representative/celeba_hq/src/female',
    'wing_path': 'expr/checkpoints/wing.ckpt',
    'lm_path': 'expr/checkpoints/celeba_lm_mean.npz',
    'print_every': 10, 'sample_every': 5000, 'save_every': 10000, 'eval_every': 50000,
}
OFFICIAL_TYPES = {k: type(v) for k, v in OFFICIAL_DEFAULTS.items()}
OUR_DEFAULTS = {
    'config': None, 'ema_beta': 0.999, 'max_conv_dim': 512, 'dim_in': None,
    'sample_from': 'ema', 'device': 'auto', 'inception_path': None, 'alexnet_path': None,
    'save_eval_images': False, 'domain_names': None, 'src': None, 'ref': None,
    'ref_domain': None, 'trg_domain': None, 'num_outs': 1, 'psi': 1.0, 'out': None,
    'strength': 1.0, 'src_domain': None,  # translate: the style strength (1: the plain translation)
    'demo_data': None, 'host': '127.0.0.1', 'port': 7860, 'share': False, 'format': 'onnx',
    'push_to_hub': None,  # export --format hf: no upload unless asked
    'sample_outputs': 'reference,video_ref',
    'amp': 'none', 'channels_last': False, 'compile': False,  # speed switches, off by default
    'grad_checkpoint': False,  # activation checkpointing, off by default
    'to_rgb_norm': 1, 'lr_decay_iter': 0,  # official generator, constant learning rates
    'keep_last': 0,  # every checkpoint set kept, as upstream
}


def write_yaml(path, text):
    path.write_text(text)
    return str(path)


def test_official_defaults_and_types():
    args = vars(parse_args(['--mode', 'train']))
    for k, v in OFFICIAL_DEFAULTS.items():
        assert args[k] == v, k
        assert type(args[k]) is OFFICIAL_TYPES[k], k
    for k, v in OUR_DEFAULTS.items():
        assert args[k] == v, k
    assert set(args) == set(OFFICIAL_DEFAULTS) | set(OUR_DEFAULTS) | {'mode'}


def test_official_types_on_command_line():
    args = parse_args(['--mode', 'eval', '--lambda_ds', '2', '--w_hpf', '0', '--img_size', '128'])
    assert args.lambda_ds == 2.0 and isinstance(args.lambda_ds, float)
    assert args.w_hpf == 0.0 and isinstance(args.w_hpf, float)
    assert args.img_size == 128 and isinstance(args.img_size, int)


def test_port_checked():
    with pytest.raises(UserError, match='--port must be in 1..65535'):
        parse_args(['--mode', 'serve', '--port', '70000'])


def test_mode_required_and_checked():
    with pytest.raises(UserError, match='--mode'):
        parse_args([])
    with pytest.raises(UserError, match="invalid choice: 'fly'"):
        parse_args(['--mode', 'fly'])


def test_argparse_mistakes_are_one_line_user_errors():
    with pytest.raises(UserError) as e:
        parse_args(['--mode', 'train', '--batch_sise', '4'])
    assert '--batch_sise' in str(e.value) and '\n' not in str(e.value)
    with pytest.raises(UserError, match='--img_size'):
        parse_args(['--mode', 'train', '--img_size', 'big'])


def test_yaml_supplies_defaults(tmp_path):
    cfg = write_yaml(tmp_path / 'c.yaml',
                     'num_domains: 3\nw_hpf: 0\nlambda_ds: 2\nlr: 1e-4\nf_lr: 3.0e-6\n'
                     'train_img_dir: data/afhq/train\nsave_eval_images: true\ndim_in: null\n')
    args = parse_args(['--config', cfg, '--mode', 'train'])
    assert args.num_domains == 3 and args.w_hpf == 0.0 and args.lambda_ds == 2.0
    assert args.lr == 1e-4 and isinstance(args.lr, float)  # YAML reads "1e-4" as a string
    assert args.f_lr == 3e-6
    assert args.train_img_dir == 'data/afhq/train'
    assert args.save_eval_images is True and args.dim_in is None
    assert args.config == cfg
    assert args.batch_size == 8  # untouched keys keep the official default


def test_command_line_overrides_yaml(tmp_path):
    cfg = write_yaml(tmp_path / 'c.yaml', 'num_domains: 3\nbatch_size: 4\nmode: sample\n')
    args = parse_args(['--config', cfg, '--batch_size', '2', '--mode', 'eval'])
    assert args.batch_size == 2 and args.num_domains == 3 and args.mode == 'eval'
    # mode from the YAML file is enough
    assert parse_args(['--config', cfg]).mode == 'sample'
    # flags before --config override too
    assert parse_args(['--batch_size', '6', '--config', cfg]).batch_size == 6


def test_unknown_yaml_key(tmp_path):
    cfg = write_yaml(tmp_path / 'bad.yaml', 'num_domains: 3\nlamda_ds: 2\n')
    with pytest.raises(UserError) as e:
        parse_args(['--config', cfg, '--mode', 'train'])
    msg = str(e.value)
    assert "'lamda_ds'" in msg and cfg in msg and '\n' not in msg


def test_config_key_may_not_nest(tmp_path):
    cfg = write_yaml(tmp_path / 'c.yaml', 'config: other.yaml\n')
    with pytest.raises(UserError, match="unknown key 'config'"):
        parse_args(['--config', cfg, '--mode', 'train'])


@pytest.mark.parametrize('line,key', [
    ('img_size: big', 'img_size'),
    ('img_size: 64.5', 'img_size'),
    ('batch_size: true', 'batch_size'),
    ('lr: fast', 'lr'),
    ('train_img_dir: 3', 'train_img_dir'),
    ('save_eval_images: 1', 'save_eval_images'),
    ('sample_from: best', 'sample_from'),
    ('mode: fly', 'mode'),
    ('img_size:', 'img_size'),
])
def test_yaml_wrong_type(tmp_path, line, key):
    cfg = write_yaml(tmp_path / 'c.yaml', line + '\n')
    with pytest.raises(UserError) as e:
        parse_args(['--config', cfg, '--mode', 'train'])
    assert f"'{key}'" in str(e.value) and '\n' not in str(e.value)


def test_yaml_file_errors(tmp_path):
    with pytest.raises(UserError, match='does not exist'):
        parse_args(['--config', str(tmp_path / 'nope.yaml'), '--mode', 'train'])
    cfg = write_yaml(tmp_path / 'list.yaml', '- 1\n- 2\n')
    with pytest.raises(UserError, match='mapping'):
        parse_args(['--config', cfg, '--mode', 'train'])
    cfg = write_yaml(tmp_path / 'syntax.yaml', 'a: [1, 2\n')
    with pytest.raises(UserError, match='not valid YAML'):
        parse_args(['--config', cfg, '--mode', 'train'])
    cfg = write_yaml(tmp_path / 'empty.yaml', '')
    assert parse_args(['--config', cfg, '--mode', 'train']).img_size == 256


@pytest.mark.parametrize('argv,flag', [
    (['--img_size', '100'], '--img_size'),
    (['--batch_size', '0'], '--batch_size'),
    (['--randcrop_prob', '1.5'], '--randcrop_prob'),
    (['--ema_beta', '1'], '--ema_beta'),
    (['--lr', '-1'], '--lr'),
    (['--num_domains', '3', '--domain_names', 'cat,dog'], '--domain_names'),
    (['--domain_names', 'a,a'], '--domain_names'),
])
def test_range_checks(argv, flag):
    with pytest.raises(UserError) as e:
        parse_args(['--mode', 'train'] + argv)
    assert flag in str(e.value)


def test_domain_names():
    args = parse_args(['--mode', 'train', '--num_domains', '3', '--domain_names', 'cat, dog,wild'])
    assert C.domain_names(args) == ['cat', 'dog', 'wild']
    assert C.domain_names(parse_args(['--mode', 'train'])) is None


def test_save_load_round_trip(tmp_path):
    cfg = write_yaml(tmp_path / 'c.yaml', 'num_domains: 3\nw_hpf: 0\n')
    args = parse_args(['--config', cfg, '--mode', 'train', '--lr', '2e-4', '--dim_in', '32',
                       '--save_eval_images'])
    run = tmp_path / 'run'
    path = save_config(args, str(run))
    assert path == os.path.join(str(run), 'config.yaml')
    assert os.listdir(run) == ['config.yaml']  # temp file replaced, none left behind
    loaded = load_config(path)
    expected = {k: v for k, v in vars(args).items() if k != 'config'}
    assert dict(loaded) == expected
    assert loaded.lr == 2e-4 and loaded.dim_in == 32  # attribute access
    assert load_config(str(run)) == loaded  # a run folder works too
    # the saved file is a valid --config that reproduces the run
    again = parse_args(['--config', path])
    assert {k: v for k, v in vars(again).items() if k != 'config'} == expected


def test_save_config_overwrites_atomically(tmp_path, monkeypatch):
    args = parse_args(['--mode', 'train'])
    save_config(args, str(tmp_path))
    args.batch_size = 3
    boom = RuntimeError('disk full')

    def failing_replace(src, dst):
        raise boom
    monkeypatch.setattr(C.os, 'replace', failing_replace)
    with pytest.raises(RuntimeError):
        save_config(args, str(tmp_path))
    monkeypatch.undo()
    # the old file is intact and no temp file is left
    assert load_config(str(tmp_path)).batch_size == 8
    assert os.listdir(tmp_path) == ['config.yaml']
    save_config(args, str(tmp_path))
    assert load_config(str(tmp_path)).batch_size == 3


def test_load_config_errors(tmp_path):
    with pytest.raises(UserError, match='does not exist'):
        load_config(str(tmp_path / 'config.yaml'))


def test_select_device(monkeypatch):
    assert select_device('cpu') == torch.device('cpu')
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    assert select_device('auto') == torch.device('cpu')
    assert select_device(None) == torch.device('cpu')
    with pytest.raises(UserError, match='CUDA is not available'):
        select_device('cuda')
    with pytest.raises(UserError, match='not a device'):
        select_device('gpu0')
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(torch.cuda, 'device_count', lambda: 1)
    assert select_device('auto') == torch.device('cuda')
    assert select_device('cuda:0') == torch.device('cuda:0')
    with pytest.raises(UserError, match='cuda:3'):
        select_device('cuda:3')


@pytest.mark.parametrize('name,expect', [
    ('celeba_hq', dict(num_domains=2, w_hpf=1.0, lambda_ds=1.0, img_size=256,
                       train_img_dir='data/celeba_hq/train', val_img_dir='data/celeba_hq/val',
                       src_dir='assets/representative/celeba_hq/src',
                       ref_dir='assets/representative/celeba_hq/ref')),
    ('afhq', dict(num_domains=3, w_hpf=0.0, lambda_ds=2.0, img_size=256,
                  train_img_dir='data/afhq/train', val_img_dir='data/afhq/val',
                  src_dir='assets/representative/afhq/src',
                  ref_dir='assets/representative/afhq/ref')),
    ('demo', dict(img_size=32, dim_in=32, max_conv_dim=64, style_dim=16, latent_dim=8,
                  num_domains=3, w_hpf=0.0, batch_size=4, ema_beta=0.99, lr=4e-4, f_lr=4e-6,
                  lambda_cyc=0.5, lambda_ds=3.0, total_iters=1200, ds_iter=0, lr_decay_iter=0, to_rgb_norm=0,
                  randcrop_prob=0.0, num_workers=0, print_every=50, sample_every=600, save_every=300, eval_every=0,
                  train_img_dir='expr/demo/data/train', val_img_dir='expr/demo/data/val',
                  checkpoint_dir='expr/demo/checkpoints', sample_dir='expr/demo/samples',
                  result_dir='expr/demo/results', eval_dir='expr/demo/eval')),
])
def test_shipped_configs(name, expect):
    args = parse_args(['--config', os.path.join(CONFIGS, f'{name}.yaml'), '--mode', 'train'])
    for k, v in expect.items():
        assert getattr(args, k) == v, k
    # the paper's training hyper-parameters are untouched in the paper configs
    if name != 'demo':
        for k in ('lr', 'f_lr', 'beta1', 'beta2', 'weight_decay', 'batch_size', 'total_iters',
                  'ds_iter', 'lambda_reg', 'lambda_cyc', 'lambda_sty', 'randcrop_prob',
                  'latent_dim', 'style_dim', 'hidden_dim'):
            assert getattr(args, k) == OFFICIAL_DEFAULTS[k], k
        assert args.dim_in is None and args.ema_beta == 0.999
        assert args.to_rgb_norm == 1 and args.lr_decay_iter == 0  # the official generator and constant rates


def test_demo_config_comments_every_change():
    """Each demo line whose value differs from the paper's carries a reason."""
    path = os.path.join(CONFIGS, 'demo.yaml')
    paper = vars(parse_args(['--mode', 'train']))
    with open(path) as f:
        for line in f:
            if not line.strip() or line.startswith('#'):
                continue
            key, value = next(iter(yaml.safe_load(line).items()))
            value = config_file._coerce(key, value, flag_actions(build_parser())[key], path)
            if value != paper[key]:
                assert '#' in line and line.split('#', 1)[1].strip(), line
