"""Fixtures of the metrics tests: offline Inception v3 and AlexNet weights (filled by name)."""
import pytest
from weights_by_name import fill_torch_hub

from metrics import fid


@pytest.fixture(scope='session')
def torch_home(tmp_path_factory):
    """A TORCH_HOME whose hub cache holds name-filled Inception v3 and AlexNet weights."""
    return fill_torch_hub(tmp_path_factory.mktemp('torch_home'))


@pytest.fixture
def offline_home(torch_home, monkeypatch):
    monkeypatch.setenv('TORCH_HOME', str(torch_home))
    return torch_home


@pytest.fixture
def inception(offline_home):
    return fid.build_inception(None, 'cpu')
