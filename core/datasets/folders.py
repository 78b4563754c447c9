"""Domain folders: listing their images (symbolic links followed without loops, each file once)
and the up-front check of a dataset (``check_dataset``).

Layout: a root folder with one sub-folder per domain; domain labels are the indices of the
sorted sub-folder names. Images are found recursively inside each domain folder (extensions in
``IMG_EXTENSIONS``, any case). Symbolic links are followed, each file is listed once (by its real
path), a link that leads back into the folder being listed (a loop) or into another domain of the
dataset is skipped (``list_images``).
"""
from __future__ import annotations

import os
from collections.abc import Collection, Sequence
from typing import Dict, List, Optional, Set

from core.errors import UserError
from core.io.files import StrPath, file_identity, is_inside, same_file
from core.io.images import CheckedImages, check_images

IMG_EXTENSIONS = ('png', 'jpg', 'jpeg', 'JPG', 'webp', 'bmp')
_EXT_SET = frozenset('.' + e.lower() for e in IMG_EXTENSIONS)
EXT_TEXT = '/'.join(sorted({e.lower() for e in IMG_EXTENSIONS}))


# --------------------------------------------------------------------------- files

def is_image_file(path: StrPath) -> bool:
    return os.path.splitext(path)[1].lower() in _EXT_SET


def require_dir(root: Optional[StrPath], what: str = 'data folder') -> None:
    if root is None or not os.path.exists(root):
        raise UserError(f"{what} '{root}' does not exist; check the path")
    if not os.path.isdir(root):
        raise UserError(f"{what} '{root}' is not a folder; give a folder")


def list_domains(root: StrPath) -> List[str]:
    """Sorted names of the sub-folders of ``root`` (one per domain; hidden ones skipped)."""
    require_dir(root)
    return sorted(d.name for d in os.scandir(root)
                  if d.is_dir() and not d.name.startswith('.'))


def list_images(folder: StrPath, exclude: Collection[str] = ()) -> List[str]:
    """Sorted paths of the image files under ``folder`` (recursive, hidden ones skipped).

    Symbolic links (to files or folders) are followed, without loops: each real folder is
    walked once and each real file listed once (under its path through real folders when it
    has one). A link to ``folder`` itself or to a folder above it is skipped, and so is one
    that resolves into a folder of ``exclude`` (e.g. the other domains of a dataset) unless it
    stays inside ``folder``. Folders are compared by file, not by spelling
    (``core.io.files.file_identity``: another case on a case-insensitive disk is the same
    folder); image files by real path, so hard links to one file stay separate images, as
    they always were. A dangling link is listed (the up-front check names it)."""
    require_dir(folder, 'image folder')
    top = os.path.realpath(folder)
    walked: Set[object] = set()
    files: Dict[str, str] = {}  # real path -> listed path
    links: List[str] = []

    def allowed(real: str) -> bool:
        if is_inside(top, real) and not same_file(real, top):  # a folder above: every file of it would be listed
            return False
        return is_inside(real, top) or not any(is_inside(real, e) for e in exclude)

    def walk(start: StrPath) -> None:
        for dirpath, dirnames, filenames in os.walk(start):
            key = file_identity(dirpath)
            if key in walked:  # reached twice (a loop, or two links to one folder)
                dirnames[:] = []
                continue
            walked.add(key)
            dirnames[:] = sorted(d for d in dirnames if not d.startswith('.'))
            for d in [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
                dirnames.remove(d)  # linked folders: after every real one, so real paths win
                links.append(os.path.join(dirpath, d))
            for f in sorted(filenames):
                path = os.path.join(dirpath, f)
                if f.startswith('.') or not is_image_file(f):
                    continue
                if os.path.islink(path):
                    links.append(path)
                else:
                    files.setdefault(os.path.realpath(path), path)

    walk(folder)
    while links:
        link = links.pop(0)
        real = os.path.realpath(link)
        if not allowed(real):
            continue
        if os.path.isdir(real):
            walk(link)
        else:
            files.setdefault(real, link)
    return sorted(files.values())


def list_domain_images(root: StrPath, domains: Optional[Sequence[str]] = None) -> Dict[str, List[str]]:
    """``{domain: list_images(root/domain)}`` for the domain folders of ``root``, where no
    domain's listing enters another domain's folder, the root or a folder above it. UserError
    when two domain names lead to one folder (a link)."""
    domains = list_domains(root) if domains is None else domains
    real = {d: os.path.realpath(os.path.join(root, d)) for d in domains}
    seen: Dict[object, str] = {}
    for d in domains:
        key = file_identity(real[d])
        if key in seen:
            raise UserError(f"domain folders '{seen[key]}' and '{d}' in '{root}' are one folder "
                            f"(a symbolic link); give each domain its own folder")
        seen[key] = d
    root_real = os.path.realpath(root)
    return {d: list_images(os.path.join(root, d), exclude=[root_real] + [real[o] for o in domains if o != d])
            for d in domains}


def check_dataset(root: StrPath, num_domains: Optional[int] = None, batch_size: Optional[int] = None,
                  checked: Optional[CheckedImages] = None) -> List[str]:
    """Check a domain-folder dataset before any work; return its sorted domain names.

    UserError (one line, naming the fix) when: the folder is missing; it has no domain
    sub-folders or not ``num_domains`` of them; a domain holds no image; it holds fewer
    images than ``batch_size`` (training drops incomplete batches, so none would be left);
    image files cannot be read (all are checked up front, see ``check_images``; ``checked``:
    the files an earlier check of this dataset found readable, skipped when unchanged).
    """
    domains = list_domains(root)
    if not domains:
        raise UserError(f"'{root}' has no domain sub-folders; put the images of each domain "
                        f"in its own sub-folder (e.g. {root}/cat, {root}/dog)")
    if num_domains is not None and len(domains) != num_domains:
        raise UserError(f"'{root}' has {len(domains)} domain sub-folders ({', '.join(domains)}) "
                        f"but --num_domains is {num_domains}; set --num_domains {len(domains)} "
                        f"or fix the folder")
    paths: List[str] = []
    for d, found in list_domain_images(root, domains).items():
        if not found:
            raise UserError(f"domain '{d}' ({os.path.join(root, d)}) holds no images "
                            f"({EXT_TEXT}); add images or remove the folder")
        paths += found
    if batch_size is not None and len(paths) < batch_size:
        raise UserError(f"'{root}' holds {len(paths)} images, fewer than the batch size {batch_size}; "
                        f"add images or lower --batch_size")
    check_images(root, paths, checked)
    return domains
