"""Fixtures shared by the tests (helper functions are in helpers.py)."""
import pytest
import torch
from PIL import Image


@pytest.fixture(scope='module')
def one_thread():
    """One intra-op thread for modules of tiny tensors (on a loaded 2-core machine the
    threads only spin, 10-100x slower); the previous setting is restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def eps_as_png(tmp_path, monkeypatch):
    """An EPS file named .png (PIL would hand it to Ghostscript), and PIL's EPS plugin made to fail
    the test if it is ever asked to read it."""
    from PIL import EpsImagePlugin
    path = tmp_path / 'data' / 'cat' / 'photo.png'
    path.parent.mkdir(parents=True)
    Image.new('RGB', (16, 16), (10, 20, 30)).save(path, format='EPS')
    assert path.read_bytes().startswith(b'%!PS')
    touched = []

    def refuse(*a, **k):
        touched.append(a)
        raise AssertionError('the EPS plugin was invoked')
    monkeypatch.setattr(EpsImagePlugin.EpsImageFile, '_open', refuse)
    monkeypatch.setattr(EpsImagePlugin, 'Ghostscript', refuse)
    monkeypatch.setattr(EpsImagePlugin, '_accept', refuse)
    yield path
    assert touched == []
