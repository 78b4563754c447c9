"""Model folders in the Hugging Face Hub's format: ``config.json`` + ``model.safetensors`` + a
model card (``README.md``), written by ``--mode export --format hf`` and loaded by every mode
that loads a run (``--checkpoint_dir FOLDER``) and by the Python API.

    save_hub_folder(nets, cfg, 'expr/hub/afhq', step=100000)          # the three files
    nets, cfg, meta = load_hub_folder('expr/hub/afhq')

- ``config.json``: the :class:`~core.nn.networks.ModelConfig` fields at the top level (domain
  names a list, or null), ``format`` ('stargan-v2'), ``format_version``, ``step`` (the
  training iteration, null when unknown), ``networks``, ``source`` (run folder and file it
  came from), ``training_data`` (name and licence) and, when an evaluation of that step was
  found, ``metrics``.
- ``model.safetensors``: the EMA generator, mapping network and style encoder, and the FAN
  when ``w_hpf > 0``; each network's official state-dict keys prefixed by its name
  (``generator.from_rgb.weight``, ``fan.conv1.weight``...). Loading reads it with
  ``safetensors.torch.load_file``: no pickle runs.
- ``README.md``: the model card (``core.use.model_card``): Hub front matter (library, tags,
  licence), domains, image size, iterations, the metrics, the training data and its licence.

Each file is written atomically, ``config.json`` last: a folder with a ``config.json`` has the
weights it describes (unless a later export over it was cut short). Only EMA networks are in
a folder (what inference uses), so ``--sample_from online`` is refused for one. A Hub
repository id becomes such a folder, and a folder goes to the Hub, by ``core.use.hub_transport``.
"""
from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Mapping
from typing import IO, Any

import torch
from munch import Munch
from torch import nn

from core.device import DeviceLike, as_device
from core.errors import UserError, cut, shown
from core.io.ckpt_files import unwrap
from core.io.files import atomic_write, read_small_file
from core.nn.networks import INFERENCE, MODEL_KEYS, ModelConfig, build_networks
from core.use.model_card import IMAGE, card_metrics, card_training_data, model_card

__all__ = ['FORMAT', 'FORMAT_VERSION', 'CONFIG_NAME', 'WEIGHTS_NAME', 'CARD_NAME', 'HUB_FILES', 'is_hub_folder',
           'read_hub_config', 'config_from_hub', 'model_values', 'hub_step', 'save_hub_folder', 'load_hub_weights',
           'load_hub_folder', 'read_safetensors_header']

FORMAT = 'stargan-v2'
FORMAT_VERSION = 1
CONFIG_NAME, WEIGHTS_NAME, CARD_NAME = 'config.json', 'model.safetensors', 'README.md'
HUB_FILES = (CONFIG_NAME, WEIGHTS_NAME, CARD_NAME)  # a folder's files: all that goes to or comes from the Hub


# ---------------------------------------------------------------------------- reading a folder

MAX_HEADER_BYTES = 100 << 20  # safetensors' own limit on the header of a weights file
_CHECKPOINT_FILE = re.compile(r'\d+_(?:nets|nets_ema|optims|state)\.ckpt')


def _read_json(path: str) -> Any:
    """The JSON of ``path`` when it is small; UserError otherwise."""
    def parse(f: IO[str]) -> Any:
        try:
            return json.load(f)
        except ValueError as e:  # not JSON (UnicodeDecodeError, a ValueError too, is read_small_file's)
            if isinstance(e, UnicodeDecodeError):
                raise
            raise UserError(f'cannot read {path}: {str(e).splitlines()[0][:200]}; export the folder again') from None
    return read_small_file(path, parse, path, f'a {CONFIG_NAME}', 'export the folder again')


def _is_ours(config_path: str) -> bool:
    """Whether ``config_path`` is a readable config.json of this format (False for any other)."""
    try:
        data = _read_json(config_path)
    except UserError:
        return False
    return isinstance(data, dict) and data.get('format') == FORMAT


