"""Shared test helpers: the golden cases and the project on sys.path."""
import os
import sys

import pytest
import torch

TESTS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TESTS)
for path in (ROOT, TESTS):
    if path not in sys.path:
        sys.path.insert(0, path)

LOCAL_GOLDENS = os.path.join(TESTS, 'goldens')
SHARED_GOLDENS = os.path.join(ROOT, '..', 'shared', 'goldens')
# Cases too large to commit: read from ../shared/goldens when it is there.
LARGE_CASES = ('forward_afhq_256_s11', 'forward_celeba_hq_256_s11', 'masks_s41')


def goldens_dir():
    return os.environ.get('STARGAN_GOLDENS') or LOCAL_GOLDENS


def golden_cases(kind):
    """One pytest.param per ``{kind}_*.pt`` case, its id the file name without .pt."""
    folder = goldens_dir()
    found = {f[:-3]: os.path.join(folder, f) for f in os.listdir(folder)
             if f.startswith(kind + '_') and f.endswith('.pt')}
    if not os.environ.get('STARGAN_GOLDENS'):
        for name in LARGE_CASES:
            if name.startswith(kind + '_') and name not in found:
                path = os.path.join(SHARED_GOLDENS, name + '.pt')
                found[name] = path if os.path.isfile(path) else None
    params = []
    for name, path in sorted(found.items()):
        marks = [pytest.mark.parity]
        if path is None:
            marks.append(pytest.mark.skip(reason=f'{name}.pt is not committed (large) and '
                                                 f'../shared/goldens is absent'))
        params.append(pytest.param(path, id=name, marks=marks))
    return params


@pytest.fixture(scope='module')
def one_thread():
    """One intra-op thread for modules of tiny tensors (on a loaded 2-core machine the
    threads only spin, 10-100x slower); the previous setting is restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
