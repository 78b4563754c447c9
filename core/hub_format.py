"""Model folders in the Hugging Face Hub's format: ``config.json`` + ``model.safetensors`` + a
model card (``README.md``), written by ``--mode export --format hf`` and loaded by every mode
that loads a run (``--checkpoint_dir FOLDER``) and by the Python API.

    save_hub_folder(nets, cfg, 'expr/hub/afhq', step=100000)          # the three files
    nets, cfg, meta = load_hub_folder(resolve_pretrained('user/stargan-v2-afhq'))

- ``config.json``: the :class:`~core.networks.ModelConfig` fields at the top level (domain
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
from collections.abc import Callable, Mapping
from typing import IO, Any

import torch
from munch import Munch
from torch import nn

from core.device import DeviceLike, as_device
from core.errors import UserError
from core.fileio import atomic_write
from core.networks import INFERENCE, MODEL_KEYS, ModelConfig, build_networks

__all__ = ['FORMAT', 'FORMAT_VERSION', 'CONFIG_NAME', 'WEIGHTS_NAME', 'CARD_NAME', 'is_hub_folder', 'read_hub_config',
           'config_from_hub', 'model_values', 'hub_step', 'save_hub_folder', 'load_hub_weights', 'load_hub_folder',
           'model_card', 'training_data', 'resolve_pretrained', 'push_folder', 'check_repo_id']

FORMAT = 'stargan-v2'
FORMAT_VERSION = 1
CONFIG_NAME, WEIGHTS_NAME, CARD_NAME = 'config.json', 'model.safetensors', 'README.md'
HUB_FILES = (CONFIG_NAME, WEIGHTS_NAME, CARD_NAME)  # what resolve_pretrained fetches of a repository

IMAGE = 'RGB, NCHW float32 in [-1, 1] (pixel / 127.5 - 1), resized to {0}x{0}'
PAPER = 'Choi, Uh, Yoo, Ha: StarGAN v2: Diverse Image Synthesis for Multiple Domains, CVPR 2020 (arXiv:1912.01865)'


# ---------------------------------------------------------------------------- reading a folder

def is_hub_folder(path: str | os.PathLike[str] | None) -> bool:
    """True when ``path`` is a folder holding a ``config.json`` or a ``model.safetensors`` (a
    training run holds ``config.yaml`` and ``*.ckpt`` files instead); whether it is a valid one
    is for the loader to say."""
    if not path or not os.path.isdir(path):
        return False
    return any(os.path.isfile(os.path.join(path, name)) for name in (CONFIG_NAME, WEIGHTS_NAME))


def read_hub_config(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """``config.json`` of a Hub folder, checked: its format, its version, its model keys."""
    path = os.path.join(folder, CONFIG_NAME)
    if not os.path.isfile(path):
        raise UserError(f"'{folder}' has no {CONFIG_NAME}: it is not a StarGAN v2 Hub folder "
                        f"(write one with --mode export --format hf)")
    try:
        with open(path, encoding='utf-8') as f:
            data = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f'cannot read {path}: {str(e).splitlines()[0][:200]}; export the folder again') from None
    if not isinstance(data, dict) or data.get('format') != FORMAT:
        found = data.get('format') if isinstance(data, dict) else None
        raise UserError(f"{path} is not the config of a StarGAN v2 Hub folder (format {found!r}, "
                        f"expected '{FORMAT}'); point at a folder written by --mode export --format hf")
    version = data.get('format_version')
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise UserError(f'{path} has format_version {version!r}; this code reads up to {FORMAT_VERSION}: '
                        f'update the code or export the folder again')
    config_from_hub(data, path)  # checks the model keys
    return data


def config_from_hub(data: Mapping[str, Any], where: str = CONFIG_NAME) -> ModelConfig:
    """The ModelConfig of a ``config.json`` dict (UserError naming a missing or wrong key)."""
    default = ModelConfig()
    ints = ('img_size', 'style_dim', 'latent_dim', 'num_domains', 'max_conv_dim')
    values: dict[str, Any] = {}
    for key in MODEL_KEYS:
        if key not in data:
            if key in ('dim_in', 'domain_names', 'to_rgb_norm'):
                values[key] = getattr(default, key)
                continue
            raise UserError(f"{where} lacks '{key}'; export the folder again")
        value = data[key]
        ok = True
        if key in ints:
            ok = isinstance(value, int) and not isinstance(value, bool) and value >= 1
        elif key == 'dim_in':
            ok = value is None or (isinstance(value, int) and not isinstance(value, bool) and value >= 1)
        elif key == 'w_hpf':
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0
            value = float(value) if ok else value
        elif key == 'to_rgb_norm':
            ok = isinstance(value, (bool, int))
            value = bool(value)
        elif key == 'domain_names':
            ok = value is None or (isinstance(value, list) and all(isinstance(n, str) and n for n in value))
            value = tuple(value) if ok and value else None
        if not ok:
            raise UserError(f"{where}: '{key}' is {data[key]!r}, not a valid value; export the folder again")
        values[key] = value
    cfg = ModelConfig(**values)
    if cfg.domain_names is not None and len(cfg.domain_names) != cfg.num_domains:
        raise UserError(f'{where}: {len(cfg.domain_names)} domain_names for num_domains {cfg.num_domains}; '
                        f'export the folder again')
    return cfg


def model_values(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """The model keys of a Hub folder as flag values (what a run's ``config.yaml`` gives
    ``core.config.run_values``): domain names a comma list, ``to_rgb_norm`` 0 or 1."""
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
    meta.update(step=step, networks=names, weights='ema', image=IMAGE.format(cfg.img_size),
                source=extra.pop('source', None), training_data=extra.pop('training_data', None) or training_data(None))
    metrics = extra.pop('metrics', None)
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

def _shape(t: torch.Tensor) -> str:
    return 'x'.join(map(str, t.shape)) or 'scalar'


def load_hub_weights(folder: str | os.PathLike[str], nets: Mapping[str, nn.Module]) -> None:
    """Loads ``model.safetensors`` of ``folder`` into ``nets`` (name -> module, as
    ``build_networks`` gives them): every key of every network must be in the file with its
    shape, and the file may hold nothing else; else one UserError naming what differs."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    path = os.path.join(folder, WEIGHTS_NAME)
    if not os.path.isfile(path):
        raise UserError(f"'{folder}' has no {WEIGHTS_NAME}; export the folder again (--mode export --format hf)")
    try:
        state = load_file(path, device='cpu')
    except (SafetensorError, OSError) as e:
        raise UserError(f'cannot read {path}: {str(e).splitlines()[0][:200]}; download or export it again') from None
    ours = {f'{name}.{key}': value for name, net in nets.items()
            for key, value in getattr(net, 'module', net).state_dict().items()}
    missing = [k for k in ours if k not in state]
    unexpected = [k for k in state if k not in ours]
    wrong = [k for k in ours if k in state and state[k].shape != ours[k].shape]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing key{'s' if len(missing) > 1 else ''} (e.g. {missing[0]})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected key{'s' if len(unexpected) > 1 else ''} (e.g. {unexpected[0]})")
    if wrong:
        problems.append(f'{len(wrong)} of another shape (e.g. {wrong[0]}: {_shape(state[wrong[0]])} in the file, '
                        f'{_shape(ours[wrong[0]])} here)')
    if problems:
        raise UserError(f"{path} does not fit the networks asked for: {'; '.join(problems)}: drop the model flags that "
                        f"contradict {os.path.join(folder, CONFIG_NAME)}, or export the folder again")
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
_DEMO = dict(name="this project's generated shapes (core/demo_data.py)", license='unknown', link=None,
             text='Trained on shapes that core/demo_data.py draws (no third-party images): '
                  'unknown, fill in the licence you give this model.')
