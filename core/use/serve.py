"""Serve mode: a web demo (Gradio) of a checkpoint.

    python main.py --mode serve --config configs/demo.yaml        # then open http://127.0.0.1:7860

A source image (uploaded, or one of the validation / sample images offered as examples) is
translated either with random styles of a target domain (seed, psi, number of outputs: a row
of K images) or with the style of a reference image of a given domain; a style strength below
1 (with the source's domain picked) stops part of the way from the source's own style. The
images go through the Python API (``core.api.StarGANv2``), as translate mode's do. Nothing is
written to disk except what Gradio itself caches (uploads and shown images, under its
temporary folder); usage statistics are off and nothing leaves the machine unless ``--share``
is given.

Limits (stated on the page): an upload larger than ``MAX_UPLOAD_MB`` is refused by Gradio
(``max_file_size``) and by the handler; an image of more than ``MAX_MEGAPIXELS`` is refused
with a message in the page, from its header, before it is decoded. Gradio's cache is
cleaned: every ``CACHE_CLEAN[0]`` s the files older than ``CACHE_CLEAN[1]`` s are deleted
(and all of them when the server stops). The handlers (``Translator``) keep no state between
requests: two requests at once give the results each would give alone.
"""
import os
from collections.abc import Sequence
from typing import Any

os.environ.setdefault('GRADIO_ANALYTICS_ENABLED', 'False')  # before gradio reads it: no telemetry

import gradio as gr  # noqa: E402
import numpy as np  # noqa: E402
import numpy.typing as npt  # noqa: E402
import torch  # noqa: E402
from munch import Munch  # noqa: E402

from core.api import StarGANv2  # noqa: E402
from core.datasets.folders import list_domain_images  # noqa: E402
from core.errors import UserError  # noqa: E402
from core.io.images import (
    FORMATS_TEXT,
    ImageTooLargeError,
    image_row,  # noqa: E402
)
from core.nn.networks import ModelConfig  # noqa: E402
from core.nn.styles import check_strength, need_source_domain  # noqa: E402
from core.use.inputs import as_batch  # noqa: E402

__all__ = ['Translator', 'build_app', 'example_images', 'run']

MAX_OUTS = 8
MAX_UPLOAD_MB = 25  # bytes of one upload, in MiB
MAX_MEGAPIXELS = 50  # pixels of one image, in millions (a 48 MP phone photo passes)
CACHE_CLEAN = (600, 3600)  # Gradio's delete_cache: every 10 minutes, the files older than an hour
EXAMPLES_PER_DOMAIN = 2
IMAGE_HEIGHT = 256  # px on the page: small models' images are shown enlarged
CSS = ('#source img, #reference img, #output img '
       '{width: 100%; height: 100%; object-fit: contain; image-rendering: pixelated}')


def example_images(args: Any, per_domain: int = EXAMPLES_PER_DOMAIN) -> list[str]:
    """A few images of each domain of ``--val_img_dir`` and ``--src_dir``, when they exist."""
    found = []
    for root in (args.val_img_dir, args.src_dir):
        if not root or not os.path.isdir(root):
            continue
        try:
            listed = list_domain_images(root)
        except UserError:
            continue
        for paths in listed.values():
            found += paths[:per_domain]
    return [os.path.abspath(p) for p in found]


def _size(n: int) -> str:
    """Bytes as a person reads them (MB and KB of 1024)."""
    for unit, factor in (('MB', 2 ** 20), ('KB', 2 ** 10)):
        if n >= factor:
            return f'{n / factor:.3g} {unit}'
    return f'{n} bytes'


