"""Interpolation videos: timing, layout, content, streaming (flat memory), errors."""
import inspect
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from helpers import tiny_nets
from munch import Munch

import core.use.video as video
from core.errors import UserError
from core.io.images import to_uint8 as tensor_to_uint8
from core.use.video import VideoWriter, interpolation_weights, ref_frames, video_latent, video_ref

imageio_ffmpeg = pytest.importorskip('imageio_ffmpeg')

S = 16  # image size of the tiny nets


def read_video(path):
    """(meta, frames (T, H, W, 3) uint8) of a video file."""
    gen = imageio_ffmpeg.read_frames(str(path))
    meta = next(gen)
    w, h = meta['size']
    frames = [np.frombuffer(b, np.uint8).reshape(h, w, 3) for b in gen]
    return meta, np.stack(frames)


def cell(frame, row, col, size):
    return frame[row * size:(row + 1) * size, col * size:(col + 1) * size].astype(np.float64)


def up(img_u8, k):
    return img_u8.repeat(k, 0).repeat(k, 1).astype(np.float64)


@pytest.fixture(scope='module')
def nets():
    """Tiny networks of S px (helpers.tiny_nets' EMA copies: PyTorch's init), in eval mode."""
    _, n, _ = tiny_nets(img_size=S, style_dim=8, latent_dim=4, max_conv_dim=16)
    for m in n.values():
        m.eval()
    return n


