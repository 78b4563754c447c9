"""metrics/lpips.py: LPIPS against the lpips package, pairwise means over a group."""
import os

import lpips as lpips_pkg
import numpy as np
import pytest
import torch
from torchvision import models

from metrics import lpips

ALEXNET_FILE = os.path.basename(models.AlexNet_Weights.IMAGENET1K_V1.url)


def package_lpips_with(alexnet_file):
    """The lpips package's own module, trunk filled from a torchvision AlexNet state_dict."""
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        pkg = lpips_pkg.LPIPS(net='alex', version='0.1', pnet_rand=True, verbose=False)
    state = torch.load(alexnet_file, weights_only=True)
    trunk = {}
    for name in pkg.net.state_dict():            # sliceK.N.weight <- features.N.weight
        _, index, kind = name.split('.')
        trunk[name] = state[f'features.{index}.{kind}']
    pkg.net.load_state_dict(trunk)
    return pkg.eval()


def test_lpips_agrees_with_the_package_and_is_pairwise(offline_home):
    net = lpips.build_lpips(None, 'cpu')
    assert lpips.build_lpips(None, 'cpu') is net
    g = torch.Generator().manual_seed(0)
    group = [torch.rand(2, 3, 32, 32, generator=g) * 2 - 1 for _ in range(3)]
    pkg = package_lpips_with(str(offline_home / 'hub' / 'checkpoints' / ALEXNET_FILE))
    with torch.no_grad():
        pairs = [(i, j) for i in range(3) for j in range(i + 1, 3)]
        ours = [net(group[i], group[j]).item() for i, j in pairs]
        theirs = [pkg(group[i], group[j]).mean().item() for i, j in pairs]
        assert net(group[0], group[0]).item() == 0.0
    assert ours == pytest.approx(theirs, rel=1e-5)       # only the epsilon placement differs
    assert min(ours) > 0
    assert lpips.calculate_lpips_given_images(group) == pytest.approx(np.mean(ours), rel=1e-6)


def test_lpips_group_errors():
    x = torch.zeros(1, 3, 16, 16)
    with pytest.raises(lpips.MetricsError, match='at least 2'):
        lpips.calculate_lpips_given_images([x])
    with pytest.raises(lpips.MetricsError, match='same shape'):
        lpips.calculate_lpips_given_images([x, torch.zeros(2, 3, 16, 16)])
