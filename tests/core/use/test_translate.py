"""core/use/translate.py: outputs never overwrite inputs (issue 19, item 9), checked before any
network loads (translation itself: tests/e2e/test_sample_cli.py)."""
import os

import pytest

from core.errors import UserError


def photos(root, names=('a/x.png', 'b/x.png', 'y.jpg')):
    from tiny_run import make_image
    for i, name in enumerate(names):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        make_image(root / name, size=16, seed=i)
    return {name: (root / name).read_bytes() for name in names}


def translate_plan(src, out, ref=None):
    from munch import Munch

    from core.use.translate import plan
    return plan(Munch(src=str(src), out=str(out), ref=str(ref) if ref else None))


def test_translate_keeps_sub_folders_so_names_never_collide(tmp_path):
    photos(tmp_path / 'src')
    jobs = translate_plan(tmp_path / 'src', tmp_path / 'out')
    assert [(os.path.relpath(s, tmp_path / 'src'), os.path.relpath(o, tmp_path / 'out')) for s, o in jobs] == \
        [('a/x.png', 'a/x.png'), ('b/x.png', 'b/x.png'), ('y.jpg', 'y.jpg')]
    assert not (tmp_path / 'out').exists()  # checked, not made


@pytest.mark.parametrize('out', ['src', 'src/out', 'src/a', 'link_to_src/out'])
def test_translate_refuses_an_output_folder_in_the_input_folder(tmp_path, out):
    kept = photos(tmp_path / 'src')
    (tmp_path / 'link_to_src').symlink_to(tmp_path / 'src')
    with pytest.raises(UserError, match=r"--out .* (is|lies inside) the input folder --src") as e:
        translate_plan(tmp_path / 'src', tmp_path / out)
    assert '\n' not in str(e.value)
    assert {n: (tmp_path / 'src' / n).read_bytes() for n in kept} == kept


def test_an_input_folder_inside_the_output_is_fine_unless_a_file_would_be_overwritten(tmp_path):
    photos(tmp_path / 'out' / 'in', ('p.png', 'q/r.png'))
    assert len(translate_plan(tmp_path / 'out' / 'in', tmp_path / 'out')) == 2
    photos(tmp_path / 'out2' / 'in', ('in/p.png', 'p.png'))  # out2/in/p.png would be written from in/in/p.png
    with pytest.raises(UserError, match='would overwrite an input image'):
        translate_plan(tmp_path / 'out2' / 'in', tmp_path / 'out2')


@pytest.mark.parametrize('case,match', [('no_extension', 'has no image extension'), ('same_as_src', 'overwrite an input'),
                                        ('same_as_ref', 'overwrite an input'), ('folder', 'is a folder'),
                                        ('under_a_file', 'not a folder')])
def test_translate_checks_a_single_output_path(tmp_path, case, match):
    kept = photos(tmp_path, ('src.png', 'ref.png'))
    (tmp_path / 'dir').mkdir()
    out = {'no_extension': tmp_path / 'result', 'same_as_src': tmp_path / 'src.png', 'same_as_ref': tmp_path / 'ref.png',
           'folder': tmp_path / 'dir', 'under_a_file': tmp_path / 'src.png' / 'o.png'}[case]
    with pytest.raises(UserError, match=match):
        translate_plan(tmp_path / 'src.png', out, ref=tmp_path / 'ref.png')
    assert {n: (tmp_path / n).read_bytes() for n in kept} == kept


def test_translate_checks_paths_before_the_networks_load(tmp_path, monkeypatch, capsys):
    import core.use.translate
    import main as cli
    photos(tmp_path / 'src')
    monkeypatch.setattr(core.use.translate, 'load_run_networks', lambda *a, **k: pytest.fail('networks loaded'))
    rc = cli.main(['--mode', 'translate', '--checkpoint_dir', str(tmp_path / 'ckpt'), '--src', str(tmp_path / 'src'),
                   '--trg_domain', '1', '--out', str(tmp_path / 'src' / 'out')])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and 'lies inside the input folder' in err[0]
    rc = cli.main(['--mode', 'translate', '--checkpoint_dir', str(tmp_path / 'ckpt'), '--src', str(tmp_path / 'src' / 'y.jpg'),
                   '--trg_domain', '1', '--out', str(tmp_path / 'out')])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and 'no image extension' in err[0]
    assert not (tmp_path / 'src' / 'out').exists() and not (tmp_path / 'out').exists()
