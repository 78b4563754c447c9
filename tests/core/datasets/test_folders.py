"""core/datasets/folders.py: domain folders, their images (links followed once), the up-front check of a dataset."""
import os

from helpers import DATA_SIZE as S
from helpers import coded_dataset, noise, one_line_error, solid

from core.datasets.folders import IMG_EXTENSIONS, check_dataset, list_domains, list_images
from core.datasets.pipeline import get_test_loader, get_train_loader

# ----------------------------------------------------------------------------- domain folders and their images

def test_list_domains_and_images(tmp_path):
    for name in ['zebra', 'apple', 'mango', '.hidden']:
        (tmp_path / name).mkdir()
    (tmp_path / 'notes.txt').write_text('x')
    assert list_domains(str(tmp_path)) == ['apple', 'mango', 'zebra']
    d = tmp_path / 'apple'
    for f in ['b.png', 'a.JPG', 'c.jpeg', 'd.webp', 'e.BMP', 'f.Png', 'g.txt', '.h.png']:
        (d / f).write_bytes(b'')
    (d / 'sub').mkdir()
    (d / 'sub' / 'z.jpg').write_bytes(b'')
    names = [os.path.relpath(p, d) for p in list_images(str(d))]
    assert names == ['a.JPG', 'b.png', 'c.jpeg', 'd.webp', 'e.BMP', 'f.Png', os.path.join('sub', 'z.jpg')]
    assert {'png', 'jpg', 'jpeg', 'webp', 'bmp'} <= {e.lower() for e in IMG_EXTENSIONS}


def test_list_errors(tmp_path):
    one_line_error(lambda: list_domains(str(tmp_path / 'missing')), 'missing', 'does not exist')
    f = tmp_path / 'file.png'
    f.write_bytes(b'')
    one_line_error(lambda: list_domains(str(f)), 'file.png', 'not a folder')
    one_line_error(lambda: list_images(str(tmp_path / 'missing')), 'does not exist')


# ----------------------------------------------------------------------------- the up-front check of a dataset

def test_error_no_domain_folders(tmp_path):
    solid(str(tmp_path / 'x.png'), (1, 2, 3))
    one_line_error(lambda: check_dataset(str(tmp_path), 2, 1), str(tmp_path), 'no domain sub-folders')


def test_error_wrong_number_of_domains(tmp_path):
    root = coded_dataset(tmp_path, {'cat': 2, 'dog': 2, 'wild': 2})
    msg = one_line_error(lambda: check_dataset(root, num_domains=2, batch_size=1),
                         root, '3 domain sub-folders', '--num_domains is 2', 'cat, dog, wild')
    assert '--num_domains 3' in msg  # names the fix
    one_line_error(lambda: get_train_loader(root, img_size=S, batch_size=1, num_workers=0,
                                            num_domains=2), '--num_domains is 2')
    assert check_dataset(root, 3, 6) == ['cat', 'dog', 'wild']


def test_error_empty_domain(tmp_path):
    root = coded_dataset(tmp_path, {'cat': 2, 'dog': 2})
    (tmp_path / 'wild').mkdir()
    (tmp_path / 'wild' / 'readme.txt').write_text('no images here')
    one_line_error(lambda: get_train_loader(root, img_size=S, batch_size=2, num_workers=0),
                   "domain 'wild'", 'no images')


def test_error_fewer_images_than_batch(tmp_path):
    root = coded_dataset(tmp_path, {'cat': 2, 'dog': 3})
    one_line_error(lambda: get_train_loader(root, img_size=S, batch_size=8, num_workers=0),
                   '5 images', 'batch size 8', '--batch_size')
    get_train_loader(root, img_size=S, batch_size=5, num_workers=0)  # exactly enough is fine


def test_unreadable_images_all_named_before_any_loading(tmp_path):
    root = coded_dataset(tmp_path, {'cat': 3, 'dog': 3})
    (tmp_path / 'dog' / 'broken.jpg').write_bytes(b'this is not a jpeg')
    cut = tmp_path / 'cat' / 'cut.png'
    noise(str(cut), 0, size=64)
    cut.write_bytes(cut.read_bytes()[:5000])  # the end is missing: the header still opens
    for build in (lambda: get_train_loader(root, img_size=S, batch_size=2, num_workers=0),
                  lambda: get_test_loader(root, img_size=S, num_workers=0),
                  lambda: check_dataset(root)):
        msg = one_line_error(build, '2 unreadable image files', os.path.join('dog', 'broken.jpg'),
                             os.path.join('cat', 'cut.png'), 'truncated', 'replace or delete them')
    assert msg.index('cut.png') < msg.index('broken.jpg')  # in folder order
    cut.unlink()
    (tmp_path / 'dog' / 'broken.jpg').unlink()
    assert check_dataset(root) == ['cat', 'dog']


def test_unreadable_images_message_names_a_few_and_counts_all(tmp_path):
    root = coded_dataset(tmp_path, {'cat': 1, 'dog': 1})
    for i in range(8):
        (tmp_path / 'dog' / f'junk{i}.png').write_bytes(b'')
    msg = one_line_error(lambda: check_dataset(root), '8 unreadable image files', 'and 3 more')
    assert sum(f'junk{i}.png' in msg for i in range(8)) == 5


# ---------------------------------------------------------------- symbolic links in domain folders

