"""End-to-end command line: train on generated data, exact resume, Ctrl-C, divergence, bad input,
the speed switches and --grad_checkpoint on whole runs."""
import json
import os
import signal

import numpy as np
import pytest
import torch
import yaml
from helpers import ROOT, assert_files_equal, make_dataset, run_args
from PIL import Image

import core.train.loop as loop
import main as cli


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp('data'))


@pytest.mark.slow
def test_train_writes_logs_samples_config_and_checkpoints(data, tmp_path):
    rc = cli.main(run_args(data, tmp_path, '--total_iters', '4', '--print_every', '2', '--sample_every', '4',
                           '--save_every', '2'))
    assert rc == 0
    ckpt = tmp_path / 'ckpt'
    for step in (2, 4):
        for kind in ('nets', 'nets_ema', 'optims', 'state'):
            assert (ckpt / f'{step:06d}_{kind}.ckpt').is_file()
    lines = [json.loads(line) for line in (ckpt / 'log.jsonl').read_text().splitlines()]
    assert [line['step'] for line in lines] == [2, 4]
    for key in ('D/latent_real', 'D/latent_fake', 'D/latent_reg', 'D/ref_real', 'G/latent_adv', 'G/latent_sty',
                'G/latent_ds', 'G/latent_cyc', 'G/ref_cyc', 'G/lambda_ds'):
        assert np.isfinite(lines[-1][key]), key
    assert lines[0]['G/lambda_ds'] == pytest.approx(1 - 2 / 4) and lines[1]['G/lambda_ds'] <= 0
    config = yaml.safe_load((ckpt / 'config.yaml').read_text())
    assert config['img_size'] == 32 and config['total_iters'] == 4 and config['domain_names'] == 'cat,dog'
    grids = sorted(os.listdir(tmp_path / 'samples'))
    assert grids == ['000004_cycle_consistency.jpg', '000004_latent_psi_0.5.jpg', '000004_latent_psi_0.7.jpg',
                     '000004_latent_psi_1.0.jpg', '000004_reference.jpg']
    # reference grid: (1 + refs) rows of (1 + sources) cells of 32 px
    assert Image.open(tmp_path / 'samples' / '000004_reference.jpg').size == (3 * 32, 3 * 32)


@pytest.mark.slow
def test_resume_is_bitwise_exact(data, tmp_path):
    common = ['--print_every', '0', '--sample_every', '0', '--save_every', '3', '--randcrop_prob', '0.5']
    straight, split = tmp_path / 'straight', tmp_path / 'split'
    assert cli.main(run_args(data, straight, '--total_iters', '6', *common)) == 0
    assert cli.main(run_args(data, split, '--total_iters', '3', *common)) == 0
    assert cli.main(run_args(data, split, '--total_iters', '6', '--resume_iter', '3', *common)) == 0
    for kind in ('nets', 'nets_ema', 'optims'):
        assert_files_equal(straight / 'ckpt' / f'000006_{kind}.ckpt', split / 'ckpt' / f'000006_{kind}.ckpt')


@pytest.mark.slow
def test_official_checkpoint_without_state_file_still_resumes(data, tmp_path, capsys):
    common = ['--print_every', '0', '--sample_every', '0', '--save_every', '2']
    assert cli.main(run_args(data, tmp_path, '--total_iters', '2', *common)) == 0
    os.remove(tmp_path / 'ckpt' / '000002_state.ckpt')  # official runs write nets, nets_ema, optims only
    assert cli.main(run_args(data, tmp_path, '--total_iters', '4', '--resume_iter', '2', *common)) == 0
    assert (tmp_path / 'ckpt' / '000004_nets_ema.ckpt').is_file()
    captured = capsys.readouterr()
    assert 'data order restarts' in captured.out + captured.err


@pytest.mark.slow
def test_ctrl_c_saves_the_current_iteration(data, tmp_path, monkeypatch, capsys):
    real_step = loop.train_step

    def step_then_interrupt(nets, nets_ema, optims, inputs, args, step, **kw):
        logs = real_step(nets, nets_ema, optims, inputs, args, step, **kw)
        if step == 1:  # during the second iteration
            os.kill(os.getpid(), signal.SIGINT)
        return logs

    monkeypatch.setattr(loop, 'train_step', step_then_interrupt)
    # saved, then the shell's status of a process stopped by SIGINT (128 + 2), for requeue scripts
    assert cli.main(run_args(data, tmp_path, '--total_iters', '10', '--print_every', '0', '--sample_every', '0',
                             '--save_every', '100')) == 128 + signal.SIGINT
    assert sorted(os.listdir(tmp_path / 'ckpt')) == ['.lock', '000002_nets.ckpt', '000002_nets_ema.ckpt',
                                                     '000002_optims.ckpt', '000002_state.ckpt', 'config.yaml',
                                                     'log.jsonl']
    assert 'resume with --resume_iter 2' in capsys.readouterr().out


