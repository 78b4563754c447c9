"""Every public module-level name of the official core/ and metrics/ modules is importable
here under the same module path, callable with the official argument names, and does
what the official one does (thin delegations to this project's code)."""
import ast
import importlib
import inspect
import os
import pathlib
import re

import numpy as np
import pytest
import torch
from helpers import ROOT, TINY_MODEL, tiny_nets
from munch import Munch
from PIL import Image
from weights_by_name import fill_by_name, fill_torch_hub

from core.errors import UserError

# The official modules' public names and their argument lists (clovaai/stargan-v2, read from
# the repository; for a class, its __init__ without self). Names are facts, not code.
OFFICIAL = {
    'core.checkpoint': {
        'CheckpointIO': 'fname_template, data_parallel=False, **kwargs',
    },
    'core.data_loader': {
        'listdir': 'dname',
        'DefaultDataset': 'root, transform=None',
        'ReferenceDataset': 'root, transform=None',
        'get_train_loader': "root, which='source', img_size=256, batch_size=8, prob=0.5, num_workers=4",
        'get_eval_loader': 'root, img_size=256, batch_size=32, imagenet_normalize=True, shuffle=True, '
                           'num_workers=4, drop_last=False',
        'get_test_loader': 'root, img_size=256, batch_size=32, shuffle=True, num_workers=4',
        'InputFetcher': "loader, loader_ref=None, latent_dim=16, mode=''",
    },
    'core.model': {
        'ResBlk': 'dim_in, dim_out, actv=nn.LeakyReLU(0.2), normalize=False, downsample=False',
        'AdaIN': 'style_dim, num_features',
        'AdainResBlk': 'dim_in, dim_out, style_dim=64, w_hpf=0, actv=nn.LeakyReLU(0.2), upsample=False',
        'HighPass': 'w_hpf, device',
        'Generator': 'img_size=256, style_dim=64, max_conv_dim=512, w_hpf=1',
        'MappingNetwork': 'latent_dim=16, style_dim=64, num_domains=2',
        'StyleEncoder': 'img_size=256, style_dim=64, num_domains=2, max_conv_dim=512',
        'Discriminator': 'img_size=256, num_domains=2, max_conv_dim=512',
        'build_model': 'args',
    },
    'core.solver': {
        'Solver': 'args',
        'compute_d_loss': 'nets, args, x_real, y_org, y_trg, z_trg=None, x_ref=None, masks=None',
        'compute_g_loss': 'nets, args, x_real, y_org, y_trg, z_trgs=None, x_refs=None, masks=None',
        'moving_average': 'model, model_test, beta=0.999',
        'adv_loss': 'logits, target',
        'r1_reg': 'd_out, x_in',
    },
    'core.utils': {
        'save_json': 'json_file, filename',
        'print_network': 'network, name',
        'he_init': 'module',
        'denormalize': 'x',
        'save_image': 'x, ncol, filename',
        'translate_and_reconstruct': 'nets, args, x_src, y_src, x_ref, y_ref, filename',
        'translate_using_latent': 'nets, args, x_src, y_trg_list, z_trg_list, psi, filename',
        'translate_using_reference': 'nets, args, x_src, x_ref, y_ref, filename',
        'debug_image': 'nets, args, inputs, step',
        'sigmoid': 'x, w=1',
        'get_alphas': 'start=-5, end=5, step=0.5, len_tail=10',
        'interpolate': 'nets, args, x_src, s_prev, s_next',
        'slide': 'entries, margin=32',
        'video_ref': 'nets, args, x_src, x_ref, y_ref, fname',
        'video_latent': 'nets, args, x_src, y_list, z_list, psi, fname',
        'save_video': "fname, images, output_fps=30, vcodec='libx264', filters=''",
        'tensor2ndarray255': 'images',
    },
    'core.wing': {
        'get_preds_fromhm': 'hm',
        'HourGlass': 'num_modules, depth, num_features, first_one=False',
        'AddCoordsTh': 'height=64, width=64, with_r=False, with_boundary=False',
        'CoordConvTh': 'height, width, with_r, with_boundary, in_channels, first_one=False, **kwargs',
        'ConvBlock': 'in_planes, out_planes',
        'FAN': 'num_modules=1, end_relu=False, num_landmarks=98, fname_pretrained=None',
        'tensor2numpy255': 'tensor',
        'np2tensor': 'image',
        'FaceAligner': 'fname_wing, fname_celeba_mean, output_size',
        'points2T': 'point, direction',
        'landmarks2eyes': 'landmarks',
        'landmarks2mouthends': 'landmarks',
        'rotate90': 'vec',
        'landmarks2xaxis': 'landmarks',
        'vecs2R': 'vec_x, vec_y',
        'landmarks2S': 'x, y',
        'pad_mirror': 'img, landmarks',
        'align_faces': 'args, input_dir, output_dir',
        'normalize': 'x, eps=1e-06',
        'truncate': 'x, thres=0.1',
        'resize': 'x, p=2',
        'shift': 'x, N',
        'preprocess': 'x',
    },
    'metrics.eval': {
        'calculate_metrics': 'nets, args, step, mode',
        'calculate_fid_for_all_tasks': 'args, domains, step, mode',
    },
    'metrics.fid': {
        'InceptionV3': '',
        'frechet_distance': 'mu, cov, mu2, cov2',
        'calculate_fid_given_paths': 'paths, img_size=256, batch_size=50',
    },
    'metrics.lpips': {
        'normalize': 'x, eps=1e-10',
        'AlexNet': '',
        'Conv1x1': 'in_channels, out_channels=1',
        'LPIPS': '',
        'calculate_lpips_given_images': 'group_of_images',
    },
}
NAMES = [(module, name) for module, names in OFFICIAL.items() for name in names]


