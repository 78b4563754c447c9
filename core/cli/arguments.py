"""From a command line to arguments: the precedence of the four sources of a value
(``resolve_args``), the checks argparse cannot express (``validate_args``), and what the
modes read from the arguments (``sample_outputs``, ``domain_names``, ``with_defaults``)::

    args = parse_args(['--config', 'configs/afhq.yaml', '--mode', 'train', '--batch_size', '4'])

Every user mistake raises :class:`UserError` (one-line message naming the fix). The flags
themselves are ``core.cli.flags``; YAML files are ``core.cli.config_files``.
"""
import argparse
import os
from typing import AbstractSet, Any, Dict, List, Optional, Sequence, Set, Tuple

from munch import Munch

from core.cli.config_files import CONFIG_FILENAME, as_dict, load_config, read_yaml_defaults
from core.cli.flags import AUTO, CLI_ONLY, DEFAULT_SAMPLE_OUTPUTS, LATEST, SAMPLE_OUTPUTS, build_parser, flag_actions  # noqa: F401
from core.cli.mode_table import MODES, OUTPUT_FLAG
from core.errors import UserError
from core.nn.networks import MODEL_KEYS, ModelConfig, check_model_values, split_names
from core.nn.styles import check_strength
from core.use.hub_folder import is_hub_folder, model_values

__all__ = ['parse_args', 'resolve_args', 'validate_args', 'given_on_command_line', 'run_values', 'with_defaults',
           'domain_names', 'sample_outputs', 'parse_sample_outputs', 'output_flag', 'LATEST', 'SAMPLE_OUTPUTS',
           'DEFAULT_SAMPLE_OUTPUTS']


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """The checked arguments of a command line (``sys.argv[1:]`` when None)."""
    return validate_args(resolve_args(argv))


def resolve_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """The value of every flag. Four sources; each one overrides the ones before it:

    1. the flag's default (``core.cli.flags.build_parser``);
    2. ``--config FILE``: a YAML file of flag values (configs/*.yaml);
    3. the run's ``config.yaml`` in ``--checkpoint_dir`` (or the ``config.json`` of a Hub folder
       there): its model keys (``MODEL_KEYS``: a run remembers its architecture), in the modes
       that load a run only; official checkpoints have none and keep 1-2 (``run_values``);
    4. the flags given on the command line.

    Then ``--out`` becomes the mode's output option under its official name (``--result_dir``
    for sample and export, ``--eval_dir``, ``--out_dir``; see ``core.cli.mode_table``).
    """
    parser = build_parser()
    given = given_on_command_line(argv)
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument('--config', type=str, default=None)
    config_path = pre.parse_known_args(argv)[0].config
    file_values = read_yaml_defaults(config_path, parser) if config_path else {}
    parser.set_defaults(**file_values)  # 2 over 1
    if 'mode' in file_values:
        flag_actions(parser)['mode'].required = False
    args = parser.parse_args(argv)  # 4 over 2 and 1, with argparse's checks of types and choices
    for key, value in run_values(args.mode, args.checkpoint_dir, given).items():  # 3, under 4
        setattr(args, key, value)
    _apply_output(args, given)
    return args


def given_on_command_line(argv: Optional[Sequence[str]] = None) -> Set[str]:
    """The dests of the flags that ``argv`` sets explicitly (not through defaults or --config)."""
    parser = build_parser()
    for action in parser._actions:
        action.default, action.required = argparse.SUPPRESS, False
    known, _ = parser.parse_known_args(argv)
    return set(vars(known))


def run_values(mode: str, checkpoint_dir: str, given: AbstractSet[str] = frozenset()) -> Dict[str, Any]:
    """Source 3 of ``resolve_args``: the model keys of ``checkpoint_dir``'s config.yaml (or of
    its config.json, when it is a Hub folder: ``core.use.hub_folder``) that ``mode`` takes (none
    unless it loads a run) and that the command line (``given``) does not set. The run's
    domain names are left out when the command line changes ``--num_domains`` (they belong to
    its number of domains); a flag that contradicts the checkpoint fails when the checkpoint
    loads."""
    if not MODES[mode].loads_run:
        return {}
    path = os.path.join(checkpoint_dir, CONFIG_FILENAME)
    if is_hub_folder(checkpoint_dir):  # its config.json (or the one line saying what is wrong with it)
        stored: Dict[str, Any] = model_values(checkpoint_dir)
    elif os.path.isfile(path):
        stored = load_config(path)
        # each model key checked here, naming the file (the flags' check would name the flag)
        check_model_values({key: stored[key] for key in MODEL_KEYS if key in stored}, f"'{{}}' in {path}")
    else:
        return {}
    skip = set(given) | ({'domain_names'} if 'num_domains' in given else set())
    return {key: stored[key] for key in MODEL_KEYS if key in stored and key not in skip}


