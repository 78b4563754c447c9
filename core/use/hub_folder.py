"""Model folders in the Hugging Face Hub's format: ``config.json`` + ``model.safetensors`` + a
model card (``README.md``), written by ``--mode export --format hf`` and loaded by every mode
that loads a run (``--checkpoint_dir FOLDER``) and by the Python API.

    save_hub_folder(nets, cfg, 'expr/hub/afhq', step=100000)          # the three files
    nets, cfg, meta = load_hub_folder(resolve_pretrained('user/stargan-v2-afhq'))

- ``config.json``: the :class:`~core.nn.networks.ModelConfig` fields at the top level (domain
  names a list, or null), ``format`` ('stargan-v2'), ``format_version``, ``step`` (the
  training iteration, null when unknown), ``networks``, ``source`` (run folder and file it
  came from), ``training_data`` (name and licence) and, when an evaluation of that step was
  found, ``metrics``.
- ``model.safetensors``: the EMA generator, mapping network and style encoder, and the FAN
  when ``w_hpf > 0``; each network's official state-dict keys prefixed by its name
  (``generator.from_rgb.weight``, ``fan.conv1.weight``...). Loading reads it with
  ``safetensors.torch.load_file``: no pickle runs.
- ``README.md``: the model card: Hub front matter (library, tags, licence), domains, image
  size, iterations, the metrics, the training data and its licence.

Each file is written atomically, ``config.json`` last: a folder with a ``config.json`` has the
weights it describes (unless a later export over it was cut short). Only EMA networks are in
a folder (what inference uses), so ``--sample_from online`` is refused for one.
"""
from __future__ import annotations

import json
import math
import os
import re
import shlex
from collections.abc import Callable, Mapping
from typing import IO, Any

import torch
from munch import Munch
from torch import nn

from core.device import DeviceLike, as_device
from core.errors import UserError
from core.io.files import atomic_write
from core.nn.networks import INFERENCE, MODEL_KEYS, ModelConfig, build_networks, check_model_values

__all__ = ['FORMAT', 'FORMAT_VERSION', 'CONFIG_NAME', 'WEIGHTS_NAME', 'CARD_NAME', 'is_hub_folder', 'read_hub_config',
           'config_from_hub', 'model_values', 'hub_step', 'save_hub_folder', 'load_hub_weights', 'load_hub_folder',
           'model_card', 'training_data', 'card_training_data', 'card_metrics', 'resolve_pretrained', 'push_folder',
           'check_repo_id', 'read_safetensors_header']

FORMAT = 'stargan-v2'
FORMAT_VERSION = 1
CONFIG_NAME, WEIGHTS_NAME, CARD_NAME = 'config.json', 'model.safetensors', 'README.md'
HUB_FILES = (CONFIG_NAME, WEIGHTS_NAME, CARD_NAME)  # what resolve_pretrained fetches of a repository

IMAGE = 'RGB, NCHW float32 in [-1, 1] (pixel / 127.5 - 1), resized to {0}x{0}'
PAPER = 'Choi, Uh, Yoo, Ha: StarGAN v2: Diverse Image Synthesis for Multiple Domains, CVPR 2020 (arXiv:1912.01865)'


# ---------------------------------------------------------------------------- reading a folder

MAX_CONFIG_BYTES = 1 << 20  # config.json is a few KiB; anything over 1 MiB is not one
MAX_HEADER_BYTES = 100 << 20  # safetensors' own limit on the header of a weights file
_CHECKPOINT_FILE = re.compile(r'\d+_(?:nets|nets_ema|optims|state)\.ckpt')


def _read_json(path: str) -> Any:
    """The JSON of ``path`` when it is small (``MAX_CONFIG_BYTES``); UserError otherwise."""
    size = os.path.getsize(path)
    if size > MAX_CONFIG_BYTES:
        raise UserError(f'{path} is {size} bytes, more than a {CONFIG_NAME} has ({MAX_CONFIG_BYTES // 1024} KiB '
                        f'at most); export the folder again')
    try:
        with open(path, encoding='utf-8') as f:
            return json.load(f)
    except RecursionError:
        raise UserError(f'{path} is nested too deeply to be a {CONFIG_NAME}; export the folder again') from None
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise UserError(f'cannot read {path}: {str(e).splitlines()[0][:200]}; export the folder again') from None


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
        raise UserError(f"{path} is not the config of a StarGAN v2 Hub folder (format {_short(found)}, "
                        f"expected '{FORMAT}'); point at a folder written by --mode export --format hf")
    version = data.get('format_version')
    if not isinstance(version, int) or isinstance(version, bool) or version > FORMAT_VERSION:
        raise UserError(f'{path} has format_version {_short(version)}; this code reads up to {FORMAT_VERSION}: '
                        f'update the code or export the folder again')
    config_from_hub(data, path)  # checks the model keys
    return data


