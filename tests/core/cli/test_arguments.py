"""core/cli/arguments.py: which source wins (flag defaults < --config < the run's config.yaml < the
command line), the range checks, official-style namespaces completed with our defaults."""
import argparse

import pytest
import yaml
from munch import Munch

import core.cli.arguments as C
import main as cli
from core.cli.arguments import parse_args
from core.errors import UserError

# the model of a saved run (tests below write its config.yaml)
RUN_MODEL = dict(img_size=32, style_dim=16, latent_dim=8, num_domains=3, w_hpf=0.0, dim_in=8, max_conv_dim=32,
                 to_rgb_norm=0)


def write_yaml(path, text):
    path.write_text(text)
    return str(path)


def write_run(folder, **model):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / 'config.yaml').write_text(yaml.safe_dump({**model, 'domain_names': 'cat,dog,wild', 'lr': 0.5}))
    return folder


# ---------------------------------------------------------------------------- sources
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


@pytest.mark.parametrize('mode', ['sample', 'eval', 'translate'])
def test_run_modes_read_the_architecture_back(tmp_path, mode):
    run = write_run(tmp_path / 'run', **RUN_MODEL)
    args = parse_args(['--mode', mode, '--checkpoint_dir', str(run)])
    assert {k: getattr(args, k) for k in RUN_MODEL} == RUN_MODEL
    assert args.domain_names == 'cat,dog,wild'
    assert args.lr == 1e-4  # only the model keys come back, not the training settings


def test_command_line_flags_win_over_the_run_and_the_run_over_config_files(tmp_path):
    run = write_run(tmp_path / 'run', **RUN_MODEL)
    other = tmp_path / 'other.yaml'
    other.write_text(yaml.safe_dump({'img_size': 128, 'latent_dim': 4, 'checkpoint_dir': str(run)}))
    args = parse_args(['--mode', 'sample', '--config', str(other), '--latent_dim', '2'])
    assert args.img_size == 32  # the run beats --config
    assert args.latent_dim == 2  # a flag beats the run


def test_train_and_official_checkpoints_keep_their_flags(tmp_path):
    run = write_run(tmp_path / 'run', **RUN_MODEL)
    assert parse_args(['--mode', 'train', '--checkpoint_dir', str(run)]).img_size == 256
    assert parse_args(['--mode', 'sample', '--checkpoint_dir', str(tmp_path / 'official'),
                       '--img_size', '64']).img_size == 64


def test_a_new_number_of_domains_drops_the_runs_names(tmp_path):
    run = write_run(tmp_path / 'run', **RUN_MODEL)
    args = parse_args(['--mode', 'translate', '--checkpoint_dir', str(run), '--num_domains', '2'])
    assert args.num_domains == 2 and args.domain_names is None


# ---------------------------------------------------------------------------- checks
def test_port_checked():
    with pytest.raises(UserError, match='--port must be in 1..65535'):
        parse_args(['--mode', 'serve', '--port', '70000'])


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


def test_negative_decay_is_a_one_line_error(capsys):
    """The range check's UserError (not argparse's exit), which main.py turns into exit 2 and
    one line naming the flag."""
    with pytest.raises(UserError, match=r'^--lr_decay_iter must be >= 0, not -1$'):
        parse_args(['--mode', 'train', '--lr_decay_iter', '-1'])
    assert cli.main(['--mode', 'train', '--lr_decay_iter', '-1']) == 2
    captured = capsys.readouterr()
    assert captured.err == 'error: --lr_decay_iter must be >= 0, not -1\n' and captured.out == ''


def test_domain_names():
    args = parse_args(['--mode', 'train', '--num_domains', '3', '--domain_names', 'cat, dog,wild'])
    assert C.domain_names(args) == ['cat', 'dog', 'wild']
    assert C.domain_names(parse_args(['--mode', 'train'])) is None


def test_sample_outputs_flag():
    from core.cli.arguments import parse_args, sample_outputs
    assert sample_outputs(parse_args(['--mode', 'sample'])) == ('reference', 'video_ref')
    assert sample_outputs(parse_args(['--mode', 'sample', '--sample_outputs', 'latent,reference'])) == \
        ('reference', 'latent')
    assert len(sample_outputs(parse_args(['--mode', 'sample', '--sample_outputs', 'all']))) == 4
    with pytest.raises(UserError, match='video_latent'):
        parse_args(['--mode', 'sample', '--sample_outputs', 'reference,videos'])


