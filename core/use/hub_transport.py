"""Hub folders to and from the Hugging Face Hub: a repository id resolved to a local folder
(downloaded into huggingface_hub's cache, or the cached copy offline) and a folder uploaded.

    folder = resolve_pretrained('user/stargan-v2-afhq')     # a local folder, as it is, or a download
    push_folder('expr/hub/afhq', 'user/stargan-v2-afhq')    # private unless public=True

Only the folder's files (``core.use.hub_folder.HUB_FILES``) travel, so no pickled file is
ever fetched. Every failure is a one-line UserError saying what to do.
"""
from __future__ import annotations

import os
import re

from core.errors import UserError
from core.use.hub_folder import HUB_FILES, read_hub_config

__all__ = ['resolve_pretrained', 'push_folder', 'check_repo_id']


def check_repo_id(repo_id: str, flag: str = '--push_to_hub') -> str:
    """``repo_id`` when it is a Hub model repository id ('owner/name' or 'name'), else UserError."""
    if not isinstance(repo_id, str) or not re.fullmatch(r'(?:[\w.-]+/)?[\w.-]+', repo_id) \
            or '--' in repo_id or '..' in repo_id or repo_id.endswith(('.', '-')) or len(repo_id) > 96:
        raise UserError(f"{flag} {repo_id!r} is not a Hub repository id; give 'owner/name' "
                        f"(letters, digits, '-', '_', '.')")
    return repo_id


def _hub_error(e: BaseException) -> str:
    """The kind of a huggingface_hub exception by its class names (stable across versions)."""
    names = {c.__name__ for c in type(e).__mro__}
    for kind in ('OfflineModeIsEnabled', 'LocalEntryNotFoundError', 'RepositoryNotFoundError', 'GatedRepoError',
                 'RevisionNotFoundError', 'LocalTokenNotFoundError'):
        if kind in names:
            return kind
    return type(e).__name__


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:200]


def resolve_pretrained(folder_or_repo_id: str | os.PathLike[str], revision: str | None = None,
                       cache_dir: str | os.PathLike[str] | None = None) -> str:
    """A local folder for ``folder_or_repo_id``: an existing folder is itself; else a Hub
    repository id ('owner/name') is fetched with ``huggingface_hub.snapshot_download`` (only
    config.json, model.safetensors and README.md), which keeps it in its cache and, offline
    (``HF_HUB_OFFLINE=1`` or no network), returns the cached copy. UserError (one line) when
    the folder does not exist, the package is missing, or the repository can be had neither
    from the Hub nor from the cache."""
    name = os.path.expanduser(os.fspath(folder_or_repo_id))  # '~/models/x' is a folder of the home directory
    if os.path.isdir(name):
        return name
    looks_like_path = (name.startswith(('.', '/', '~')) or name.count('/') > 1 or os.sep != '/' and os.sep in name
                       or os.path.exists(name))
    if looks_like_path:
        raise UserError(f"'{name}' is not a folder; give a folder written by --mode export --format hf, "
                        f"or a Hub repository id 'owner/name'")
    check_repo_id(name, 'repository id')
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise UserError(f"'{name}' is no local folder, and fetching it from the Hugging Face Hub needs huggingface_hub: "
                        f"pip install huggingface_hub") from None
    try:
        return str(snapshot_download(name, revision=revision, cache_dir=os.fspath(cache_dir) if cache_dir else None,
                                     allow_patterns=list(HUB_FILES)))
    except Exception as e:
        kind = _hub_error(e)
        if kind in ('LocalEntryNotFoundError', 'OfflineModeIsEnabled'):
            raise UserError(f"'{name}' is not in the Hugging Face cache and the Hub cannot be reached (offline: "
                            f"HF_HUB_OFFLINE=1 or no network): fetch it once online, or give a local folder") from None
        if kind in ('RepositoryNotFoundError', 'GatedRepoError'):
            raise UserError(f"no model repository '{name}' on the Hugging Face Hub that this login may read; check "
                            f"the id, or log in (hf auth login, or HF_TOKEN) for a private one") from None
        if kind == 'RevisionNotFoundError':
            raise UserError(f"'{name}' has no revision {revision!r} on the Hugging Face Hub; check it") from None
        raise UserError(f"cannot fetch '{name}' from the Hugging Face Hub: {kind}: {_first_line(e)}") from None


def push_folder(folder: str | os.PathLike[str], repo_id: str, commit_message: str | None = None,
                public: bool = False) -> str:
    """Uploads the Hub folder ``folder`` to the model repository ``repo_id`` with
    ``huggingface_hub``; returns the repository's URL. A missing repository is created
    private unless ``public``; an existing one keeps its visibility, and the message says
    which it is. The token is huggingface_hub's own (``hf auth login`` or ``HF_TOKEN``).
    UserError (one line) when the package is missing or the upload fails (no token,
    offline, no permission)."""
    check_repo_id(repo_id)
    read_hub_config(folder)  # a valid folder, never some other one
    try:
        from huggingface_hub import HfApi
    except ImportError:
        raise UserError('--push_to_hub needs huggingface_hub: pip install huggingface_hub') from None
    api = HfApi()
    try:
        url = api.create_repo(repo_id, repo_type='model', exist_ok=True, private=not public)
        api.upload_folder(repo_id=repo_id, folder_path=os.fspath(folder), repo_type='model',
                          allow_patterns=list(HUB_FILES), commit_message=commit_message or 'StarGAN v2 model folder')
    except Exception as e:
        kind = _hub_error(e)
        hint = ('no token: log in with `hf auth login` or set HF_TOKEN' if kind == 'LocalTokenNotFoundError' else
                'offline (HF_HUB_OFFLINE=1): unset it' if kind == 'OfflineModeIsEnabled' else
                'check the network, your token (hf auth login, or HF_TOKEN) and your rights on the repository')
        raise UserError(f"upload of '{folder}' to the Hub repository '{repo_id}' failed ({kind}: {_first_line(e)}); "
                        f'{hint}; the folder is complete, push it again later') from None
    try:  # what the repository is now (an existing one kept its own visibility)
        private = getattr(api.repo_info(repo_id, repo_type='model'), 'private', None)
    except Exception:
        private = None
    if private is None:
        visibility = 'visibility unknown: check it on the Hub'
    elif private:
        visibility = ('a PRIVATE repository: only you (and your organisation) can see it; make it public in its '
                      'settings on the Hub' + ('' if not public else ' (it existed already: its visibility was kept)'))
    else:
        visibility = ('a PUBLIC repository: anyone can see and download it' +
                      ('' if public else ' (it existed already: its visibility was kept; make it private in its '
                                         'settings on the Hub)'))
    print(f'uploaded {folder} to {url}, {visibility}')
    return str(url)
