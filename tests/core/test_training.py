"""core/training.py: the training loop's stop signals (its whole runs: tests/e2e/test_train_cli.py,
tests/e2e/test_faults.py)."""
import signal

from core.training import _StopFlag


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
