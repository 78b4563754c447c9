"""The web demo as a person uses it: `python main.py --mode serve` on a tiny checkpoint, driven
in headless Chromium (Playwright) and through gradio_client.

The browser test needs Debian's chromium and the playwright package; without them it skips
with the command that installs them, unless STARGAN_REQUIRE_BROWSER=1 (set by .ci/run), where
a missing browser is a failure.
"""
import io
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest
from PIL import Image

from helpers import ROOT
from tiny_run import make_checkpoint, make_image

pytestmark = pytest.mark.slow

CHROMIUM = os.environ.get('STARGAN_CHROMIUM', '/usr/bin/chromium')
CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
                 '--disable-component-update', '--disable-sync', '--no-first-run']
INSTALL = 'apt-get install -y chromium && pip install playwright'
IMG_SIZE = 32


def project_files():
    """Every file under the project folder but caches: serving must add none."""
    skip = {'.git', '__pycache__', '.pytest_cache'}
    found = set()
    for folder, dirs, files in os.walk(ROOT):
        dirs[:] = [d for d in dirs if d not in skip]
        found.update(os.path.join(folder, f) for f in files)
    return found


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


class Server:
    """`python main.py --mode serve ...` in a subprocess, on a free loopback port."""

    def __init__(self, argv, log_path):
        self.port = free_port()
        self.url = f'http://127.0.0.1:{self.port}/'
        self.log_path = log_path
        env = dict(os.environ, PYTHONUNBUFFERED='1', GRADIO_ANALYTICS_ENABLED='False')
        self.log = open(log_path, 'w')
        self.proc = subprocess.Popen([sys.executable, 'main.py', '--mode', 'serve', '--device', 'cpu',
                                      '--port', str(self.port), *argv],
                                     cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT, env=env)

    def output(self):
        self.log.flush()
        with open(self.log_path) as f:
            return f.read()

    def wait(self, timeout=180):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f'serve exited with {self.proc.returncode}:\n{self.output()[-3000:]}')
            try:
                with urllib.request.urlopen(self.url, timeout=5) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.5)
        pytest.fail(f'serve did not answer on {self.url} in {timeout} s:\n{self.output()[-3000:]}')

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


@pytest.fixture(scope='module')
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp('images')
    src = make_image(root / 'source.png', size=48, seed=1)
    ref = make_image(root / 'reference.jpg', size=40, seed=2)
    bad = root / 'broken.png'
    bad.write_bytes(b'this is not an image')
    return src, ref, bad


@pytest.fixture(scope='module')
def run_server(tmp_path_factory):
    """The demo's way: a run folder with config.yaml; nothing but --checkpoint_dir given."""
    root = tmp_path_factory.mktemp('run')
    make_checkpoint(root / 'ckpt', img_size=IMG_SIZE, num_domains=3, names=['circle', 'square', 'triangle'])
    for i, domain in enumerate(('circle', 'square', 'triangle')):  # validation images: the examples
        os.makedirs(root / 'val' / domain)
        for j in range(3):
            make_image(root / 'val' / domain / f'{j}.png', size=32, seed=10 * i + j)
    server = Server(['--config', 'configs/demo.yaml', '--checkpoint_dir', str(root / 'ckpt'),
                     '--val_img_dir', str(root / 'val')], root / 'serve.log').wait()
    yield server
    server.stop()


@pytest.fixture(scope='module')
def official_server(tmp_path_factory):
    """An official-format checkpoint: no config.yaml, the model given by flags and --domain_names."""
    root = tmp_path_factory.mktemp('official')
    flags, _ = make_checkpoint(root / 'ckpt', with_config=False, img_size=IMG_SIZE, num_domains=2)
    before = project_files()
    server = Server([*flags, '--domain_names', 'cat,dog', '--checkpoint_dir', str(root / 'ckpt'),
                     '--resume_iter', '3'], root / 'serve.log').wait()
    server.files_before = before
    yield server
    server.stop()


def source_pixels(path):
    """The source as the model sees it: resized to the model's size (translate mode's resize)."""
    return np.asarray(Image.open(path).convert('RGB').resize((IMG_SIZE, IMG_SIZE), Image.BILINEAR))


def check_row(img, k, src_path):
    """``img``: k translations of the model's size side by side, each unlike the source."""
    assert img.shape == (IMG_SIZE, k * IMG_SIZE, 3)
    src = source_pixels(src_path).astype(int)
    for i in range(k):
        tile = img[:, i * IMG_SIZE:(i + 1) * IMG_SIZE].astype(int)
        assert np.abs(tile - src).mean() > 5, f'output {i} is the source'
    if k > 1:
        assert not np.array_equal(img[:, :IMG_SIZE], img[:, IMG_SIZE:2 * IMG_SIZE]), 'styles gave one image'