def is_hub_folder(path: str | os.PathLike[str] | None) -> bool:
    """True when ``path`` is a folder of this format, decided by what its files are: a
    ``model.safetensors``, or a ``config.json`` that says ``"format": "stargan-v2"``, or any
    ``config.json`` in a folder without checkpoint files (``NNNNNN_nets_ema.ckpt``...: a
    training run, or official checkpoints, which a foreign ``config.json`` beside them does
    not change). Whether it is a valid one is for the loader to say."""
    if not path or not os.path.isdir(path):
        return False
    if os.path.isfile(os.path.join(path, WEIGHTS_NAME)):
        return True
    config = os.path.join(path, CONFIG_NAME)
    if not os.path.isfile(config):
        return False
    if _is_ours(config):
        return True
    return not any(_CHECKPOINT_FILE.fullmatch(name) for name in os.listdir(path))


def read_hub_config(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """``config.json`` of a Hub folder, checked: its size, its format, its version, its model keys."""
    path = os.path.join(folder, CONFIG_NAME)
    if not os.path.isfile(path):
        raise UserError(f"'{folder}' has no {CONFIG_NAME}: it is not a StarGAN v2 Hub folder "
                        f"(write one with --mode export --format hf)")
    data = _read_json(path)
    if not isinstance(data, dict) or data.get('format') != FORMAT:
        found = data.get('format') if isinstance(data, dict) else None
        raise UserError(f"{path} is not the config of a StarGAN v2 Hub folder (format {shown(found)}, "
                        f"expected '{FORMAT}'); point at a folder written by --mode export --format hf")
    version = data.get('format_version')
    if not isinstance(version, int) or isinstance(version, bool) or version > FORMAT_VERSION:
        raise UserError(f'{path} has format_version {shown(version)}; this code reads up to {FORMAT_VERSION}: '
                        f'update the code or export the folder again')
    config_from_hub(data, path)  # checks the model keys
    return data


def config_from_hub(data: Mapping[str, Any], where: str = CONFIG_NAME) -> ModelConfig:
    """The ModelConfig of a ``config.json`` dict, checked by ``ModelConfig.checked``; UserError
    naming a missing or wrong key."""
    optional = ('dim_in', 'domain_names', 'to_rgb_norm')
    missing = [key for key in MODEL_KEYS if key not in data and key not in optional]
    if missing:
        raise UserError(f"{where} lacks '{missing[0]}'; export the folder again")
    if isinstance(data.get('domain_names'), str):  # a list in this format: a string would be split at commas
        raise UserError(f"'domain_names' in {where} must be a list of names or null, not a string; export the "
                        f"folder again")
    return ModelConfig.checked(data, f"'{{}}' in {where}")


def model_values(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """The model keys of a Hub folder as flag values (what a run's ``config.yaml`` gives
    ``core.cli.arguments.run_values``): domain names a comma list, ``to_rgb_norm`` 0 or 1."""
    cfg = config_from_hub(read_hub_config(folder), os.path.join(folder, CONFIG_NAME))
    values: dict[str, Any] = {key: getattr(cfg, key) for key in MODEL_KEYS}
    values['domain_names'] = ','.join(cfg.domain_names) if cfg.domain_names else None
    values['to_rgb_norm'] = int(cfg.to_rgb_norm)
    return values


def hub_step(folder: str | os.PathLike[str]) -> int | None:
    """The training iteration a Hub folder was exported at (None when unknown)."""
    step = read_hub_config(folder).get('step')
    return step if isinstance(step, int) and not isinstance(step, bool) else None


# ---------------------------------------------------------------------------- writing a folder

def _network_names(cfg: ModelConfig) -> list[str]:
    return list(INFERENCE) + (['fan'] if cfg.w_hpf > 0 else [])


def _tensors(nets: Mapping[str, nn.Module], names: list[str]) -> dict[str, torch.Tensor]:
    """``{'<network>.<official key>': tensor}`` on the CPU, each its own contiguous copy
    (safetensors refuses tensors that share memory)."""
    out = {}
    for name in names:
        module = unwrap(nets[name])
        for key, value in module.state_dict().items():
            out[f'{name}.{key}'] = value.detach().to('cpu', copy=True).contiguous()
    return out


def _writer(content: bytes | str) -> Callable[[IO[Any]], object]:
    return lambda f: f.write(content)


def save_hub_folder(nets: Mapping[str, nn.Module], cfg: ModelConfig, out_dir: str | os.PathLike[str],
                    step: int | None = None, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Writes ``model.safetensors``, ``README.md`` and ``config.json`` (last) of ``nets`` (the
    EMA networks of ``cfg``, with ``fan`` when ``w_hpf > 0``) into ``out_dir``, each atomically;
    returns what ``config.json`` holds.

    ``extra``: more metadata for ``config.json`` and the card: ``source`` (a string: where the
    networks came from), ``training_data`` (see ``core.use.model_card.training_data``; default: unknown) and
    ``metrics`` (see ``metrics.eval.read_results``); other keys go into ``config.json`` as they are."""
    from safetensors.torch import save as safetensors_bytes
    names = _network_names(cfg)
    missing = [n for n in names if n not in nets]
    if missing:
        raise UserError(f"the networks to export lack {', '.join(missing)} (w_hpf {cfg.w_hpf} needs "
                        f"{', '.join(names)})")
    if step is not None and (not isinstance(step, int) or isinstance(step, bool) or step < 0):
        raise UserError(f'step must be an iteration number >= 0 or None, not {step!r}')
    extra = dict(extra or {})
    meta: dict[str, Any] = dict(format=FORMAT, format_version=FORMAT_VERSION)
    meta.update({key: getattr(cfg, key) for key in MODEL_KEYS})
    meta['domain_names'] = list(cfg.domain_names) if cfg.domain_names else None
    source = extra.pop('source', None)
    meta.update(step=step, networks=names, weights='ema', image=IMAGE.format(cfg.img_size),
                source=source if isinstance(source, str) else None,
                training_data=card_training_data(extra.pop('training_data', None)))
    metrics = card_metrics(extra.pop('metrics', None))
    if metrics:
        meta['metrics'] = metrics
    meta.update(extra)
    data = safetensors_bytes(_tensors(nets, names), metadata={'format': 'pt'})
    files: list[tuple[str, bytes | str]] = [(WEIGHTS_NAME, data), (CARD_NAME, model_card(meta, CONFIG_NAME, WEIGHTS_NAME)),
                                            (CONFIG_NAME, json.dumps(meta, indent=2) + '\n')]
    for name, content in files:
        path = atomic_write(os.path.join(out_dir, name), _writer(content), binary=isinstance(content, bytes))
        print(f'wrote {path}')
    return meta


# ---------------------------------------------------------------------------- loading

def _shape(shape: Any) -> str:
    return 'x'.join(map(str, shape)) or 'scalar'


# safetensors dtype names of the tensor kinds a state dict holds
_FLOAT_DTYPES = ('F64', 'F32', 'F16', 'BF16')
_INT_DTYPES = ('I64', 'I32', 'I16', 'I8', 'U8')


def read_safetensors_header(path: str) -> dict[str, tuple[str, list[int]]]:
    """``{name: (dtype, shape)}`` of a safetensors file, from its header alone (the first 8
    bytes give the header's length, then that many bytes of JSON): no tensor is read.
    UserError (one line) for a file that is not safetensors."""
    def bad(why: str) -> UserError:
        return UserError(f'{path} is not a safetensors file ({why}); download or export it again')

    size = os.path.getsize(path)
    with open(path, 'rb') as f:
        head = f.read(8)
        if len(head) < 8:
            raise bad('shorter than its 8-byte header length')
        length = int.from_bytes(head, 'little')
        if length > min(MAX_HEADER_BYTES, size - 8):
            raise bad(f'a header of {length} bytes')
        text = f.read(length)
    try:
        header = json.loads(text)
    except RecursionError:
        raise bad('a header nested too deeply') from None
    except (ValueError, UnicodeDecodeError):
        raise bad('its header is not JSON') from None
    if not isinstance(header, dict):
        raise bad('its header is not a mapping')
    out: dict[str, tuple[str, list[int]]] = {}
    for name, entry in header.items():
        if name == '__metadata__':
            continue
        shape = entry.get('shape') if isinstance(entry, dict) else None
        if not (isinstance(entry, dict) and isinstance(entry.get('dtype'), str) and isinstance(shape, list)
                and all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape)):
            raise bad(f'entry {shown(name)} has no dtype and shape')
        out[name] = (entry['dtype'], shape)
    return out


def _dtype_fits(stored: str, ours: torch.Tensor) -> bool:
    return stored in (_FLOAT_DTYPES if ours.is_floating_point() else _INT_DTYPES)


def _plural(n: int, what: str) -> str:
    return f"{n} {what}{'s' if n > 1 else ''}"


def load_hub_weights(folder: str | os.PathLike[str], nets: Mapping[str, nn.Module]) -> None:
    """Loads ``model.safetensors`` of ``folder`` into ``nets`` (name -> module, as
    ``build_networks`` gives them). The file's header is checked first, before any tensor is
    read: every key of every network must be in it with its shape and a dtype of its kind
    (floating point or integer), and it may hold nothing else; else one UserError naming
    what differs. Then the tensors load (``safetensors.torch.load_file``: no pickle runs)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    path = os.path.join(folder, WEIGHTS_NAME)
    if not os.path.isfile(path):
        raise UserError(f"'{folder}' has no {WEIGHTS_NAME}; export the folder again (--mode export --format hf)")
    try:
        header = read_safetensors_header(path)
    except OSError as e:
        raise UserError(f'cannot read {path}: {str(e).splitlines()[0][:200]}; download or export it again') from None
    ours = {f'{name}.{key}': value for name, net in nets.items()
            for key, value in unwrap(net).state_dict().items()}
    missing = [k for k in ours if k not in header]
    unexpected = [k for k in header if k not in ours]
    wrong = [k for k in ours if k in header and list(header[k][1]) != list(ours[k].shape)]
    kinds = [k for k in ours if k in header and k not in wrong and not _dtype_fits(header[k][0], ours[k])]
    problems = []
    if missing:
        problems.append(f"{_plural(len(missing), 'missing key')} (e.g. {missing[0]})")
    if unexpected:
        problems.append(f"{_plural(len(unexpected), 'unexpected key')} (e.g. {cut(unexpected[0])})")
    if wrong:
        problems.append(f'{len(wrong)} of another shape (e.g. {wrong[0]}: {_shape(header[wrong[0]][1])} in the file, '
                        f'{_shape(ours[wrong[0]].shape)} here)')
    if kinds:
        problems.append(f'{len(kinds)} of another kind of number (e.g. {kinds[0]}: {header[kinds[0]][0]} in the file, '
                        f'{str(ours[kinds[0]].dtype).replace("torch.", "")} here)')
    if problems:
        raise UserError(f"{path} does not fit the networks asked for: {'; '.join(problems)}: drop the model flags that "
                        f"contradict {os.path.join(folder, CONFIG_NAME)}, or export the folder again")
    try:
        state = load_file(path, device='cpu')
    except (SafetensorError, OSError) as e:
        raise UserError(f'cannot read {path}: {str(e).splitlines()[0][:200]}; download or export it again') from None
    for name, net in nets.items():
        prefix = f'{name}.'
        unwrap(net).load_state_dict(
            {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}, strict=True)


def load_hub_folder(folder: str | os.PathLike[str], device: DeviceLike = None) -> tuple[Munch, ModelConfig, dict[str, Any]]:
    """``(nets, cfg, meta)`` of a Hub folder: the networks in eval mode on ``device`` (None:
    CUDA when available, as the command line), their ModelConfig, and ``config.json``."""
    if not os.path.isdir(folder):
        raise UserError(f"'{folder}' is not a folder; give a folder written by --mode export --format hf "
                        f"(or a Hub repository id to resolve_pretrained)")
    meta = read_hub_config(folder)
    cfg = config_from_hub(meta, os.path.join(folder, CONFIG_NAME))
    nets = build_networks(cfg)
    load_hub_weights(folder, nets)
    target = as_device(device)
    return Munch({name: net.to(target).eval() for name, net in nets.items()}), cfg, meta
