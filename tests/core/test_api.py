"""The Python API (core/api.py, issue 21 items 1 and 4): loading a run, translating with latent
styles, references or given style codes, every kind of image input, the style strength, the
errors; translate mode and the web demo give its pixels; the example of docs/python_api.md runs."""
import os
import re
import sys

import numpy as np
import pytest
import torch
from helpers import ROOT
from PIL import Image
from tiny_run import STEP, make_checkpoint, make_image

from core.api import StarGANv2, as_batch
from core.errors import UserError
from core.nn.fan import fan_masks
from core.nn.styles import mean_style, truncated_style

NAMES3 = ['cat', 'dog', 'wild']


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    """Two tiny runs with config.yaml: 3 domains w_hpf 0 (32 px), 2 domains w_hpf 1 (64 px, FAN masks)."""
    root = tmp_path_factory.mktemp('runs')
    _, nets0 = make_checkpoint(root / 'hpf0', img_size=32, num_domains=3, w_hpf=0, names=NAMES3)
    _, nets1 = make_checkpoint(root / 'hpf1', img_size=64, num_domains=2, w_hpf=1, names=['female', 'male'])
    return {'hpf0': (root / 'hpf0', nets0), 'hpf1': (root / 'hpf1', nets1)}


@pytest.fixture(scope='module')
def model0(runs, one_thread):
    return StarGANv2.from_run(runs['hpf0'][0], device='cpu')


@pytest.fixture(scope='module')
def model1(runs, one_thread):
    return StarGANv2.from_run(runs['hpf1'][0], device='cpu')


@pytest.fixture(scope='module')
def photos(tmp_path_factory):
    root = tmp_path_factory.mktemp('photos')
    return [make_image(root / f'{i}.png', size=40 + 8 * i, seed=i) for i in range(3)]


def old_latent_translation(nets, cfg, x, y, num, seed, psi):
    """What translate mode computed before the API (its code then, inlined): the mean style
    and the codes from one seeded CPU generator, the truncation, the masks of the one source."""
    generator = torch.Generator().manual_seed(seed)
    yv = torch.full((num,), y)
    s_avg = mean_style(nets, y, cfg.latent_dim, generator=generator)
    z = torch.randn(num, cfg.latent_dim, generator=generator)
    s = truncated_style(nets, s_avg, z, yv, psi)
    masks = fan_masks(nets, cfg.w_hpf, x)
    masks = None if masks is None else [m.expand(num, -1, -1, -1) for m in masks]
    return nets.generator(x.expand(num, -1, -1, -1), s, masks=masks)


def old_reference_translation(nets, cfg, x, x_ref, y_ref):
    s = nets.style_encoder(x_ref, torch.tensor([y_ref]))
    masks = fan_masks(nets, cfg.w_hpf, x)
    return nets.generator(x, s, masks=None if masks is None else list(masks))


# ---------------------------------------------------------------- loading


def test_from_run_loads_the_newest_step_with_the_runs_configuration(model0, model1):
    assert model0.domains == NAMES3 and model0.step == STEP and model0.device == torch.device('cpu')
    assert (model0.config.img_size, model0.config.num_domains, model0.config.w_hpf) == (32, 3, 0)
    assert model1.domains == ['female', 'male'] and model1.config.w_hpf == 1 and 'fan' in model1.nets
    assert 'cat' in repr(model0) and '32 px' in repr(model0)
    assert all(not net.training for net in model0.nets.values())


