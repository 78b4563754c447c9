"""End to end: train a few iterations on generated data, then sample and translate from the checkpoint."""
import os

import numpy as np
import pytest
from helpers import make_dataset, run_args
from PIL import Image

import main as cli

pytestmark = pytest.mark.slow  # each test runs main.py on a trained checkpoint


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp('run')
    data = make_dataset(root / 'data', n=4)
    assert cli.main(run_args(data, root, '--total_iters', '2', '--print_every', '0', '--sample_every', '0',
                             '--save_every', '2')) == 0
    return root, data


def common(root):
    # no architecture flags: the run's config.yaml supplies them
    return ['--num_workers', '0', '--checkpoint_dir', str(root / 'ckpt'), '--resume_iter', '2']


def test_sample_writes_grids_and_both_videos(trained, tmp_path):
    root, data = trained
    rc = cli.main(['--mode', 'sample', *common(root), '--src_dir', str(data / 'val'), '--ref_dir', str(data / 'val'),
                   '--val_batch_size', '3', '--num_outs_per_domain', '2', '--result_dir', str(tmp_path),
                   '--sample_outputs', 'all'])
    assert rc == 0
    files = sorted(os.listdir(tmp_path))
    assert 'reference.jpg' in files and 'video_ref.mp4' in files and 'video_latent.mp4' in files
    for y in range(2):
        for psi in ('0.5', '0.7', '1.0'):
            assert f'latent_{y}_psi_{psi}.jpg' in files
    # reference grid: (1 + 3 refs) rows x (1 + 3 sources) columns of 32 px
    assert Image.open(tmp_path / 'reference.jpg').size == (4 * 32, 4 * 32)
    # latent grid: the sources, then num_outs_per_domain rows
    assert Image.open(tmp_path / 'latent_0_psi_1.0.jpg').size == (3 * 32, 3 * 32)
    for video in ('video_ref.mp4', 'video_latent.mp4'):
        assert (tmp_path / video).stat().st_size > 1000


def test_sample_writes_only_the_chosen_outputs(trained, tmp_path):
    root, data = trained
    args = ['--mode', 'sample', *common(root), '--src_dir', str(data / 'val'), '--ref_dir', str(data / 'val'),
            '--val_batch_size', '3', '--num_outs_per_domain', '2']
    assert cli.main([*args, '--result_dir', str(tmp_path / 'a'), '--sample_outputs', 'latent,reference']) == 0
    assert sorted(os.listdir(tmp_path / 'a')) == ['latent_0_psi_0.5.jpg', 'latent_0_psi_0.7.jpg', 'latent_0_psi_1.0.jpg',
                                                  'latent_1_psi_0.5.jpg', 'latent_1_psi_0.7.jpg', 'latent_1_psi_1.0.jpg',
                                                  'reference.jpg']
    # an output does not depend on which others were chosen
    assert cli.main([*args, '--result_dir', str(tmp_path / 'b'), '--sample_outputs', 'latent']) == 0
    assert sorted(os.listdir(tmp_path / 'b')) == sorted(os.listdir(tmp_path / 'a'))[:-1]
    for name in os.listdir(tmp_path / 'b'):
        assert (tmp_path / 'a' / name).read_bytes() == (tmp_path / 'b' / name).read_bytes()


def test_sample_unknown_output_one_line_error(trained, tmp_path, capsys):
    root, data = trained
    rc = cli.main(['--mode', 'sample', *common(root), '--result_dir', str(tmp_path), '--sample_outputs', 'gif'])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and 'video_latent' in err[0]
    assert not os.listdir(tmp_path)