# ---------------------------------------------------------------------------- official namespaces
def test_with_defaults_completes_an_official_namespace():
    from core.cli.arguments import parse_args, with_defaults
    from core.cli.flags import build_parser
    official = argparse.Namespace(mode='sample', img_size=64, num_domains=3, w_hpf=0.0, seed=1)
    args = with_defaults(official)
    assert isinstance(args, argparse.Namespace) and args is not official
    assert (args.img_size, args.num_domains, args.seed) == (64, 3, 1)
    assert args.device == 'auto' and args.dim_in is None and args.ema_beta == 0.999 and args.sample_from == 'ema'
    assert args.sample_outputs == 'reference,video_ref'
    assert set(vars(args)) == {a.dest for a in build_parser()._actions if a.dest not in ('help', 'config')}
    full = parse_args(['--mode', 'eval'])
    assert with_defaults(full) is full
    assert with_defaults(Munch(mode='eval')).latent_dim == 16


# ---------------------------------------------------------------------------- model values from every source
@pytest.mark.parametrize('change,match', [
    ({'style_dim': 10 ** 12}, "'style_dim' in .*config.yaml must be an integer from 1 to 2048, not 1000000000000"),
    ({'num_domains': 10000}, "'num_domains' in .*config.yaml must be an integer from 1 to 256"),
    ({'img_size': 1}, "'img_size' in .*config.yaml must be a power of two from 16 to 1024, not 1"),
    ({'img_size': '128'}, "'img_size' in .*config.yaml must be a power of two from 16 to 1024, not '128'"),
    ({'domain_names': 'cat,dog,dog'}, "'domain_names' in .*config.yaml names 'dog' twice"),
    ({'domain_names': 'cat,dog'}, "'domain_names' in .*config.yaml gives 2 names but 'num_domains' in .*config.yaml is 3"),
])
def test_a_runs_config_yaml_is_checked_naming_the_file(tmp_path, change, match):
    """A run's config.yaml (source 3) with sizes that would build tens of GiB, or a value of
    another type: one line naming the file and the key, before anything is built."""
    run = write_run(tmp_path / 'run', **RUN_MODEL)
    data = yaml.safe_load((run / 'config.yaml').read_text())
    (run / 'config.yaml').write_text(yaml.safe_dump({**data, **change}))
    with pytest.raises(UserError, match=match) as e:
        parse_args(['--mode', 'sample', '--checkpoint_dir', str(run)])
    assert '\n' not in str(e.value)


def test_a_deeply_nested_run_config_is_one_line(tmp_path):
    run = tmp_path / 'run'
    run.mkdir()
    (run / 'config.yaml').write_text('img_size: ' + '[' * 50000 + ']' * 50000 + '\n')
    with pytest.raises(UserError, match='config.yaml.* is nested too deeply'):
        parse_args(['--mode', 'sample', '--checkpoint_dir', str(run)])


@pytest.mark.parametrize('text,match', [
    ('num_domains: 10000\n', "'num_domains' in config file .*c.yaml must be an integer from 1 to 256"),
    ('style_dim: 1000000000000\n', "'style_dim' in config file .*c.yaml must be an integer from 1 to 2048"),
    ('img_size: 8\n', "'img_size' in config file .*c.yaml must be a power of two from 16"),
    ("domain_names: 'a,a'\n", "'domain_names' in config file .*c.yaml names 'a' twice"),
])
def test_a_config_file_is_checked_naming_the_file(tmp_path, text, match):
    cfg = write_yaml(tmp_path / 'c.yaml', text)
    with pytest.raises(UserError, match=match):
        parse_args(['--config', cfg, '--mode', 'train'])


@pytest.mark.parametrize('argv,match', [
    (['--style_dim', str(10 ** 12)], '^--style_dim must be an integer from 1 to 2048, not 1000000000000$'),
    (['--num_domains', '10000'], '^--num_domains must be an integer from 1 to 256, not 10000$'),
    (['--img_size', '4096'], '^--img_size must be a power of two from 16 to 1024, not 4096$'),
    (['--w_hpf', 'nan'], '^--w_hpf must be a number from 0'),
    (['--num_domains', '2', '--domain_names', 'cat,cat'], "^--domain_names names 'cat' twice"),
])
def test_model_flags_have_the_same_bounds(argv, match):
    with pytest.raises(UserError, match=match):
        parse_args(['--mode', 'train'] + argv)