def _cut(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[:limit - 3] + '...'


def _short(value: Any) -> str:
    return _cut(repr(value), 40)


def config_from_hub(data: Mapping[str, Any], where: str = CONFIG_NAME) -> ModelConfig:
    """The ModelConfig of a ``config.json`` dict: each model key checked with the rules of every
    model configuration (``core.nn.networks.check_model_values``); UserError naming a missing or
    wrong key."""
    optional = ('dim_in', 'domain_names', 'to_rgb_norm')
    missing = [key for key in MODEL_KEYS if key not in data and key not in optional]
    if missing:
        raise UserError(f"{where} lacks '{missing[0]}'; export the folder again")
    if isinstance(data.get('domain_names'), str):  # a list in this format: a string would be split at commas
        raise UserError(f"'domain_names' in {where} must be a list of names or null, not a string; export the "
                        f"folder again")
    values = check_model_values({key: data[key] for key in MODEL_KEYS if key in data}, f"'{{}}' in {where}")
    return ModelConfig(**values)


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
        module = getattr(nets[name], 'module', nets[name])  # a DataParallel wrapper's module
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
    networks came from), ``training_data`` (see :func:`training_data`; default: unknown) and
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
    files: list[tuple[str, bytes | str]] = [(WEIGHTS_NAME, data), (CARD_NAME, model_card(meta)),
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
            raise bad(f'entry {_short(name)} has no dtype and shape')
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
            for key, value in getattr(net, 'module', net).state_dict().items()}
    missing = [k for k in ours if k not in header]
    unexpected = [k for k in header if k not in ours]
    wrong = [k for k in ours if k in header and list(header[k][1]) != list(ours[k].shape)]
    kinds = [k for k in ours if k in header and k not in wrong and not _dtype_fits(header[k][0], ours[k])]
    problems = []
    if missing:
        problems.append(f"{_plural(len(missing), 'missing key')} (e.g. {missing[0]})")
    if unexpected:
        problems.append(f"{_plural(len(unexpected), 'unexpected key')} (e.g. {_cut(unexpected[0])})")
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
        getattr(net, 'module', net).load_state_dict(
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


# ---------------------------------------------------------------------------- the model card

_AFHQ = dict(name='AFHQ', license='cc-by-nc-4.0', link='https://github.com/clovaai/stargan-v2#animal-faces-hq-dataset-afhq',
             text='AFHQ (Animal Faces-HQ, Choi et al. 2020) is released under CC BY-NC 4.0; a model trained on it '
                  'is for non-commercial use.')
_CELEBA_HQ = dict(name='CelebA-HQ', license='other', license_name='celeba-non-commercial-research',
                  link='https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html',
                  text='CelebA-HQ (Karras et al. 2018) is derived from CelebA, whose agreement allows non-commercial '
                       'research and educational use only; the same terms apply to this model.')
_DEMO = dict(name="this project's generated shapes (core/datasets/demo_shapes.py)", license='unknown', link=None,
             text='Trained on shapes that core/datasets/demo_shapes.py draws (no third-party images): '
                  'unknown, fill in the licence you give this model.')
_UNKNOWN = dict(name='unknown', license='unknown', link=None,
                text='unknown, fill in: the licence of the data this model was trained on (and what it allows).')


def card_training_data(value: Any) -> dict[str, Any]:
    """``value`` as the card's training data: a dict of the keys ``training_data`` gives, each a
    string (``link`` may be None); anything else (a folder edited by hand, another writer)
    becomes 'unknown, fill in'."""
    if not isinstance(value, Mapping) or not all(isinstance(value.get(k), str) for k in ('name', 'license', 'text')):
        return dict(_UNKNOWN)
    out = {k: value[k] for k in ('name', 'license', 'license_name', 'link', 'text')
           if isinstance(value.get(k), str)}
    out.setdefault('link', None)
    if out['license'] == 'other' and not ('license_name' in out and out['link']):
        return dict(_UNKNOWN)  # the Hub needs a name and a link for an 'other' licence
    return out


def card_metrics(value: Any) -> dict[str, Any] | None:
    """``value`` as the card's metrics: the numbers of a dict ('FID_latent/cat2dog': 41.2, ...)
    and its ``from``; None when there are none."""
    if not isinstance(value, Mapping):
        return None
    out: dict[str, Any] = {k: v for k, v in value.items() if isinstance(k, str) and '/' in k
                           and isinstance(v, (int, float)) and not isinstance(v, bool)}
    if not out:
        return None
    if isinstance(value.get('from'), str):
        out['from'] = value['from']
    return out


def training_data(train_img_dir: str | None, demo_data: str | None = None) -> dict[str, Any]:
    """Name, Hub licence id and a sentence on the training data, guessed from the training
    folder's path: a path through ``afhq`` is AFHQ (CC BY-NC 4.0), through ``celeba`` CelebA-HQ
    (CelebA's non-commercial research agreement), under ``demo_data`` the demo's generated
    shapes; anything else (a user's own data, or no path) is 'unknown, fill in'."""
    if not train_img_dir or not isinstance(train_img_dir, str):  # none, or a hand-edited config.yaml's non-path
        return dict(_UNKNOWN)
    parts = _components(train_img_dir)
    demo = _components(demo_data) if demo_data and isinstance(demo_data, str) else []
    if demo and parts[:len(demo)] == demo:  # whole components: expr/demo/data_celeba is not under expr/demo/data
        return dict(_DEMO)
    parts = [p.lower() for p in parts]
    if any('afhq' in p for p in parts):
        return dict(_AFHQ)
    if any('celeba' in p for p in parts):
        return dict(_CELEBA_HQ)
    return dict(_UNKNOWN)


def _components(path: str) -> list[str]:
    """The components of ``path`` (either slash; '.' and '..' resolved as far as the text allows)."""
    return [p for p in re.split(r'[\\/]+', os.path.normpath(path.replace('\\', '/'))) if p and p != '.']


def _yaml_value(value: Any) -> str:
    return json.dumps(value) if not re.fullmatch(r'[A-Za-z0-9][A-Za-z0-9._-]*', str(value)) else str(value)


def _fmt(value: Any, digits: int = 4) -> str:
    return f'{value:.{digits}f}' if isinstance(value, float) and math.isfinite(value) else str(value)


def _metrics_table(metrics: Mapping[str, Any]) -> list[str]:
    """One row per task (and the mean), one column per metric and mode."""
    values = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and '/' in k}
    columns = sorted({k.split('/')[0] for k in values}, key=lambda c: (c.split('_')[-1], c))
    tasks = sorted({k.split('/', 1)[1] for k in values}, key=lambda t: (t == 'mean', t))
    lines = ['| task | ' + ' | '.join(columns) + ' |', '|---|' + '---|' * len(columns)]
    for task in tasks:
        lines.append(f'| {task} | ' + ' | '.join(_fmt(values.get(f'{c}/{task}', ''), 2 if c.startswith('FID') else 4)
                                                 for c in columns) + ' |')
    return lines