def browser():
    """A Playwright Chromium, or a skip naming the install command (a failure in CI)."""
    required = os.environ.get('STARGAN_REQUIRE_BROWSER') == '1'
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        reason = f'playwright is not installed; install the browser test with: {INSTALL}'
        pytest.fail(reason) if required else pytest.skip(reason)
    if not (os.path.isfile(CHROMIUM) or shutil.which(CHROMIUM)):
        reason = f'no Chromium at {CHROMIUM}; install the browser test with: {INSTALL}'
        pytest.fail(reason) if required else pytest.skip(reason)
    return sync_playwright


def test_browser_upload_pick_domain_translate(run_server, images, tmp_path):
    sync_playwright = browser()
    src, _, bad = images
    with sync_playwright() as pw:
        chrome = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = chrome.new_page(viewport={'width': 1280, 'height': 900})
            page.goto(run_server.url, wait_until='networkidle', timeout=120_000)
            assert page.get_by_text('circle, square, triangle').count() == 1  # the run's domain names
            examples = page.locator('button.gallery-item')
            assert examples.count() == 3 * 2  # two validation images per domain
            examples.first.click()  # an example becomes the source
            page.locator('#source img').first.wait_for(timeout=60_000)
            assert '/0.png' in page.locator('#source img').first.get_attribute('src')
            # an unreadable upload: a message in the page, no output
            page.locator('#source input[type=file]').set_input_files(str(bad))
            page.locator('#translate').click()
            toast = page.locator('[data-testid=toast-text]').first
            toast.wait_for(timeout=60_000)
            assert 'source image cannot be read' in toast.inner_text()
            assert page.locator('#output img').count() == 0
            page.wait_for_timeout(1000)  # the message slides in
            page.screenshot(path=str(tmp_path / 'serve_error.png'))
            shutil.copy(tmp_path / 'serve_error.png', '/tmp/serve_error.png')

            page.reload(wait_until='networkidle')
            page.locator('#source input[type=file]').set_input_files(str(src))
            page.locator('#source img').first.wait_for(timeout=60_000)  # the upload is shown
            page.locator('#domain input').click()
            page.get_by_role('option', name='square').click()
            assert page.locator('#domain input').input_value() == 'square'
            page.locator('#translate').click()
            out = page.locator('#output img').first
            out.wait_for(timeout=120_000)
            page.wait_for_function("() => { const i = document.querySelector('#output img');"
                                   " return i && i.complete && i.naturalWidth > 0; }", timeout=60_000)
            data = page.request.get(out.get_attribute('src')).body()
            shot = tmp_path / 'serve_screenshot.png'
            page.screenshot(path=str(shot), full_page=True)
            shutil.copy(shot, '/tmp/serve_screenshot.png')
        finally:
            chrome.close()
    check_row(np.asarray(Image.open(io.BytesIO(data)).convert('RGB')), 1, src)
    assert shot.stat().st_size > 10_000


def test_gradio_client_latent_reference_and_bad_upload(official_server, images):
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError
    src, ref, bad = images
    client = Client(official_server.url, verbose=False)
    path = client.predict(handle_file(str(src)), 'dog', 5, 0.7, 3, api_name='/latent')
    row = np.asarray(Image.open(path).convert('RGB'))
    check_row(row, 3, src)
    again = np.asarray(Image.open(client.predict(handle_file(str(src)), 'dog', 5, 0.7, 3,
                                                 api_name='/latent')).convert('RGB'))
    assert np.array_equal(row, again)  # the seed fixes the styles
    path = client.predict(handle_file(str(src)), handle_file(str(ref)), 'cat', api_name='/reference')
    check_row(np.asarray(Image.open(path).convert('RGB')), 1, src)
    # the style strength (issue 21): 1 is the row above, below 1 another row, and it needs the source's domain
    same = client.predict(handle_file(str(src)), 'dog', 5, 0.7, 3, 1.0, None, api_name='/latent')
    assert np.array_equal(np.asarray(Image.open(same).convert('RGB')), row)
    half = client.predict(handle_file(str(src)), 'dog', 5, 0.7, 3, 0.5, 'cat', api_name='/latent')
    assert not np.array_equal(np.asarray(Image.open(half).convert('RGB')), row)
    with pytest.raises(AppError, match="pick the source image's domain"):
        client.predict(handle_file(str(src)), 'dog', 5, 0.7, 1, 0.5, None, api_name='/latent')
    with pytest.raises(AppError, match='cannot be read'):
        client.predict(handle_file(str(bad)), 'dog', 5, 0.7, 1, api_name='/latent')
    with pytest.raises(AppError, match='Upload a source image'):
        client.predict(None, 'dog', 5, 0.7, 1, api_name='/latent')
    assert official_server.proc.poll() is None  # still serving
    assert project_files() == official_server.files_before  # nothing written beside the code


