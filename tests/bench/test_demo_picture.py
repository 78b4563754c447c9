"""bench/demo_picture.py: the README's demo picture (stand-ins: tests/bench/conftest.py)."""
import json
import os

import numpy as np
import pytest
from helpers import ROOT

from bench.shape_classifier import classify_shape
from core.datasets.demo_shapes import SHAPES, make_shapes_dataset
from core.errors import UserError

pytestmark = pytest.mark.usefixtures('one_thread')


def test_picture_grids_show_the_translations(tmp_path, stub_nets, val_images):
    from bench.demo_picture import latent_grid, reference_grid
    images = val_images(tmp_path, 2)
    ref = reference_grid(stub_nets(), images, per_domain=2)
    assert ref.shape == (7 * 32, 7 * 32, 3)  # a header row and column around 6 x 6 outputs
    assert (ref[:32, :32] == 255).all()  # blank corner
    first_ref, first_src = images['circle'][0], images['circle'][0]
    assert np.array_equal(ref[:32, 32:64], first_ref) and np.array_equal(ref[32:64, :32], first_src)
    cell = ref[32 * 6:32 * 7, 32 * 1:32 * 2]  # the last source (triangle) in a circle's style
    assert classify_shape(cell) == 'circle'
    lat = latent_grid(stub_nets(), images, latent_dim=4, num_codes=3)
    assert lat.shape == (9 * 32, 4 * 32, 3)  # 3 sources x 3 target domains, source + 3 codes
    for row, trg in enumerate(SHAPES * 3):
        assert classify_shape(lat[row * 32:(row + 1) * 32, 32:64]) == trg
    assert not np.array_equal(lat[:32, 32:64], lat[:32, 64:96])  # two codes, two colourings


def test_picture_cli_writes_a_captioned_png(tmp_path):
    from PIL import Image

    from bench.demo_picture import main
    from core.cli.arguments import parse_args
    from core.cli.config_files import save_config
    from core.io.ckpt_files import save_checkpoint
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
