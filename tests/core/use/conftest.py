"""Fixtures of the tests of core/use/: ``runs``, tiny checkpoints exported as Hub folders."""
import pytest
from hub_helpers import hub_runs


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    """``runs(w_hpf, img_size)`` -> (checkpoint folder, Hub folder, cfg, filled networks); each once per module."""
    return hub_runs(tmp_path_factory)