def smooth_images(n, seed):
    """Smooth random images (blurred noise): stand-ins the codec keeps faithfully."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, 4, 4, generator=g) * 2 - 1
    return torch.nn.functional.interpolate(x, size=S, mode='bilinear', align_corners=False)


W_HPF = 0


pytestmark = pytest.mark.usefixtures('one_thread')


# ---------------------------------------------------------------------------- timing

def test_interpolation_weights_follow_the_spec(tmp_path):
    w = interpolation_weights()
    assert len(w) == 31
    assert w[0] == 0.0 and w[-10:] == [1.0] * 10
    assert np.allclose(w[1:21], torch.sigmoid(torch.arange(-5, 5, 0.5)).numpy())
    assert all(a < b for a, b in zip(w[:21], w[1:21]))
    # as written: a one-transition video (two references) shows the weights frame by frame,
    # then holds its last frame 10 more times, at 15 fps (30 fps played at half speed). The
    # stand-in generator paints the style's grey level: reference styles -1 and 1, so the
    # output cell's grey is the frame's weight.
    grey = Munch(style_encoder=lambda x, y: x.mean((1, 2, 3))[:, None],
                 generator=lambda x, s, masks=None: torch.zeros_like(x) + s[:, :1, None, None])
    refs = torch.stack([torch.full((3, S, S), -1.0), torch.full((3, S, S), 1.0)])
    path = video_ref(grey, W_HPF, smooth_images(1, 0), refs, [0, 1], str(tmp_path / 'one.mp4'), scale=1)
    meta, frames = read_video(path)
    assert meta['fps'] == 15.0
    assert len(frames) == len(w) + 10
    shown = [cell(frame, 1, 1, S)[4:-4, 4:-4].mean() / 255 for frame in frames]
    np.testing.assert_allclose(shown, w + [1.0] * 10, atol=0.02)  # 8-bit grey, lossy codec: measured 0.007 off


# ---------------------------------------------------------------------------- writer

def test_writer_h264_yuv420p_half_speed_and_content(tmp_path):
    rng = np.random.default_rng(0)
    base = np.kron(rng.integers(0, 256, (6, 10, 3)), np.ones((4, 4, 1))).astype(np.uint8)  # 24x40 blocks
    path = tmp_path / 'sub' / 'v.mp4'
    with VideoWriter(path) as w:
        for i in range(7):
            w.write(np.roll(base, i, axis=1))
    assert w.frames == 7
    meta, frames = read_video(path)
    assert meta['codec'] == 'h264' and meta['pix_fmt'].startswith('yuv420p')
    assert meta['fps'] == 15.0 and meta['size'] == (40, 24) and len(frames) == 7
    for i in (0, 6):
        assert np.abs(frames[i].astype(float) - np.roll(base, i, axis=1)).mean() < 6  # lossy codec
    assert os.listdir(path.parent) == ['v.mp4']  # no temporary file left


def test_writer_scales_and_pads_odd_sizes(tmp_path):
    x = smooth_images(3, 1)[:, :, :15, :9]  # odd 9x15
    with VideoWriter(tmp_path / 'v.mp4', scale=2) as w:
        for img in x:
            w.write(tensor_to_uint8(img))
    meta, frames = read_video(tmp_path / 'v.mp4')
    assert meta['size'] == (18, 30) and len(frames) == 3      # 9x15 * 2 is already even
    assert np.abs(frames[1].astype(float) - up(tensor_to_uint8(x[1]), 2)).mean() < 4
    with VideoWriter(tmp_path / 'odd.mp4') as w:
        w.write(tensor_to_uint8(x[0]))
    assert read_video(tmp_path / 'odd.mp4')[0]['size'] == (10, 16)   # padded to even


def test_writer_error_leaves_no_file(tmp_path):
    path = tmp_path / 'v.mp4'
    with pytest.raises(RuntimeError, match='boom'):
        with VideoWriter(path) as w:
            w.write(np.zeros((16, 16, 3), np.uint8))
            raise RuntimeError('boom')
    assert os.listdir(tmp_path) == []
    with pytest.raises(ValueError, match='frame of size'):
        with VideoWriter(path) as w:
            w.write(np.zeros((16, 16, 3), np.uint8))
            w.write(np.zeros((16, 18, 3), np.uint8))
    assert os.listdir(tmp_path) == []


def test_writer_user_errors(tmp_path, monkeypatch):
    with pytest.raises(UserError, match=r'\.mp4'):
        VideoWriter(tmp_path / 'v.avi')
    monkeypatch.setitem(sys.modules, 'imageio_ffmpeg', None)  # import now fails
    with pytest.raises(UserError, match='pip install imageio-ffmpeg'):
        VideoWriter(tmp_path / 'v.mp4')
    with pytest.raises(UserError, match='pip install imageio-ffmpeg'):
        video_ref(None, W_HPF, smooth_images(1, 0), smooth_images(2, 0), [0, 1], str(tmp_path / 'v.mp4'))


# ---------------------------------------------------------------------------- reference video

def test_video_ref_frames_layout_and_content(nets, tmp_path):
    x_src, x_ref = smooth_images(3, 2), smooth_images(3, 3)
    y_ref = torch.tensor([0, 1, 1])
    path = video_ref(nets, W_HPF, x_src, x_ref, y_ref, str(tmp_path / 'ref.mp4'), scale=2)
    meta, frames = read_video(path)
    k, c = 2, 2 * S
    assert len(frames) == 2 * 31 + 10
    assert meta['size'] == (4 * c, 2 * c) and meta['fps'] == 15.0
    with torch.no_grad():
        s = nets.style_encoder(x_ref, y_ref)
        first = nets.generator(x_src, s[0:1].expand(3, -1))
        middle = nets.generator(x_src, s[1:2].expand(3, -1))
        last = nets.generator(x_src, s[2:3].expand(3, -1))
    for j in range(3):
        # top row: the sources, unchanged all along
        assert np.abs(cell(frames[40], 0, j + 1, c) - up(tensor_to_uint8(x_src[j]), k)).mean() < 6
        # bottom row: translations with the first reference's style at frame 0, the second's
        # at the end of the first transition, the last one's in the held frames
        assert np.abs(cell(frames[0], 1, j + 1, c) - up(tensor_to_uint8(first[j]), k)).mean() < 6
        assert np.abs(cell(frames[30], 1, j + 1, c) - up(tensor_to_uint8(middle[j]), k)).mean() < 6
        assert np.abs(cell(frames[-1], 1, j + 1, c) - up(tensor_to_uint8(last[j]), k)).mean() < 6
    # bottom-left: the current reference; frames differ while the style moves
    assert np.abs(cell(frames[0], 1, 0, c) - up(tensor_to_uint8(x_ref[0]), k)).mean() < 6
    assert np.abs(cell(frames[-1], 1, 0, c) - up(tensor_to_uint8(x_ref[2]), k)).mean() < 6
    assert np.abs(frames[10].astype(float) - frames[0]).mean() > 1
    # the last frame is held 10 more times (on top of the 10 weights of 1)
    assert np.abs(frames[-20:].astype(float) - frames[-1]).mean(axis=(1, 2, 3)).max() < 1


def test_video_ref_loop_and_default_scale(nets, tmp_path):
    x = smooth_images(2, 4)
    meta, frames = read_video(video_ref(nets, W_HPF, x, x, [0, 1], str(tmp_path / 'v.mp4'), loop=True))
    k = video.auto_scale(S)
    assert k * S >= 128
    assert len(frames) == 2 * 31 + 10 and meta['size'] == (3 * S * k, 2 * S * k)


def test_video_ref_needs_two_references(nets, tmp_path):
    with pytest.raises(UserError, match='at least 2 reference'):
        video_ref(nets, W_HPF, smooth_images(2, 0), smooth_images(1, 0), [0], str(tmp_path / 'v.mp4'))
    with pytest.raises(UserError, match='same size'):
        video_ref(nets, W_HPF, smooth_images(2, 0), torch.zeros(2, 3, 8, 8), [0, 1], str(tmp_path / 'v.mp4'))
    assert os.listdir(tmp_path) == []


def test_video_ref_masks_computed_once_and_passed(nets, tmp_path):
    calls, seen = [], []

    class Fan:
        def get_heatmap(self, x):
            calls.append(x.shape)
            return [torch.zeros(x.size(0), 1, 8, 8), torch.zeros(x.size(0), 1, 8, 8)]

    class G(torch.nn.Module):
        def forward(self, x, s, masks=None):
            seen.append(masks)
            return x * 0 + s[:, :1, None, None].tanh()

    stub = Munch(generator=G(), style_encoder=nets.style_encoder, fan=Fan())
    x = smooth_images(2, 5)
    video_ref(stub, 1.0, x, smooth_images(3, 6), [0, 1, 0], str(tmp_path / 'v.mp4'), scale=1)
    assert calls == [x.shape]                      # FAN once, on the sources
    assert len(seen) == 2 * 31 and all(m is seen[0] and m is not None for m in seen)
    with pytest.raises(UserError, match='FAN'):
        video_ref(Munch(generator=G(), style_encoder=nets.style_encoder), 1.0, x,
                  smooth_images(2, 6), [0, 1], str(tmp_path / 'w.mp4'))


def test_frames_are_produced_lazily(nets):
    produced = []
    gen = nets.generator

    class Counting(torch.nn.Module):
        def forward(self, *a, **k):
            produced.append(1)
            return gen(*a, **k)

    stub = Munch(generator=Counting(), style_encoder=nets.style_encoder)
    frames = ref_frames(stub, W_HPF, smooth_images(2, 0), smooth_images(50, 1), torch.zeros(50, dtype=torch.long))
    assert inspect.isgenerator(frames) and produced == []
    next(frames), next(frames)
    assert len(produced) == 2  # one generator call per frame, only when asked


_RSS_CHILD = r"""
import resource, sys, torch
from munch import Munch
from core.nn.networks import Generator, StyleEncoder
from core.use.video import video_ref
torch.set_num_threads(1)
n_ref, out = int(sys.argv[1]), sys.argv[2]
torch.manual_seed(0)
nets = Munch(generator=Generator(32, 8, 16, 0, dim_in=8).eval(),
             style_encoder=StyleEncoder(32, 8, 2, 16, dim_in=8).eval())
