"""Command-line and YAML configuration.

Every flag of the official StarGAN v2 ``main.py`` is here with its official default
and type, plus a few of ours (marked below). ``--config FILE.yaml`` supplies defaults;
flags given on the command line override them::

    args = parse_args(['--config', 'configs/afhq.yaml', '--mode', 'train', '--batch_size', '4'])

A run folder records what was actually used with ``save_config(args, folder)``; the file
it writes is itself a valid ``--config`` file.

Every user mistake raises :class:`UserError` (one-line message naming the fix).
"""
import argparse
import os

import yaml
from munch import Munch

from core.device import select_device  # noqa: F401 (re-exported: the one device decision lives in core/device.py)
from core.errors import UserError
from core.fileio import atomic_write
from core.model import MODEL_KEYS, split_names

__all__ = ['UserError', 'build_parser', 'parse_args', 'validate_args', 'save_config',
           'load_config', 'select_device', 'domain_names', 'CONFIG_FILENAME', 'MODES',
           'sample_outputs', 'SAMPLE_OUTPUTS', 'DEFAULT_SAMPLE_OUTPUTS', 'with_defaults']

CONFIG_FILENAME = 'config.yaml'
MODES = ('train', 'sample', 'eval', 'align', 'translate', 'serve', 'export')
# modes that load a trained run: its config.yaml supplies the model's architecture
RUN_MODES = ('sample', 'eval', 'translate', 'serve', 'export')
SAMPLE_OUTPUTS = ('reference', 'video_ref', 'latent', 'video_latent')
# The official sample mode writes only reference.jpg and video_ref.mp4, so that is the default
# (the official command costs what it costs upstream); the latent grids (minutes at 256 px on a
# CPU) and video_latent (tens of minutes) are opt-in. Times: docs/usage.md, "Sample mode".
DEFAULT_SAMPLE_OUTPUTS = ('reference', 'video_ref')
# keys that a YAML file may not set (they only make sense on the command line)
_CLI_ONLY = ('config',)


class _Parser(argparse.ArgumentParser):
    """ArgumentParser whose mistakes become UserError (main.py prints them, exit 2)."""

    def error(self, message):
        raise UserError(f'{message} (see --help)')