def test_an_official_checkpoint_takes_its_configuration_as_keywords(tmp_path, runs, photos, one_thread):
    flags, nets = make_checkpoint(tmp_path / 'official', with_config=False, img_size=32, num_domains=3)
    model = StarGANv2.from_run(tmp_path / 'official', step=STEP, device='cpu', img_size=32, dim_in=8, max_conv_dim=32,
                               style_dim=16, latent_dim=8, num_domains=3, w_hpf=0, domain_names='cat,dog,wild')
    assert model.domains == NAMES3
    same = StarGANv2.from_run(runs['hpf0'][0], device='cpu')  # the same weights (filled by name), with config.yaml
    assert torch.equal(model.translate(photos[0], 'dog', return_tensors=True),
                       same.translate(photos[0], 'dog', return_tensors=True))
    with pytest.raises(UserError, match='another configuration'):  # the official defaults do not fit it
        StarGANv2.from_run(tmp_path / 'official', device='cpu')
    with pytest.raises(UserError, match='img_sise: not a model setting'):
        StarGANv2.from_run(tmp_path / 'official', device='cpu', img_sise=32)
    with pytest.raises(UserError, match='gives 2 names but num_domains is 3'):
        StarGANv2.from_run(runs['hpf0'][0], device='cpu', domain_names='a,b')
    with pytest.raises(UserError, match='no run folder'):
        StarGANv2.from_run(tmp_path / 'absent', device='cpu')


def test_from_pretrained_takes_a_hub_folder_or_a_cached_hub_repository(runs, tmp_path, monkeypatch, photos):
    """A Hub folder (``--mode export --format hf``: core.use.hub_folder) loads as the run it came
    from, by path and, offline, by repository id from the Hub's cache; the resolver is
    core.use.hub_transport.resolve_pretrained (its own tests hold the other cases)."""
    from huggingface_hub import constants

    from core.use.hub_folder import save_hub_folder
    run = StarGANv2.from_run(runs['hpf1'][0], device='cpu')
    save_hub_folder(run.nets, run.config, tmp_path / 'hf', step=run.step)
    s = run.latent_style('male', 2, seed=3)
    want = run.translate(photos[0], style=s, return_tensors=True)
    for model in (StarGANv2.from_run(tmp_path / 'hf', device='cpu'), StarGANv2.from_pretrained(str(tmp_path / 'hf'),
                                                                                                device='cpu')):
        assert model.domains == ['female', 'male'] and model.step == STEP and model.config == run.config
        assert torch.equal(model.translate(photos[0], style=s, return_tensors=True), want)
    # a repository in the Hub's cache (its layout: refs/main names the snapshot), offline: no network
    monkeypatch.setattr(constants, 'HF_HUB_OFFLINE', True)
    repo = tmp_path / 'cache' / 'models--someone--tiny-stargan'
    commit = 'c0ffee' * 6 + 'c0ff'
    os.makedirs(repo / 'refs')
    (repo / 'refs' / 'main').write_text(commit)
    os.makedirs(repo / 'snapshots')
    os.symlink(tmp_path / 'hf', repo / 'snapshots' / commit)
    model = StarGANv2.from_pretrained('someone/tiny-stargan', device='cpu', cache_dir=tmp_path / 'cache')
    assert torch.equal(model.translate(photos[0], style=s, return_tensors=True), want)
    with pytest.raises(UserError, match=r"not in the Hugging Face cache .*HF_HUB_OFFLINE=1") as e:
        StarGANv2.from_pretrained('someone/absent', device='cpu', cache_dir=tmp_path / 'cache')
    assert '\n' not in str(e.value)
    with pytest.raises(UserError, match='is not a folder'):
        StarGANv2.from_pretrained('no/such/folder', device='cpu')
    monkeypatch.setitem(sys.modules, 'huggingface_hub', None)  # not installed
    with pytest.raises(UserError, match='pip install huggingface_hub'):
        StarGANv2.from_pretrained('someone/tiny-stargan', device='cpu')


# ---------------------------------------------------------------- the same pixels as before the API


@pytest.mark.parametrize('which', ['hpf0', 'hpf1'])
def test_translate_gives_what_translate_mode_computed_before_the_api(runs, model0, model1, photos, which):
    model = model0 if which == 'hpf0' else model1
    nets, cfg = model.nets, model.config
    x = as_batch(photos[1], cfg.img_size, 'cpu')
    with torch.no_grad():
        want = old_latent_translation(nets, cfg, x, 1, 3, 777, 0.7)
        got = model.translate(photos[1], domain=1, num=3, psi=0.7, seed=777, return_tensors=True)
        assert torch.equal(got, want)
        x_ref = as_batch(photos[2], cfg.img_size, 'cpu')
        want = old_reference_translation(nets, cfg, x, x_ref, 0)
        got = model.translate(photos[1], reference=photos[2], reference_domain=0, return_tensors=True)
        assert torch.equal(got, want)


