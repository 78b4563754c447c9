"""core/use/inputs.py: images of every kind as one batch in [-1, 1], domains by name or index,
tensors as PIL images (through the API: tests/core/test_api.py)."""
import numpy as np
import pytest
import torch
from PIL import Image
from tiny_run import make_image

from core.errors import UserError
from core.io.images import to_uint8
from core.use.inputs import as_batch, domain_index, to_pil


def test_a_tensor_of_another_size_is_resized_close_to_pil(tmp_path):
    """torchvision's antialiased resize of a tensor against PIL's of the image (smooth: a gradient)."""
    ramp = np.linspace(0, 255, 200)
    smooth = np.stack([np.add.outer(ramp, ramp) / 2, np.add.outer(ramp, 255 - ramp) / 2,
                       np.tile(ramp, (200, 1))], axis=2).astype(np.uint8)
    Image.fromarray(smooth).save(tmp_path / 'smooth.png')
    by_pil = as_batch(tmp_path / 'smooth.png', 64, 'cpu')
    by_tensor = as_batch(as_batch(tmp_path / 'smooth.png', 200, 'cpu'), 64, 'cpu')
    assert by_tensor.shape == by_pil.shape and (by_tensor - by_pil).abs().max() < 0.02


def test_a_list_is_one_batch_and_every_kind_reads_the_same(tmp_path):
    paths = [make_image(tmp_path / f'{i}.png', size=40 + 8 * i, seed=i) for i in range(2)]
    pil = Image.open(paths[0])
    one = as_batch(paths[0], 32, 'cpu')
    assert one.shape == (1, 3, 32, 32) and one.dtype == torch.float32 and -1 <= one.min() and one.max() <= 1
    for image in (str(paths[0]), pil, np.asarray(pil), np.asarray(pil.convert('RGBA')), one, one[0]):
        assert torch.equal(as_batch(image, 32, 'cpu'), one)
    both = as_batch([paths[0], paths[1]], 32, 'cpu')
    assert both.shape == (2, 3, 32, 32) and torch.equal(both[:1], one)


@pytest.mark.parametrize('image, match', [
    (np.zeros((8, 8, 3), np.float32), 'numpy image must be uint8'),
    (np.zeros((8, 8, 2), np.uint8), 'numpy image must be uint8'),
    (torch.zeros(3, 8, 8, dtype=torch.uint8), 'float in'),
    (torch.zeros(1, 8, 8), r'\(3, H, W\)'),
    (42, 'cannot read an image from a int'),
    ([], 'no images'),
])
def test_bad_images_are_one_line_errors(image, match):
    with pytest.raises(UserError, match=match) as e:
        as_batch(image, 32, 'cpu')
    assert '\n' not in str(e.value)


def test_domains_by_name_or_index():
    names = ['cat', 'dog', 'wild']
    assert [domain_index(v, names, 'domain') for v in ('dog', 1, np.int64(2), '0')] == [1, 1, 2, 0]
    with pytest.raises(UserError, match='domain is required'):
        domain_index(None, names, 'domain')
    for bad in ('zebra', 3, -1, True, '7'):
        with pytest.raises(UserError, match=r"is not a domain of this model; use one of cat, dog, wild \(or an index\), hint"):
            domain_index(bad, names, 'domain', hint=', hint')


def test_to_pil_rounds_as_saved_files():
    x = torch.linspace(-1, 1, 2 * 3 * 4 * 5).reshape(2, 3, 4, 5)
    images = to_pil(x)
    assert [im.size for im in images] == [(5, 4)] * 2 and all(im.mode == 'RGB' for im in images)
    assert all(np.array_equal(np.asarray(im), a) for im, a in zip(images, to_uint8(x)))
