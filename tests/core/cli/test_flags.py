"""core/cli/flags.py: every official flag with its official default and type, ours marked; --mode;
argparse's mistakes as one-line errors."""
import pytest
from helpers import OFFICIAL_DEFAULTS

import main as cli
from core.cli.arguments import parse_args
from core.errors import UserError

OFFICIAL_TYPES = {k: type(v) for k, v in OFFICIAL_DEFAULTS.items()}
OUR_DEFAULTS = {
    'config': None, 'ema_beta': 0.999, 'max_conv_dim': 512, 'dim_in': None,
    'sample_from': 'ema', 'device': 'auto', 'inception_path': None, 'alexnet_path': None,
    'save_eval_images': False, 'domain_names': None, 'src': None, 'ref': None,
    'ref_domain': None, 'trg_domain': None, 'num_outs': 1, 'psi': 1.0, 'out': None,
    'strength': 1.0, 'src_domain': None,  # translate: the style strength (1: the plain translation)
    'demo_data': None, 'host': '127.0.0.1', 'port': 7860, 'share': False, 'format': 'onnx',
    'push_to_hub': None, 'hub_public': False,  # export --format hf: no upload unless asked; private when it is
    'sample_outputs': 'reference,video_ref',
    'amp': 'none', 'channels_last': False, 'compile': False,  # speed switches, off by default
    'grad_checkpoint': False,  # activation checkpointing, off by default
    'to_rgb_norm': 1, 'lr_decay_iter': 0,  # official generator, constant learning rates
    'keep_last': 0,  # every checkpoint set kept, as upstream
}


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


def test_bad_amp_value_is_a_one_line_error(capsys):
    assert cli.main(['--mode', 'train', '--amp', 'fp8']) == 2
    assert 'fp8' in capsys.readouterr().err


def test_num_workers_is_a_count_or_auto(capsys):
    assert parse_args(['--mode', 'train', '--num_workers', 'auto']).num_workers == 'auto'
    assert parse_args(['--mode', 'train', '--num_workers', '3']).num_workers == 3
    for bad in ('-1', 'many'):
        assert cli.main(['--mode', 'train', '--num_workers', bad]) == 2
        err = capsys.readouterr().err.strip()
        assert '\n' not in err and '--num_workers' in err and "'auto'" in err
