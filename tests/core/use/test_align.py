"""core/use/align.py: the similarity transform, the warp, output paths and weights checked before work
(the mode end to end: tests/e2e/test_align_cli.py)."""
import os

import numpy as np
import pytest
from helpers import face_like_landmarks
from PIL import Image

import main as cli
from core.use.align import align_image, landmarks_to_matrix, pad_mirror


def similarity(angle, scale, shift):
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[scale * c, -scale * s, shift[0]], [scale * s, scale * c, shift[1]], [0, 0, 1]])


def apply(m, pts):
    return (np.c_[pts, np.ones(len(pts))] @ m.T)[:, :2]


def test_matrix_recovers_a_similarity():
    ref = face_like_landmarks()
    known = similarity(0.4, 1.7, (30, -12))
    lm = apply(np.linalg.inv(known), ref)  # the face seen rotated, scaled and shifted
    np.testing.assert_allclose(apply(landmarks_to_matrix(lm, ref), lm), ref, atol=1e-6)


def test_pad_mirror_shifts_landmarks_and_keeps_the_centre():
    img = np.random.default_rng(0).uniform(0, 1, (40, 60, 3))
    padded, lm = pad_mirror(img, np.array([[5.0, 7.0]]))
    assert padded.shape == (80, 120, 3)
    np.testing.assert_allclose(lm, [[35.0, 27.0]])
    np.testing.assert_allclose(padded[20:60, 30:90], img, atol=1e-12)  # untouched inside


def test_align_moves_a_landmark_onto_the_reference():
    ref = face_like_landmarks()
    known = similarity(-0.3, 0.8, (20, 10))
    lm = apply(np.linalg.inv(known), ref)
    img = np.zeros((256, 256, 3), np.uint8)
    x, y = np.round(lm[96]).astype(int)
    img[y - 3:y + 4, x - 3:x + 4] = 255  # a bright dot on the left eye
    out = align_image(img, lm, ref, 256)
    assert out.shape == (256, 256, 3)
    yy, xx = np.unravel_index(out[..., 0].argmax(), out.shape[:2])
    assert abs(xx - ref[96, 0]) <= 3 and abs(yy - ref[96, 1]) <= 3


def test_align_missing_weights_one_line_error(tmp_path, capsys):
    rc = cli.main(['--mode', 'align', '--inp_dir', str(tmp_path), '--out_dir', str(tmp_path / 'o'),
                   '--wing_path', str(tmp_path / 'nope.ckpt'), '--lm_path', str(tmp_path / 'nope.npz')])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and 'download.sh wing' in err[0]


# ---------------------------------------------------------------- outputs never overwrite inputs (issue 19, item 9)

def face_folder(root, names=('a/face.jpg', 'b/face.jpg')):
    for i, name in enumerate(names):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (32, 32, 3), np.uint8)).save(root / name)
    return {name: (root / name).read_bytes() for name in names}


def test_align_keeps_sub_folders(tmp_path):
    from core.use.align import plan
    face_folder(tmp_path / 'inp')
    jobs = plan(str(tmp_path / 'inp'), str(tmp_path / 'out'))
    assert [os.path.relpath(o, tmp_path / 'out') for _, o in jobs] == ['a/face.jpg', 'b/face.jpg']


@pytest.mark.parametrize('out', ['inp', 'inp/aligned'])
def test_align_refuses_an_output_in_the_input_before_the_fan_loads(tmp_path, monkeypatch, capsys, out):
    import core.use.align
    kept = face_folder(tmp_path / 'inp')
    np.savez(tmp_path / 'lm.npz', mean=face_like_landmarks())
    monkeypatch.setattr(core.use.align, 'load_fan', lambda *a, **k: pytest.fail('FAN loaded'))
    rc = cli.main(['--mode', 'align', '--inp_dir', str(tmp_path / 'inp'), '--out_dir', str(tmp_path / out),
                   '--lm_path', str(tmp_path / 'lm.npz')])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and '--out_dir' in err[0] and 'the input folder --inp_dir' in err[0]
    assert {n: (tmp_path / 'inp' / n).read_bytes() for n in kept} == kept
    assert sorted(os.listdir(tmp_path / 'inp')) == ['a', 'b']
