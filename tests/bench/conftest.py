"""Fixtures of the bench tests: stand-in networks that translate the demo's shapes perfectly
(or not at all), and the demo's validation images."""
import numpy as np
import pytest
import torch
import torch.nn as nn
from munch import Munch

from bench.shape_classifier import segment, shape_colours
from core.datasets.demo_shapes import SHAPES, make_shapes_dataset, render_shape


class _Oracle(nn.Module):
    """Stub networks that translate perfectly: the style holds (domain, fg, bg) and the
    generator redraws the source's shape box as the target shape with the style's colours."""

    def __init__(self, domains):
        super().__init__()
        self.domains = domains
        self.dummy = nn.Parameter(torch.zeros(1))

    @staticmethod
    def _u8(x):
        return ((x.permute(0, 2, 3, 1) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()

    def encode(self, x, y):  # style encoder
        rows = []
        for img, d in zip(self._u8(x), y.tolist()):
            fg, bg = shape_colours(img)
            rows.append([float(d)] + list(fg / 255) + list(bg / 255))
        return torch.tensor(rows)

    def map(self, z, y):  # mapping network: colours from z
        fg = torch.sigmoid(z[:, :3])
        return torch.cat([y.float()[:, None], fg, (fg + 0.5) % 1.0], dim=1)

    def generate(self, x, s, masks=None):
        out = []
        for img, st in zip(self._u8(x), s):
            mask, _ = segment(img)
            rows, cols = np.nonzero(mask)
            size = max(rows.max() - rows.min(), cols.max() - cols.min()) + 1
            center = ((cols.min() + cols.max() + 1) / 2, (rows.min() + rows.max() + 1) / 2)
            fg, bg = (st[1:4] * 255).tolist(), (st[4:7] * 255).tolist()
            out.append(render_shape(self.domains[int(st[0])], fg, bg, center, size, img.shape[0]))
        return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).float() / 127.5 - 1


class _Call(nn.Module):
    def __init__(self, fn, owner):
        super().__init__()
        self.fn, self.owner = fn, owner

    def forward(self, *a, **k):
        return self.fn(*a, **k)


def _stub_nets(identity=False):
    o = _Oracle(list(SHAPES))
    gen = _Call((lambda x, s, masks=None: x.clone()) if identity else o.generate, o)
    return Munch(generator=gen, mapping_network=_Call(o.map, o), style_encoder=_Call(o.encode, o))


def _val_images(tmp_path, n):
    from bench.demo_quality import load_val_images
    make_shapes_dataset(tmp_path, img_size=32, n_train=1, n_val=n, seed=2)
    return load_val_images(str(tmp_path / 'val'), 32, n)



@pytest.fixture
def stub_nets():
    """``stub_nets(identity=False)``: G, F, E stand-ins; a perfect translator, or the identity."""
    return _stub_nets


@pytest.fixture
def val_images():
    """``val_images(folder, n)``: ``n`` demo validation images per domain, generated in ``folder``."""
    return _val_images