def build_parser():
    p = _Parser(description='StarGAN v2: diverse image synthesis for multiple domains',
                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add = p.add_argument

    # ---- ours: configuration file
    add('--config', type=str, default=None, metavar='FILE',
        help='YAML file of defaults (e.g. configs/afhq.yaml); command-line flags override it')

    # ---- model arguments (official)
    add('--img_size', type=int, default=256, help='image resolution')
    add('--num_domains', type=int, default=2, help='number of domains')
    add('--latent_dim', type=int, default=16, help='latent vector dimension')
    add('--hidden_dim', type=int, default=512, help='hidden dimension of mapping network')
    add('--style_dim', type=int, default=64, help='style code dimension')
    # ours: network widths, so that small CPU configurations are possible
    add('--dim_in', type=int, default=None,
        help='base channels of G/E/D (default: the official 2**14 // img_size)')
    add('--max_conv_dim', type=int, default=512, help='largest channel count of G/E/D')
    add('--to_rgb_norm', type=int, default=1, choices=[0, 1],
        help="1 (official): InstanceNorm before the generator's last 1x1 convolution; 0: none, so flat "
             "colours can come from the style (the CPU demo)")

    # ---- weights for objective functions (official)
    add('--lambda_reg', type=float, default=1.0, help='weight for R1 regularization')
    add('--lambda_cyc', type=float, default=1.0, help='weight for cyclic consistency loss')
    add('--lambda_sty', type=float, default=1.0, help='weight for style reconstruction loss')
    add('--lambda_ds', type=float, default=1.0, help='weight for diversity sensitive loss')
    add('--ds_iter', type=int, default=100000,
        help='number of iterations over which lambda_ds decays to 0 (0: no decay, ours)')
    add('--w_hpf', type=float, default=1.0, help='weight for high-pass filtering (0: no FAN masks)')

    # ---- training arguments (official)
    add('--randcrop_prob', type=float, default=0.5, help='probability of random-resized cropping')
    add('--total_iters', type=int, default=100000, help='number of total iterations')
    add('--resume_iter', type=step_or_latest, default=0,
        help="iterations to resume training/testing; 'latest': the newest complete checkpoint set "
             "(training starts fresh when there is none, so a requeued job can repeat its command)")
    add('--batch_size', type=int, default=8, help='batch size for training')
    add('--val_batch_size', type=int, default=32, help='batch size for validation')
    add('--lr', type=float, default=1e-4, help='learning rate for D, E and G')
    add('--f_lr', type=float, default=1e-6, help='learning rate for F')
    add('--beta1', type=float, default=0.0, help='decay rate for 1st moment of Adam')
    add('--beta2', type=float, default=0.99, help='decay rate for 2nd moment of Adam')
    add('--weight_decay', type=float, default=1e-4, help='weight decay for optimizer')
    add('--num_outs_per_domain', type=int, default=10,
        help='number of generated images per domain during sampling')
    # ours
    add('--ema_beta', type=float, default=0.999, help='decay of the exponential moving average nets')
    add('--lr_decay_iter', type=int, default=0,
        help='short runs: every learning rate decays linearly towards 0 over the last N iterations '
             '(0: constant, as the paper)')
    # ours: speed switches (off by default: fp32 eager reproduces the official numbers bit for bit)
    add('--amp', type=str, default='none', choices=['none', 'bf16', 'fp16'],
        help='training: mixed precision for the network forward passes (losses and R1 stay float32); '
             'fp16 adds a gradient scaler; changes numbers within rounding (docs/speed.md)')
    add('--channels_last', action='store_true', help='training: networks and image batches in channels-last memory format')
    add('--compile', action='store_true',
        help='torch.compile G, F, E, D for training (the R1 pass stays eager: it needs a double backward)')
    add('--grad_checkpoint', action='store_true',
        help='training: activation checkpointing: the residual blocks of G, D and E keep only their inputs and '
             'recompute in backward (less memory, about a fifth more FLOPs; same numbers bit for bit; '
             'docs/memory.md)')

    # ---- misc (official)
    add('--mode', type=str, required=True, choices=list(MODES),
        help='This argument is used in solver')
    add('--num_workers', type=int, default=4, help='number of workers used in DataLoader')
    add('--seed', type=int, default=777, help='seed for random number generator')
    # ours
    add('--device', type=str, default='auto', help="'auto' (cuda when available, else cpu), 'cpu', 'cuda', 'cuda:N'")
    add('--sample_from', type=str, default='ema', choices=['ema', 'online'],
        help='which generator the sample/eval/translate modes use')

    # ---- directories for training (official)
    add('--train_img_dir', type=str, default='data/celeba_hq/train', help='directory containing training images')
    add('--val_img_dir', type=str, default='data/celeba_hq/val', help='directory containing validation images')
    add('--sample_dir', type=str, default='expr/samples', help='directory for saving generated images')
    add('--checkpoint_dir', type=str, default='expr/checkpoints', help='directory for saving network checkpoints')
    # ours
    add('--domain_names', type=str, default=None,
        help='comma-separated domain names (default: the sorted sub-folder names)')
    add('--demo_data', type=str, default=None, help='folder where the demo generates its dataset')

    # ---- directories for evaluation (official)
    add('--eval_dir', type=str, default='expr/eval', help='directory for saving metrics, i.e., FID and LPIPS')
    # ours
    add('--inception_path', type=str, default=None, help='local weights of the Inception v3 used by FID')
    add('--alexnet_path', type=str, default=None, help='local weights of the AlexNet used by LPIPS')
    add('--save_eval_images', action='store_true', help='keep the images generated for evaluation')

    # ---- directories for testing (official)
    add('--result_dir', type=str, default='expr/results', help='directory for saving generated images and videos')
    add('--src_dir', type=str, default='assets/representative/celeba_hq/src', help='directory containing input source images')
    add('--ref_dir', type=str, default='assets/representative/celeba_hq/ref', help='directory containing input reference images')
    add('--inp_dir', type=str, default='assets/representative/custom/female', help='input directory when aligning faces')
    add('--out_dir', type=str, default='assets/representative/celeba_hq/src/female', help='output directory when aligning faces')
    # ours: which files sample mode writes (the official mode writes reference.jpg and video_ref.mp4)
    add('--sample_outputs', type=str, default=','.join(DEFAULT_SAMPLE_OUTPUTS),
        help="sample: comma list of reference, video_ref, latent, video_latent (or 'all'); "
             "latent grids cost minutes and video_latent tens of minutes at 256 px on a CPU")

    # ---- ours: --mode translate (one image, one reference or a latent code)
    add('--src', type=str, default=None, help='translate: source image file')
    add('--ref', type=str, default=None, help='translate: reference image file (style from it)')
    add('--ref_domain', type=str, default=None, help="translate: domain (name or index) of --ref")
    add('--trg_domain', type=str, default=None, help='translate: target domain (name or index) when no --ref')
    add('--num_outs', type=int, default=1, help='translate: number of outputs (latent codes)')
    add('--psi', type=float, default=1.0, help='translate: truncation of the style code (1: none)')
    add('--out', type=str, default=None, help='translate: output image file')

    # ---- ours: --mode serve (web demo) and --mode export
    add('--host', type=str, default='127.0.0.1', help='serve: address to listen on (0.0.0.0: every interface)')
    add('--port', type=int, default=7860, help='serve: port to listen on')
    add('--share', action='store_true', help="serve: also open a public gradio.live link (off: nothing leaves the machine)")
    add('--format', type=str, default='onnx', choices=['onnx'], help='export: file format of the exported networks')

    # ---- face alignment (official)
    add('--wing_path', type=str, default='expr/checkpoints/wing.ckpt')
    add('--lm_path', type=str, default='expr/checkpoints/celeba_lm_mean.npz')

    # ---- step sizes (official; 0 disables printing/sampling/saving/evaluating)
    add('--print_every', type=int, default=10)
    add('--sample_every', type=int, default=5000)
    add('--save_every', type=int, default=10000)
    add('--keep_last', type=int, default=0,
        help='after each complete checkpoint save, remove our older sets but the newest N (0: keep all, as upstream)')
    add('--eval_every', type=int, default=50000)
    return p


LATEST = 'latest'


def step_or_latest(text):
    """--resume_iter: an iteration number, or 'latest'."""
    if isinstance(text, str) and text.strip().lower() == LATEST:
        return LATEST
    try:
        return int(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"expected an iteration number or 'latest', not {text!r}") from None


step_or_latest.type_name = "an integer or 'latest'"


def _actions(parser):
    return {a.dest: a for a in parser._actions if a.dest != 'help'}


def _type_name(action):
    if isinstance(action, argparse._StoreTrueAction):
        return 'true/false'
    return {int: 'an integer', float: 'a number', str: 'a string'}.get(action.type, getattr(action.type, 'type_name', 'a value'))


def _coerce(key, value, action, path):
    """Check/convert one YAML value against the flag's type; UserError if wrong."""
    where = f"'{key}' in {path}"
    if value is None:
        if action.default is None and not action.required:
            return None
        raise UserError(f'{where} is empty; give it {_type_name(action)} or remove the line')
    if isinstance(action, argparse._StoreTrueAction):
        if isinstance(value, bool):
            return value
        raise UserError(f'{where} must be true or false, not {value!r}')
    t = action.type
    ok = True
    if t is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif t is float:
        if isinstance(value, str):  # PyYAML reads 1e-4 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                ok = False
        elif isinstance(value, bool) or not isinstance(value, (int, float)):
            ok = False
        else:
            value = float(value)
    elif t is str:
        ok = isinstance(value, str)
    elif t is step_or_latest:
        ok = (isinstance(value, int) and not isinstance(value, bool)) or value == LATEST
    if not ok:
        raise UserError(f'{where} must be {_type_name(action)}, not {value!r}')
    if action.choices is not None and value not in action.choices:
        raise UserError(f"{where} must be one of {', '.join(map(str, action.choices))}, not {value!r}")
    return value


def read_yaml_defaults(path, parser=None):
    """Read a --config YAML file into {dest: value}, checking keys and types."""
    parser = parser or build_parser()
    if not os.path.isfile(path):
        raise UserError(f"config file '{path}' does not exist; check the --config path")
    try:
        with open(path, encoding='utf-8') as f:
            data = yaml.safe_load(f)
    except yaml.YAMLError as e:
        mark = getattr(e, 'problem_mark', None)
        at = f' at line {mark.line + 1}' if mark is not None else ''
        raise UserError(f"config file '{path}' is not valid YAML{at}; fix its syntax") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"config file '{path}' must be a mapping of 'key: value' lines")
    actions = _actions(parser)
    out = {}
    for key, value in data.items():
        if key not in actions or key in _CLI_ONLY:
            raise UserError(f"unknown key '{key}' in config file {path}; "
                            f"remove it or use one of the flag names (see --help)")
        out[key] = _coerce(key, value, actions[key], path)
    return out


