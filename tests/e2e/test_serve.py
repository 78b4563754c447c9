"""The web demo as a person uses it: `python main.py --mode serve` on a tiny checkpoint, driven
in headless Chromium (Playwright) and through gradio_client.

The Translator behind the page (limits, cache, requests at once) is tested in
tests/core/use/test_serve.py. The browser test needs Debian's chromium and the playwright package; without them it skips
with the command that installs them, unless STARGAN_REQUIRE_BROWSER=1 (set by .ci/run), where
a missing browser is a failure.
"""
import io
import os
import shutil

import numpy as np
import pytest
from helpers import ROOT, Server
from PIL import Image
from tiny_run import make_checkpoint, make_image, upload_images

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


@pytest.fixture(scope='module')
def images(tmp_path_factory):
    return upload_images(tmp_path_factory.mktemp('images'))


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
    with pytest.raises(AppError, match="needs the source image's domain"):
        client.predict(handle_file(str(src)), 'dog', 5, 0.7, 1, 0.5, None, api_name='/latent')
    with pytest.raises(AppError, match='cannot be read'):
        client.predict(handle_file(str(bad)), 'dog', 5, 0.7, 1, api_name='/latent')
    with pytest.raises(AppError, match='Upload a source image'):
        client.predict(None, 'dog', 5, 0.7, 1, api_name='/latent')
    assert official_server.proc.poll() is None  # still serving
    assert project_files() == official_server.files_before  # nothing written beside the code