# ---------------------------------------------------------------- limits, cache, requests at once (issue 19, item 11)

@pytest.fixture(scope='module')
def translator(tmp_path_factory):
    from core.config import parse_args
    from core.networks import ModelConfig
    from core.serve import Translator
    flags, nets = make_checkpoint(tmp_path_factory.mktemp('t') / 'ckpt', with_config=False, img_size=IMG_SIZE,
                                  num_domains=2, names=None)
    cfg = ModelConfig.from_args(parse_args(['--mode', 'serve', *flags, '--domain_names', 'cat,dog']))
    return lambda **limits: Translator(nets, cfg, **limits)


def big_header_png(path, width, height):
    """A PNG whose header says ``width`` x ``height`` but whose pixel data is cut off: only a
    reader that refuses it from the header answers without an error about the data."""
    Image.new('L', (width, height)).save(path, compress_level=1)
    path.write_bytes(path.read_bytes()[:200])
    return path


def test_two_requests_at_once_give_what_each_gives_alone(translator, images, tmp_path):
    import threading
    src, ref, _ = images
    other = make_image(tmp_path / 'other.png', size=40, seed=7)
    demo = translator()
    calls = [lambda: demo.latent(str(src), 'dog', 5, 0.7, 3), lambda: demo.reference(str(other), str(ref), 'cat'),
             lambda: demo.latent(str(other), 'cat', 11, 1.0, 2), lambda: demo.reference(str(src), str(other), 'dog')]
    alone = [call() for call in calls]
    assert len({a.tobytes() for a in alone}) == 4  # four different answers to tell apart
    for _ in range(3):
        got = [None] * len(calls)
        start = threading.Barrier(len(calls))

        def worker(i):
            start.wait()
            got[i] = calls[i]()
        threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(calls))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        for a, g in zip(alone, got):
            assert g is not None and np.array_equal(a, g)


def test_uploads_over_the_limits_get_a_message(translator, images, tmp_path):
    import gradio as gr
    src, _, _ = images
    with pytest.raises(gr.Error, match=r'source image is [0-9.]+ KB, over the limit of 1000 bytes'):
        translator(max_bytes=1000).latent(str(src), 'dog', 5, 0.7, 1)
    with pytest.raises(gr.Error, match=r'source image is 48 x 56 pixels|source image is 56 x 48 pixels'):
        translator(max_pixels=1000).latent(str(src), 'dog', 5, 0.7, 1)
    huge = big_header_png(tmp_path / 'huge.png', 9000, 7000)  # 63 megapixels in 200 bytes
    with pytest.raises(gr.Error, match=r'reference image is 9000 x 7000 pixels, over the limit of 50 megapixels'):
        translator().reference(str(src), str(huge), 'cat')
    assert translator(max_bytes=10 ** 6, max_pixels=10 ** 4).latent(str(src), 'dog', 5, 0.7, 1).shape == (32, 32, 3)


def test_the_page_states_the_limits(translator):
    from core.serve import CACHE_CLEAN, MAX_MEGAPIXELS, MAX_UPLOAD_MB, build_app
    demo = translator()
    app = build_app(demo.nets, demo.cfg, translator=demo)
    texts = [c.get('props', {}).get('value') for c in app.get_config_file()['components']]
    intro = [t for t in texts if isinstance(t, str) and 'megapixels' in t]
    assert len(intro) == 1
    assert f'{MAX_UPLOAD_MB} MB' in intro[0] and f'{MAX_MEGAPIXELS} megapixels' in intro[0]
    assert f'{CACHE_CLEAN[1] // 60} minutes' in intro[0]
    assert app.delete_cache == CACHE_CLEAN


def test_gradio_cache_is_cleaned(translator, images):
    from gradio_client import Client, handle_file

    from core.serve import build_app
    src, _, _ = images
    demo = translator()
    app = build_app(demo.nets, demo.cfg, translator=demo, delete_cache=(1, 2))
    port = free_port()
    app.queue().launch(server_name='127.0.0.1', server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        client = Client(f'http://127.0.0.1:{port}/', verbose=False)
        client.predict(handle_file(str(src)), 'dog', 5, 0.7, 1, api_name='/latent')
        cached = [f for s in app.temp_file_sets for f in s]
        assert cached and all(os.path.exists(f) for f in cached)  # the upload (and the result) are in the cache
        deadline = time.time() + 30
        while any(os.path.exists(f) for f in cached) and time.time() < deadline:
            time.sleep(0.5)
        assert not any(os.path.exists(f) for f in cached), 'the cache was not cleaned'
    finally:
        app.close()