class Translator:
    """The demo's two requests, without state between calls (each draws its styles from its own
    generator), so that requests may run at once: ``latent`` and ``reference`` return the row of
    translations as an (H, K * H, 3) uint8 array or raise ``gr.Error`` with a message for the page."""

    def __init__(self, nets: Munch, cfg: ModelConfig, max_bytes: int = MAX_UPLOAD_MB * 2 ** 20,
                 max_pixels: int = MAX_MEGAPIXELS * 10 ** 6) -> None:
        self.nets, self.cfg = nets, cfg
        self.model = StarGANv2(nets, cfg)
        self.names = cfg.names()
        self.device = self.model.device
        self.max_bytes, self.max_pixels = max_bytes, max_pixels

    def read(self, upload: Any, what: str) -> torch.Tensor:
        # events run with preprocess=False: the upload arrives as gradio's file record (already
        # checked to be in its upload cache), not opened by gradio, so that an unreadable file
        # gets this message instead of gradio's generic error
        path = upload.get('path') if isinstance(upload, dict) else upload
        if not path:
            raise gr.Error(f'Upload a {what} first' + (' (or pick an example).' if what == 'source image' else '.'))
        try:
            size = os.path.getsize(path)
        except OSError:
            raise gr.Error(f'The {what} is no longer on the server; upload it again.') from None
        if size > self.max_bytes:
            raise gr.Error(f'The {what} is {_size(size)}, over the limit of {_size(self.max_bytes)}; '
                           f'upload a smaller file.')
        try:
            return as_batch(path, self.cfg.img_size, self.device, max_pixels=self.max_pixels)
        except ImageTooLargeError as e:
            dims = f'{e.size[0]} x {e.size[1]} pixels' if e.size else 'larger'
            raise gr.Error(f'The {what} is {dims}, over the limit of {self.max_pixels / 1e6:g} megapixels; '
                           f'upload a smaller image.') from None
        except UserError:
            raise gr.Error(f'The {what} cannot be read; upload a {FORMATS_TEXT} image.') from None

    def index(self, domain: Any, what: str) -> int:
        if domain not in self.names:
            raise gr.Error(f'Pick the {what} ({", ".join(self.names)}).')
        return self.names.index(domain)

    def strength(self, strength: Any, src_domain: Any) -> tuple[float, int | None]:
        """(strength, source domain index): a strength below 1 needs the source's domain."""
        source = src_domain if src_domain in self.names else None
        try:
            value = check_strength(1.0 if strength is None else strength, 'The style strength')
            need_source_domain(value, source, self.names, 'The style strength', 'it in the menu beside the slider')
        except UserError as e:
            raise gr.Error(f'{e}.') from None
        return value, None if value == 1 or source is None else self.names.index(source)

    @torch.no_grad()
    def latent(self, src: Any, domain: Any, seed: Any, psi: Any, num_outs: Any, strength: Any = 1.0,
               src_domain: Any = None) -> npt.NDArray[np.uint8]:
        x = self.read(src, 'source image')
        y_trg = self.index(domain, 'target domain')
        num_outs = min(max(int(num_outs or 1), 1), MAX_OUTS)
        if not 0 <= int(seed or 0) < 2 ** 63:
            raise gr.Error('The seed must be a whole number from 0 to 2^63 - 1.')
        value, y_src = self.strength(strength, src_domain)
        out = self.model.translate(x, y_trg, num=num_outs, psi=float(psi), seed=int(seed or 0), strength=value,
                                   source_domain=y_src, return_tensors=True)
        assert isinstance(out, torch.Tensor)
        return image_row(out)

    @torch.no_grad()
    def reference(self, src: Any, ref: Any, ref_domain: Any, strength: Any = 1.0,
                  src_domain: Any = None) -> npt.NDArray[np.uint8]:
        x = self.read(src, 'source image')
        x_ref = self.read(ref, 'reference image')
        y_ref = self.index(ref_domain, "reference image's domain")
        value, y_src = self.strength(strength, src_domain)
        out = self.model.translate(x, reference=x_ref, reference_domain=y_ref, strength=value, source_domain=y_src,
                                   return_tensors=True)
        assert isinstance(out, torch.Tensor)
        return image_row(out)

    def limits_text(self) -> str:
        age = CACHE_CLEAN[1] // 60
        return (f'Uploads up to {_size(self.max_bytes)} and {self.max_pixels / 1e6:g} megapixels; '
                f'uploads and results are deleted from the server after about {age} minutes.')


