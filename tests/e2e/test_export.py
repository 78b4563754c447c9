"""`python main.py --mode export --format onnx`: the exported graphs, run in onnxruntime, give
what the PyTorch networks give (max abs error <= 1e-4) on random and real inputs, at other
batch sizes than the one traced; the onnxruntime example of docs/web_demo_and_export.md runs."""
import glob
import json
import os
import re
import subprocess
import sys

import numpy as np
import onnxruntime as ort  # requirements.txt: a missing install fails here, never skips
import onnxscript  # noqa: F401 (the exporter needs it)
import pytest
import torch
import torch.nn.functional as F
from helpers import ROOT
from PIL import Image
from tiny_run import STEP, make_checkpoint, make_image

import main as cli
from core.api import StarGANv2, as_batch
from core.nn.fan import PART_OPS
from core.nn.networks import ModelConfig

pytestmark = pytest.mark.slow

TOL = 1e-4
PHOTOS = os.path.join(ROOT, '..', 'shared', 'assets', 'representative')
CASES = [  # (num_domains, w_hpf, img_size, with the run's config.yaml)
    pytest.param(2, 0, 32, True, id='2dom-hpf0'),
    pytest.param(3, 0, 32, False, id='3dom-hpf0-official'),
    pytest.param(2, 1, 64, False, id='2dom-hpf1-official'),  # the FAN always sees 256 px
    pytest.param(3, 1, 64, True, id='3dom-hpf1'),
]


def real_images(img_size, n=2):
    """``n`` representative photos (faces first) as a batch, or None when they are absent."""
    paths = sorted(glob.glob(os.path.join(PHOTOS, 'celeba_hq', 'src', '*', '*.jpg')))[:n]
    paths += sorted(glob.glob(os.path.join(PHOTOS, 'afhq', 'src', '*', '*.jpg')))[:n - len(paths)]
    if len(paths) < n:
        return None
    return as_batch(paths, img_size, 'cpu')


def translated(nets, w_hpf, x, s):
    """Translate mode's path: the source (1, 3, S, S) with each style of ``s`` through the API."""
    cfg = ModelConfig(img_size=x.size(-1), style_dim=s.size(1), latent_dim=8, w_hpf=w_hpf)
    return StarGANv2(nets, cfg).generate(x, s)


@pytest.fixture(scope='module')
def exported(tmp_path_factory):
    """``exported(case)`` -> ``(nets, folder)``; each case is exported once per module (the
    FAN's export takes a minute on a loaded CPU)."""
    done = {}

    def get(num_domains, w_hpf, img_size, with_config):
        key = (num_domains, w_hpf, img_size, with_config)
        if key not in done:
            done[key] = export(tmp_path_factory.mktemp('export'), *key)
        return done[key]
    return get


def export(tmp_path, num_domains, w_hpf, img_size, with_config):
    names = ['a', 'b', 'c'][:num_domains]
    flags, nets = make_checkpoint(tmp_path / 'ckpt', with_config=with_config, img_size=img_size,
                                  num_domains=num_domains, w_hpf=w_hpf, names=names if with_config else None)
    argv = ['--mode', 'export', '--format', 'onnx', '--checkpoint_dir', str(tmp_path / 'ckpt'),
            '--result_dir', str(tmp_path / 'onnx'), '--device', 'cpu']
    if not with_config:  # official format: the model from the flags, names from --domain_names
        argv += [*flags, '--domain_names', ','.join(names), '--resume_iter', str(STEP)]
    assert cli.main(argv) == 0
    return nets, tmp_path / 'onnx'


def err(a, b):
    return float(np.abs(np.asarray(a) - b.detach().numpy()).max())


