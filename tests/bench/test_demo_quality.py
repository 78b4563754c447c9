"""bench/demo_quality.py: the demo's scores (shape accuracy, colour following, diversity) on
stand-in networks and on checkpoints (stand-ins: tests/bench/conftest.py)."""
import json
import os

import numpy as np
import pytest
import torch
from helpers import ROOT

from core.datasets.demo_shapes import SHAPES, make_shapes_dataset
from core.errors import UserError

pytestmark = pytest.mark.usefixtures('one_thread')


def test_bench_scores_a_perfect_translator_high(tmp_path, stub_nets, val_images):
    from bench.demo_quality import evaluate
    res = evaluate(stub_nets(), val_images(tmp_path, 8), latent_dim=4, seed=0, batch_size=5)
    assert res['classifier_acc_real'] == 1.0
    assert res['latent_shape_acc'] >= 0.95 and res['ref_shape_acc'] >= 0.95
    assert res['ref_colour_follow'] >= 0.95
    assert res['ref_colour_dist_to_ref'] < 30 < res['ref_colour_dist_to_src']
    assert sorted(res['tasks']) == sorted(f'{a}2{b}' for a in SHAPES for b in SHAPES if a != b)
    assert all(t['n'] == 8 for t in res['tasks'].values())
    # the oracle's mapping draws colours from z as freely as the data: as varied as real images
    assert res['latent_diversity_ratio'] > 0.7 and res['real_diversity'] > 200


def test_bench_scores_identity_as_failure(tmp_path, stub_nets, val_images):
    from bench.demo_quality import evaluate
    res = evaluate(stub_nets(identity=True), val_images(tmp_path, 6), latent_dim=4)
    assert res['latent_shape_acc'] == 0.0 and res['ref_shape_acc'] == 0.0  # the source's shape stays
    assert res['ref_colour_follow'] <= 0.05
    assert res['latent_diversity'] == 0.0 and res['latent_diversity_ratio'] == 0.0  # K identical outputs


def test_bench_diversity_sees_one_colour_per_domain_as_none(tmp_path, stub_nets, val_images):
    """A mapping network that ignores z (one style per domain) has no latent diversity,
    even when it translates shapes perfectly; a z that moves only the foreground counts."""
    from bench.demo_quality import colour_spread, evaluate
    nets = stub_nets()
    oracle = nets.mapping_network.owner
    nets.mapping_network = type(nets.mapping_network)(lambda z, y: oracle.map(torch.zeros_like(z), y), oracle)
    res = evaluate(nets, val_images(tmp_path, 6), latent_dim=4, div_sources=2, div_codes=4)
    assert res['latent_shape_acc'] >= 0.95 and res['latent_diversity'] < 5
    a, b = (np.zeros(3), np.zeros(3)), (np.full(3, 10.0), np.zeros(3))
    assert colour_spread([a, b, a]) == pytest.approx(2 * np.linalg.norm(np.full(3, 10.0)) / 3)
    with pytest.raises(UserError, match='div_codes'):
        evaluate(nets, val_images(tmp_path / 'b', 2), latent_dim=4, div_codes=1)


def test_bench_cli_on_a_checkpoint(tmp_path, capsys):
    from bench.demo_quality import main
    from core.cli.arguments import parse_args
    from core.io.ckpt_files import save_checkpoint
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
    from core.cli.arguments import parse_args
    from core.io.ckpt_files import save_checkpoint
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
