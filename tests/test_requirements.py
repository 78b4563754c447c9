"""requirements.txt states a minimum for every package, the environment the tests run in
meets it, and the web demo's gradio is at least the version whose API it uses."""
import os
import re
from importlib.metadata import PackageNotFoundError, version

import pytest
from helpers import ROOT
from packaging.version import Version


def requirements():
    out = {}
    with open(os.path.join(ROOT, 'requirements.txt'), encoding='utf-8') as f:
        for line in f:
            line = line.split('#', 1)[0].strip()
            if line:
                m = re.fullmatch(r'([A-Za-z0-9_.-]+)\s*(?:>=\s*([0-9][0-9.]*))?', line)
                assert m, f'unexpected requirement line {line!r}'
                out[m.group(1)] = m.group(2)
    return out


def test_every_requirement_has_a_minimum_that_is_installed():
    reqs = requirements()
    assert {'torch', 'gradio', 'huggingface_hub', 'safetensors'} <= set(reqs)
    unpinned = sorted(name for name, minimum in reqs.items() if minimum is None)
    assert not unpinned, f'no minimum for {unpinned}'
    for name, minimum in reqs.items():
        try:
            installed = version(name)
        except PackageNotFoundError:
            pytest.fail(f'{name} is not installed')
        assert Version(installed) >= Version(minimum), f'{name} {installed} is below the stated minimum {minimum}'


def test_the_web_demo_needs_gradio_6():
    """--mode serve passes css= to launch() (gradio 6) and relies on gradio's check that an
    upload's path lies in its cache (5.31 on)."""
    assert Version(requirements()['gradio']) >= Version('6')