@pytest.mark.parametrize('num_domains,w_hpf,img_size,with_config', CASES)
def test_onnx_matches_pytorch(exported, num_domains, w_hpf, img_size, with_config, one_thread):
    nets, out = exported(num_domains, w_hpf, img_size, with_config)
    meta = json.loads((out / 'onnx_export.json').read_text())
    assert meta['domain_names'] == ['a', 'b', 'c'][:num_domains] and meta['step'] == STEP
    assert (meta['img_size'], meta['w_hpf'], meta['num_domains']) == (img_size, w_hpf, num_domains)
    expected = {'generator', 'mapping_network', 'style_encoder'} | ({'fan_masks'} if w_hpf else set())
    assert set(meta['graphs']) == expected
    assert sorted(os.listdir(out)) == sorted([f'{g}.onnx' for g in expected] + ['onnx_export.json'])
    sess = {g: ort.InferenceSession(str(out / meta['graphs'][g]['file'])) for g in expected}
    for g in expected:  # the JSON names the graphs' real inputs and outputs
        assert [i.name for i in sess[g].get_inputs()] == list(meta['graphs'][g]['inputs'])
        assert [o.name for o in sess[g].get_outputs()] == list(meta['graphs'][g]['outputs'])

    gen = torch.Generator().manual_seed(num_domains * 10 + w_hpf)
    batches = {'random': torch.rand(3, 3, img_size, img_size, generator=gen) * 2 - 1}
    photos = real_images(img_size)
    if photos is None:
        print(f'no photos under {PHOTOS}: compared on random inputs only')
    else:
        batches['real'] = photos
    errors, flipped, unstable = {}, {}, {}
    with torch.no_grad():
        for kind, x in batches.items():
            n = x.size(0)
            y = torch.arange(n) % num_domains
            z = torch.randn(n, 8, generator=gen)
            feeds = {'x': x.numpy()}
            s_map = nets.mapping_network(z, y)
            errors[f'mapping_network/{kind}'] = err(sess['mapping_network'].run(None, {'z': z.numpy(), 'y': y.numpy()})[0], s_map)
            s_enc = nets.style_encoder(x, y)
            errors[f'style_encoder/{kind}'] = err(sess['style_encoder'].run(None, {'x': x.numpy(), 'y': y.numpy()})[0], s_enc)
            masks, ort_masks = None, None
            if w_hpf:
                masks = nets.fan.get_heatmap(x)
                assert 0.05 < masks[0].mean() < 0.95 and masks[0].std() > 0.1  # not a constant image
                ort_masks = sess['fan_masks'].run(None, feeds)
                stable = threshold_stable(nets.fan, x)
                assert stable.mean() > 0.99  # the exemption is of a few pixels
                errors[f'fan_masks/{kind}'] = max(err(a[stable], b[torch.from_numpy(stable)]) for a, b in zip(ort_masks, masks))
                flipped[kind] = sum(int((np.abs(a - b.numpy()) > TOL).sum()) for a, b in zip(ort_masks, masks))
                unstable[kind] = int((~stable).sum())
                feeds.update(masks0=masks[0].numpy(), masks1=masks[1].numpy())
            x_fake = nets.generator(x, s_map, masks=masks)
            errors[f'generator/{kind}'] = err(sess['generator'].run(None, {**feeds, 's': s_map.numpy()})[0], x_fake)
            if w_hpf and all(np.abs(a[:1] - b[:1].numpy()).max() <= TOL for a, b in zip(ort_masks, masks)):
                # all in onnxruntime (FAN masks -> generator) against translate mode's path, when no
                # mask pixel of the first image fell on the other side of the threshold
                m0, m1 = sess['fan_masks'].run(None, {'x': x[:1].numpy()})
                got = sess['generator'].run(None, {'x': x[:1].numpy(), 's': s_map[:1].numpy(), 'masks0': m0,
                                                   'masks1': m1})[0]
                errors[f'fan_masks+generator/{kind}'] = err(got, translated(nets, w_hpf, x[:1], s_map[:1]))
    if w_hpf:
        print(f'mask pixels fed by heat-map values at the 0.1 threshold: {unstable}; '
              f'mask values (of both masks) differing by > {TOL}: {flipped}')
    print(f'max abs error, {num_domains} domains, w_hpf {w_hpf}, {img_size} px: '
          + ', '.join(f'{k} {v:.2e}' for k, v in errors.items()))
    worst = max(errors, key=errors.get)
    assert errors[worst] <= TOL, f'{worst}: max abs error {errors[worst]:.2e} > {TOL}'
    assert x_fake.abs().max() > 0.01  # the comparison was not of two zero images