def test_images_are_rounded_as_saved_files(model0, photos, tmp_path):
    from core.io.images import save_image
    x = model0.translate(photos[0], 'dog', num=2, seed=3, return_tensors=True)
    save_image(x, 2, tmp_path / 'row.png')
    images = model0.translate(photos[0], 'dog', num=2, seed=3)
    assert [im.size for im in images] == [(32, 32)] * 2 and all(im.mode == 'RGB' for im in images)
    assert np.array_equal(np.concatenate([np.asarray(im) for im in images], axis=1),
                          np.asarray(Image.open(tmp_path / 'row.png')))


@pytest.mark.slow  # seconds: whole translations at the tested sizes
def test_every_kind_of_image_gives_the_same_output(model1, photos):
    path = photos[2]
    pil = Image.open(path)
    tensor = as_batch(path, 64, 'cpu')
    kinds = {'path': path, 'str': str(path), 'PIL': pil, 'numpy': np.asarray(pil), 'RGBA numpy': np.asarray(pil.convert('RGBA')),
             'tensor NCHW': tensor, 'tensor CHW': tensor[0], 'list': [path]}
    s = model1.latent_style('male', num=2, seed=1)
    want = model1.translate(path, style=s, return_tensors=True)
    for kind, image in kinds.items():
        got = model1.translate(image, style=s, return_tensors=True)
        assert torch.equal(got, want), kind
    assert model1.translate(as_batch(path, 128, 'cpu'), 'male', return_tensors=True).shape == (1, 3, 64, 64)


def test_bad_inputs_are_one_line_errors(model0, photos, tmp_path):
    cases = [
        (dict(image=np.zeros((8, 8, 3), np.float32), domain='dog'), 'numpy image must be uint8'),
        (dict(image=torch.zeros(3, 8, 8, dtype=torch.uint8), domain='dog'), 'float in'),
        (dict(image=torch.zeros(1, 8, 8), domain='dog'), r'\(3, H, W\)'),
        (dict(image=42, domain='dog'), 'cannot read an image from a int'),
        (dict(image=str(tmp_path / 'absent.png'), domain='dog'), 'cannot read image'),
        (dict(image=[], domain='dog'), 'no images'),
        (dict(image=photos[0], domain='zebra'), "domain 'zebra' is not a domain of this model; use one of cat, dog, wild"),
        (dict(image=photos[0], domain=3), "domain '3' is not a domain"),
        (dict(image=photos[0]), 'give the target domain'),
        (dict(image=photos[0], domain='dog', reference=photos[1], reference_domain='dog'), 'not both'),
        (dict(image=photos[0], reference=photos[1]), 'reference_domain is required'),
        (dict(image=photos[0], reference=photos[1], reference_domain='dog', num=2), 'one style'),
        (dict(image=photos[0], domain='dog', num=0), 'num must be >= 1'),
        (dict(image=photos[0], domain='dog', strength=1.5), r'strength must be in \[0, 1\]'),
        (dict(image=photos[0], domain='dog', strength=0.5), 'give source_domain'),
        (dict(image=photos[0], style=torch.zeros(2, 5)), r'style codes must be \(k, 16\)'),
        (dict(image=photos[:2], domain='dog', strength=0.5, source_domain=['cat']), 'gives 1 domains for 2 images'),
    ]
    for kwargs, match in cases:
        with pytest.raises(UserError, match=match) as e:
            model0.translate(**kwargs)
        assert '\n' not in str(e.value)
    with pytest.raises(UserError, match='3 images and 2 style codes'):
        model0.generate(photos, torch.zeros(2, 16))


def test_domains_by_name_or_index(model0, photos):
    want = model0.style(photos[0], 'wild')
    assert not torch.equal(want, model0.style(photos[0], 'dog'))
    for domain in (2, '2', np.int64(2)):
        assert torch.equal(model0.style(photos[0], domain), want)