def output_flag(args: Any) -> str:
    """The option that named the mode's output, for messages: ``--out`` when it was given,
    else the official name (``--result_dir``, ``--eval_dir``, ``--out_dir``)."""
    target = MODES[args.mode].output
    if getattr(args, OUTPUT_FLAG, None) is not None or target is None:
        return f'--{OUTPUT_FLAG}'
    return f'--{target}'


def _apply_output(args: argparse.Namespace, given: Set[str]) -> None:
    """``--out`` into the mode's output option (its official name)."""
    out = getattr(args, OUTPUT_FLAG)
    target = MODES[args.mode].output
    if out is None or target == OUTPUT_FLAG:
        return
    if target is None:
        raise UserError(f'--mode {args.mode} writes no single output, so --{OUTPUT_FLAG} means nothing to it; '
                        f'remove it (training writes into --checkpoint_dir, --sample_dir and --eval_dir)')
    if target in given:
        raise UserError(f'--{OUTPUT_FLAG} and --{target} name the same output of --mode {args.mode}; give one')
    setattr(args, target, out)


def domain_names(args: Any) -> Optional[List[str]]:
    """The --domain_names list, or None when not given."""
    return split_names(getattr(args, 'domain_names', None))


def parse_sample_outputs(outputs: 'str | Sequence[str]') -> Tuple[str, ...]:
    """Sample outputs from a comma list (or a list of names; 'all': every one), in the order
    of SAMPLE_OUTPUTS; UserError on an unknown name (the one check of --sample_outputs)."""
    text = outputs if isinstance(outputs, str) else ','.join(outputs)
    names = [n.strip() for n in text.split(',') if n.strip()]
    if names == ['all']:
        return SAMPLE_OUTPUTS
    unknown = [n for n in names if n not in SAMPLE_OUTPUTS]
    if unknown or not names:
        raise UserError(f"--sample_outputs '{text}': {', '.join(unknown) or 'nothing'} is not an output; "
                        f"give a comma list of {', '.join(SAMPLE_OUTPUTS)} (or 'all')")
    return tuple(n for n in SAMPLE_OUTPUTS if n in names)


def sample_outputs(args: Any) -> Tuple[str, ...]:
    """The --sample_outputs of ``args`` (the default ones when it has none)."""
    return parse_sample_outputs(getattr(args, 'sample_outputs', None) or DEFAULT_SAMPLE_OUTPUTS)


def with_defaults(args: Any) -> Any:
    """``args`` with every flag it lacks set to this project's default.

    Scripts written for the official ``main.py`` build their own Namespace without our
    extra flags (dim_in, device, ema_beta, sample_from, ...); ``Solver`` completes it here.
    Returns ``args`` itself when nothing is missing, else a copy of the same kind.
    """
    given = as_dict(args)
    missing = {a.dest: a.default for a in flag_actions(build_parser()).values()
               if a.dest not in given and a.dest not in CLI_ONLY}
    if not missing:
        return args
    merged = {**missing, **given}
    return argparse.Namespace(**merged) if isinstance(args, argparse.Namespace) else Munch(merged)


def validate_args(args: Any) -> Any:
    """Range checks that argparse types cannot express; UserError on the first problem."""
    def need(cond, msg):
        if not cond:
            raise UserError(msg)

    # the architecture: checked as every model configuration is (core.nn.networks.ModelConfig.checked)
    ModelConfig.checked({key: getattr(args, key) for key in MODEL_KEYS if hasattr(args, key)}
                        | {'domain_names': domain_names(args)}, '--{}')
    for k in ('hidden_dim', 'batch_size', 'val_batch_size', 'num_outs_per_domain', 'num_outs'):
        v = getattr(args, k)
        need(v >= 1, f'--{k} must be >= 1, not {v}')
    need(0 < args.port < 65536, f'--port must be in 1..65535, not {args.port}')
    for k in ('total_iters', 'resume_iter', 'ds_iter', 'lr_decay_iter', 'print_every',
              'sample_every', 'save_every', 'eval_every', 'keep_last', 'num_workers'):
        v = getattr(args, k)
        words = {'resume_iter': LATEST, 'num_workers': AUTO}  # the one word each may be instead
        need(v == words.get(k) if isinstance(v, str) else v >= 0, f'--{k} must be >= 0, not {v}')
    for k in ('lambda_reg', 'lambda_cyc', 'lambda_sty', 'lambda_ds', 'w_hpf', 'lr', 'f_lr',
              'weight_decay'):
        v = getattr(args, k)
        need(v >= 0, f'--{k} must be >= 0, not {v}')
    need(0 <= args.randcrop_prob <= 1, f'--randcrop_prob must be in [0, 1], not {args.randcrop_prob}')
    check_strength(args.strength, '--strength')
    for k in ('beta1', 'beta2', 'ema_beta'):
        v = getattr(args, k)
        need(0 <= v < 1, f'--{k} must be in [0, 1), not {v}')
    sample_outputs(args)
    return args