def model_card(meta: Mapping[str, Any]) -> str:
    """The ``README.md`` of a Hub folder from its ``config.json`` dict: Hub front matter, then
    what the model is, its domains, size, iterations, metrics, training data and licence."""
    data = card_training_data(meta.get('training_data'))
    names = meta.get('domain_names') or [str(i) for i in range(int(meta['num_domains']))]
    front = ['---', 'library_name: pytorch', f"license: {_yaml_value(data.get('license', 'unknown'))}"]
    if data.get('license') == 'other':
        front += [f"license_name: {_yaml_value(data['license_name'])}", f"license_link: {_yaml_value(data['link'])}"]
    front += ['pipeline_tag: image-to-image', 'tags:'] + [f'- {t}' for t in ('stargan-v2', 'gan', 'image-to-image',
                                                                             'safetensors')] + ['---', '']
    step = meta.get('step')
    size = meta['img_size']
    hpf = float(meta['w_hpf'])
    nets = ', '.join(meta.get('networks') or [])
    body = [f"# StarGAN v2: {', '.join(names)}", '',
            f'StarGAN v2 networks ({nets}; the exponential-moving-average copies that inference uses) in the '
            f"`{FORMAT}` folder format, version {meta.get('format_version')}: `{CONFIG_NAME}` holds the model "
            f'configuration, `{WEIGHTS_NAME}` the weights (the official state-dict keys, prefixed by the network; '
            f'loading them runs no pickle).', '',
            '| | |', '|---|---|',
            f"| domains | {', '.join(f'{i}: {n}' for i, n in enumerate(names))} |",
            f'| image size | {size} x {size} |',
            f"| iterations | {step if step is not None else 'unknown'} |",
            f"| style / latent dimension | {meta['style_dim']} / {meta['latent_dim']} |",
            f"| w_hpf | {hpf:g} ({'face masks from the FAN, whose weights are included' if hpf > 0 else 'no face masks'}) |",
            f"| source | {meta.get('source') or 'unknown'} |", '',
            '## Use', '', "With this project's code (a StarGAN v2 reimplementation), FOLDER being this folder:", '',
            '```bash',
            f'python main.py --mode translate --checkpoint_dir FOLDER --src photo.jpg --trg_domain {shlex.quote(names[-1])} '
            f'--out out.png',
            'python main.py --mode serve --checkpoint_dir FOLDER', '```', '',
            'In Python (a folder, or a Hub repository id: cached by huggingface_hub, works offline once cached):', '',
            '```python', 'from core.api import StarGANv2',
            "model = StarGANv2.from_pretrained('FOLDER_OR_REPO_ID')",
            f"images = model.translate('photo.jpg', domain={names[-1]!r}, num=4, seed=0)  # PIL images", '```', '',
            f'Images are {IMAGE.format(size)}.', '', '## Metrics', '']
    metrics = card_metrics(meta.get('metrics'))
    if metrics:
        body += [f"FID and LPIPS with the paper's protocol (`--mode eval`) at iteration {step}, "
                 f"from `{metrics.get('from', 'the evaluation folder')}`:", '', *_metrics_table(metrics), '']
    else:
        body += [f"No evaluation of iteration {step if step is not None else '?'} was found when this folder was "
                 f'written (run `--mode eval` on the run, then export again with `--eval_dir` set to its folder).', '']
    name, link = str(data.get('name') or 'unknown'), data.get('link')
    body += ['## Training data and licence', '', f'Training data: {f"[{name}]({link})" if link else name}.',
             '', str(data.get('text') or _UNKNOWN['text']), '',
             '## Reference', '', PAPER, '']
    return '\n'.join(front + body)