x_src, x_ref = torch.rand(4, 3, 32, 32) * 2 - 1, torch.rand(n_ref, 3, 32, 32) * 2 - 1
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
video_ref(nets, 0, x_src, x_ref, torch.arange(n_ref) % 2, out)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
"""


def _peak_rss_growth_kb(n_refs, tmp_path):
    """Peak-RSS growth (kB) while writing a video_ref, one fresh process per count (run together)."""
    from helpers import ROOT as root
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get('PYTHONPATH', ''))
    procs = [subprocess.Popen([sys.executable, '-c', _RSS_CHILD, str(n), str(tmp_path / f'{n}.mp4')],
                              cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for n in n_refs]
    growth = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-2000:]
        growth.append(int(out.strip().splitlines()[-1]))
    return growth


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != 'linux', reason='ru_maxrss is in kB on Linux')
def test_memory_does_not_grow_with_references(tmp_path):
    # 10 references = 289 frames of 3x64x160 floats (123 kB each, 491 kB once scaled to
    # uint8 256x640): keeping them would add 35-140 MB to the peak over 2 references (41 frames)
    small, large = _peak_rss_growth_kb([2, 10], tmp_path)
    assert large < small + 15_000, (small, large)


# ---------------------------------------------------------------------------- latent video

def test_video_latent_frames_and_truncation(nets, tmp_path):
    x = smooth_images(2, 7)
    zs = [torch.randn(4), torch.randn(2, 4), torch.randn(1, 4)]
    torch.manual_seed(1)
    path = video_latent(nets, W_HPF, x, [0, torch.tensor([1, 1])], zs, 1.0, str(tmp_path / 'l.mp4'),
                        scale=2, n_mean=64)
    meta, frames = read_video(path)
    c = 2 * S
    assert len(frames) == 5 * 31 + 10 and meta['size'] == (2 * c, 2 * c)
    with torch.no_grad():  # psi = 1: the first style is F(z0, domain 0) itself
        out = nets.generator(x, nets.mapping_network(zs[0][None].expand(2, -1), torch.tensor([0, 0])))
    for j in range(2):
        assert np.abs(cell(frames[0], 0, j, c) - up(tensor_to_uint8(x[j]), 2)).mean() < 6
        assert np.abs(cell(frames[0], 1, j, c) - up(tensor_to_uint8(out[j]), 2)).mean() < 6
    # a (K, N, latent_dim) tensor of codes works as a list of K codes
    path = video_latent(nets, W_HPF, x, [0], torch.randn(3, 2, 4), 1.0, str(tmp_path / 't.mp4'), scale=1, n_mean=8)
    assert len(read_video(path)[1]) == 2 * 31 + 10
    # psi = 0: every code of a domain gives its mean style, so the video stands still
    path = video_latent(nets, W_HPF, x, [1], zs, 0.0, str(tmp_path / 'p.mp4'), scale=1, n_mean=64)
    _, still = read_video(path)
    assert len(still) == 2 * 31 + 10
    assert np.abs(still.astype(float) - still[0]).max() <= 2


def test_domain_mean_style_is_the_mean_of_the_mapping(nets):
    torch.manual_seed(3)
    got = video.domain_mean_style(nets.mapping_network, 1, 4, torch.device('cpu'), n=300, chunk=128)
    torch.manual_seed(3)
    z = torch.randn(300, 4)  # one draw of all the codes, as upstream
    with_gen = video.domain_mean_style(nets.mapping_network, 1, 4, torch.device('cpu'), n=300,
                                       generator=torch.Generator().manual_seed(3))
    assert torch.allclose(got, with_gen, atol=1e-6)
    with torch.no_grad():
        want = nets.mapping_network(z, torch.ones(300, dtype=torch.long)).mean(0, keepdim=True)
    assert got.shape == (1, 8) and torch.allclose(got, want, atol=1e-5)


def test_video_latent_argument_errors(nets, tmp_path):
    x = smooth_images(2, 0)
    with pytest.raises(UserError, match='at least 2'):
        video_latent(nets, W_HPF, x, [0], [torch.randn(4)], 1.0, str(tmp_path / 'l.mp4'), n_mean=8)
    with pytest.raises(ValueError, match='latent codes'):
        video_latent(nets, W_HPF, x, [0], [torch.randn(3, 4)] * 2, 1.0, str(tmp_path / 'l.mp4'), n_mean=8)
    with pytest.raises(ValueError, match='one domain'):
        video_latent(nets, W_HPF, x, [torch.tensor([0, 1])], [torch.randn(4)] * 2, 1.0,
                     str(tmp_path / 'l.mp4'), n_mean=8)
    assert os.listdir(tmp_path) == []
