"""The table of modes: each ``--mode`` registered once.

``main.py`` runs a mode's ``runner`` (``'module:function'``, imported only when the mode runs,
so this table sits at the bottom of the import graph), ``--help`` lists the modes from it,
``core.cli.arguments`` takes the ``--mode`` choices and the modes that load a run from it, and
``tests/core/cli/test_mode_table.py`` checks that they agree.

Output: every mode that writes files takes ``--out``; the official name of its output
option (``--result_dir``, ``--eval_dir``, ``--out_dir``) stays as an alias.
"""
import dataclasses
from typing import Dict, Optional, Tuple

__all__ = ['Mode', 'MODES', 'MODE_NAMES', 'RUN_MODES', 'OUTPUT_FLAG']

OUTPUT_FLAG = 'out'  # the option every mode's output goes to (its official name stays an alias)


@dataclasses.dataclass(frozen=True)
class Mode:
    name: str
    summary: str  # one line for --help
    runner: str  # 'module:function'; the function takes the parsed arguments, returns an exit status or None
    loads_run: bool  # reads a trained run: the model keys of --checkpoint_dir/config.yaml apply
    output: Optional[str]  # the flag --out stands for (None: the mode writes no single output)
    options: Tuple[str, ...] = ()  # the flags that concern this mode only (listed by --help)


_TABLE = (
    Mode('train', 'train a model (--checkpoint_dir holds the run; --resume_iter latest continues it)',
         'core.train.loop:run', False, None,
         ('train_img_dir', 'val_img_dir', 'total_iters', 'resume_iter', 'batch_size', 'sample_dir', 'eval_dir',
          'keep_last', 'amp', 'channels_last', 'compile', 'grad_checkpoint', 'demo_data')),
    Mode('sample', 'reference grid and video (and latent ones) of --src_dir x --ref_dir',
         'core.use.sample_grids:run', True, 'result_dir', ('src_dir', 'ref_dir', 'sample_outputs', 'sample_from')),
    Mode('eval', "FID and LPIPS with the paper's protocol", 'metrics.eval:run', True, 'eval_dir',
         ('val_img_dir', 'train_img_dir', 'inception_path', 'alexnet_path', 'save_eval_images', 'sample_from')),
    Mode('align', 'align face photos like CelebA-HQ (needs wing.ckpt)', 'core.use.align:run', False, 'out_dir',
         ('inp_dir', 'wing_path', 'lm_path')),
    Mode('translate', 'one image or a folder: reference-guided, or latent styles of a domain',
         'core.use.translate:run', True, 'out',
         ('src', 'ref', 'ref_domain', 'trg_domain', 'num_outs', 'psi', 'strength', 'src_domain', 'sample_from')),
    Mode('serve', 'a web page on a run (gradio)', 'core.use.serve:run', True, None, ('host', 'port', 'share')),
    Mode('export', 'the EMA networks as ONNX graphs (--format onnx) or a Hugging Face Hub folder (--format hf)',
         'core.use.export:run', True, 'result_dir', ('format', 'push_to_hub', 'hub_public', 'eval_dir')),
)

MODES: Dict[str, Mode] = {mode.name: mode for mode in _TABLE}
MODE_NAMES = tuple(MODES)
RUN_MODES = tuple(name for name, mode in MODES.items() if mode.loads_run)