# ---------------------------------------------------------------------------- the Hugging Face Hub

def check_repo_id(repo_id: str, flag: str = '--push_to_hub') -> str:
    """``repo_id`` when it is a Hub model repository id ('owner/name' or 'name'), else UserError."""
    if not isinstance(repo_id, str) or not re.fullmatch(r'(?:[\w.-]+/)?[\w.-]+', repo_id) \
            or '--' in repo_id or '..' in repo_id or repo_id.endswith(('.', '-')) or len(repo_id) > 96:
        raise UserError(f"{flag} {repo_id!r} is not a Hub repository id; give 'owner/name' "
                        f"(letters, digits, '-', '_', '.')")
    return repo_id


def _hub_error(e: BaseException) -> str:
    """The kind of a huggingface_hub exception by its class names (stable across versions)."""
    names = {c.__name__ for c in type(e).__mro__}
    for kind in ('OfflineModeIsEnabled', 'LocalEntryNotFoundError', 'RepositoryNotFoundError', 'GatedRepoError',
                 'RevisionNotFoundError', 'LocalTokenNotFoundError'):
        if kind in names:
            return kind
    return type(e).__name__


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:200]


def resolve_pretrained(folder_or_repo_id: str | os.PathLike[str], revision: str | None = None,
                       cache_dir: str | os.PathLike[str] | None = None) -> str:
    """A local folder for ``folder_or_repo_id``: an existing folder is itself; else a Hub
    repository id ('owner/name') is fetched with ``huggingface_hub.snapshot_download`` (only
    config.json, model.safetensors and README.md), which keeps it in its cache and, offline
    (``HF_HUB_OFFLINE=1`` or no network), returns the cached copy. UserError (one line) when
    the folder does not exist, the package is missing, or the repository can be had neither
    from the Hub nor from the cache."""
    name = os.path.expanduser(os.fspath(folder_or_repo_id))  # '~/models/x' is a folder of the home directory
    if os.path.isdir(name):
        return name
    looks_like_path = (name.startswith(('.', '/', '~')) or name.count('/') > 1 or os.sep != '/' and os.sep in name
                       or os.path.exists(name))
    if looks_like_path:
        raise UserError(f"'{name}' is not a folder; give a folder written by --mode export --format hf, "
                        f"or a Hub repository id 'owner/name'")
    check_repo_id(name, 'repository id')
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise UserError(f"'{name}' is no local folder, and fetching it from the Hugging Face Hub needs huggingface_hub: "
                        f"pip install huggingface_hub") from None
    try:
        return str(snapshot_download(name, revision=revision, cache_dir=os.fspath(cache_dir) if cache_dir else None,
                                     allow_patterns=list(HUB_FILES)))
    except Exception as e:
        kind = _hub_error(e)
        if kind in ('LocalEntryNotFoundError', 'OfflineModeIsEnabled'):
            raise UserError(f"'{name}' is not in the Hugging Face cache and the Hub cannot be reached (offline: "
                            f"HF_HUB_OFFLINE=1 or no network): fetch it once online, or give a local folder") from None
        if kind in ('RepositoryNotFoundError', 'GatedRepoError'):
            raise UserError(f"no model repository '{name}' on the Hugging Face Hub that this login may read; check "
                            f"the id, or log in (hf auth login, or HF_TOKEN) for a private one") from None
        if kind == 'RevisionNotFoundError':
            raise UserError(f"'{name}' has no revision {revision!r} on the Hugging Face Hub; check it") from None
        raise UserError(f"cannot fetch '{name}' from the Hugging Face Hub: {kind}: {_first_line(e)}") from None


