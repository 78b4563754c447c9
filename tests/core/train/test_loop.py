"""core/train/loop.py: the training loop's stop signals (its whole runs: tests/e2e/test_train_cli.py,
tests/e2e/test_faults.py)."""
import signal

from core.train.loop import _StopFlag


# ------------------------------------------------------------------ stop signals (docs/first_gpu_run.md item 6)
def test_second_ctrl_c_interrupts_one_process_but_not_torchrun_workers():
    with _StopFlag() as stop:
        stop._handle(signal.SIGINT, None)
        assert stop.signum == signal.SIGINT
        try:  # (pytest.raises would let pytest see the KeyboardInterrupt as its own)
            stop._handle(signal.SIGINT, None)
            interrupted = False
        except KeyboardInterrupt:
            interrupted = True
        assert interrupted
    with _StopFlag(launched_by_torchrun=True) as stop:
        stop._handle(signal.SIGINT, None)  # from the terminal
        stop._handle(signal.SIGINT, None)  # the same Ctrl-C passed on by torchrun
        assert stop.signum == signal.SIGINT
    with _StopFlag() as stop:
        stop._handle(signal.SIGTERM, None)
        stop._handle(signal.SIGTERM, None)  # schedulers may resend: never an interrupt
        stop._handle(signal.SIGUSR1, None)
        assert stop.signum == signal.SIGTERM


# ------------------------------------------------------------------ a batch that cannot be read
def _tiny_run(tmp_path):
    from helpers import make_dataset, run_args
    data = make_dataset(tmp_path / 'data', n=3)
    return run_args(data, tmp_path / 'run', '--total_iters', '6', '--print_every', '0', '--sample_every', '0',
                    '--save_every', '0', '--device', 'cpu')


def test_a_batch_another_process_could_not_read_stops_this_one_after_saving(tmp_path, monkeypatch, capsys):
    """Another rank's loader failed in iteration 3 (here: a worker killed, reported through the
    per-iteration agreement): this rank, whose batch was fine, stops in the same iteration
    with that rank's line, after saving the 2 iterations done."""
    import core.train.distributed as distributed
    import main as cli
    from core.io.ckpt_files import complete_steps
    calls = []
    report = 'reading a training batch failed: RuntimeError: DataLoader worker (pid 7) is killed by signal: Bus error.'
    monkeypatch.setattr(distributed.Single, 'agree', lambda self, failed, signum: (calls.append(failed) or len(calls) == 3, 0))
    monkeypatch.setattr(distributed.Single, 'first_message', lambda self, message: report if message is None else message)
    assert cli.main(_tiny_run(tmp_path)) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith('error: ')]
    assert err == [f'error: {report} (saved iteration 2 in {tmp_path / "run" / "ckpt"}; '
                   f'then resume with --resume_iter latest)']
    assert calls == [False, False, False]  # this rank's own reads all succeeded
    assert complete_steps(str(tmp_path / 'run' / 'ckpt')) == [2]


def test_an_unexpected_loader_failure_saves_then_keeps_its_traceback(tmp_path, monkeypatch):
    """This rank's loader fails with something other than an unreadable image (a bug, a worker
    killed): the iterations done are saved first, then the error keeps its type and traceback."""
    import pytest

    import core.datasets.pipeline
    import core.io.images
    import main as cli
    from core.io.ckpt_files import complete_steps
    real, reads = core.io.images.load_rgb, []

    def failing(path, *a, **k):
        reads.append(path)
        if len(reads) > 2 * 3 * 2 and 'train' in str(path):  # batch 2: 6 training images an iteration
            raise RuntimeError('DataLoader worker (pid 7) is killed by signal: Bus error.')
        return real(path, *a, **k)

    monkeypatch.setattr(core.datasets.pipeline, 'load_rgb', failing)
    argv = _tiny_run(tmp_path)
    with pytest.raises(RuntimeError, match='Bus error'):
        cli.main(argv)
    assert complete_steps(str(tmp_path / 'run' / 'ckpt')) == [1]


def test_a_stop_before_the_first_iteration_says_nothing_was_saved(tmp_path, monkeypatch, capsys):
    import signal

    import core.train.distributed as distributed
    import main as cli
    from core.io.ckpt_files import complete_steps
    monkeypatch.setattr(distributed.Single, 'agree', lambda self, failed, signum: (failed, int(signal.SIGTERM)))
    assert cli.main(_tiny_run(tmp_path)) == 128 + signal.SIGTERM
    out = capsys.readouterr().out
    assert 'interrupted by SIGTERM before the first iteration: nothing was saved' in out and 'saved iteration' not in out
    assert complete_steps(str(tmp_path / 'run' / 'ckpt')) == []


# ------------------------------------------------------------------ state made once
def test_the_state_made_in_init_is_the_state_trained(tmp_path, monkeypatch):
    """Networks, EMA copies (sharing the FAN), optimisers and the loss scaler are made by
    __init__ and trained as they are: train() replaces none of them."""
    import main as cli
    from core.train.loop import Trainer
    made, trained = {}, {}
    real_init, real_loop = Trainer.__init__, Trainer._loop

    def init(self, args):
        real_init(self, args)
        made.update(nets=self.nets, nets_ema=self.nets_ema, optims=self.optims, scaler=self.scaler, hp=self.hp,
                    params=[id(p) for o in self.optims.values() for g in o.param_groups for p in g['params']])

    def loop(self, run, start):
        trained.update(nets=self.nets, nets_ema=self.nets_ema, optims=self.optims, scaler=self.scaler, hp=self.hp,
                       params=[id(p) for o in self.optims.values() for g in o.param_groups for p in g['params']])
        return real_loop(self, run, start)

    monkeypatch.setattr(Trainer, '__init__', init)
    monkeypatch.setattr(Trainer, '_loop', loop)
    assert cli.main(_tiny_run(tmp_path) + ['--total_iters', '1']) == 0
    assert trained and all(trained[k] is made[k] for k in ('nets', 'nets_ema', 'optims', 'scaler', 'hp'))
    assert trained['params'] == made['params']
    assert set(made['optims']) == {'generator', 'mapping_network', 'style_encoder', 'discriminator'}


def test_the_ema_copies_share_the_fan_of_the_networks():
    from helpers import tiny_args

    from core.train.loop import Trainer
    trainer = Trainer(tiny_args(w_hpf=1, device='cpu'))
    assert trainer.nets_ema.fan is trainer.nets.fan
