"""core/train/losses.py beyond the goldens (tests/parity/test_parity.py): R1 under a GradScaler."""
import pytest
import torch

from core.train.losses import r1_reg


# ------------------------------------------------------------------ R1 under fp16 (docs/first_gpu_run.md item 5)
def test_r1_under_a_grad_scaler_keeps_small_gradients():
    """A discriminator whose input gradients are 1e-8 (below fp16's smallest number): the
    unscaled penalty underflows to 0 in the fp16 activations; taken of the scaled output
    and unscaled in float32, it equals the float32 penalty."""
    x = torch.randn(4, 3, 8, 8, requires_grad=True)
    weight = torch.full((3, 8, 8), 1e-8)

    def d_out(half):
        h = x.half() if half else x
        return (h * weight.to(h.dtype)).flatten(1).sum(1)

    exact = r1_reg(d_out(False), x).item()
    assert exact == pytest.approx(0.5 * 192 * 1e-16, rel=1e-4)
    assert r1_reg(d_out(True), x).item() == 0.0  # what fp16 gave before
    scale = torch.tensor(2.0 ** 10)
    assert r1_reg(d_out(True), x, scale=scale).item() == pytest.approx(exact, rel=1e-2)


# ------------------------------------------------------------------ the R1 pass under --compile
def test_eager_is_the_module_under_torch_compile():
    from core.train.losses import eager
    net = torch.nn.Linear(2, 1)
    assert eager(net) is net
    assert eager(torch.compile(net, backend='eager')) is net