def official_params(module, name):
    """[(name, has_default, default or None when not a literal)], and whether **kwargs is taken."""
    params, var_kw = [], False
    for item in filter(None, OFFICIAL[module][name].split(', ')):
        if item.startswith('**'):
            var_kw = True
            continue
        pname, _, default = item.partition('=')
        try:
            value = ast.literal_eval(default) if default else None
        except ValueError:  # e.g. nn.LeakyReLU(0.2): only its presence is compared
            value = None
        params.append((pname, bool(default), value))
    return params, var_kw


def ours(module, name):
    return getattr(importlib.import_module(module), name)


def official_modules_in_the_code():
    """The modules that carry official names, found in the code rather than in OFFICIAL: the
    compatibility layer (core/ modules whose docstring opens with "The official ``core.X``")
    and every module of metrics/ (which keeps the official names as its own)."""
    found = set()
    for path in sorted((pathlib.Path(ROOT) / 'core').glob('*.py')):
        doc = ast.get_docstring(ast.parse(path.read_text())) or ''
        if doc.startswith(f'The official ``core.{path.stem}``'):
            found.add(f'core.{path.stem}')
    found |= {f'metrics.{p.stem}' for p in (pathlib.Path(ROOT) / 'metrics').glob('*.py') if p.stem != '__init__'}
    return found


def official_names_in_the_docs():
    """{module: names} from the table of official names in docs/official_dropin.md: first cells
    like "`core.utils`: `save_image`, ..." (several modules split by ';'), or
    "`core.checkpoint.CheckpointIO(...)`: `register`, ..." (a class and its methods)."""
    found = {}
    for line in (pathlib.Path(ROOT) / 'docs' / 'official_dropin.md').read_text().splitlines():
        if not re.match(r'\| `(core|metrics)\.', line):
            continue
        for part in line.split('|')[1].split(';'):
            head, *names = re.findall(r'`([^`]+)`', part)
            module = re.match(r'(core|metrics)\.\w+', head).group(0)
            if head != module:  # `core.checkpoint.CheckpointIO(...)`: the class (then its methods)
                names = [re.match(r'\w+', head[len(module) + 1:]).group(0)]
            found.setdefault(module, set()).update(names)
    return found


def test_the_manifest_covers_every_official_module():
    """OFFICIAL names exactly the modules the code has for official names, each module's
    ``__all__`` where it declares one, and the table of docs/official_dropin.md (with its count):
    a module or name added or removed on one side fails here until the others follow."""
    assert set(OFFICIAL) == official_modules_in_the_code()
    for module, names in OFFICIAL.items():
        declared = getattr(importlib.import_module(module), '__all__', None)
        if declared is not None and module.startswith('core.'):  # the compatibility layer: official names only
            assert sorted(declared) == sorted(names), module
    assert official_names_in_the_docs() == {module: set(names) for module, names in OFFICIAL.items()}
    stated = re.search(r'\((\d+) of them\)', (pathlib.Path(ROOT) / 'docs' / 'official_dropin.md').read_text())
    assert stated and int(stated.group(1)) == len(NAMES), 'docs/official_dropin.md states another count'


