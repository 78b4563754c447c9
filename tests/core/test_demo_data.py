"""The generated demo dataset, the analytic shape classifier (bench/) and bench/demo_quality.py."""
import hashlib
import json
import os

import numpy as np
import pytest
import torch
import torch.nn as nn
from munch import Munch
from PIL import Image

from bench.shape_classifier import classify_shape, segment, shape_colours
from core.demo_data import SHAPES, MANIFEST, POSITION_JITTER, SIZE_RANGE, make_shapes_dataset, random_params, render_shape
from core.errors import UserError
from helpers import ROOT


pytestmark = pytest.mark.usefixtures('one_thread')


def _tree_digest(root):
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in sorted(os.walk(root)):
        dirnames.sort()
        for f in sorted(filenames):
            p = os.path.join(dirpath, f)
            h.update(os.path.relpath(p, root).encode())
            with open(p, 'rb') as fh:
                h.update(fh.read())
    return h.hexdigest()


def _pngs(folder):
    return sorted(f for f in os.listdir(folder) if f.endswith('.png'))


# ---------------------------------------------------------------------------- dataset

def test_counts_layout_and_image_format(tmp_path):
    info = make_shapes_dataset(tmp_path / 'd', img_size=24, n_train=7, n_val=3, seed=1)
    assert info['generated'] is True
    for split, n in (('train', 7), ('val', 3)):
        assert sorted(os.listdir(tmp_path / 'd' / split)) == sorted(SHAPES)
        for d in SHAPES:
            names = _pngs(tmp_path / 'd' / split / d)
            assert names == [f'{i:05d}.png' for i in range(n)]
            img = Image.open(tmp_path / 'd' / split / d / names[0])
            assert img.mode == 'RGB' and img.size == (24, 24)
    assert json.loads((tmp_path / 'd' / MANIFEST).read_text())['n_train'] == 7
    assert not [f for f in os.listdir(tmp_path / 'd') if f.startswith('.')]  # no temp folder left


def test_subset_of_domains(tmp_path):
    make_shapes_dataset(tmp_path, img_size=16, n_train=2, n_val=1, domains=('square', 'circle'))
    assert sorted(os.listdir(tmp_path / 'train')) == ['circle', 'square']


def test_deterministic_per_seed_and_prefix_stable(tmp_path):
    a = make_shapes_dataset(tmp_path / 'a', img_size=16, n_train=4, n_val=2, seed=3)
    make_shapes_dataset(tmp_path / 'b', img_size=16, n_train=4, n_val=2, seed=3)
    make_shapes_dataset(tmp_path / 'c', img_size=16, n_train=4, n_val=2, seed=4)
    make_shapes_dataset(tmp_path / 'e', img_size=16, n_train=6, n_val=2, seed=3)
    assert _tree_digest(tmp_path / 'a') == _tree_digest(tmp_path / 'b')
    assert _tree_digest(tmp_path / 'a' / 'train') != _tree_digest(tmp_path / 'c' / 'train')
    # a larger set begins with the same images
    for i in range(4):
        same = (tmp_path / 'a' / 'train' / 'circle' / f'{i:05d}.png').read_bytes()
        assert same == (tmp_path / 'e' / 'train' / 'circle' / f'{i:05d}.png').read_bytes()
    assert a['train'] == os.path.join(str(tmp_path / 'a'), 'train')


def test_second_call_skips_complete_dataset(tmp_path):
    make_shapes_dataset(tmp_path, img_size=16, n_train=3, n_val=2)
    marker = tmp_path / 'train' / 'circle' / '00000.png'
    before = marker.stat().st_mtime_ns
    info = make_shapes_dataset(tmp_path, img_size=16, n_train=3, n_val=2)
    assert info['generated'] is False
    assert marker.stat().st_mtime_ns == before


