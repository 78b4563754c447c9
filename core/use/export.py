"""Export mode: the EMA networks of a checkpoint as ONNX graphs with a dynamic batch size
(``--format onnx``, below), or as a Hugging Face Hub folder (``--format hf``: ``config.json``,
``model.safetensors``, a model card; ``core.use.hub_folder``, ``export_hub``), uploaded with
``--push_to_hub REPO`` (``core.use.hub_transport``).

    python main.py --mode export --format onnx --config configs/demo.yaml --out expr/demo/onnx

writes into ``--out`` (official name ``--result_dir``):

- ``generator.onnx``        x (N, 3, S, S), s (N, style_dim) [, masks0, masks1 (N, 1, 256, 256)] -> x_fake
- ``mapping_network.onnx``  z (N, latent_dim) float32, y (N,) int64 -> s
- ``style_encoder.onnx``    x (N, 3, S, S), y (N,) int64 -> s
- ``fan_masks.onnx``        (w_hpf > 0 only) x (N, 3, S, S) -> masks0, masks1: the FAN and the
  heat-map-to-mask step of ``core.nn.fan``, so a face model needs no PyTorch at all
- ``onnx_export.json``      input/output names and shapes, image size, dimensions, domain names, w_hpf

Images are RGB, NCHW float32 in [-1, 1] (pixel / 127.5 - 1) resized to S x S, as translate mode
feeds them. Every file is written atomically.
"""
from __future__ import annotations

import json
import os
import warnings
from argparse import Namespace
from typing import TYPE_CHECKING, Any, TypeAlias

import torch
from munch import Munch
from torch import nn

from core.cli.arguments import output_flag
from core.cli.config_files import CONFIG_FILENAME, load_config
from core.errors import UserError
from core.io.files import atomic_write, check_output_dir, same_file
from core.nn.networks import ModelConfig
from core.use.hub_folder import is_hub_folder, read_hub_config, save_hub_folder
from core.use.hub_transport import check_repo_id, push_folder
from core.use.model_card import card_metrics, card_training_data, training_data

if TYPE_CHECKING:
    from core.nn.fan import FAN

__all__ = ['run', 'export_onnx', 'export_hub', 'hub_metadata', 'graph_specs', 'META_FILENAME', 'FORMATS']

META_FILENAME = 'onnx_export.json'
FORMATS = ('onnx', 'hf')
EXAMPLE_BATCH = 2  # torch.export specialises a batch of 1; any other size stays symbolic

# (name, module, example inputs, input names, output names) of one graph
GraphSpec: TypeAlias = tuple[str, nn.Module, tuple[torch.Tensor, ...], list[str], list[str]]


class _MaskedGenerator(nn.Module):
    """The generator with its two FAN masks as plain inputs (ONNX has no list inputs)."""

    def __init__(self, generator: nn.Module) -> None:
        super().__init__()
        self.generator = generator

    def forward(self, x: torch.Tensor, s: torch.Tensor, masks0: torch.Tensor, masks1: torch.Tensor) -> torch.Tensor:
        return self.generator(x, s, masks=[masks0, masks1])


class _FanMasks(nn.Module):
    """Images in [-1, 1] -> the generator's two masks, as ``FAN.get_heatmap``."""

    def __init__(self, fan: FAN) -> None:
        super().__init__()
        self.fan = fan

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.fan.get_heatmap(x)