@pytest.mark.slow
def test_non_finite_loss_stops_and_keeps_last_checkpoint(data, tmp_path, monkeypatch, capsys):
    real_step = loop.train_step

    def diverge_at_three(nets, nets_ema, optims, inputs, args, step, **kw):
        logs = real_step(nets, nets_ema, optims, inputs, args, step, **kw)
        if step == 2:
            logs['G/ref_cyc'] = torch.tensor(float('nan'))
        return logs

    monkeypatch.setattr(loop, 'train_step', diverge_at_three)
    rc = cli.main(run_args(data, tmp_path, '--total_iters', '10', '--print_every', '0', '--sample_every', '0',
                           '--save_every', '2'))
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert err[-1].startswith('error: non-finite loss at iteration 3 (G/ref_cyc=nan)')
    assert 'last good checkpoint is iteration 2' in err[-1]
    assert sorted(f for f in os.listdir(tmp_path / 'ckpt') if f.endswith('.ckpt'))[-1] == '000002_state.ckpt'
    assert not (tmp_path / 'ckpt' / '000003_nets.ckpt').exists()


def _bad(tmp_path, name):
    root = tmp_path / name
    (root / 'train').mkdir(parents=True)
    return root


@pytest.mark.parametrize('case, expected', [
    ('missing', 'does not exist'),
    ('three_domains', '3'),
    ('empty_domain', 'dog'),
    ('too_few', 'batch'),
    ('unreadable', 'broken.png'),
])
def test_bad_input_one_line_error_and_nothing_written(tmp_path, capsys, case, expected):
    root = tmp_path / 'data'
    if case != 'missing':
        make_dataset(root, n=3)
    if case == 'three_domains':
        make_dataset(root, domains=('cat', 'dog', 'fox'), n=3)
    elif case == 'empty_domain':
        for f in (root / 'train' / 'dog').iterdir():
            f.unlink()
    elif case == 'too_few':  # 2 images in all, batch of 4
        for domain in ('cat', 'dog'):
            for f in list((root / 'train' / domain).iterdir())[1:]:
                f.unlink()
    elif case == 'unreadable':
        (root / 'train' / 'dog' / 'broken.png').write_bytes(b'not an image')
    run = tmp_path / 'run'
    rc = cli.main(run_args(root, run, '--total_iters', '2', '--print_every', '0', '--sample_every', '0',
                           '--save_every', '1', '--batch_size', '4'))
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    # one error line (an unreadable file is found by the check before training)
    assert err[-1].startswith('error: ') and expected in err[-1], err
    assert not any(line.startswith('error') or 'Traceback' in line for line in err[:-1]), err
    assert not any(f.endswith('.ckpt') for _, _, files in os.walk(tmp_path) for f in files)


REPRESENTATIVE = os.path.join(ROOT, '..', 'shared', 'assets', 'representative')


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir(REPRESENTATIVE), reason='../shared/assets/representative is absent')
def test_official_readme_celeba_command_on_real_photos(tmp_path):
    """The official README's CelebA-HQ train command, unchanged but for small sizes, with the
    high-pass path and FAN masks (wing.ckpt written from name-filled weights)."""
    from weights_by_name import fill_by_name

    from core.nn.fan import FAN
    torch.save({'state_dict': fill_by_name(FAN()).state_dict()}, tmp_path / 'wing.ckpt')
    celeba = os.path.join(REPRESENTATIVE, 'celeba_hq')
    official = ['--mode', 'train', '--num_domains', '2', '--w_hpf', '1',
                '--lambda_reg', '1', '--lambda_sty', '1', '--lambda_ds', '1', '--lambda_cyc', '1',
                '--train_img_dir', os.path.join(celeba, 'src'), '--val_img_dir', os.path.join(celeba, 'ref')]
    small = ['--img_size', '32', '--dim_in', '8', '--max_conv_dim', '16', '--style_dim', '8', '--batch_size', '2',
             '--val_batch_size', '2', '--total_iters', '2', '--num_workers', '0', '--print_every', '1',
             '--sample_every', '2', '--save_every', '2', '--num_outs_per_domain', '1',
             '--wing_path', str(tmp_path / 'wing.ckpt'), '--checkpoint_dir', str(tmp_path / 'ckpt'),
             '--sample_dir', str(tmp_path / 'samples')]
    assert cli.main(official + small) == 0
    saved = torch.load(tmp_path / 'ckpt' / '000002_nets_ema.ckpt', weights_only=True)
    assert set(saved) == {'generator', 'mapping_network', 'style_encoder', 'fan'}
    assert 'hpf.filter' in saved['generator']
    lines = (tmp_path / 'ckpt' / 'log.jsonl').read_text().splitlines()
    assert len(lines) == 2 and all(np.isfinite(v) for v in json.loads(lines[-1]).values())
    assert len(os.listdir(tmp_path / 'samples')) == 5

    # the official README's sample command on that checkpoint (FAN comes from the checkpoint)
    sample = ['--mode', 'sample', '--num_domains', '2', '--resume_iter', '2', '--w_hpf', '1',
              '--checkpoint_dir', str(tmp_path / 'ckpt'), '--result_dir', str(tmp_path / 'results'),
              '--src_dir', os.path.join(celeba, 'src'), '--ref_dir', os.path.join(celeba, 'ref')]
    sizes = ['--img_size', '32', '--dim_in', '8', '--max_conv_dim', '16', '--style_dim', '8', '--num_workers', '0',
             '--val_batch_size', '4', '--num_outs_per_domain', '2', '--wing_path', str(tmp_path / 'absent.ckpt')]
    assert cli.main(sample + sizes) == 0
    results = set(os.listdir(tmp_path / 'results'))
    assert results == {'reference.jpg', 'video_ref.mp4'}  # what the official sample mode writes (the default outputs)