def test_translate_reference_and_latent(trained, tmp_path, capsys):
    root, data = trained
    src = str(data / 'val' / 'cat' / '0.png')
    ref = str(data / 'val' / 'dog' / '1.png')
    assert cli.main(['--mode', 'translate', *common(root), '--src', src, '--ref', ref, '--ref_domain', 'dog',
                     '--out', str(tmp_path / 'ref.png')]) == 0
    assert Image.open(tmp_path / 'ref.png').size == (32, 32)
    assert cli.main(['--mode', 'translate', *common(root), '--src', str(data / 'val' / 'cat'), '--trg_domain', '1',
                     '--num_outs', '3', '--psi', '0.7', '--out', str(tmp_path / 'folder')]) == 0
    outs = sorted(os.listdir(tmp_path / 'folder'))
    assert outs == sorted(os.listdir(data / 'val' / 'cat'))
    row = np.asarray(Image.open(tmp_path / 'folder' / outs[0]))
    assert row.shape == (32, 96, 3)
    assert not np.array_equal(row[:, :32], row[:, 32:64])  # different styles, different outputs


def test_translate_unknown_domain_one_line_error(trained, tmp_path, capsys):
    root, data = trained
    rc = cli.main(['--mode', 'translate', *common(root), '--src', str(data / 'val' / 'cat' / '0.png'),
                   '--trg_domain', 'zebra', '--out', str(tmp_path / 'x.png')])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and 'cat, dog' in err[0]
    assert not (tmp_path / 'x.png').exists()


def test_eval_mode_writes_the_official_json_files(trained, tmp_path):
    """--mode eval end to end, offline: backbones filled by name and passed by path."""
    import json

    import torch
    from torchvision import models
    from weights_by_name import value_for
    root, data = trained
    paths = {}
    for name, net in (('inception', models.inception_v3(weights=None, aux_logits=True, init_weights=False)),
                      ('alexnet', models.alexnet(weights=None))):
        paths[name] = str(tmp_path / f'{name}.pth')
        torch.save({k: value_for(k, v, gain=2 ** 0.5) for k, v in net.state_dict().items()}, paths[name])
    eval_dir = tmp_path / 'eval'
    rc = cli.main(['--mode', 'eval', *common(root), '--train_img_dir', str(data / 'train'),
                   '--val_img_dir', str(data / 'val'), '--eval_dir', str(eval_dir), '--val_batch_size', '2',
                   '--num_outs_per_domain', '2', '--inception_path', paths['inception'],
                   '--alexnet_path', paths['alexnet']])
    assert rc == 0
    for mode in ('latent', 'reference'):
        fid = json.loads((eval_dir / f'FID_00002_{mode}.json').read_text())
        lpips = json.loads((eval_dir / f'LPIPS_00002_{mode}.json').read_text())
        assert set(fid) == {f'FID_{mode}/cat2dog', f'FID_{mode}/dog2cat', f'FID_{mode}/mean'}
        assert set(lpips) == {f'LPIPS_{mode}/cat2dog', f'LPIPS_{mode}/dog2cat', f'LPIPS_{mode}/mean'}
        assert fid[f'FID_{mode}/mean'] == pytest.approx((fid[f'FID_{mode}/cat2dog'] + fid[f'FID_{mode}/dog2cat']) / 2)
        assert all(v > 0 for v in fid.values()) and all(v > 0 for v in lpips.values())
    assert len((eval_dir / 'metrics.jsonl').read_text().splitlines()) == 2


def test_a_run_needs_no_flags_but_its_folder_and_finds_its_newest_step(trained, tmp_path):
    root, data = trained
    out = tmp_path / 'newest.png'
    assert cli.main(['--mode', 'translate', '--checkpoint_dir', str(root / 'ckpt'), '--num_workers', '0',
                     '--src', str(data / 'val' / 'cat' / '0.png'), '--trg_domain', 'dog', '--out', str(out)]) == 0
    assert Image.open(out).size == (32, 32)


def test_a_flag_that_contradicts_the_run_is_a_one_line_error(trained, tmp_path, capsys):
    root, data = trained
    rc = cli.main(['--mode', 'translate', *common(root), '--style_dim', '32', '--src', str(data / 'val' / 'cat' / '0.png'),
                   '--trg_domain', 'dog', '--out', str(tmp_path / 'x.png')])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert 'another configuration' in err[0] and 'style_dim=16' in err[0] and 'style_dim=32' in err[0]
