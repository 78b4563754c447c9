"""core/nn/fan.py beyond the goldens (tests/parity/test_parity.py): the masks under autocast."""
import pytest
import torch
from helpers import tiny_nets

from core.nn.fan import fan_masks


# ------------------------------------------------------------------ FAN under autocast (docs/first_gpu_run.md item 7)
@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
def test_fan_masks_are_float32_under_autocast(dtype):
    nets, _, args = tiny_nets(1)
    x = torch.rand(2, 3, 256, 256) * 2 - 1
    ref = fan_masks(nets, 1, x)
    with torch.autocast('cpu', dtype=dtype):
        got = fan_masks(nets, 1, x)
    for a, b in zip(ref, got):
        assert b.dtype == torch.float32 and torch.equal(a, b)
    assert 0 < ref[0].mean() < 1  # not a constant mask


def test_fan_masks_where_torch_has_no_autocast_for_the_device(monkeypatch):
    """torch versions before MPS autocast reject torch.autocast('mps', ...) outright: simulated
    here with an autocast that rejects every device type; the masks are those of a plain call."""
    nets, _, args = tiny_nets(1)
    x = torch.rand(1, 3, 256, 256) * 2 - 1
    ref = fan_masks(nets, 1, x)
    tried = []

    def old_autocast(device_type, *a, **k):
        tried.append(device_type)
        raise RuntimeError(f"User specified an unsupported autocast device_type '{device_type}'")

    monkeypatch.setattr(torch, 'autocast', old_autocast)
    got = fan_masks(nets, 1, x)
    assert tried == ['cpu']
    for a, b in zip(ref, got):
        assert b.dtype == torch.float32 and torch.equal(a, b)
