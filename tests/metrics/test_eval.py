"""metrics/eval.py: the evaluation protocol (tasks, seeds, references and masks, result files),
and the features evaluation runs in full float32 (GPU path: docs/first_gpu_run.md item 8)."""
import json
import math
import os

import numpy as np
import pytest
import torch
from helpers import random_uint8, switched, tiny_nets, write_pngs
from munch import Munch
from PIL import Image

import metrics as metrics_pkg
from metrics import eval as meval
from metrics import fid


def eval_nets(w_hpf=0):
    """The tiny inference networks: helpers.tiny_nets' EMA copies (PyTorch's init, seed 0)."""
    return tiny_nets(w_hpf)[1]


def tiny_dataset(root):
    for split, seed in (('train', 10), ('val', 20)):
        for k, domain in enumerate(('cat', 'dog')):
            write_pngs(root / split / domain, random_uint8(4, 32, seed=seed + k))


def tiny_args(root, **kw):
    args = Munch(img_size=32, num_domains=2, latent_dim=8, val_batch_size=3, num_outs_per_domain=2,
                 w_hpf=0, train_img_dir=str(root / 'train'), val_img_dir=str(root / 'val'),
                 eval_dir=str(root / 'eval'), seed=7, inception_path=None, alexnet_path=None,
                 save_eval_images=False, num_workers=0)
    args.update(kw)
    return args


def test_to_uint8_matches_torchvision_save_image(tmp_path):
    from torchvision.utils import save_image
    x = torch.linspace(-1.2, 1.2, 3 * 8 * 8).reshape(1, 3, 8, 8)
    save_image((x[0] + 1) / 2, tmp_path / 'a.png')   # the official (x + 1) / 2, clamp, save
    assert np.array_equal(meval.to_uint8(x)[0], np.asarray(Image.open(tmp_path / 'a.png')))


def test_reference_and_masks_reach_the_networks(tmp_path):
    tiny_dataset(tmp_path)
    nets = eval_nets(w_hpf=1)
    seen = Munch(refs=[], masks=[])
    encoder = nets.style_encoder

    def style_encoder(x, y):
        seen.refs.append((x.shape[0], y.tolist()))
        return encoder(x, y)

    def get_heatmap(x):
        return torch.ones(x.size(0), 1, 256, 256), torch.ones(x.size(0), 1, 256, 256) * 0.5

    generator = nets.generator

    def spy_generator(x, s, masks=None):
        seen.masks.append(masks)
        return generator(x, s, masks=masks)

    spy = Munch(generator=spy_generator, mapping_network=nets.mapping_network,
                style_encoder=style_encoder, fan=Munch(get_heatmap=get_heatmap))
    args = tiny_args(tmp_path, w_hpf=1)
    task = meval.Task(args, 'reference', 'cat', 'dog', 1)
    sizes = []
    for x in task.sources:
        outs = meval.translate_batch(spy, args, task, x)
        assert len(outs) == 2 and all(o.shape == x.shape for o in outs)
        sizes.append(x.size(0))
    assert sizes == [3, 1]                                    # val_batch_size 3, last batch kept
    assert seen.refs == [(3, [1, 1, 1])] * 2 + [(1, [1])] * 2  # refs cut to the source batch
    assert all(m is not None and len(m) == 2 for m in seen.masks)


def check_result_files(eval_dir, step, mode, fid_values, lpips_values, tasks=('dog2cat', 'cat2dog')):
    """JSON files hold the returned values, keys in task order (target outer, source inner) + mean."""
    for kind, values in (('FID', fid_values), ('LPIPS', lpips_values)):
        with open(os.path.join(eval_dir, f'{kind}_{step:05d}_{mode}.json')) as f:
            on_disk = json.load(f)
        assert list(on_disk) == [f'{kind}_{mode}/{t}' for t in tasks] + [f'{kind}_{mode}/mean']
        assert on_disk == values
        per_task = [values[f'{kind}_{mode}/{t}'] for t in tasks]
        assert all(math.isfinite(v) and v > 0 for v in per_task)
        assert values[f'{kind}_{mode}/mean'] == pytest.approx(np.mean(per_task), rel=1e-12)


@pytest.mark.slow  # Inception on every output: minutes on a busy 2-core machine
def test_calculate_metrics_end_to_end_latent(offline_home, tmp_path, monkeypatch):
    tiny_dataset(tmp_path)
    args = tiny_args(tmp_path)
    builds = []
    make = fid.models.inception_v3
    monkeypatch.setattr(fid.models, 'inception_v3', lambda **k: builds.append(1) or make(**k))
    metrics_pkg._BUILT.clear()
    fid_values, lpips_values = meval.calculate_metrics(eval_nets(), args, step=12, mode='latent',
                                                       verbose=False)
    assert len(builds) == 1                                   # one Inception for all tasks
    check_result_files(args.eval_dir, 12, 'latent', fid_values, lpips_values)
    line = json.loads((tmp_path / 'eval' / 'metrics.jsonl').read_text())
    assert line == {'step': 12, 'mode': 'latent', **fid_values, **lpips_values}
    assert len(os.listdir(tmp_path / 'eval' / 'fid_stats')) == 2    # real statistics, per target
    assert not os.path.exists(tmp_path / 'eval' / 'cat2dog')          # nothing written by default