@pytest.mark.parametrize('module,name', NAMES, ids=[f'{m}.{n}' for m, n in NAMES])
def test_official_name_binds_the_official_arguments(module, name):
    obj = ours(module, name)
    assert callable(obj)
    sig = inspect.signature(obj)
    params, var_kw = official_params(module, name)
    names = [p for p, _, _ in params]
    # positionally, in the official order: each value lands on the parameter of that name
    assert dict(sig.bind(*names).arguments) == {n: n for n in names}
    # by keyword, with the official names
    sig.bind(**{n: n for n in names})
    # what is optional officially is optional here, with the same default when it is a literal
    sig.bind(*[n for n, has_default, _ in params if not has_default])
    for pname, has_default, value in params:
        if has_default and value is not None:
            assert sig.parameters[pname].default == value, pname
    if var_kw:
        sig.bind(*names, some_module='m')


# ------------------------------------------------------------------ behaviour

def official_args(**over):
    """What an official script's namespace holds of the tiny model (helpers.TINY_MODEL): the
    official keys and ours of the model, none of our other flags."""
    args = Munch(TINY_MODEL, w_hpf=0, seed=7, num_outs_per_domain=2, result_dir=None)
    args.update(over)
    return args


def filled_nets(args):
    """The EMA networks of ``args``' model (helpers.tiny_nets), filled by name."""
    _, nets_ema, _ = tiny_nets(**{k: args[k] for k in (*TINY_MODEL, 'w_hpf')})
    for net in nets_ema.values():
        fill_by_name(net)
    return nets_ema


def test_checkpointio_writes_and_reads_the_official_file(tmp_path, capsys):
    from core.checkpoint import CheckpointIO
    args = official_args()
    nets = filled_nets(args)
    optim = torch.optim.Adam(nets.generator.parameters(), lr=1e-3)
    nets.generator(torch.zeros(1, 3, 32, 32), torch.zeros(1, 16)).mean().backward()
    optim.step()
    io = CheckpointIO(str(tmp_path / 'ckpt' / '{:06d}_nets_ema.ckpt'), data_parallel=True, **nets)
    io.register(generator_optim=optim)
    io.save(12)
    assert sorted(os.listdir(tmp_path / 'ckpt')) == ['000012_nets_ema.ckpt']  # no temporary left
    raw = torch.load(tmp_path / 'ckpt' / '000012_nets_ema.ckpt', weights_only=True)
    assert set(raw) == {'generator', 'mapping_network', 'style_encoder', 'generator_optim'}

    fresh = filled_nets(args)
    for net in fresh.values():
        for p in net.parameters():
            p.data.zero_()
    fresh_optim = torch.optim.Adam(fresh.generator.parameters(), lr=1e-3)
    CheckpointIO(str(tmp_path / 'ckpt' / '{:06d}_nets_ema.ckpt'), generator_optim=fresh_optim, **fresh).load(12)
    for name in nets:
        for k, v in nets[name].state_dict().items():
            assert torch.equal(v, fresh[name].state_dict()[k]), f'{name}.{k}'
    assert fresh_optim.state_dict()['state'][0]['step'] == 1

    other = filled_nets(official_args(style_dim=32))
    with pytest.raises(UserError, match='another configuration'):
        CheckpointIO(str(tmp_path / 'ckpt' / '{:06d}_nets_ema.ckpt'), **other).load(12)
    with pytest.raises(UserError, match='not found'):
        CheckpointIO(str(tmp_path / 'ckpt' / '{:06d}_nets_ema.ckpt'), **other).load(13)


def test_utils_sampling_helpers_write_the_sample_mode_files(tmp_path, one_thread):
    from core import utils
    from core.use.sample_grids import GridConfig, write_samples
    args = official_args(result_dir=str(tmp_path / 'mode'))
    nets = filled_nets(args)
    g = torch.Generator().manual_seed(3)
    src = Munch(x=torch.rand(1, 3, 32, 32, generator=g) * 2 - 1, y=torch.tensor([0]))
    ref = Munch(x=torch.rand(2, 3, 32, 32, generator=g) * 2 - 1, y=torch.tensor([0, 1]))
    written = write_samples(nets, src, ref, args.result_dir, GridConfig.from_args(args), ('reference', 'video_ref'))
    assert [os.path.basename(p) for p in written] == ['reference.jpg', 'video_ref.mp4']
    utils.translate_using_reference(nets, args, src.x, ref.x, ref.y, str(tmp_path / 'reference.jpg'))
    utils.video_ref(nets, args, src.x, ref.x, ref.y, str(tmp_path / 'video_ref.mp4'))
    for name in ('reference.jpg', 'video_ref.mp4'):
        assert (tmp_path / name).read_bytes() == (tmp_path / 'mode' / name).read_bytes(), name