# ---------------------------------------------------------------- styles, generate, batches


def test_style_codes_and_generate_are_the_pieces_of_translate(model1, photos):
    s = model1.latent_style('male', num=3, psi=0.5, seed=9)
    assert s.shape == (3, 16)
    want = model1.translate(photos[0], 'male', num=3, psi=0.5, seed=9, return_tensors=True)
    assert torch.equal(model1.generate(photos[0], s), want)  # one image, each style
    assert torch.equal(model1.translate(photos[0], style=s, return_tensors=True), want)
    s_ref = model1.style(photos[1], 'female')
    assert s_ref.shape == (1, 16)
    assert torch.equal(model1.generate(photos[0], s_ref),
                       model1.translate(photos[0], reference=photos[1], reference_domain='female', return_tensors=True))


@pytest.mark.slow  # seconds: whole translations at the tested sizes
def test_batches_give_what_each_image_gives_alone(model1, photos):
    s = model1.style(photos, ['female', 'male', 'female'])  # one domain per image
    alone = torch.cat([model1.style(p, d) for p, d in zip(photos, ['female', 'male', 'female'])])
    assert s.shape == (3, 16) and torch.allclose(s, alone, atol=1e-5)
    x = model1.generate(photos, s)  # pairwise, masks of each image
    assert x.shape == (3, 3, 64, 64)
    for i in range(3):
        assert torch.allclose(x[i:i + 1], model1.generate(photos[i], s[i:i + 1]), atol=1e-5)
    # several sources, several styles: each source with each style, source by source
    s = model1.latent_style('male', num=2, seed=4)
    out = model1.translate(photos[:2], style=s, return_tensors=True)
    assert out.shape == (4, 3, 64, 64)
    for i in range(2):
        assert torch.allclose(out[2 * i:2 * i + 2], model1.translate(photos[i], style=s, return_tensors=True), atol=1e-5)
    assert len(model1.translate(photos[:2], style=s)) == 4


def test_the_same_seed_gives_the_same_styles_and_another_seed_others(model0):
    a, b = model0.latent_style('cat', 2, seed=1), model0.latent_style('cat', 2, seed=1)
    assert torch.equal(a, b) and not torch.equal(a[0], a[1])
    mean = model0.latent_style('cat', 2, psi=0.0, seed=2)
    assert torch.allclose(mean[0], mean[1])  # psi 0: the mean style


# ---------------------------------------------------------------- style strength (item 4)


@pytest.mark.slow  # seconds: whole translations at the tested sizes
@pytest.mark.parametrize('which', ['hpf0', 'hpf1'])
def test_strength_moves_from_the_source_style_to_the_target_style(model0, model1, photos, which):
    model = model0 if which == 'hpf0' else model1
    src, trg = model.domains[0], model.domains[-1]
    s_trg = model.latent_style(trg, 2, 0.8, 5)
    full = model.translate(photos[1], domain=trg, num=2, psi=0.8, seed=5, return_tensors=True)
    assert torch.equal(model.translate(photos[1], style=s_trg, return_tensors=True), full)
    kwargs = dict(style=s_trg, return_tensors=True)
    # 1: today's translation bit for bit (the source's style is not even computed)
    assert torch.equal(model.translate(photos[1], strength=1.0, source_domain=src, **kwargs), full)
    # 0: the source translated with its own style (the style encoder on it, in its domain)
    own = model.generate(photos[1], model.style(photos[1], src).expand(2, -1))
    zero = model.translate(photos[1], strength=0.0, source_domain=src, **kwargs)
    assert torch.equal(zero, own)
    assert torch.equal(zero[0], zero[1])  # the target's random styles play no part
    # in between: steadily further from the source's own style, nearer the target style
    steps = [0.0, 0.25, 0.5, 0.75, 1.0]
    outs = [model.translate(photos[1], strength=t, source_domain=src, **kwargs) for t in steps]
    to_full = [float((o - full).abs().mean()) for o in outs]
    to_own = [float((o - own).abs().mean()) for o in outs]
    assert all(a > b for a, b in zip(to_full, to_full[1:])), to_full
    assert all(a < b for a, b in zip(to_own, to_own[1:])), to_own
    # the codes are on the straight line
    s_src = model.style(photos[1], src)
    half = model.generate(photos[1], torch.lerp(s_src.expand(2, -1), s_trg, 0.5))
    assert torch.equal(outs[2], half)