def linked_dataset(root, outside):
    """cat: 2 images, a loop to the dataset root, a link to its own sub-folder, links into dog
    (folder and file), two links to one outside folder; dog: 3 images."""
    for i in range(2):
        noise(str(root / 'cat' / 'sub' / f'c{i}.png'), i)
    for i in range(3):
        noise(str(root / 'dog' / f'd{i}.png'), 10 + i)
    for i in range(2):
        noise(str(outside / f'e{i}.png'), 20 + i)
    os.symlink(root, root / 'cat' / 'loop_to_root')
    os.symlink('..', root / 'cat' / 'sub' / 'loop_to_parent')
    os.symlink(root / 'cat' / 'sub', root / 'cat' / 'again')
    os.symlink(root / 'dog', root / 'cat' / 'dogs')
    os.symlink(root / 'dog' / 'd0.png', root / 'cat' / 'a_dog.png')
    os.symlink(outside, root / 'cat' / 'ext1')
    os.symlink(outside, root / 'cat' / 'ext2')
    os.symlink(outside / 'e0.png', root / 'cat' / 'e0_link.png')
    return root


def test_links_followed_once_without_loops_never_into_another_domain(tmp_path):
    from core.datasets.folders import list_domain_images
    from core.datasets.pipeline import DomainDataset
    root = linked_dataset(tmp_path / 'data', tmp_path / 'outside')
    found = list_domain_images(str(root))
    cat = [os.path.relpath(p, root / 'cat') for p in found['cat']]
    assert cat == ['ext1/e0.png', 'ext1/e1.png', 'sub/c0.png', 'sub/c1.png']  # each real file once
    assert [os.path.relpath(p, root) for p in found['dog']] == ['dog/d0.png', 'dog/d1.png', 'dog/d2.png']
    dataset = DomainDataset(str(root), lambda img: img)
    assert [y for _, y in dataset.samples] == [0] * 4 + [1] * 3
    assert check_dataset(str(root), num_domains=2) == ['cat', 'dog']


def test_hard_links_stay_separate_images(tmp_path):
    """Two names of one file (a hard link, as `cp -al` or a de-duplicating copy makes) are two
    images, as they always were: the image count, and so the data order, of such a dataset
    does not change."""
    from core.datasets.folders import list_domain_images
    root = tmp_path / 'train'
    solid(str(root / 'cat' / 'a.png'), (1, 0, 0))
    solid(str(root / 'dog' / 'b.png'), (2, 0, 0))
    os.link(root / 'cat' / 'a.png', root / 'cat' / 'a_again.png')
    found = list_domain_images(str(root), ['cat', 'dog'])
    assert found['cat'] == [str(root / 'cat' / 'a.png'), str(root / 'cat' / 'a_again.png')]


def test_links_are_compared_by_folder_not_by_spelling(tmp_path, monkeypatch):
    """A case-insensitive disk (macOS, Windows), simulated: 'DATA' is the folder 'data' (here a
    link that realpath keeps as spelled, as realpath keeps the case typed there). A link into
    another domain, or back into its own folder, spelled in another case is still seen as one."""
    from core.datasets.folders import list_domain_images
    root = tmp_path / 'data' / 'train'
    for d in ('cat', 'dog'):
        for i in range(2):
            solid(str(root / d / f'{i}.png'), (i, 0, 0))
    os.symlink('data', tmp_path / 'DATA')
    os.symlink(tmp_path / 'DATA' / 'train' / 'cat', root / 'dog' / 'more')  # into the other domain
    os.symlink(tmp_path / 'DATA' / 'train' / 'cat', root / 'cat' / 'loop')  # back into itself
    real_realpath = os.path.realpath

    def case_keeping_realpath(path, **kw):
        parts, out = os.path.abspath(path).split(os.sep)[1:], os.sep
        while parts:
            nxt = os.path.normpath(os.path.join(out, parts.pop(0)))
            if os.path.islink(nxt) and os.path.basename(nxt) != 'DATA':
                parts = os.path.normpath(os.path.join(out, os.readlink(nxt))).split(os.sep)[1:] + parts
                out = os.sep
                continue
            out = nxt
        return out
    monkeypatch.setattr(os.path, 'realpath', case_keeping_realpath)
    assert os.path.realpath(root / 'dog' / 'more') == str(tmp_path / 'DATA' / 'train' / 'cat')
    assert real_realpath(root / 'dog' / 'more') == real_realpath(root / 'cat')
    found = list_domain_images(str(root), ['cat', 'dog'])
    assert found == {'cat': [str(root / 'cat' / '0.png'), str(root / 'cat' / '1.png')],
                     'dog': [str(root / 'dog' / '0.png'), str(root / 'dog' / '1.png')]}


def test_a_domain_folder_may_itself_be_a_link(tmp_path):
    from core.datasets.folders import list_domain_images
    for i in range(2):
        noise(str(tmp_path / 'store' / 'cats' / f'{i}.png'), i)
        noise(str(tmp_path / 'data' / 'dog' / f'{i}.png'), i + 5)
    os.symlink(tmp_path / 'store' / 'cats', tmp_path / 'data' / 'cat')
    os.symlink(tmp_path / 'data' / 'dog', tmp_path / 'store' / 'cats' / 'dogs')  # leads into the other domain
    found = list_domain_images(str(tmp_path / 'data'))
    assert [os.path.basename(p) for p in found['cat']] == ['0.png', '1.png']
    os.symlink(tmp_path / 'store' / 'cats', tmp_path / 'data' / 'kitten')  # two domains, one folder
    one_line_error(lambda: check_dataset(str(tmp_path / 'data')), "'cat' and 'kitten'", 'one folder')


def test_a_link_loop_in_an_eval_folder_lists_each_file_once(tmp_path):
    noise(str(tmp_path / 'imgs' / 'a' / '0.png'), 0)
    os.symlink(tmp_path / 'imgs', tmp_path / 'imgs' / 'a' / 'up')
    os.symlink(tmp_path / 'imgs' / 'a' / '0.png', tmp_path / 'imgs' / 'same.png')
    assert list_images(str(tmp_path / 'imgs')) == [str(tmp_path / 'imgs' / 'a' / '0.png')]