def test_refuses_other_settings_and_foreign_folders(tmp_path):
    make_shapes_dataset(tmp_path / 'd', img_size=16, n_train=3, n_val=2)
    with pytest.raises(UserError, match='other settings.*n_train=3'):
        make_shapes_dataset(tmp_path / 'd', img_size=16, n_train=5, n_val=2)
    # someone's data, no manifest: never overwritten
    (tmp_path / 'mine' / 'train' / 'cats').mkdir(parents=True)
    with pytest.raises(UserError, match='no complete demo dataset'):
        make_shapes_dataset(tmp_path / 'mine', img_size=16, n_train=3, n_val=2)
    assert os.listdir(tmp_path / 'mine' / 'train') == ['cats']
    # an incomplete set (file deleted) is not silently accepted
    os.remove(tmp_path / 'd' / 'val' / 'square' / '00001.png')
    with pytest.raises(UserError, match='delete'):
        make_shapes_dataset(tmp_path / 'd', img_size=16, n_train=3, n_val=2)


@pytest.mark.parametrize('kwargs, pattern', [
    (dict(domains=('circle', 'hexagon')), 'demo domains'),
    (dict(domains=('circle', 'circle')), 'demo domains'),
    (dict(img_size=4), 'at least 8 pixels'),
    (dict(n_val=0), 'at least one image'),
])
def test_bad_arguments_are_user_errors(tmp_path, kwargs, pattern):
    with pytest.raises(UserError, match=pattern):
        make_shapes_dataset(tmp_path, **{'n_train': 2, 'n_val': 1, **kwargs})


def test_random_params_respect_the_spec():
    rng = np.random.default_rng(0)
    for _ in range(300):
        fg, bg, (cx, cy), size = random_params(rng, 32)
        assert SIZE_RANGE[0] * 32 <= size <= SIZE_RANGE[1] * 32
        assert np.linalg.norm(np.subtract(fg, bg)) >= 130
        for c in (cx, cy):
            assert size / 2 <= c <= 32 - size / 2  # fully inside
            assert abs(c - 16) <= POSITION_JITTER * (32 - size) / 2  # near the middle


def test_render_shape_geometry():
    img = render_shape('square', (255, 0, 0), (0, 0, 255), center=(16, 16), size=16, img_size=32)
    assert img.shape == (32, 32, 3) and img.dtype == np.uint8
    assert (img[8:24, 8:24] == [255, 0, 0]).all()       # exactly the 16x16 box
    assert (img[:8] == [0, 0, 255]).all() and (img[24:] == [0, 0, 255]).all()
    tri = render_shape('triangle', (255, 255, 255), (0, 0, 0), center=(16, 16), size=16, img_size=32)
    cover = tri[..., 0] / 255.0
    assert abs(cover.sum() - 16 * 16 / 2) < 2            # area of base 16, height 16
    assert cover[8:16].sum() < cover[16:24].sum() / 2    # apex up
    circ = render_shape('circle', (255, 255, 255), (0, 0, 0), center=(16, 16), size=16, img_size=32)
    assert abs(circ[..., 0].sum() / 255.0 - np.pi * 64) < 2
    with pytest.raises(UserError, match='unknown shape'):
        render_shape('star', (0, 0, 0), (255, 255, 255), (16, 16), 10, 32)


# ---------------------------------------------------------------------------- classifier

@pytest.mark.parametrize('img_size', [32, 64])
def test_classifier_recovers_generated_shapes(tmp_path, img_size):
    make_shapes_dataset(tmp_path, img_size=img_size, n_train=40, n_val=1, seed=5)
    hits = total = 0
    for d in SHAPES:
        folder = tmp_path / 'train' / d
        for f in _pngs(folder):
            hits += classify_shape(np.asarray(Image.open(folder / f))) == d
            total += 1
    assert hits / total > 0.95


def test_classifier_restricted_candidates_and_blank_image():
    img = render_shape('circle', (250, 250, 0), (0, 0, 90), (16, 16), 20, 32)
    assert classify_shape(img) == 'circle'
    assert classify_shape(img, candidates=('square', 'triangle')) == 'square'  # nearest of the two
    assert classify_shape(np.full((32, 32, 3), 77, np.uint8)) is None