def parse_args(argv=None):
    """Parse the command line, with defaults from --config YAML when given."""
    parser = build_parser()
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument('--config', type=str, default=None)
    known, _ = pre.parse_known_args(argv)
    if known.config:
        defaults = read_yaml_defaults(known.config, parser)
        parser.set_defaults(**defaults)
        if 'mode' in defaults:
            _actions(parser)['mode'].required = False
    args = parser.parse_args(argv)
    read_back_run(args, given_on_command_line(argv))
    validate_args(args)
    return args


def given_on_command_line(argv=None):
    """The dests of the flags that ``argv`` sets explicitly (not through defaults or --config)."""
    parser = build_parser()
    for action in parser._actions:
        action.default, action.required = argparse.SUPPRESS, False
    known, _ = parser.parse_known_args(argv)
    return set(vars(known))


def read_back_run(args, given=()):
    """A run remembers its architecture: in the modes that load a run, the model keys of
    ``--checkpoint_dir``'s config.yaml replace defaults and --config values (flags given on
    the command line still win; a flag that contradicts the checkpoint fails when it loads).
    Official checkpoints (no config.yaml) keep the flags as they are."""
    path = os.path.join(args.checkpoint_dir, CONFIG_FILENAME)
    if args.mode not in RUN_MODES or not os.path.isfile(path):
        return args
    stored = load_config(path)
    for key in MODEL_KEYS:
        if key == 'domain_names' and 'num_domains' in given:
            continue  # the run's names belong to its number of domains, which the command line changes
        if key in stored and key not in given:
            setattr(args, key, stored[key])
    return args