def graph_specs(nets: Munch, cfg: ModelConfig) -> list[GraphSpec]:
    """``[(name, module, example inputs, input names, output names)]`` of the graphs to export."""
    device = next(nets.generator.parameters()).device
    n, size = EXAMPLE_BATCH, cfg.img_size
    x = torch.zeros(n, 3, size, size, device=device)
    s = torch.zeros(n, cfg.style_dim, device=device)
    y = torch.zeros(n, dtype=torch.long, device=device)
    z = torch.zeros(n, cfg.latent_dim, device=device)
    specs: list[GraphSpec] = [('mapping_network', nets.mapping_network, (z, y), ['z', 'y'], ['s']),
                              ('style_encoder', nets.style_encoder, (x, y), ['x', 'y'], ['s'])]
    if cfg.w_hpf > 0:
        masks = tuple(torch.zeros(n, 1, 256, 256, device=device) for _ in range(2))
        specs += [('generator', _MaskedGenerator(nets.generator), (x, s) + masks,
                   ['x', 's', 'masks0', 'masks1'], ['x_fake']),
                  ('fan_masks', _FanMasks(nets.fan), (x,), ['x'], ['masks0', 'masks1'])]
    else:
        specs.append(('generator', nets.generator, (x, s), ['x', 's'], ['x_fake']))
    return specs


def _onnx_bytes(module, inputs, input_names, output_names, opset=None):
    batch = torch.export.Dim('batch', min=1)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        program = torch.onnx.export(module.eval(), inputs, None, input_names=input_names,
                                    output_names=output_names, dynamo=True, external_data=False,
                                    dynamic_shapes=tuple({0: batch} for _ in inputs), opset_version=opset,
                                    verbose=False)
    return program.model_proto.SerializeToString()


def _shapes(names, tensors):
    return {name: ['N', *t.shape[1:]] for name, t in zip(names, tensors)}


@torch.no_grad()
def export_onnx(nets: Munch, cfg: ModelConfig, out_dir: str, step: int | None = None,
                opset: int | None = None) -> dict[str, Any]:
    """Writes the ONNX graphs of ``nets`` and ``onnx_export.json`` into ``out_dir``; returns the
    metadata (also what the JSON holds)."""
    graphs = {}
    for name, module, inputs, input_names, output_names in graph_specs(nets, cfg):
        data = _onnx_bytes(module, inputs, input_names, output_names, opset)
        path = atomic_write(os.path.join(out_dir, f'{name}.onnx'), lambda f: f.write(data))
        outputs = module(*inputs)
        outputs = outputs if isinstance(outputs, (tuple, list)) else (outputs,)
        graphs[name] = dict(file=os.path.basename(path), inputs=_shapes(input_names, inputs),
                            outputs=_shapes(output_names, outputs))
        print(f'wrote {path}')
    meta = dict(format='onnx', step=step, img_size=cfg.img_size, style_dim=cfg.style_dim,
                latent_dim=cfg.latent_dim, num_domains=cfg.num_domains, domain_names=cfg.names(),
                w_hpf=cfg.w_hpf, image='RGB, NCHW float32 in [-1, 1] (pixel / 127.5 - 1), '
                                      f'resized to {cfg.img_size}x{cfg.img_size}',
                integer_inputs='y: int64 domain indices', graphs=graphs)
    text = json.dumps(meta, indent=2)
    print(f'wrote {atomic_write(os.path.join(out_dir, META_FILENAME), lambda f: f.write(text), binary=False)}')
    return meta


def run(args: Namespace | Munch) -> None:
    """``--mode export``: the run's EMA networks into ``--out`` (``--result_dir``): ONNX graphs
    (``--format onnx``) or a Hub folder (``--format hf``, uploaded with ``--push_to_hub``: into a private repository unless
    ``--hub_public``)."""
    if args.format not in FORMATS:
        raise UserError(f"--format {args.format} is not supported; use --format onnx or --format hf")
    if args.push_to_hub and args.format != 'hf':
        raise UserError('--push_to_hub uploads a Hub folder: add --format hf')
    if args.hub_public and not args.push_to_hub:
        raise UserError('--hub_public makes the repository of --push_to_hub public: add --push_to_hub REPO '
                        '(or drop --hub_public)')
    if args.format == 'hf':
        export_hub(args)
        return
    try:
        import onnx  # noqa: F401  (the exporter needs onnx and onnxscript)
        import onnxscript  # noqa: F401
    except ImportError:
        raise UserError('ONNX export needs the onnx and onnxscript packages: '
                        'pip install onnx onnxscript onnxruntime') from None
    check_output_dir(args.result_dir, output_flag(args))  # before the networks load
    from core.use.load_run import load_run_networks
    nets, step = load_run_networks(args, device='cpu')  # graphs are traced on the CPU
    export_onnx(nets, ModelConfig.from_args(args), args.result_dir, step=step)


