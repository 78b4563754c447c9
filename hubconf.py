"""torch.hub entry points: the released StarGAN v2 models and the bare networks.

    model = torch.hub.load('path/to/this/clone', 'afhq', source='local')   # a core.api.StarGANv2
    images = model.translate('cat.jpg', domain='dog', num=4, seed=0)

``afhq`` and ``celeba_hq`` return a :class:`core.api.StarGANv2` of the official configuration
(256 px; AFHQ: cat, dog, wild, w_hpf 0; CelebA-HQ: female, male, w_hpf 1) with the released
EMA networks: ``weights=`` a local ``100000_nets_ema.ckpt``, else the file of the official
release (the URL ``download.sh`` fetches), downloaded once with a progress bar into
``torch.hub.get_dir()/checkpoints/stargan_v2/<name>/``.

The check of a download: no official SHA-256 of the released files is recorded in this
project (the official release publishes none, and none could be computed here: these files
were never downloaded while it was written). So a ``sha256=`` the caller gives is verified
(torch.hub's hash check while downloading; computed for a local or cached file), and without
one the downloaded file is verified by loading it strictly (every network, key and shape of
the official configuration) before it takes its final name; a file that fails is removed.

``generator``, ``mapping_network``, ``style_encoder`` and ``discriminator`` build the bare
``nn.Module`` from ``ModelConfig`` keywords (the official defaults otherwise), untrained.
"""
# Only modules and the entry points are public names here: torch.hub.list() lists every public callable.
# No `from __future__ import annotations`: torch.hub runs this file as a module that is not in
# sys.modules, where dataclasses cannot resolve annotations given as strings.
import dataclasses
import hashlib
import os
import re
import tempfile
import typing
import urllib.error

import torch

from core import api, errors
from core import device as devices
from core.io import ckpt_files as ckpt
from core.nn import fan, networks

dependencies = ['torch', 'torchvision', 'numpy', 'PIL', 'munch', 'yaml', 'tqdm']

__all__ = ['afhq', 'celeba_hq', 'generator', 'mapping_network', 'style_encoder', 'discriminator']

_DROPBOX = 'https://www.dropbox.com/s'


@dataclasses.dataclass(frozen=True)
class _Release:
    url: str  # as download.sh fetches it (tests/test_hubconf.py checks that download.sh holds it)
    config: networks.ModelConfig
    step: int
    download_sh: str  # the download.sh name of the same file
    sha256: str | None = None  # none recorded (see the module doc)

    @property
    def filename(self) -> str:
        return f'{self.step:06d}_nets_ema.ckpt'


RELEASES = {
    'afhq': _Release(f'{_DROPBOX}/etwm810v25h42sn/100000_nets_ema.ckpt?dl=1',
                     networks.ModelConfig(img_size=256, num_domains=3, w_hpf=0, domain_names=('cat', 'dog', 'wild')),
                     100000, 'pretrained-network-afhq'),
    'celeba_hq': _Release(f'{_DROPBOX}/96fmei6c93o8b8t/100000_nets_ema.ckpt?dl=1',
                          networks.ModelConfig(img_size=256, num_domains=2, w_hpf=1, domain_names=('female', 'male')),
                          100000, 'pretrained-network-celeba-hq'),
}
_CHECKPOINT = re.compile(r'(\d+)_nets_ema\.ckpt')


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


def _check_sha256(path: str, sha256: str) -> None:
    got = _sha256(path)
    if got != sha256.lower():
        raise errors.UserError(f'{path} has SHA-256 {got}, not the {sha256} given; it is another file (or a broken '
                               f'copy): fetch it again')


def _verify_strictly(path: str, cfg: networks.ModelConfig) -> None:
    """UserError unless ``path`` holds every inference network of ``cfg``, every key and shape."""
    nets = networks.build_networks(cfg)
    ckpt.load_modules(path, {name: nets[name] for name in networks.INFERENCE}, strict_names=list(networks.INFERENCE))


def _download(name: str, release: _Release, cfg: networks.ModelConfig, progress: bool, sha256: str | None) -> str:
    """The released file of ``name`` in torch.hub's folder, downloaded when it is not there
    (or not the ``sha256`` given), checked before it takes its final name."""
    folder = os.path.join(torch.hub.get_dir(), 'checkpoints', 'stargan_v2', name)
    path = os.path.join(folder, release.filename)
    sha256 = sha256 or release.sha256
    if os.path.isfile(path):
        if sha256 is None or _sha256(path) == sha256.lower():
            return path
        os.remove(path)  # another file than the one asked for: fetched again
    os.makedirs(folder, exist_ok=True)
    # each download its own temporary name (two at once, threads or processes, never share one);
    # checked, then renamed: the last rename wins, and both are the same checked file
    fd, part = tempfile.mkstemp(prefix=f'.{release.filename}.', suffix='.download', dir=folder)
    os.close(fd)
    try:
        torch.hub.download_url_to_file(release.url, part, hash_prefix=sha256, progress=progress)
    except (urllib.error.URLError, OSError, RuntimeError) as e:
        if os.path.exists(part):
            os.remove(part)
        reason = ' '.join(str(e).split())[:200] or type(e).__name__
        raise errors.UserError(f'cannot download the {name} weights from {release.url} ({reason}); download them with '
                               f'`bash download.sh {release.download_sh}` and pass weights=<that {release.filename}>') from None
    if sha256 is None:  # no hash to check: the file must load strictly as the official configuration
        try:
            _verify_strictly(part, cfg)
        except errors.UserError as e:
            os.remove(part)
            raise errors.UserError(f'the download from {release.url} is not the released {name} model ({e}); it was '
                                   f'removed: try again, or use `bash download.sh {release.download_sh}` and weights=') from None
    os.replace(part, path)
    return path


