"""core/cli/config_files.py: --config YAML files checked against the flags' types, a run's saved
config.yaml, and the shipped configs/*.yaml."""
import os

import pytest
import yaml
from helpers import OFFICIAL_DEFAULTS, ROOT

import core.cli.config_files as config_files
from core.cli.arguments import parse_args
from core.cli.config_files import load_config, save_config
from core.cli.flags import build_parser, flag_actions
from core.errors import UserError
from core.nn.networks import ModelConfig

CONFIGS = os.path.join(ROOT, 'configs')


def write_yaml(path, text):
    path.write_text(text)
    return str(path)


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
    ('num_workers: -3', 'num_workers'),
    ('num_workers: many', 'num_workers'),
    ('num_workers: 2.5', 'num_workers'),
])
def test_yaml_wrong_type(tmp_path, line, key):
    cfg = write_yaml(tmp_path / 'c.yaml', line + '\n')
    with pytest.raises(UserError) as e:
        parse_args(['--config', cfg, '--mode', 'train'])
    assert f"'{key}'" in str(e.value) and '\n' not in str(e.value)


def test_num_workers_from_a_config_file(tmp_path):
    for text, expected in (('num_workers: auto', 'auto'), ('num_workers: 0', 0), ('num_workers: 6', 6)):
        cfg = write_yaml(tmp_path / 'w.yaml', text + '\n')
        assert parse_args(['--config', cfg, '--mode', 'train']).num_workers == expected


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
    monkeypatch.setattr(os, 'replace', failing_replace)
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
            value = config_files._coerce(key, value, flag_actions(build_parser())[key], path)
            if value != paper[key]:
                assert '#' in line and line.split('#', 1)[1].strip(), line


@pytest.mark.parametrize('config, names', [('configs/afhq.yaml', ['cat', 'dog', 'wild']),
                                           ('configs/celeba_hq.yaml', ['female', 'male'])])
def test_paper_configs_name_the_released_models_domains(tmp_path, config, names):
    """The released checkpoints have no config.yaml: the paper configs give their domain names."""
    args = parse_args(['--mode', 'translate', '--config', config, '--checkpoint_dir', str(tmp_path)])
    assert ModelConfig.from_args(args).names() == names


def test_oversized_or_deeply_nested_files_are_one_line(tmp_path):
    """A YAML file nested 50,000 deep (RecursionError before) or over 1 MiB is refused in one line."""
    deep = write_yaml(tmp_path / 'deep.yaml', 'lr: ' + '[' * 50000 + ']' * 50000 + '\n')
    with pytest.raises(UserError, match='nested too deeply') as e:
        parse_args(['--config', deep, '--mode', 'train'])
    assert '\n' not in str(e.value)
    with pytest.raises(UserError, match='nested too deeply'):
        load_config(deep)
    big = write_yaml(tmp_path / 'big.yaml', '# ' + 'x' * (2 << 20) + '\nlr: 0.1\n')
    with pytest.raises(UserError, match='more than a config file has'):
        parse_args(['--config', big, '--mode', 'train'])
