"""Fixtures shared by the tests (helper functions are in helpers.py)."""
import pytest
import torch


@pytest.fixture(scope='module')
def one_thread():
    """One intra-op thread for modules of tiny tensors (on a loaded 2-core machine the
    threads only spin, 10-100x slower); the previous setting is restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