def domain_names(args):
    """The --domain_names list, or None when not given."""
    return split_names(getattr(args, 'domain_names', None))


def sample_outputs(args):
    """The --sample_outputs list (in the order of SAMPLE_OUTPUTS); UserError on an unknown name."""
    text = getattr(args, 'sample_outputs', None) or ','.join(DEFAULT_SAMPLE_OUTPUTS)
    names = [n.strip() for n in text.split(',') if n.strip()]
    if names == ['all']:
        return SAMPLE_OUTPUTS
    unknown = [n for n in names if n not in SAMPLE_OUTPUTS]
    if unknown or not names:
        raise UserError(f"--sample_outputs '{text}': {', '.join(unknown) or 'nothing'} is not an output; "
                        f"give a comma list of {', '.join(SAMPLE_OUTPUTS)} (or 'all')")
    return tuple(n for n in SAMPLE_OUTPUTS if n in names)


def with_defaults(args):
    """``args`` with every flag it lacks set to this project's default.

    Scripts written for the official ``main.py`` build their own Namespace without our
    extra flags (dim_in, device, ema_beta, sample_from, ...); ``Solver`` completes it here.
    Returns ``args`` itself when nothing is missing, else a copy of the same kind.
    """
    given = as_dict(args)
    missing = {a.dest: a.default for a in _actions(build_parser()).values()
               if a.dest not in given and a.dest not in _CLI_ONLY}
    if not missing:
        return args
    merged = {**missing, **given}
    return argparse.Namespace(**merged) if isinstance(args, argparse.Namespace) else Munch(merged)