def export_hub(args: Namespace | Munch) -> dict[str, Any]:
    """``--mode export --format hf``: the Hub folder of the run's EMA networks into ``--result_dir``
    (``core.use.hub_folder.save_hub_folder``; metadata from ``hub_metadata``), then, with
    ``--push_to_hub REPO``, its upload. Paths, the repository id and the package are checked
    before the networks load. Returns what config.json holds."""
    out, repo = args.result_dir, args.push_to_hub
    check_output_dir(out, output_flag(args))
    if same_file(out, args.checkpoint_dir):
        raise UserError(f"{output_flag(args)} '{out}' is --checkpoint_dir itself: the Hub folder would mix with the "
                        f"checkpoints; choose another folder (e.g. {os.path.join(args.checkpoint_dir, 'hf')})")
    if repo:
        check_repo_id(repo)
        try:
            import huggingface_hub  # noqa: F401
        except ImportError:
            raise UserError('--push_to_hub needs huggingface_hub: pip install huggingface_hub') from None
    from core.use.load_run import load_run_networks
    nets, step = load_run_networks(args, device='cpu')
    meta = save_hub_folder(nets, ModelConfig.from_args(args), out, step=step, extra=hub_metadata(args, step))
    if repo:
        push_folder(out, repo, public=bool(args.hub_public))
    return meta


def hub_metadata(args: Namespace | Munch, step: int) -> dict[str, Any]:
    """``source``, ``training_data`` and ``metrics`` of the Hub folder exported from
    ``--checkpoint_dir`` at ``step``.

    - training data: from the ``train_img_dir`` (and ``demo_data``) that the run's config.yaml
      records; a run without one (an official checkpoint) takes ``--train_img_dir`` (give it,
      or the dataset's ``--config``); see ``core.use.model_card.training_data``;
    - metrics of ``step``: the first of ``--eval_dir``, the ``eval_dir`` that the run's
      config.yaml records, and the run folder itself that holds them (FID/LPIPS JSON files or
      ``metrics.jsonl``; ``metrics.eval.read_results``);
    - a Hub folder given as ``--checkpoint_dir`` passes its own on."""
    folder = args.checkpoint_dir
    run_name = os.path.basename(os.path.abspath(folder))
    if is_hub_folder(folder):
        old = read_hub_config(folder)
        # fields another writer (or a hand edit) may have changed: kept only when they are what
        # save_hub_folder writes (card_training_data, card_metrics), else 'unknown'
        source = old.get('source')
        meta: dict[str, Any] = dict(source=source if isinstance(source, str) and source else f'{run_name} (Hub folder)',
                    training_data=card_training_data(old.get('training_data')))
        if old.get('step') == step:
            meta['metrics'] = card_metrics(old.get('metrics'))
        return meta
    recorded = load_config(folder) if os.path.isfile(os.path.join(folder, CONFIG_FILENAME)) else None
    if recorded is not None:
        data = training_data(recorded.get('train_img_dir'), recorded.get('demo_data'))
    else:
        data = training_data(args.train_img_dir, args.demo_data)
    candidates = [args.eval_dir, recorded.get('eval_dir') if recorded else None, folder]
    candidates = [c for c in candidates if isinstance(c, str)]  # a hand-edited config.yaml may hold anything
    from metrics.eval import read_results  # the metrics stack is loaded only when used
    metrics, seen = None, set()
    for candidate in candidates:
        if candidate and os.path.realpath(candidate) not in seen:
            seen.add(os.path.realpath(candidate))
            metrics = read_results(candidate, step)
            if metrics:
                break
    return dict(source=f'{run_name}/{step:06d}_nets_ema.ckpt', training_data=data, metrics=metrics)