def test_segment_and_colours_survive_noise():
    rng = np.random.default_rng(0)
    img = render_shape('triangle', (240, 30, 30), (20, 90, 200), (15, 17), 18, 32).astype(float)
    noisy = np.clip(img + rng.normal(0, 12, img.shape), 0, 255).astype(np.uint8)
    mask, bg = segment(noisy)
    assert abs(mask.sum() - 18 * 18 / 2) < 25
    assert np.abs(bg - [20, 90, 200]).max() < 10
    fg, bg = shape_colours(noisy)
    assert np.abs(fg - [240, 30, 30]).max() < 15
    assert classify_shape(noisy) == 'triangle'


# ---------------------------------------------------------------------------- bench

class _Oracle(nn.Module):
    """Stub networks that translate perfectly: the style holds (domain, fg, bg) and the
    generator redraws the source's shape box as the target shape with the style's colours."""

    def __init__(self, domains):
        super().__init__()
        self.domains = domains
        self.dummy = nn.Parameter(torch.zeros(1))

    @staticmethod
    def _u8(x):
        return ((x.permute(0, 2, 3, 1) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()

    def encode(self, x, y):  # style encoder
        rows = []
        for img, d in zip(self._u8(x), y.tolist()):
            fg, bg = shape_colours(img)
            rows.append([float(d)] + list(fg / 255) + list(bg / 255))
        return torch.tensor(rows)

    def map(self, z, y):  # mapping network: colours from z
        fg = torch.sigmoid(z[:, :3])
        return torch.cat([y.float()[:, None], fg, (fg + 0.5) % 1.0], dim=1)

    def generate(self, x, s, masks=None):
        out = []
        for img, st in zip(self._u8(x), s):
            mask, _ = segment(img)
            rows, cols = np.nonzero(mask)
            size = max(rows.max() - rows.min(), cols.max() - cols.min()) + 1
            center = ((cols.min() + cols.max() + 1) / 2, (rows.min() + rows.max() + 1) / 2)
            fg, bg = (st[1:4] * 255).tolist(), (st[4:7] * 255).tolist()
            out.append(render_shape(self.domains[int(st[0])], fg, bg, center, size, img.shape[0]))
        return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).float() / 127.5 - 1


class _Call(nn.Module):
    def __init__(self, fn, owner):
        super().__init__()
        self.fn, self.owner = fn, owner

    def forward(self, *a, **k):
        return self.fn(*a, **k)


def _stub_nets(identity=False):
    o = _Oracle(list(SHAPES))
    gen = _Call((lambda x, s, masks=None: x.clone()) if identity else o.generate, o)
    return Munch(generator=gen, mapping_network=_Call(o.map, o), style_encoder=_Call(o.encode, o))


def _val_images(tmp_path, n):
    from bench.demo_quality import load_val_images
    make_shapes_dataset(tmp_path, img_size=32, n_train=1, n_val=n, seed=2)
    return load_val_images(str(tmp_path / 'val'), 32, n)


def test_bench_scores_a_perfect_translator_high(tmp_path):
    from bench.demo_quality import evaluate
    res = evaluate(_stub_nets(), _val_images(tmp_path, 8), latent_dim=4, seed=0, batch_size=5)
    assert res['classifier_acc_real'] == 1.0
    assert res['latent_shape_acc'] >= 0.95 and res['ref_shape_acc'] >= 0.95
    assert res['ref_colour_follow'] >= 0.95
    assert res['ref_colour_dist_to_ref'] < 30 < res['ref_colour_dist_to_src']
    assert sorted(res['tasks']) == sorted(f'{a}2{b}' for a in SHAPES for b in SHAPES if a != b)
    assert all(t['n'] == 8 for t in res['tasks'].values())
    # the oracle's mapping draws colours from z as freely as the data: as varied as real images
    assert res['latent_diversity_ratio'] > 0.7 and res['real_diversity'] > 200


def test_bench_scores_identity_as_failure(tmp_path):
    from bench.demo_quality import evaluate
    res = evaluate(_stub_nets(identity=True), _val_images(tmp_path, 6), latent_dim=4)
    assert res['latent_shape_acc'] == 0.0 and res['ref_shape_acc'] == 0.0  # the source's shape stays
    assert res['ref_colour_follow'] <= 0.05
    assert res['latent_diversity'] == 0.0 and res['latent_diversity_ratio'] == 0.0  # K identical outputs


def test_bench_diversity_sees_one_colour_per_domain_as_none(tmp_path):
    """A mapping network that ignores z (one style per domain) has no latent diversity,
    even when it translates shapes perfectly; a z that moves only the foreground counts."""
    from bench.demo_quality import colour_spread, evaluate
    nets = _stub_nets()
    oracle = nets.mapping_network.owner
    nets.mapping_network = _Call(lambda z, y: oracle.map(torch.zeros_like(z), y), oracle)
    res = evaluate(nets, _val_images(tmp_path, 6), latent_dim=4, div_sources=2, div_codes=4)
    assert res['latent_shape_acc'] >= 0.95 and res['latent_diversity'] < 5
    a, b = (np.zeros(3), np.zeros(3)), (np.full(3, 10.0), np.zeros(3))
    assert colour_spread([a, b, a]) == pytest.approx(2 * np.linalg.norm(np.full(3, 10.0)) / 3)
    with pytest.raises(UserError, match='div_codes'):
        evaluate(nets, _val_images(tmp_path / 'b', 2), latent_dim=4, div_codes=1)


def test_bench_cli_on_a_checkpoint(tmp_path, capsys):
    from bench.demo_quality import main
    from core.ckpt import save_checkpoint
    from core.config import parse_args
    from core.model import build_model
    make_shapes_dataset(tmp_path / 'data', img_size=32, n_train=1, n_val=3)
    flags = ['--config', os.path.join(ROOT, 'configs', 'demo.yaml'), '--val_img_dir', str(tmp_path / 'data' / 'val'),
             '--checkpoint_dir', str(tmp_path / 'ckpt'), '--device', 'cpu']
    torch.manual_seed(0)
    nets, nets_ema = build_model(parse_args(flags + ['--mode', 'eval']))
    save_checkpoint(str(tmp_path / 'ckpt'), 7, nets, nets_ema)
    out = tmp_path / 'q' / 'quality.json'
    res = main(flags + ['--resume_iter', '0', '--num_images', '3', '--out', str(out)])
    saved = json.loads(out.read_text())
    assert saved['step'] == 7 and saved['checkpoint'].endswith('000007_nets_ema.ckpt')
    assert saved['classifier_acc_real'] == 1.0
    for key in ('latent_shape_acc', 'ref_shape_acc', 'ref_colour_follow'):
        assert 0.0 <= saved[key] <= 1.0 and saved[key] == res[key]
    assert saved['latent_diversity_ratio'] == pytest.approx(saved['latent_diversity'] / saved['real_diversity'])
    text = capsys.readouterr().out
    assert 'circle2square' in text and 'mean' in text and 'latent spread' in text


def test_bench_curve_scores_every_checkpoint_with_its_training_time(tmp_path, capsys):
    from bench.demo_quality import main
    from core.ckpt import save_checkpoint
    from core.config import parse_args
    from core.model import build_model
    make_shapes_dataset(tmp_path / 'data', img_size=32, n_train=1, n_val=3)
    ckpt = tmp_path / 'ckpt'
    flags = ['--config', os.path.join(ROOT, 'configs', 'demo.yaml'), '--val_img_dir', str(tmp_path / 'data' / 'val'),
             '--checkpoint_dir', str(ckpt), '--device', 'cpu', '--num_images', '3']
    for step, seed in ((20, 1), (10, 2)):
        torch.manual_seed(seed)
        nets, nets_ema = build_model(parse_args(flags[:-2] + ['--mode', 'eval']))
        save_checkpoint(str(ckpt), step, nets, nets_ema)
    (ckpt / 'log.jsonl').write_text('{"step": 10, "time": 4.5}\nnot json\n{"step": 15, "time": 7.0}\n')
    curve = main(flags + ['--all_checkpoints', '--out', str(tmp_path / 'curve.json')])
    assert [r['step'] for r in curve] == [10, 20]
    assert [r['train_seconds'] for r in curve] == [4.5, None]
    single = main(flags + ['--resume_iter', '20'])  # the same score as scoring that checkpoint alone
    timing = {'seconds', 'train_seconds'}
    assert {k: v for k, v in curve[1].items() if k not in timing} == \
        {k: v for k, v in single.items() if k not in timing}
    assert curve[0]['tasks'] != curve[1]['tasks']  # each checkpoint's own networks were loaded
    assert json.loads((tmp_path / 'curve.json').read_text())[0]['step'] == 10
    text = capsys.readouterr().out
    assert 'accuracy against training time' in text
    assert any(line.split()[:2] == ['10', '4'] for line in text.splitlines())  # step, seconds (rounded)


def test_bench_cli_without_checkpoint_is_user_error(tmp_path):
    from bench.demo_quality import main
    with pytest.raises(UserError, match='no \\*_nets_ema.ckpt'):
        main(['--config', os.path.join(ROOT, 'configs', 'demo.yaml'), '--checkpoint_dir', str(tmp_path)])


# ---------------------------------------------------------------------------- README picture

def test_picture_grids_show_the_translations(tmp_path):
    from bench.demo_picture import latent_grid, reference_grid
    images = _val_images(tmp_path, 2)
    ref = reference_grid(_stub_nets(), images, per_domain=2)
    assert ref.shape == (7 * 32, 7 * 32, 3)  # a header row and column around 6 x 6 outputs
    assert (ref[:32, :32] == 255).all()  # blank corner
    first_ref, first_src = images['circle'][0], images['circle'][0]
    assert np.array_equal(ref[:32, 32:64], first_ref) and np.array_equal(ref[32:64, :32], first_src)
    cell = ref[32 * 6:32 * 7, 32 * 1:32 * 2]  # the last source (triangle) in a circle's style
    assert classify_shape(cell) == 'circle'
    lat = latent_grid(_stub_nets(), images, latent_dim=4, num_codes=3)
    assert lat.shape == (9 * 32, 4 * 32, 3)  # 3 sources x 3 target domains, source + 3 codes
    for row, trg in enumerate(SHAPES * 3):
        assert classify_shape(lat[row * 32:(row + 1) * 32, 32:64]) == trg
    assert not np.array_equal(lat[:32, 32:64], lat[:32, 64:96])  # two codes, two colourings


def test_picture_cli_writes_a_captioned_png(tmp_path):
    from PIL import Image

    from bench.demo_picture import main
    from core.ckpt import save_checkpoint
    from core.config import parse_args
    from core.config_file import save_config
    from core.model import build_model
    make_shapes_dataset(tmp_path / 'data', img_size=32, n_train=1, n_val=2)
    ckpt = tmp_path / 'ckpt'
    flags = ['--config', os.path.join(ROOT, 'configs', 'demo.yaml'), '--val_img_dir', str(tmp_path / 'data' / 'val'),
             '--checkpoint_dir', str(ckpt), '--device', 'cpu']
    args = parse_args(flags + ['--mode', 'train', '--seed', '5'])
    save_config(args, str(ckpt))
    nets, nets_ema = build_model(args)
    save_checkpoint(str(ckpt), 12, nets, nets_ema)
    (ckpt / 'log.jsonl').write_text('{"step": 12, "time": 65.0}\n')
    quality = {'step': 12, 'latent_shape_acc': 0.5, 'ref_shape_acc': 0.25, 'ref_colour_follow': 1.0,
               'latent_diversity_ratio': 0.3}
    (tmp_path / 'q.json').write_text(json.dumps([quality]))
    out = tmp_path / 'pic' / 'demo.png'
    main(flags + ['--quality', str(tmp_path / 'q.json'), '--out', str(out), '--scale', '2'])
    img = Image.open(out)
    assert img.size[0] == (7 * 32 + 4 + 7 * 32) * 2 and img.size[1] > 9 * 32 * 2  # both grids, then the caption
    from bench.demo_picture import caption
    assert caption(12, 5, 65.0, quality)[0] == 'demo run: seed 5, 12 iterations, 1m05s of training (0.18 it/s)'
    (tmp_path / 'q.json').write_text(json.dumps({**quality, 'step': 11}))
    with pytest.raises(UserError, match='another checkpoint'):
        main(flags + ['--quality', str(tmp_path / 'q.json'), '--out', str(out)])