def test_utils_video_helpers(tmp_path, one_thread):
    from core import utils
    from core.use.video import interpolation_weights
    assert utils.get_alphas() == interpolation_weights()
    alphas = utils.get_alphas(-2, 2, 1, 3)
    assert alphas[0] == 0 and alphas[-3:] == [1.0] * 3 and len(alphas) == 1 + 4 + 3
    assert alphas[1:5] == pytest.approx([1 / (1 + np.exp(v)) for v in (2, 1, 0, -1)])
    args = official_args()
    nets = filled_nets(args)
    x_src = torch.rand(3, 3, 32, 32) * 2 - 1
    s = nets.mapping_network(torch.randn(2, 8), torch.tensor([0, 1]))
    frames = utils.interpolate(nets, args, x_src, s[:1], s[1:])
    assert frames.shape == (len(interpolation_weights()), 3, 64, 96)
    assert torch.equal(frames[0, :, :32, 32:64], x_src[1])  # sources on top
    assert torch.allclose(frames[0, :, 32:, :32], nets.generator(x_src[:1], s[:1])[0], atol=1e-5)
    canvas = utils.slide([torch.zeros(1, 3, 8, 8), torch.ones(1, 3, 8, 8)], margin=2)
    assert canvas.shape == (31, 3, 16, 10)
    # the lower cell shows x_prev first, x_next at the end; the pair slides up
    assert (canvas[0, :, :8] == -1).all() and (canvas[0, :, 8:, :8] == 0).all()
    assert (canvas[-1, :, :8, :8] == 0).all() and (canvas[-1, :, 8:, :8] == 1).all()
    assert (canvas[:, :, :, 8:] == -1).all()
    video = utils.tensor2ndarray255(torch.tensor([-1.0, 0.0, 1.0]).view(1, 3, 1, 1).expand(2, 3, 4, 4))
    assert video.shape == (2, 4, 4, 3) and video[0, 0, 0].tolist() == [0, 127.5, 255]
    assert utils.save_video(str(tmp_path / 'v.mp4'), video) == str(tmp_path / 'v.mp4')
    assert (tmp_path / 'v.mp4').stat().st_size > 0
    with pytest.raises(UserError, match='VideoWriter'):
        utils.save_video(str(tmp_path / 'w.mp4'), video, vcodec='mpeg4')


def test_utils_json_network_and_init(tmp_path, capsys):
    from core import utils
    utils.save_json({'FID_latent/mean': 1.5}, str(tmp_path / 'f.json'))
    assert (tmp_path / 'f.json').read_text() == '{\n    "FID_latent/mean": 1.5\n}'
    net = torch.nn.Linear(3, 2)
    assert utils.print_network(net, 'lin') == 8 and 'lin: 8' in capsys.readouterr().out
    net.apply(utils.he_init)
    assert (net.bias == 0).all()


def test_wing_mask_helpers_match_the_mask_pipeline():
    from core import wing
    x = torch.arange(2 * 3 * 6 * 2, dtype=torch.float32).view(2, 3, 6, 2)
    assert torch.equal(wing.shift(x, 2)[:, :, 0], x[:, :, 2])   # up
    assert torch.equal(wing.shift(x, -1)[:, :, 1], x[:, :, 0])  # down
    assert torch.equal(wing.resize(x, 3), x ** 3)
    assert torch.equal(wing.truncate(torch.tensor([0.05, 0.1, 0.5]), 0.1), torch.tensor([0.0, 0.1, 0.5]))
    n = wing.normalize(x)
    assert torch.allclose(n.amin(dim=(2, 3)), torch.zeros(2, 3)) and torch.allclose(n.amax(dim=(2, 3)), torch.ones(2, 3))
    hm = torch.rand(1, 98, 256, 256, generator=torch.Generator().manual_seed(0))
    for a, b in zip(wing.preprocess(hm.clone()), wing.heatmaps_to_masks(hm.clone(), drop_boundary=False)):
        assert torch.equal(a, b)
    peaks = torch.zeros(1, 2, 64, 64)
    peaks[0, 0, 10, 20] = 1  # row 10, column 20
    assert wing.get_preds_fromhm(peaks)[0, 0].tolist() == [20.5, 10.5]


