"""The table of modes (core/cli/mode_table.py) is what main.py runs, what --mode accepts, what --help
lists and what decides which modes read a run's config.yaml; --out names every output."""
import inspect
import os

import pytest

import main as cli
from core.cli.arguments import output_flag, parse_args, run_values
from core.cli.config_files import save_config
from core.cli.flags import build_parser, flag_actions
from core.cli.mode_table import MODE_NAMES, MODES, OUTPUT_FLAG
from core.errors import UserError


def test_the_mode_flag_accepts_exactly_the_table():
    assert tuple(flag_actions(build_parser())['mode'].choices) == MODE_NAMES
    assert set(MODE_NAMES) == {'train', 'sample', 'eval', 'align', 'translate', 'serve', 'export'}
    with pytest.raises(UserError, match="invalid choice: 'fly'"):
        parse_args(['--mode', 'fly'])


@pytest.mark.parametrize('mode', MODE_NAMES)
def test_main_runs_each_mode_through_its_runner(mode, monkeypatch):
    run = cli.runner(mode)
    assert callable(run) and list(inspect.signature(run).parameters) == ['args']
    module, name = MODES[mode].runner.split(':')
    assert run.__module__ == module and run.__name__ == name
    # main() dispatches to that runner with the parsed arguments and returns its status
    seen = []
    monkeypatch.setattr(cli, 'runner', lambda m: (lambda args: seen.append((m, args.mode)) or 7))
    assert cli.main(['--mode', mode]) == 7
    assert seen == [(mode, mode)]


def test_help_lists_every_mode_with_its_flags(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(['--help'])
    assert e.value.code == 0
    text = capsys.readouterr().out
    modes_part = text[text.index('modes:'):]
    flags = flag_actions(build_parser())
    for mode in MODES.values():
        assert f'  {mode.name:<10} {mode.summary}.' in modes_part
        for option in mode.options:
            assert option in flags, f'{mode.name} lists --{option}, which is not a flag'
            assert f'--{option}' in modes_part


@pytest.mark.parametrize('mode', MODE_NAMES)
def test_only_the_modes_that_load_a_run_read_its_config(mode, tmp_path):
    save_config(parse_args(['--mode', 'train', '--img_size', '64', '--num_domains', '3']), str(tmp_path))
    values = run_values(mode, str(tmp_path))
    if MODES[mode].loads_run:
        assert values['img_size'] == 64 and values['num_domains'] == 3
        assert parse_args(['--mode', mode, '--checkpoint_dir', str(tmp_path)]).img_size == 64
        # the command line still wins
        assert parse_args(['--mode', mode, '--checkpoint_dir', str(tmp_path), '--img_size', '32']).img_size == 32
    else:
        assert values == {}
        assert parse_args(['--mode', mode, '--checkpoint_dir', str(tmp_path)]).img_size == 256


@pytest.mark.parametrize('mode', MODE_NAMES)
def test_out_names_the_output_of_every_mode(mode, tmp_path):
    target = MODES[mode].output
    out = str(tmp_path / 'here')
    if target is None:
        with pytest.raises(UserError, match=f'--mode {mode} writes no single output'):
            parse_args(['--mode', mode, '--out', out])
        return
    args = parse_args(['--mode', mode, '--out', out])
    assert getattr(args, target) == out
    if target != OUTPUT_FLAG:  # the official name still works, alone
        assert getattr(parse_args(['--mode', mode, f'--{target}', out]), target) == out
        with pytest.raises(UserError, match=f'--out and --{target} name the same output'):
            parse_args(['--mode', mode, '--out', out, f'--{target}', os.path.join(out, 'x')])


@pytest.mark.parametrize('mode', [m for m in MODE_NAMES if MODES[m].output not in (None, OUTPUT_FLAG)])
def test_messages_name_the_output_option_the_user_gave(mode, tmp_path):
    official = MODES[mode].output
    assert output_flag(parse_args(['--mode', mode, '--out', str(tmp_path)])) == '--out'
    assert output_flag(parse_args(['--mode', mode, f'--{official}', str(tmp_path)])) == f'--{official}'
    assert output_flag(parse_args(['--mode', mode])) == f'--{official}'