def test_strength_with_a_reference_and_several_sources(model0, photos):
    ref = dict(reference=photos[2], reference_domain='wild', return_tensors=True)
    out = model0.translate(photos[:2], strength=0.3, source_domain=['cat', 'dog'], **ref)
    for i, d in enumerate(['cat', 'dog']):
        one = model0.translate(photos[i], strength=0.3, source_domain=d, **ref)
        assert torch.allclose(out[i:i + 1], one, atol=1e-5)


# ---------------------------------------------------------------- translate mode and the web demo use the API


def test_translate_flags_are_checked_before_the_networks_load(tmp_path, monkeypatch, capsys):
    import core.use.translate
    import main as cli
    from core.cli.arguments import parse_args
    assert parse_args(['--mode', 'translate']).strength == 1.0
    with pytest.raises(UserError, match=r'--strength must be in \[0, 1\]'):
        parse_args(['--mode', 'translate', '--strength', '1.5'])
    src = make_image(tmp_path / 'src.png')
    monkeypatch.setattr(core.use.translate, 'load_run_networks', lambda *a, **k: pytest.fail('networks loaded'))
    base = ['--mode', 'translate', '--checkpoint_dir', str(tmp_path), '--src', str(src), '--trg_domain', '1',
            '--out', str(tmp_path / 'out.png')]
    assert cli.main([*base, '--strength', '0.5']) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and 'give --src_domain' in err[0]
    assert cli.main([*base, '--strength', '0.5', '--src_domain', 'zebra']) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--src_domain 'zebra' is not a domain" in err[0]


@pytest.mark.slow  # runs main.py --mode translate
def test_translate_mode_writes_the_apis_pixels(runs, model1, photos, tmp_path):
    import main as cli
    folder = runs['hpf1'][0]
    common = ['--mode', 'translate', '--checkpoint_dir', str(folder), '--device', 'cpu', '--src', str(photos[0])]
    assert cli.main([*common, '--trg_domain', 'male', '--num_outs', '3', '--psi', '0.7', '--out',
                     str(tmp_path / 'latent.png')]) == 0
    want = model1.translate(photos[0], 'male', num=3, psi=0.7, seed=777)  # --seed 777 by default
    assert np.array_equal(np.asarray(Image.open(tmp_path / 'latent.png')), np.concatenate([np.asarray(i) for i in want], 1))
    assert cli.main([*common, '--ref', str(photos[1]), '--ref_domain', 'female', '--strength', '0.4', '--src_domain',
                     'female', '--out', str(tmp_path / 'ref.png')]) == 0
    [want] = model1.translate(photos[0], reference=photos[1], reference_domain='female', strength=0.4,
                              source_domain='female')
    assert np.array_equal(np.asarray(Image.open(tmp_path / 'ref.png')), np.asarray(want))


@pytest.mark.slow  # seconds: whole translations at the tested sizes
def test_the_web_demo_translates_with_the_api_and_a_strength(model0, photos):
    import gradio as gr

    from core.io.images import image_row
    from core.use.serve import Translator, build_app
    demo = Translator(model0.nets, model0.config)
    s = model0.latent_style('dog', num=3, psi=0.7, seed=5)
    row = demo.latent(str(photos[0]), 'dog', 5, 0.7, 3)
    assert np.array_equal(row, image_row(model0.translate(photos[0], style=s, return_tensors=True)))
    assert np.array_equal(demo.latent(str(photos[0]), 'dog', 5, 0.7, 3, 1.0, None), row)  # strength 1: today's row
    half = demo.latent(str(photos[0]), 'dog', 5, 0.7, 3, 0.5, 'cat')
    assert np.array_equal(half, image_row(model0.translate(photos[0], style=s, strength=0.5, source_domain='cat',
                                                           return_tensors=True)))
    ref = demo.reference(str(photos[0]), str(photos[1]), 'wild', 0.25, 'cat')
    assert np.array_equal(ref, image_row(model0.translate(photos[0], reference=photos[1], reference_domain='wild',
                                                          strength=0.25, source_domain='cat', return_tensors=True)))
    with pytest.raises(gr.Error, match="needs the source image's domain"):
        demo.latent(str(photos[0]), 'dog', 5, 0.7, 1, 0.5, None)
    app = build_app(demo.nets, demo.cfg, translator=demo)
    props = {c.get('props', {}).get('elem_id'): c['props'] for c in app.get_config_file()['components']}
    assert props['strength']['minimum'] == 0 and props['strength']['maximum'] == 1 and props['strength']['value'] == 1
    assert [c[0] for c in props['src_domain']['choices']] == NAMES3


