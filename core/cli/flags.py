"""The flags: every flag of the official StarGAN v2 ``main.py`` with its official default and
type, plus ours (marked). ``build_parser()`` is the one table of flags; ``core.cli.arguments`` turns a
command line into arguments (``parse_args``), ``core.cli.config_files`` reads and writes them as YAML.
"""
from __future__ import annotations

import argparse
from typing import Any, Dict, Final, Literal, NoReturn, TypeAlias

from core.cli.mode_table import MODES, OUTPUT_FLAG
from core.errors import UserError

__all__ = ['build_parser', 'flag_actions', 'step_or_latest', 'LATEST', 'SAMPLE_OUTPUTS', 'DEFAULT_SAMPLE_OUTPUTS',
           'CLI_ONLY']

SAMPLE_OUTPUTS = ('reference', 'video_ref', 'latent', 'video_latent')
# The official sample mode writes only reference.jpg and video_ref.mp4, so that is the default
# (the official command costs what it costs upstream); the latent grids (minutes at 256 px on a
# CPU) and video_latent (tens of minutes) are opt-in. Times: docs/usage.md, "Sample mode".
DEFAULT_SAMPLE_OUTPUTS = ('reference', 'video_ref')
# keys that a YAML file may not set (they only make sense on the command line)
CLI_ONLY = ('config',)


class _Parser(argparse.ArgumentParser):
    """ArgumentParser whose mistakes become UserError (main.py prints them, exit 2)."""

    def error(self, message: str) -> NoReturn:
        raise UserError(f'{message} (see --help)')


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(description='StarGAN v2: diverse image synthesis for multiple domains',
                formatter_class=_HelpFormatter, epilog=modes_help())
    add = p.add_argument

    # ---- ours: configuration file
    add('--config', type=str, default=None, metavar='FILE',
        help='YAML file of defaults (e.g. configs/afhq.yaml); command-line flags override it')

    # ---- model arguments (official)
    add('--img_size', type=int, default=256, help='image resolution')
    add('--num_domains', type=int, default=2, help='number of domains')
    add('--latent_dim', type=int, default=16, help='latent vector dimension')
    add('--hidden_dim', type=int, default=512,
        help="unused, as upstream: the official mapping network's hidden width is 512 whatever this says")
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
        help='what to do (the modes are listed below)')
    add('--num_workers', type=workers, default=4,
        help="DataLoader workers per loader; 'auto': the cores this process may use, shared among the "
             "processes on this machine (torchrun) and split among the loaders by their work (docs/speed.md)")
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
    add('--strength', type=float, default=1.0,
        help="translate: style strength in [0, 1], from the source's own style (0) to the target style (1); "
             "below 1 it needs --src_domain")
    add('--src_domain', type=str, default=None,
        help='translate: domain (name or index) of the source images (for --strength below 1)')
    # ours: the output of every mode that writes one (official names: --result_dir, --eval_dir, --out_dir)
    add(f'--{OUTPUT_FLAG}', type=str, default=None,
        help="where the mode writes: sample and export a folder (alias --result_dir), eval a folder (--eval_dir), "
             "align a folder (--out_dir), translate an image file or a folder")

    # ---- ours: --mode serve (web demo) and --mode export
    add('--host', type=str, default='127.0.0.1', help='serve: address to listen on (0.0.0.0: every interface)')
    add('--port', type=int, default=7860, help='serve: port to listen on')
    add('--share', action='store_true', help="serve: also open a public gradio.live link (off: nothing leaves the machine)")
    add('--format', type=str, default='onnx', choices=['onnx', 'hf'],
        help='export: onnx (ONNX graphs) or hf (a Hugging Face Hub folder: config.json, model.safetensors, '
             'model card README.md; docs/hub.md)')
    add('--push_to_hub', type=str, default=None, metavar='REPO',
        help="export --format hf: also upload the folder to this Hub model repository ('owner/name'; created "
             "PRIVATE when missing, see --hub_public; the token of `hf auth login` or HF_TOKEN)")
    add('--hub_public', action='store_true',
        help='export --push_to_hub: create the repository public (default: private; an existing repository keeps '
             'its visibility)')

    # ---- face alignment (official)
    add('--wing_path', type=str, default='expr/checkpoints/wing.ckpt')
    add('--lm_path', type=str, default='expr/checkpoints/celeba_lm_mean.npz')

    # ---- step sizes (official; 0 disables printing/sampling/saving/evaluating)
    add('--print_every', type=int, default=10)
    add('--sample_every', type=int, default=5000)
    add('--save_every', type=int, default=10000)
    add('--keep_last', type=int, default=0,
        help='after each complete checkpoint save, remove our older sets but the newest N and the set the run resumed '
             'from (0: keep all, as upstream)')
    add('--eval_every', type=int, default=50000)
    return p


LATEST: Final = 'latest'
# --resume_iter: an iteration number or 'latest'
StepOrLatest: TypeAlias = int | Literal['latest']


def step_or_latest(text: str | int) -> StepOrLatest:
    """--resume_iter: an iteration number, or 'latest'."""
    if isinstance(text, str) and text.strip().lower() == LATEST:
        return LATEST
    try:
        return int(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"expected an iteration number or 'latest', not {text!r}") from None


AUTO: Final = 'auto'
# --num_workers: a count or 'auto' (core.device.data_workers resolves it)
Workers: TypeAlias = int | Literal['auto']


def workers(text: str | int) -> Workers:
    """--num_workers: a number of worker processes (>= 0), or 'auto'."""
    if isinstance(text, str) and text.strip().lower() == AUTO:
        return AUTO
    try:
        n = int(text)
    except (TypeError, ValueError):
        n = -1
    if n < 0:
        raise argparse.ArgumentTypeError(f"expected a number of workers (0 or more) or 'auto', not {text!r}")
    return n


def flag_actions(parser: argparse.ArgumentParser) -> Dict[str, Any]:
    """{dest: action} of every flag but --help."""
    return {a.dest: a for a in parser._actions if a.dest != 'help'}


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults after each flag; the epilog (the modes) as written."""


def modes_help() -> str:
    """The --help epilog: one entry per mode of the table, with its output and its own flags."""
    lines = ['modes:']
    for mode in MODES.values():
        out = f' Output: --{OUTPUT_FLAG}' + (f' (--{mode.output})' if mode.output != OUTPUT_FLAG else '') \
            if mode.output else ''
        lines.append(f'  {mode.name:<10} {mode.summary}.{out}')
        if mode.options:
            lines.append(' ' * 13 + 'its flags: ' + ' '.join(f'--{o}' for o in mode.options))
    return '\n'.join(lines)