def _released(name: str, pretrained: bool, weights: str | os.PathLike[str] | None, device: devices.DeviceLike, progress: bool,
              sha256: str | None, wing_path: str | None, overrides: dict[str, typing.Any]) -> api.StarGANv2:
    release = RELEASES[name]
    cfg = api.model_config(release.config, **overrides)
    if not pretrained:
        if weights is not None:
            raise errors.UserError('weights= loads a checkpoint, pretrained=False asks for untrained networks: give one')
        nets = networks.build_networks(cfg)
        if cfg.w_hpf > 0 and wing_path is not None:
            fan.load_fan(nets.fan, wing_path)
        dev = devices.as_device(device)
        for net in nets.values():
            net.to(dev)
        return api.StarGANv2(nets, cfg)
    if weights is None:
        path = _download(name, release, cfg, progress, sha256)
    else:
        path = os.fspath(weights)
        if not os.path.isfile(path):
            raise errors.UserError(f"weights '{path}' is not a file; give the released {release.filename} "
                                   f"(`bash download.sh {release.download_sh}`)")
        if sha256 is not None:
            _check_sha256(path, sha256)
    match = _CHECKPOINT.fullmatch(os.path.basename(path))
    if match is None or f'{int(match.group(1)):06d}' != match.group(1):
        raise errors.UserError(f"weights '{path}' must keep a checkpoint's name, NNNNNN_nets_ema.ckpt "
                               f"(the release: {release.filename}); rename it")
    return api.StarGANv2.from_run(os.path.dirname(os.path.abspath(path)), step=int(match.group(1)), device=device,
                                  wing_path=wing_path, config=cfg)


def afhq(pretrained: bool = True, weights: str | os.PathLike[str] | None = None, device: devices.DeviceLike = 'cpu',
         progress: bool = True, sha256: str | None = None, **overrides: typing.Any) -> api.StarGANv2:
    """StarGAN v2 on AFHQ (256 px; cat, dog, wild; w_hpf 0), the released EMA networks.

    ``weights``: a local ``100000_nets_ema.ckpt`` (``bash download.sh pretrained-network-afhq``);
    else the official file, downloaded once into torch.hub's folder (``progress``: a progress
    bar). ``sha256``: the file's SHA-256, checked (none is recorded in this project; without
    it a download is checked by loading it strictly). ``pretrained=False``: untrained networks.
    ``overrides``: ModelConfig keywords changing the official configuration."""
    return _released('afhq', pretrained, weights, device, progress, sha256, None, overrides)


def celeba_hq(pretrained: bool = True, weights: str | os.PathLike[str] | None = None, device: devices.DeviceLike = 'cpu',
              progress: bool = True, sha256: str | None = None, wing_path: str | None = None,
              **overrides: typing.Any) -> api.StarGANv2:
    """StarGAN v2 on CelebA-HQ (256 px; female, male; w_hpf 1, FAN masks), the released EMA
    networks. The FAN comes from the checkpoint when it holds one, else from ``wing_path``
    (``bash download.sh wing``: expr/checkpoints/wing.ckpt). Otherwise as :func:`afhq`."""
    return _released('celeba_hq', pretrained, weights, device, progress, sha256, wing_path, overrides)


def _bare(config: dict[str, typing.Any]) -> networks.ModelConfig:
    return api.model_config(None, **config)


def generator(**config: typing.Any) -> networks.Generator:
    """An untrained Generator of ModelConfig keywords (img_size, style_dim, w_hpf, dim_in, max_conv_dim, to_rgb_norm)."""
    return networks.build_generator(_bare(config))


def mapping_network(**config: typing.Any) -> networks.MappingNetwork:
    """An untrained MappingNetwork of ModelConfig keywords (latent_dim, style_dim, num_domains)."""
    return networks.build_mapping_network(_bare(config))


def style_encoder(**config: typing.Any) -> networks.StyleEncoder:
    """An untrained StyleEncoder of ModelConfig keywords (img_size, style_dim, num_domains, max_conv_dim, dim_in)."""
    return networks.build_style_encoder(_bare(config))


def discriminator(**config: typing.Any) -> networks.Discriminator:
    """An untrained Discriminator of ModelConfig keywords (img_size, num_domains, max_conv_dim, dim_in)."""
    return networks.build_discriminator(_bare(config))