# ---------------------------------------------------------------- the documented example


def doc_example():
    text = open(os.path.join(ROOT, 'docs', 'python_api.md'), encoding='utf-8').read()
    blocks = re.findall(r'```python\n(# python_api_example\.py.*?)```', text, re.S)
    assert len(blocks) == 1, 'docs/python_api.md must hold one ```python block starting with # python_api_example.py'
    return blocks[0]


def test_the_documented_example_runs(tmp_path, monkeypatch, one_thread):
    """docs/python_api.md's example, verbatim, in a folder laid out as after the CPU demo
    (a tiny run in expr/demo/checkpoints, shapes in expr/demo/data/val)."""
    make_checkpoint(tmp_path / 'expr' / 'demo' / 'checkpoints', img_size=32, num_domains=3,
                    names=['circle', 'square', 'triangle'])
    for i, domain in enumerate(['circle', 'square', 'triangle']):
        os.makedirs(tmp_path / 'expr' / 'demo' / 'data' / 'val' / domain)
        make_image(tmp_path / 'expr' / 'demo' / 'data' / 'val' / domain / '00000.png', size=32, seed=i)
    monkeypatch.chdir(tmp_path)
    code = compile(doc_example(), 'python_api_example.py', 'exec')
    exec(code, {'__name__': '__main__'})
    written = sorted(p.name for p in tmp_path.iterdir() if p.suffix == '.png')
    assert written, 'the example saves its images'
    for name in written:
        assert Image.open(tmp_path / name).size[1] == 32


def test_a_folder_under_the_home_directory_given_with_a_tilde(runs, tmp_path, monkeypatch):
    """from_pretrained('~/models/x') and from_run('~/...') expand '~' as a shell would."""
    monkeypatch.setenv('HOME', str(runs['hpf0'][0].parent))
    for load in (StarGANv2.from_pretrained, StarGANv2.from_run):
        model = load('~/hpf0', device='cpu')
        assert model.domains == NAMES3 and model.step == STEP


def test_model_keywords_out_of_bounds_are_one_line_before_anything_is_built(runs, monkeypatch):
    import core.use.load_run
    monkeypatch.setattr(core.use.load_run, 'build_networks', lambda *a, **k: pytest.fail('networks were built'))
    for key, value, match in (('style_dim', 10 ** 12, 'style_dim must be an integer from 1 to 2048'),
                              ('num_domains', 10000, 'num_domains must be an integer from 1 to 256'),
                              ('img_size', 1, 'img_size must be a power of two from 16 to 1024'),
                              ('domain_names', 'cat,dog,cat', "names 'cat' twice")):
        with pytest.raises(UserError, match=match):
            StarGANv2.from_run(runs['hpf0'][0], device='cpu', **{key: value})


def test_a_file_of_another_format_is_refused_before_any_decoder(eps_as_png):
    """An EPS named .png given to the API: one line naming the formats read; PIL's EPS plugin
    (Ghostscript) never runs (the fixture fails the test otherwise)."""
    with pytest.raises(UserError, match=r"cannot read image '.*photo\.png' \(not a PNG, JPEG, WebP or BMP image") as e:
        as_batch(str(eps_as_png), 32, 'cpu')
    assert '\n' not in str(e.value)