def build_app(nets: Munch, cfg: ModelConfig, examples: Sequence[str] = (), title: str = 'StarGAN v2',
              delete_cache: tuple[int, int] = CACHE_CLEAN, translator: Translator | None = None) -> gr.Blocks:
    """The Gradio Blocks app for ``nets`` (inference networks on any device). Its two
    events are also an API: ``/latent`` (source, domain, seed, psi, num_outs[, strength,
    source domain]) and ``/reference`` (source, reference, reference domain[, strength, source
    domain]) return the image; strength 1 (the default) is the plain translation. ``delete_cache``:
    Gradio's ``(frequency, age)`` in seconds for cleaning its cache."""
    demo = translator or Translator(nets, cfg)
    names = demo.names

    with gr.Blocks(title=title, analytics_enabled=False, delete_cache=delete_cache) as app:
        gr.Markdown(f'## {title}\nDomains: {", ".join(names)} · {cfg.img_size}x{cfg.img_size} px. '
                    f'Upload a source image (it is resized to {cfg.img_size} px), then translate it '
                    f'with random styles of a target domain or with the style of a reference image; a style '
                    f"strength below 1 keeps part of the source's own style. "
                    f'{demo.limits_text()}', elem_id='intro')
        with gr.Row():
            with gr.Column():
                src = gr.Image(type='filepath', label='Source image', sources=['upload'], height=IMAGE_HEIGHT,
                               elem_id='source')
                if examples:
                    gr.Examples(examples=[[p] for p in examples], inputs=[src], label='Examples')
                with gr.Row():
                    strength = gr.Slider(0, 1, value=1, step=0.05, elem_id='strength',
                                         label="Style strength: 1 = the target style, 0 = the source's own")
                    src_domain = gr.Dropdown(names, value=None, elem_id='src_domain',
                                             label="Source image's domain (for a strength below 1)")
                with gr.Tab('Target domain'):
                    domain = gr.Dropdown(names, value=names[-1], label='Target domain', elem_id='domain')
                    with gr.Row():
                        seed = gr.Number(value=777, precision=0, label='Seed')
                        num_outs = gr.Slider(1, MAX_OUTS, value=1, step=1, label='Number of outputs')
                    psi = gr.Slider(0, 1, value=1, step=0.05,
                                    label="psi: 1 = random styles, 0 = the domain's mean style")
                    latent_btn = gr.Button('Translate', variant='primary', elem_id='translate')
                with gr.Tab('Reference image'):
                    ref = gr.Image(type='filepath', label='Reference image', sources=['upload'],
                                   height=IMAGE_HEIGHT, elem_id='reference')
                    ref_domain = gr.Dropdown(names, value=names[-1], label="Reference image's domain")
                    ref_btn = gr.Button('Translate with the reference', variant='primary', elem_id='translate_ref')
            with gr.Column():
                out = gr.Image(type='numpy', format='png', label='Translation', interactive=False,
                               height=IMAGE_HEIGHT, elem_id='output')
        latent_btn.click(demo.latent, [src, domain, seed, psi, num_outs, strength, src_domain], out, api_name='latent',
                         preprocess=False)
        ref_btn.click(demo.reference, [src, ref, ref_domain, strength, src_domain], out, api_name='reference',
                      preprocess=False)
    return app


def run(args: Any) -> None:
    """``--mode serve``: the web page on the run of ``--checkpoint_dir`` until interrupted."""
    from core.use.load_run import load_run_networks
    nets, step = load_run_networks(args)
    cfg = ModelConfig.from_args(args)
    title = f'StarGAN v2 · {os.path.basename(os.path.abspath(args.checkpoint_dir))} step {step}'
    app = build_app(nets, cfg, examples=example_images(args), title=title)
    try:
        app.queue().launch(server_name=args.host, server_port=args.port, share=args.share,
                           inbrowser=False, css=CSS, max_file_size=MAX_UPLOAD_MB * 2 ** 20)
    except OSError as e:
        raise UserError(f'cannot listen on {args.host}:{args.port} ({e}); '
                        f'pick a free port with --port or another --host') from None