def push_folder(folder: str | os.PathLike[str], repo_id: str, commit_message: str | None = None,
                public: bool = False) -> str:
    """Uploads the Hub folder ``folder`` to the model repository ``repo_id`` with
    ``huggingface_hub``; returns the repository's URL. A missing repository is created
    private unless ``public``; an existing one keeps its visibility, and the message says
    which it is. The token is huggingface_hub's own (``hf auth login`` or ``HF_TOKEN``).
    UserError (one line) when the package is missing or the upload fails (no token,
    offline, no permission)."""
    check_repo_id(repo_id)
    read_hub_config(folder)  # a valid folder, never some other one
    try:
        from huggingface_hub import HfApi
    except ImportError:
        raise UserError('--push_to_hub needs huggingface_hub: pip install huggingface_hub') from None
    api = HfApi()
    try:
        url = api.create_repo(repo_id, repo_type='model', exist_ok=True, private=not public)
        api.upload_folder(repo_id=repo_id, folder_path=os.fspath(folder), repo_type='model',
                          allow_patterns=list(HUB_FILES), commit_message=commit_message or 'StarGAN v2 model folder')
    except Exception as e:
        kind = _hub_error(e)
        hint = ('no token: log in with `hf auth login` or set HF_TOKEN' if kind == 'LocalTokenNotFoundError' else
                'offline (HF_HUB_OFFLINE=1): unset it' if kind == 'OfflineModeIsEnabled' else
                'check the network, your token (hf auth login, or HF_TOKEN) and your rights on the repository')
        raise UserError(f"upload of '{folder}' to the Hub repository '{repo_id}' failed ({kind}: {_first_line(e)}); "
                        f'{hint}; the folder is complete, push it again later') from None
    try:  # what the repository is now (an existing one kept its own visibility)
        private = getattr(api.repo_info(repo_id, repo_type='model'), 'private', None)
    except Exception:
        private = None
    if private is None:
        visibility = 'visibility unknown: check it on the Hub'
    elif private:
        visibility = ('a PRIVATE repository: only you (and your organisation) can see it; make it public in its '
                      'settings on the Hub' + ('' if not public else ' (it existed already: its visibility was kept)'))
    else:
        visibility = ('a PUBLIC repository: anyone can see and download it' +
                      ('' if public else ' (it existed already: its visibility was kept; make it private in its '
                                         'settings on the Hub)'))
    print(f'uploaded {folder} to {url}, {visibility}')
    return str(url)