def threshold_stable(fan, x, eps=1e-5):
    """(N, 1, 256, 256) bool numpy: mask pixels that no FAN heat-map value within ``eps`` of
    the mask step's 0.1 threshold feeds.

    The mask step zeroes up-sampled heat-map values below 0.1 (core.nn.fan.heatmaps_to_masks,
    as upstream): a value within float rounding of 0.1 jumps by ~0.1 either way, in any two
    correct implementations. It then shifts channels by whole rows, so a value at row r
    feeds the mask rows r - k for the shifts k of the step; elsewhere the masks are smooth
    and must agree to TOL."""
    hm = F.interpolate(fan._heatmaps(x), size=256, mode='bilinear', align_corners=True)
    near = ((hm - 0.1).abs() < eps).any(dim=1, keepdim=True)
    shifts = {0, 4, -8, -24} | {k for _, k, _ in PART_OPS}  # nose 4, eyes -8 and -24, then the parts
    fed = torch.stack([torch.roll(near, shifts=-k, dims=2) for k in shifts]).any(dim=0)
    return (~fed).numpy()


EXAMPLE_DOC = os.path.join('docs', 'web_demo_and_export.md')  # the onnxruntime example (moved from README.md)


def readme_example():
    text = open(os.path.join(ROOT, EXAMPLE_DOC), encoding='utf-8').read()
    blocks = re.findall(r'```python\n(# onnx_translate\.py.*?)```', text, re.S)
    assert len(blocks) == 1, f'{EXAMPLE_DOC} must hold one ```python block starting with # onnx_translate.py'
    return blocks[0]


@pytest.mark.parametrize('num_domains,w_hpf,img_size', [(2, 0, 32), (3, 1, 64)], ids=['hpf0', 'hpf1'])
def test_readme_onnxruntime_example_translates_one_image(exported, tmp_path, num_domains, w_hpf, img_size):
    nets, out = exported(num_domains, w_hpf, img_size, True)
    script = tmp_path / 'onnx_translate.py'
    script.write_text(readme_example())
    photos = sorted(glob.glob(os.path.join(PHOTOS, 'celeba_hq', 'src', '*', '*.jpg')))
    src = photos[0] if photos else str(make_image(tmp_path / 'src.png', size=70))
    result = subprocess.run([sys.executable, str(script), str(out), src, 'b', str(tmp_path / 'out.png')],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    got = np.asarray(Image.open(tmp_path / 'out.png'), dtype=np.float64)
    assert got.shape == (img_size, img_size, 3)
    # the same translation in PyTorch: the example's latent code, translate mode's image path
    z = torch.from_numpy(np.random.default_rng(0).standard_normal((1, 8), np.float32))
    with torch.no_grad():
        x = as_batch(src, img_size, 'cpu')
        s = nets.mapping_network(z, torch.tensor([1]))
        x_fake = translated(nets, w_hpf, x, s)
    want = ((x_fake[0].permute(1, 2, 0).numpy() + 1) * 127.5).clip(0, 255)
    # rounding only (but for the rare mask pixels at the FAN's 0.1 threshold, see threshold_stable)
    assert (np.abs(got - want) > 1.0).mean() < 1e-3
    src_px = np.asarray(Image.open(src).convert('RGB').resize((img_size, img_size), Image.BILINEAR), np.float64)
    assert np.abs(got - src_px).mean() > 5  # it is a translation, not the source


def test_a_result_dir_that_cannot_be_made_is_refused_before_the_networks_load(tmp_path, monkeypatch, capsys):
    """issue 19, item 9: a file in the way of --result_dir is one line, before any network loads."""
    import core.use.load_run
    (tmp_path / 'file').write_text('keep')
    monkeypatch.setattr(core.use.load_run, 'load_run_networks', lambda *a, **k: pytest.fail('networks loaded'))
    rc = cli.main(['--mode', 'export', '--format', 'onnx', '--checkpoint_dir', str(tmp_path / 'ckpt'),
                   '--result_dir', str(tmp_path / 'file' / 'onnx')])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "--result_dir" in err[0] and 'not a folder' in err[0]
    assert (tmp_path / 'file').read_text() == 'keep'
