"""core/use/serve.py's Translator and page: upload limits, the page's statement of them, the gradio
cache cleaning, requests at once (the served page itself: tests/e2e/test_serve.py)."""
import os
import time

import numpy as np
import pytest
from helpers import free_port
from PIL import Image
from tiny_run import make_checkpoint, make_image, upload_images

pytestmark = pytest.mark.slow  # gradio and served apps

IMG_SIZE = 32


@pytest.fixture(scope='module')
def images(tmp_path_factory):
    return upload_images(tmp_path_factory.mktemp('images'))


# ---------------------------------------------------------------- limits, cache, requests at once (issue 19, item 11)

@pytest.fixture(scope='module')
def translator(tmp_path_factory):
    from core.cli.arguments import parse_args
    from core.nn.networks import ModelConfig
    from core.use.serve import Translator
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
    from core.use.serve import CACHE_CLEAN, MAX_MEGAPIXELS, MAX_UPLOAD_MB, build_app
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

    from core.use.serve import build_app
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


def test_an_upload_of_another_format_is_refused_before_any_decoder(translator, images, eps_as_png):
    import gradio as gr
    src, _, _ = images
    with pytest.raises(gr.Error, match='The reference image cannot be read; upload a PNG, JPEG, WebP or BMP image'):
        translator().reference(str(src), str(eps_as_png), 'cat')
    with pytest.raises(gr.Error, match='The source image cannot be read; upload a PNG, JPEG, WebP or BMP image'):
        translator().latent(str(eps_as_png), 'dog', 5, 0.7, 1)
