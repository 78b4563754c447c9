"""core/device.py: the one device decision (--device), the local GPU of a torchrun process,
cuDNN's autotuner for CUDA training (GPU paths: docs/first_gpu_run.md items 9, 11)."""
import pytest
import torch
from helpers import switched

from core import device as device_mod
from core.device import select_device
from core.errors import UserError


def test_select_device(monkeypatch):
    assert select_device('cpu') == torch.device('cpu')
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    assert select_device('auto') == torch.device('cpu')
    assert select_device(None) == torch.device('cpu')
    with pytest.raises(UserError, match='CUDA is not available'):
        select_device('cuda')
    with pytest.raises(UserError, match='not a device'):
        select_device('gpu0')
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(torch.cuda, 'device_count', lambda: 1)
    assert select_device('auto') == torch.device('cuda')
    assert select_device('cuda:0') == torch.device('cuda:0')
    with pytest.raises(UserError, match='cuda:3'):
        select_device('cuda:3')


def test_local_rank_maps_to_a_visible_gpu():
    assert device_mod.local_cuda_index(3, 8) == 3
    assert device_mod.local_cuda_index(3, 1) == 0  # the scheduler shows each process its own GPU
    with pytest.raises(device_mod.UserError, match='nproc_per_node 2'):
        device_mod.local_cuda_index(2, 2)


def test_cudnn_benchmark_for_cuda_training_only():
    with switched(torch.backends.cudnn, benchmark=False):
        device_mod.configure_training(torch.device('cpu'))
        assert torch.backends.cudnn.benchmark is False
        device_mod.configure_training(torch.device('cuda', 0))
        assert torch.backends.cudnn.benchmark is True


def test_data_workers_auto_shares_this_processs_cores(monkeypatch):
    """--num_workers N: N for every loader; 'auto': a loader's share of the cores this process
    may use (its affinity, divided among torchrun's processes on the machine), less the one
    the training loop runs on, at least one."""
    from core.device import data_workers
    monkeypatch.setattr(device_mod.os, 'sched_getaffinity', lambda pid: set(range(32)), raising=False)
    monkeypatch.delenv('LOCAL_WORLD_SIZE', raising=False)
    assert data_workers(4, 1 / 3) == data_workers(4, 2 / 3) == 4  # a number is taken as it is
    assert data_workers(0) == 0
    assert (data_workers('auto', 1 / 3), data_workers('auto', 2 / 3), data_workers('auto')) == (10, 21, 31)
    monkeypatch.setenv('LOCAL_WORLD_SIZE', '8')  # 4 cores per process: 3 for the loaders
    assert (data_workers('auto', 1 / 3), data_workers('auto', 2 / 3)) == (1, 2)
    monkeypatch.setattr(device_mod.os, 'sched_getaffinity', lambda pid: {0, 1}, raising=False)
    assert (data_workers('auto', 1 / 3), data_workers('auto', 2 / 3)) == (1, 1)  # never none
