"""FID and LPIPS against the numbers the official metric code produced (``metrics_*.pt``).

Backbones are filled by torchvision parameter name (``value_for(name, tensor, gain=2**0.5)``)
for Inception v3 (aux_logits=True, init_weights=False) and AlexNet; LPIPS heads are the
``lpips`` package's v0.1 weights, as in the golden run.
"""
import os

import pytest
import torch
from helpers import golden_cases
from torchvision import models
from weights_by_name import value_for

from metrics.fid import calculate_fid_given_paths
from metrics.lpips import calculate_lpips_given_images

RTOL = 1e-4            # goldens/README.md, "metrics"
DEFAULT_IMG_SIZE = 64  # README: 64x64 PNGs, img_size=64, batch 8 (used when the case omits them)
DEFAULT_BATCH_SIZE = 8


def name_filled(net, path):
    torch.save({k: value_for(k, v, gain=2 ** 0.5) for k, v in net.state_dict().items()}, path)
    return str(path)


@pytest.fixture(scope='module')
def backbones(tmp_path_factory):
    folder = tmp_path_factory.mktemp('backbones')
    inception = models.inception_v3(weights=None, aux_logits=True, init_weights=False)
    return (name_filled(inception, folder / 'inception_v3.pth'),
            name_filled(models.alexnet(weights=None), folder / 'alexnet.pth'))


def relative_error(got, expected):
    return abs(got - expected) / abs(expected)


@pytest.mark.parity
@pytest.mark.slow  # Inception v3 on 48 images: minutes on a busy 2-core machine
@pytest.mark.parametrize('case', golden_cases('metrics'))
def test_metrics_parity(case, backbones):
    golden = torch.load(case, weights_only=False)
    images = os.path.join(os.path.dirname(case), f"metrics_images_s{golden['seed']}")
    img_size = golden.get('img_size', DEFAULT_IMG_SIZE)
    batch_size = golden.get('batch_size', DEFAULT_BATCH_SIZE)
    inception_path, alexnet_path = backbones

    fid = calculate_fid_given_paths([os.path.join(images, 'real'), os.path.join(images, 'fake')],
                                    img_size, batch_size, inception_path=inception_path, device='cpu')
    lpips = calculate_lpips_given_images([x.float() for x in golden['lpips_group']],
                                         alexnet_path=alexnet_path)
    errors = {'FID': (fid, golden['fid'], relative_error(fid, golden['fid'])),
              'LPIPS': (lpips, golden['lpips'], relative_error(lpips, golden['lpips']))}
    bad = {k: v for k, v in errors.items() if not v[2] <= RTOL}
    assert not bad, ', '.join(f'{k} {got!r} vs golden {exp!r} (relative error {err:.2e} > {RTOL})'
                              for k, (got, exp, err) in bad.items())