def validate_args(args):
    """Range checks that argparse types cannot express; UserError on the first problem."""
    def need(cond, msg):
        if not cond:
            raise UserError(msg)

    need(args.img_size >= 16 and args.img_size & (args.img_size - 1) == 0,
         f'--img_size must be a power of two >= 16, not {args.img_size}')
    need(args.num_domains >= 1, f'--num_domains must be >= 1, not {args.num_domains}')
    for k in ('latent_dim', 'hidden_dim', 'style_dim', 'max_conv_dim', 'batch_size',
              'val_batch_size', 'num_outs_per_domain', 'num_outs'):
        v = getattr(args, k)
        need(v >= 1, f'--{k} must be >= 1, not {v}')
    need(0 < args.port < 65536, f'--port must be in 1..65535, not {args.port}')
    if args.dim_in is not None:
        need(args.dim_in >= 1, f'--dim_in must be >= 1, not {args.dim_in}')
    for k in ('total_iters', 'resume_iter', 'ds_iter', 'lr_decay_iter', 'num_workers', 'print_every',
              'sample_every', 'save_every', 'eval_every', 'keep_last'):
        v = getattr(args, k)
        need(v == LATEST if isinstance(v, str) else v >= 0, f'--{k} must be >= 0, not {v}')
    for k in ('lambda_reg', 'lambda_cyc', 'lambda_sty', 'lambda_ds', 'w_hpf', 'lr', 'f_lr',
              'weight_decay'):
        v = getattr(args, k)
        need(v >= 0, f'--{k} must be >= 0, not {v}')
    need(0 <= args.randcrop_prob <= 1, f'--randcrop_prob must be in [0, 1], not {args.randcrop_prob}')
    for k in ('beta1', 'beta2', 'ema_beta'):
        v = getattr(args, k)
        need(0 <= v < 1, f'--{k} must be in [0, 1), not {v}')
    sample_outputs(args)
    names = domain_names(args)
    if names is not None:
        need(all(names), f"--domain_names '{args.domain_names}' has an empty name; "
                         f"give comma-separated names like 'cat,dog,wild'")
        need(len(set(names)) == len(names), f"--domain_names '{args.domain_names}' repeats a name")
        need(len(names) == args.num_domains,
             f'--domain_names gives {len(names)} names but --num_domains is {args.num_domains}; '
             f'give one name per domain')
    return args


def as_dict(args):
    if isinstance(args, argparse.Namespace):
        return dict(vars(args))
    return dict(args)


def save_config(args, folder, **overrides):
    """Write the resolved configuration (``overrides`` replacing values of ``args``) to
    FOLDER/config.yaml atomically; return its path.

    The file is usable as ``--config`` (keys are flag names; ``config`` itself is left out).
    """
    data = {k: v for k, v in {**as_dict(args), **overrides}.items() if k not in _CLI_ONLY}
    text = yaml.safe_dump(data, sort_keys=False, default_flow_style=False)
    return atomic_write(os.path.join(folder, CONFIG_FILENAME), lambda f: f.write(text), binary=False)


def load_config(path):
    """Read a config.yaml written by save_config (or a folder holding one) as a Munch."""
    if os.path.isdir(path):
        path = os.path.join(path, CONFIG_FILENAME)
    if not os.path.isfile(path):
        raise UserError(f"config file '{path}' does not exist; check the path")
    try:
        with open(path, encoding='utf-8') as f:
            data = yaml.safe_load(f)
    except yaml.YAMLError:
        raise UserError(f"config file '{path}' is not valid YAML; fix or delete it") from None
    if not isinstance(data, dict):
        raise UserError(f"config file '{path}' must be a mapping of 'key: value' lines")
    return Munch(data)