def test_wing_align_helpers():
    from helpers import face_like_landmarks

    from core import wing
    lm = face_like_landmarks()
    np.testing.assert_allclose(wing.points2T(lm, 'from') @ np.r_[lm.mean(0), 1], [0, 0, 1], atol=1e-9)
    np.testing.assert_allclose(wing.points2T(lm, 'to') @ [0, 0, 1], np.r_[lm.mean(0), 1])
    left, right = wing.landmarks2eyes(lm)
    assert left[0] < right[0]
    np.testing.assert_allclose(wing.landmarks2mouthends(lm), [lm[76], lm[82]])
    assert wing.rotate90([1.0, 2.0]).tolist() == [2.0, -1.0]
    np.testing.assert_allclose(wing.landmarks2xaxis(lm), [1, 0], atol=0.1)
    r = wing.vecs2R(np.array([1.0, 0.0]), np.array([0.0, 2.0]))
    np.testing.assert_allclose(r @ [1, 0, 1], [0, 1, 1], atol=1e-12)
    np.testing.assert_allclose(wing.landmarks2S(lm * 2, lm), np.diag([0.5, 0.5, 1.0]))
    img = np.zeros((8, 10, 3))
    padded, moved = wing.pad_mirror(img, np.array([[1.0, 2.0]]))
    assert padded.shape == (16, 20, 3) and moved.tolist() == [[6.0, 6.0]]
    t = torch.tensor([[[-1.0]], [[0.0]], [[1.0]]])
    assert wing.tensor2numpy255(t)[0, 0].tolist() == [0, 127, 255]
    assert torch.allclose(wing.np2tensor(np.array([[[0, 255, 127.5]]])), torch.tensor([[[-1.0]], [[1.0]], [[0.0]]]))


def test_data_loader_official_datasets(tmp_path):
    from core.data_loader import DefaultDataset, ReferenceDataset, listdir
    for d in ('a', 'b'):
        (tmp_path / d).mkdir()
        for i in range(2):
            Image.new('RGB', (4, 4), (i * 100, 0, 0)).save(tmp_path / d / f'{i}.png')
    files = listdir(str(tmp_path))
    assert sorted(p.name for p in files) == ['0.png', '0.png', '1.png', '1.png'] and all(p.is_file() for p in files)
    flat = DefaultDataset(str(tmp_path / 'a'))
    assert len(flat) == 2 and flat[1].getpixel((0, 0)) == (100, 0, 0) and flat.targets is None
    refs = ReferenceDataset(str(tmp_path))
    img, img2, y = refs[3]
    assert len(refs) == 4 and y == 1 and img.getpixel((0, 0)) == (100, 0, 0) and img2.getpixel((0, 0)) == (0, 0, 0)


@pytest.fixture
def offline_torch_home(tmp_path, monkeypatch):
    monkeypatch.setenv('TORCH_HOME', str(fill_torch_hub(tmp_path / 'torch_home')))


@pytest.mark.slow  # builds Inception v3 twice on the CPU
def test_metrics_official_networks(offline_torch_home):
    from metrics import fid, lpips
    inception = fid.InceptionV3().eval()
    built = fid.build_inception(None, 'cpu', cache=False)
    x = torch.rand(1, 3, 299, 299)
    with torch.no_grad():
        assert torch.equal(inception(x), built(x)) and inception(x).shape == (1, 2048)
    alex = lpips.AlexNet()
    assert alex.channels == [64, 192, 384, 256, 256]
    assert [f.shape[1] for f in alex(torch.rand(1, 3, 64, 64))] == alex.channels
    net = lpips.LPIPS().eval()
    a, b = torch.rand(2, 3, 32, 32) * 2 - 1, torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        assert net(a, a).item() == 0 and net(a, b).item() > 0
    head = lpips.Conv1x1(4)
    assert head(torch.ones(1, 4, 2, 2)).shape == (1, 1, 2, 2)


def test_metrics_missing_weights_one_line_error(tmp_path, monkeypatch):
    from metrics import MissingWeightsError, fid
    monkeypatch.setenv('TORCH_HOME', str(tmp_path))
    monkeypatch.setattr(torch.hub, 'download_url_to_file', lambda *a, **k: (_ for _ in ()).throw(OSError('offline')))
    with pytest.raises(MissingWeightsError, match='inception') as e:
        fid.InceptionV3()
    assert '\n' not in str(e.value)