_UNKNOWN = dict(name='unknown', license='unknown', link=None,
                text='unknown, fill in: the licence of the data this model was trained on (and what it allows).')


def training_data(train_img_dir: str | None, demo_data: str | None = None) -> dict[str, Any]:
    """Name, Hub licence id and a sentence on the training data, guessed from the training
    folder's path: a path through ``afhq`` is AFHQ (CC BY-NC 4.0), through ``celeba`` CelebA-HQ
    (CelebA's non-commercial research agreement), under ``demo_data`` the demo's generated
    shapes; anything else (a user's own data, or no path) is 'unknown, fill in'."""
    if not train_img_dir:
        return dict(_UNKNOWN)
    parts = [p.lower() for p in re.split(r'[\\/]+', os.path.normpath(train_img_dir)) if p]
    if demo_data and os.path.normpath(train_img_dir).startswith(os.path.normpath(demo_data)):
        return dict(_DEMO)
    if any('afhq' in p for p in parts):
        return dict(_AFHQ)
    if any('celeba' in p for p in parts):
        return dict(_CELEBA_HQ)
    return dict(_UNKNOWN)


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
    data = meta.get('training_data') or _UNKNOWN
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
            f'python main.py --mode translate --checkpoint_dir FOLDER --src photo.jpg --trg_domain {names[-1]} --out out.png',
            'python main.py --mode serve --checkpoint_dir FOLDER', '```', '',
            'In Python (a folder, or a Hub repository id: cached by huggingface_hub, works offline once cached):', '',
            '```python', 'from core.api import StarGANv2',
            "model = StarGANv2.from_pretrained('FOLDER_OR_REPO_ID')",
            f"images = model.translate('photo.jpg', domain='{names[-1]}', num=4, seed=0)  # PIL images", '```', '',
            f'Images are {IMAGE.format(size)}.', '', '## Metrics', '']
    metrics = meta.get('metrics')
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
    name = os.fspath(folder_or_repo_id)
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


def push_folder(folder: str | os.PathLike[str], repo_id: str, commit_message: str | None = None) -> str:
    """Uploads the Hub folder ``folder`` to the model repository ``repo_id`` (created when
    missing) with ``huggingface_hub``; returns the repository's URL. The token is
    huggingface_hub's own (``hf auth login`` or ``HF_TOKEN``). UserError (one line) when
    the package is missing or the upload fails (no token, offline, no permission)."""
    check_repo_id(repo_id)
    read_hub_config(folder)  # a valid folder, never some other one
    try:
        from huggingface_hub import HfApi
    except ImportError:
        raise UserError('--push_to_hub needs huggingface_hub: pip install huggingface_hub') from None
    api = HfApi()
    try:
        url = api.create_repo(repo_id, repo_type='model', exist_ok=True)
        api.upload_folder(repo_id=repo_id, folder_path=os.fspath(folder), repo_type='model',
                          allow_patterns=list(HUB_FILES), commit_message=commit_message or 'StarGAN v2 model folder')
    except Exception as e:
        kind = _hub_error(e)
        hint = ('no token: log in with `hf auth login` or set HF_TOKEN' if kind == 'LocalTokenNotFoundError' else
                'offline (HF_HUB_OFFLINE=1): unset it' if kind == 'OfflineModeIsEnabled' else
                'check the network, your token (hf auth login, or HF_TOKEN) and your rights on the repository')
        raise UserError(f"upload of '{folder}' to the Hub repository '{repo_id}' failed ({kind}: {_first_line(e)}); "
                        f'{hint}; the folder is complete, push it again later') from None
    print(f'uploaded {folder} to {url}')
    return str(url)
