"""core/device.py: the one device decision (--device), the local GPU of a torchrun process,
cuDNN's autotuner for CUDA training (GPU paths: docs/first_gpu_run.md items 9, 11)."""
import pytest
import torch

from core import device as device_mod
from core.device import select_device
from core.errors import UserError
from helpers import switched


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
