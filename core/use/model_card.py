"""The model card (``README.md``) of a Hub folder and the licence of its training data.

    card = model_card(meta, CONFIG_NAME, WEIGHTS_NAME)  # meta: what the folder's config.json holds
    data = training_data('data/afhq/train')      # {'name': 'AFHQ', 'license': 'cc-by-nc-4.0', ...}

The card has the Hub's front matter (library, tags, licence), then the domains, image size,
iterations, the metrics, the training data and its licence. The folder format itself (its
files and their names, written by ``core.use.hub_folder.save_hub_folder``) is
``core.use.hub_folder``, which passes the names of its files to the card.
"""
from __future__ import annotations

import json
import math
import os
import re
import shlex
from collections.abc import Mapping
from typing import Any

__all__ = ['IMAGE', 'PAPER', 'model_card', 'training_data', 'card_training_data', 'card_metrics']

IMAGE = 'RGB, NCHW float32 in [-1, 1] (pixel / 127.5 - 1), resized to {0}x{0}'
PAPER = 'Choi, Uh, Yoo, Ha: StarGAN v2: Diverse Image Synthesis for Multiple Domains, CVPR 2020 (arXiv:1912.01865)'

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


def model_card(meta: Mapping[str, Any], config_name: str, weights_name: str) -> str:
    """The ``README.md`` of a Hub folder from its ``config.json`` dict (``meta``, named ``config_name``;
    the weights file ``weights_name``): Hub front matter, then what the model is, its domains, size,
    iterations, metrics, training data and licence."""
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
            f"`{meta.get('format')}` folder format, version {meta.get('format_version')}: `{config_name}` holds the model "
            f'configuration, `{weights_name}` the weights (the official state-dict keys, prefixed by the network; '
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
