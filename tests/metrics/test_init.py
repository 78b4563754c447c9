"""metrics/__init__.py: where the metric networks' weights come from (torchvision's cache or a
path), and one-line errors when they are missing or wrong."""
import os

import pytest
import torch
from torchvision import models

from metrics import MissingWeightsError, fid, lpips

INCEPTION_FILE = os.path.basename(models.Inception_V3_Weights.IMAGENET1K_V1.url)
ALEXNET_FILE = os.path.basename(models.AlexNet_Weights.IMAGENET1K_V1.url)


def no_download(monkeypatch):
    def refuse(*a, **k):
        raise OSError('offline')
    monkeypatch.setattr(torch.hub, 'download_url_to_file', refuse)


def test_missing_weights_raise_one_line_errors(tmp_path, monkeypatch):
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'empty_home'))
    no_download(monkeypatch)
    with pytest.raises(MissingWeightsError) as e:
        fid.build_inception(None, 'cpu')
    msg = str(e.value)
    assert '\n' not in msg and INCEPTION_FILE in msg and '--inception_path' in msg
    assert os.path.join(str(tmp_path / 'empty_home'), 'hub', 'checkpoints') in msg
    with pytest.raises(MissingWeightsError) as e:
        lpips.build_lpips(None, 'cpu')
    msg = str(e.value)
    assert '\n' not in msg and ALEXNET_FILE in msg and '--alexnet_path' in msg
    with pytest.raises(MissingWeightsError) as e:
        fid.build_inception(str(tmp_path / 'nope.pth'), 'cpu')
    assert '\n' not in str(e.value) and 'nope.pth' in str(e.value)


def test_wrong_or_corrupt_weight_files_raise_one_line_errors(torch_home, tmp_path):
    alex = str(torch_home / 'hub' / 'checkpoints' / ALEXNET_FILE)
    with pytest.raises(MissingWeightsError) as e:
        fid.build_inception(alex, 'cpu')
    assert '\n' not in str(e.value) and 'inception_v3' in str(e.value) and '--inception_path' in str(e.value)
    junk = tmp_path / 'junk.pth'
    junk.write_bytes(b'not a checkpoint')
    with pytest.raises(MissingWeightsError) as e:
        lpips.build_lpips(str(junk), 'cpu')
    assert '\n' not in str(e.value) and 'junk.pth' in str(e.value)