@pytest.mark.slow
def test_calculate_metrics_reference_mode_is_deterministic_and_png_faithful(offline_home, tmp_path,
                                                                               monkeypatch):
    # FID's own math is tested above and against the golden; here a cheap stand-in records its inputs
    seen = []

    def recording_distance(mu1, cov1, mu2, cov2):
        seen.append((mu1, cov1, mu2, cov2))
        return float(np.sum((mu1 - mu2) ** 2)) + 1.0

    monkeypatch.setattr(meval, 'frechet_distance', recording_distance)
    tiny_dataset(tmp_path)
    nets = eval_nets()
    args = tiny_args(tmp_path, save_eval_images=True)
    fid_values, lpips_values = meval.calculate_metrics(nets, args, step=3, mode='reference',
                                                       verbose=False)
    check_result_files(args.eval_dir, 3, 'reference', fid_values, lpips_values)

    # the saved PNGs hold exactly the outputs whose statistics were used
    pngs = sorted(os.listdir(tmp_path / 'eval' / 'cat2dog'))
    assert len(pngs) == 4 * 2 and pngs[:2] == ['0001_01.png', '0001_02.png']
    inception = fid.build_inception(None, 'cpu')
    mu_files, cov_files = fid.stats_from_folder(str(tmp_path / 'eval' / 'cat2dog'), 32, 3, inception)
    mu_real, cov_real = fid.stats_from_folder(str(tmp_path / 'train' / 'dog'), 32, 3, inception)
    mu1, cov1, mu2, cov2 = seen[1]                            # task 2: cat2dog
    np.testing.assert_allclose(mu2, mu_files, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(cov2, cov_files, rtol=1e-6, atol=1e-9)
    assert np.array_equal(mu1, mu_real) and np.array_equal(cov1, cov_real)

    # same seed, same numbers (real statistics now from the cache)
    again = meval.calculate_metrics(nets, tiny_args(tmp_path), step=4, mode='reference', verbose=False)
    assert again == (fid_values, lpips_values)
    lines = (tmp_path / 'eval' / 'metrics.jsonl').read_text().splitlines()
    assert [json.loads(ln)['step'] for ln in lines] == [3, 4]


@pytest.mark.parametrize('mode', meval.MODES)
def test_the_seed_fixes_sources_and_styles(tmp_path, mode):
    tiny_dataset(tmp_path)
    nets = eval_nets()

    def first_outputs(seed):
        task = meval.Task(tiny_args(tmp_path, seed=seed), mode, 'cat', 'dog', 1)
        x = next(iter(task.sources))
        return [x] + meval.translate_batch(nets, tiny_args(tmp_path), task, x)

    a, b, c = first_outputs(7), first_outputs(7), first_outputs(8)
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    assert not all(torch.equal(u, v) for u, v in zip(a, c))
    assert not torch.equal(a[1], a[2])                      # the outputs of one source differ


def test_calculate_metrics_rejects_bad_setups(offline_home, tmp_path):
    tiny_dataset(tmp_path)
    with pytest.raises(meval.MetricsError, match='latent'):
        meval.calculate_metrics(eval_nets(), tiny_args(tmp_path), 0, 'style')
    with pytest.raises(meval.MetricsError, match='num_domains'):
        meval.calculate_metrics(eval_nets(), tiny_args(tmp_path, num_domains=3), 0, 'latent')
    with pytest.raises(meval.MetricsError, match='val_batch_size'):
        meval.calculate_metrics(eval_nets(), tiny_args(tmp_path, val_batch_size=5), 0, 'reference')


# ------------------------------------------------------------------ TF32 in evaluation (docs/first_gpu_run.md item 8)
def test_fid_and_lpips_features_run_without_tf32():
    with switched(torch.backends.cudnn, allow_tf32=True), switched(torch.backends.cuda.matmul, allow_tf32=True):
        features_run_without_tf32()


def features_run_without_tf32():
    from torchvision import models

    from metrics.fid import InceptionPool3
    from metrics.lpips import LPIPS
    seen = []
    record = lambda module, inputs: seen.append((torch.backends.cudnn.allow_tf32,
                                                 torch.backends.cuda.matmul.allow_tf32))
    inception = InceptionPool3(models.inception_v3(weights=None, aux_logits=True, init_weights=False)).eval()
    inception.block4.register_forward_pre_hook(record)
    lpips = LPIPS(features=models.alexnet(weights=None).features).eval()
    lpips.net.register_forward_pre_hook(record)
    lpips.lins[0].register_forward_pre_hook(record)
    with torch.no_grad():
        inception(torch.zeros(1, 3, 75, 75))
        lpips(torch.zeros(1, 3, 64, 64), torch.ones(1, 3, 64, 64))
    assert seen == [(False, False)] * 4  # Inception, the AlexNet trunk on x and on y, a linear head
    assert torch.backends.cudnn.allow_tf32 and torch.backends.cuda.matmul.allow_tf32  # restored after
