"""core/io/images.py: reading image files as viewers show them, the formats read, the up-front check."""
import os

import numpy as np
import pytest
from helpers import DATA_SIZE as S
from helpers import one_line_error, solid
from PIL import Image

from core.datasets.folders import check_dataset
from core.datasets.pipeline import get_test_loader
from core.errors import UserError
from core.io.images import load_rgb

# ----------------------------------------------------------------------------- formats and modes

def test_image_formats_become_rgb(tmp_path):
    rgb = (200, 100, 50)
    base = Image.new('RGB', (S, S), rgb)
    paths = {}
    for ext in ['png', 'jpg', 'webp', 'bmp']:
        paths[ext] = tmp_path / f'a.{ext}'
        base.save(paths[ext], **({'lossless': True} if ext == 'webp' else {}))
    paths['gray'] = tmp_path / 'gray.png'
    Image.new('L', (S, S), 128).save(paths['gray'])
    paths['palette'] = tmp_path / 'pal.png'
    base.convert('P', palette=Image.ADAPTIVE).save(paths['palette'], transparency=0)
    paths['rgba'] = tmp_path / 'rgba.png'
    Image.new('RGBA', (S, S), rgb + (90,)).save(paths['rgba'])
    paths['cmyk'] = tmp_path / 'cmyk.jpg'
    base.convert('CMYK').save(paths['cmyk'], quality=100)
    paths['gray16'] = tmp_path / 'g16.png'
    Image.fromarray(np.full((S, S), 65535, np.uint16)).save(paths['gray16'])
    for kind, p in paths.items():
        img = load_rgb(str(p))
        assert img.mode == 'RGB' and img.size == (S, S), kind
        px = np.asarray(img)[S // 2, S // 2].astype(int)
        if kind == 'gray':
            assert px.tolist() == [128, 128, 128]
        elif kind in ('gray16', 'palette'):  # palette: its one colour is the transparent one -> white
            assert px.tolist() == [255, 255, 255]
        elif kind == 'rgba':  # alpha 90 of 255 over white
            assert np.abs(px - (np.array(rgb) * 90 + 255 * 165) / 255).max() <= 1, px
        else:  # lossy formats within a few levels
            assert np.abs(px - rgb).max() <= 6, (kind, px)


# ----------------------------------------------------------------------------- unreadable files

def test_image_check_agrees_with_decoding(tmp_path):
    """Every format: whole files pass, cut ones fail exactly when decoding them fails, and
    bytes after a file's end (some cameras write them) are no error."""
    from core.io.images import unreadable_reason
    arr = np.random.RandomState(0).randint(0, 256, (32, 32, 3), dtype=np.uint8)
    for ext, options in (('png', {}), ('jpg', {}), ('webp', {'lossless': True}), ('bmp', {})):
        whole = tmp_path / f'whole.{ext}'
        Image.fromarray(arr).save(whole, **options)
        data = whole.read_bytes()
        assert unreadable_reason(str(whole)) is None, ext
        for name, content in (('half', data[:len(data) // 2]), ('head', data[:60]),
                              ('trailing', data + bytes(50))):
            path = tmp_path / f'{name}.{ext}'
            path.write_bytes(content)
            try:
                load_rgb(str(path))
                decodes = True
            except UserError:
                decodes = False
            assert (unreadable_reason(str(path)) is None) == decodes, (ext, name)
            assert decodes == (name == 'trailing'), (ext, name)


def test_a_check_reads_again_unless_the_caller_keeps_what_it_found(tmp_path, monkeypatch):
    """``check_images`` keeps nothing between calls: each reads every file, unless the caller
    hands it the ``CheckedImages`` of an earlier check (then only files changed since)."""
    import core.io.images as images
    paths = [str(tmp_path / f'{i}.png') for i in range(3)]
    for i, p in enumerate(paths):
        solid(p, (i, 0, 0))
    read = []
    real = images.unreadable_reason
    monkeypatch.setattr(images, 'unreadable_reason', lambda path: read.append(path) or real(path))
    images.check_images(str(tmp_path), paths)
    images.check_images(str(tmp_path), paths)
    assert read == paths + paths
    del read[:]
    checked = images.CheckedImages()
    images.check_images(str(tmp_path), paths, checked)
    images.check_images(str(tmp_path), paths, checked)
    assert read == paths and sorted(checked) == paths
    del read[:]
    solid(paths[1], (9, 9, 9), size=S + 1)  # changed: read again, and found readable
    images.check_images(str(tmp_path), paths, checked)
    assert read == [paths[1]]
    del read[:]
    with open(paths[2], 'wb') as f:  # damaged after it was found readable: named
        f.write(b'this is not a png')
    one_line_error(lambda: images.check_images(str(tmp_path), paths, checked), '1 unreadable image file', '2.png')
    assert read == [paths[2]]


def test_an_image_read_error_keeps_its_message():
    """The error is the message it is given, whatever that holds."""
    from core.io.images import ImageReadError
    text = "line one\nImageReadError: cannot read image 'a.png'"
    assert str(ImageReadError(text)) == text


# ---------------------------------------------------------------- images as viewers show them

UPRIGHT = np.random.RandomState(5).randint(0, 256, (6, 10, 3), dtype=np.uint8)  # 10 wide, 6 high


UPRIGHT[0, 0] = [255, 0, 0]  # a red top-left corner


STORED = {1: lambda a: a,
          2: lambda a: a[:, ::-1],                      # mirrored left-right
          3: lambda a: a[::-1, ::-1],                   # upside down
          4: lambda a: a[::-1],                         # mirrored top-bottom
          5: lambda a: a.transpose(1, 0, 2),            # mirrored along the main diagonal
          6: lambda a: np.rot90(a, 1),                  # shown after a quarter turn clockwise
          7: lambda a: np.rot90(a, 2).transpose(1, 0, 2),
          8: lambda a: np.rot90(a, -1)}                 # shown after a quarter turn anticlockwise


def with_orientation(path, orientation):
    img = Image.fromarray(np.ascontiguousarray(STORED[orientation](UPRIGHT)))
    exif = Image.Exif()
    exif[0x0112] = orientation
    img.save(path, exif=exif)
    return path


@pytest.mark.parametrize('orientation', sorted(STORED))
def test_exif_orientation_is_applied(tmp_path, orientation):
    path = with_orientation(tmp_path / 'photo.png', orientation)
    assert np.array_equal(np.asarray(load_rgb(str(path))), UPRIGHT)


def test_every_reader_sees_the_upright_image(tmp_path):
    from metrics.fid import _open_rgb
    (tmp_path / 'd' / 'cat').mkdir(parents=True)
    with_orientation(tmp_path / 'd' / 'cat' / 'a.png', 6)
    loader = get_test_loader(str(tmp_path / 'd'), img_size=S, batch_size=1, shuffle=False, num_workers=0)
    x = next(iter(loader))[0][0]
    upright = np.asarray(Image.fromarray(UPRIGHT).resize((S, S), Image.BILINEAR), np.float64) / 127.5 - 1
    np.testing.assert_allclose(x.permute(1, 2, 0).numpy(), upright, atol=1e-6)
    assert np.array_equal(np.asarray(_open_rgb(str(tmp_path / 'd' / 'cat' / 'a.png'))), UPRIGHT)  # FID


@pytest.mark.parametrize('mode', ['RGBA', 'LA', 'P', 'RGB-tRNS', 'L-tRNS'])
def test_transparent_pixels_are_white(tmp_path, mode):
    path = tmp_path / 'a.png'
    opaque, hidden = (30, 60, 90), (0, 0, 0)  # hidden pixels store black, as many programs write them
    arr = np.zeros((4, 4, 3), np.uint8) + np.array(hidden, np.uint8)
    arr[:, :2] = opaque
    alpha = np.where(np.arange(4) < 2, 255, 0).astype(np.uint8)[None].repeat(4, 0)
    if mode in ('RGBA', 'LA'):
        img = Image.fromarray(np.dstack([arr, alpha]), 'RGBA').convert(mode)
        img.save(path)
    elif mode == 'P':
        img = Image.fromarray(arr).convert('P', palette=Image.ADAPTIVE, colors=4)
        img.save(path, transparency=img.getpixel((3, 0)))
    elif mode == 'RGB-tRNS':
        Image.fromarray(arr).save(path, transparency=hidden)
    else:
        Image.fromarray(arr).convert('L').save(path, transparency=0)
    got = np.asarray(load_rgb(str(path))).astype(int)
    want_opaque = np.asarray(Image.fromarray(arr).convert('L' if mode in ('LA', 'L-tRNS') else 'RGB').convert('RGB'))[0, 0]
    assert (got[:, 2:] == 255).all()  # the transparent half: white, not the black it stores
    assert np.abs(got[:, :2] - want_opaque).max() <= 1  # the opaque half as stored


def test_too_many_pixels_refused_before_decoding(tmp_path):
    from core.io.images import ImageTooLargeError
    path = tmp_path / 'big.png'
    Image.new('RGB', (300, 200)).save(path)
    path.write_bytes(path.read_bytes()[:80])  # header only: decoding it would fail
    with pytest.raises(ImageTooLargeError, match=r'300 x 200 pixels, more than 59,999'):
        load_rgb(str(path), max_pixels=59_999)
    with pytest.raises(UserError, match='cannot read image'):
        load_rgb(str(path), max_pixels=60_000)


# ----------------------------------------------------------------------------- one allow-list of formats

def test_a_file_of_another_format_is_refused_before_any_decoder(eps_as_png):
    msg = one_line_error(lambda: load_rgb(eps_as_png), f"cannot read image '{eps_as_png}'")
    from core.io.images import FORMATS_TEXT, IMAGE_FORMATS, unreadable_reason
    assert set(IMAGE_FORMATS) == {'PNG', 'JPEG', 'WEBP', 'BMP'}
    assert f'(not a {FORMATS_TEXT} image' in msg and FORMATS_TEXT == 'PNG, JPEG, WebP or BMP'
    assert FORMATS_TEXT in unreadable_reason(eps_as_png)
    root = eps_as_png.parent.parent  # the up-front check of a dataset (training, evaluation)
    solid(str(root / 'dog' / 'a.png'), (1, 2, 3))
    one_line_error(lambda: check_dataset(root), '1 unreadable image file', os.path.join('cat', 'photo.png'), FORMATS_TEXT)


def test_every_accepted_format_is_read(tmp_path):
    """The formats of IMG_EXTENSIONS, under any of these names, and a camera's JPEG with a second
    picture (PIL: MPO)."""
    from core.io.images import unreadable_reason
    img, other = Image.new('RGB', (S, S), (200, 100, 50)), Image.new('RGB', (S, S), (0, 0, 0))
    saved = {'a.png': 'PNG', 'b.jpg': 'JPEG', 'c.webp': 'WEBP', 'd.bmp': 'BMP', 'e.jpeg': 'JPEG'}
    for name, fmt in saved.items():
        img.save(tmp_path / name, format=fmt, **({'lossless': True} if fmt == 'WEBP' else {}))
    img.save(tmp_path / 'camera.jpg', format='MPO', save_all=True, append_images=[other])
    with Image.open(tmp_path / 'camera.jpg') as im:
        assert im.format == 'MPO'
    for name in [*saved, 'camera.jpg']:
        assert unreadable_reason(tmp_path / name) is None
        pixel = load_rgb(tmp_path / name).getpixel((S // 2, S // 2))
        assert max(abs(a - b) for a, b in zip(pixel, (200, 100, 50))) <= 3, (name, pixel)
    img.save(tmp_path / 'f.png', format='TIFF')  # a format PIL reads but the readers do not
    assert 'not a PNG, JPEG, WebP or BMP image' in unreadable_reason(tmp_path / 'f.png')