# ---------------------------------------------------------------- speed switches, recomputation
# (unit tests: tests/core/train/test_step.py, tests/core/train/test_recompute.py; one thread there and here)
@pytest.mark.slow
@pytest.mark.usefixtures('one_thread')
def test_short_run_with_bf16_channels_last_stays_finite(tmp_path):
    data = make_dataset(tmp_path / 'data', n=4)
    assert cli.main(run_args(data, tmp_path / 'run', '--total_iters', '20', '--print_every', '5',
                             '--sample_every', '0', '--save_every', '0', '--device', 'cpu',
                             '--amp', 'bf16', '--channels_last')) == 0
    saved = torch.load(tmp_path / 'run' / 'ckpt' / '000020_nets.ckpt', weights_only=True)
    for name, state in saved.items():
        for key, value in state.items():
            assert torch.isfinite(value).all(), f'{name}.{key}'


@pytest.mark.slow
@pytest.mark.usefixtures('one_thread')
def test_divergence_found_on_a_later_logging_step_names_the_first_bad_iteration(tmp_path, monkeypatch, capsys):
    """Losses are read back only every --print_every and before saving: a NaN at iteration
    3 is seen at iteration 5 (log) yet reported as iteration 3, and no checkpoint after the
    last good one (iteration 2) is written."""
    real_step = loop.train_step

    def diverge_at_three(nets, nets_ema, optims, inputs, args, step, **kw):
        logs = real_step(nets, nets_ema, optims, inputs, args, step, **kw)
        if step == 2:
            logs['D/ref_fake'] = logs['D/ref_fake'] * float('inf')
        return logs

    monkeypatch.setattr(loop, 'train_step', diverge_at_three)
    data = make_dataset(tmp_path / 'data', n=4)
    rc = cli.main(run_args(data, tmp_path, '--total_iters', '10', '--print_every', '5', '--sample_every', '0',
                           '--save_every', '2', '--device', 'cpu'))
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert err[-1].startswith('error: non-finite loss at iteration 3 (D/ref_fake=inf)'), err[-1]
    assert 'last good checkpoint is iteration 2' in err[-1]
    written = sorted(f for f in os.listdir(tmp_path / 'ckpt') if f.endswith('.ckpt'))
    assert written[-1] == '000002_state.ckpt'


@pytest.mark.slow
@pytest.mark.usefixtures('one_thread')
def test_huge_lr_diverges_without_writing_nan(tmp_path, capsys):
    """A real divergence (lr 1e6): training stops with the one-line error and every
    checkpoint that was written holds finite weights only."""
    data = make_dataset(tmp_path / 'data', n=4)
    rc = cli.main(run_args(data, tmp_path, '--total_iters', '30', '--print_every', '0', '--sample_every', '0',
                           '--save_every', '1', '--device', 'cpu', '--lr', '1e6', '--f_lr', '1e6'))
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2, 'lr 1e6 did not diverge in 30 iterations'
    assert err[-1].startswith('error: non-finite loss at iteration ')
    step = int(err[-1].split('iteration ')[1].split()[0])
    written = sorted(f for f in os.listdir(tmp_path / 'ckpt') if f.endswith('_nets.ckpt'))
    assert written == [f'{k:06d}_nets.ckpt' for k in range(1, step)]  # every good one, no later one
    for f in written:
        for name, state in torch.load(tmp_path / 'ckpt' / f, weights_only=True).items():
            for key, value in state.items():
                assert torch.isfinite(value).all(), f'{f} {name}.{key}'


@pytest.mark.slow
@pytest.mark.usefixtures('one_thread')
def test_command_line_run_with_grad_checkpoint_writes_the_same_checkpoints(tmp_path):
    data = make_dataset(tmp_path / 'data', n=4)
    common = ['--total_iters', '2', '--print_every', '1', '--sample_every', '0', '--save_every', '2', '--device', 'cpu']
    plain, recomputed = tmp_path / 'plain', tmp_path / 'recomputed'
    assert cli.main(run_args(data, plain, *common)) == 0
    assert cli.main(run_args(data, recomputed, *common, '--grad_checkpoint')) == 0
    assert 'grad_checkpoint: true' in (recomputed / 'ckpt' / 'config.yaml').read_text()
    for kind in ('nets', 'nets_ema', 'optims'):
        assert_files_equal(plain / 'ckpt' / f'000002_{kind}.ckpt', recomputed / 'ckpt' / f'000002_{kind}.ckpt')
