"""What the Hub-folder tests share (tests/core/use/test_hub_folder.py, test_model_card.py,
test_hub_transport.py): tiny checkpoints exported as Hub folders, the outputs that compare
networks, and the one-line check of a UserError."""
import json

import pytest
import torch
from tiny_run import STEP, make_checkpoint

import core.use.hub_folder as hub
from core.cli.arguments import parse_args
from core.nn.fan import fan_masks
from core.nn.networks import ModelConfig
from core.use.load_run import load_networks

NAMES = ['cat', 'dog']
CASES = [pytest.param(0, 32, id='hpf0'), pytest.param(1, 64, id='hpf1')]  # the FAN always sees 256 px


def one_line(excinfo):
    text = str(excinfo.value)
    assert '\n' not in text, text
    return text


def hub_runs(tmp_path_factory):
    """``runs(w_hpf, img_size)`` -> (checkpoint folder, Hub folder, cfg, filled networks); each once."""
    done = {}

    def get(w_hpf, img_size):
        if (w_hpf, img_size) not in done:
            root = tmp_path_factory.mktemp(f'hub{w_hpf}')
            _, nets = make_checkpoint(root / 'ckpt', img_size=img_size, w_hpf=w_hpf, names=NAMES)
            cfg = ModelConfig(img_size=img_size, style_dim=16, latent_dim=8, num_domains=2, w_hpf=float(w_hpf), dim_in=8,
                              max_conv_dim=32, domain_names=tuple(NAMES))
            loaded = load_networks(cfg, str(root / 'ckpt'), STEP, 'cpu')
            hub.save_hub_folder(loaded, cfg, root / 'hf', step=STEP, extra={'source': f'ckpt/{STEP:06d}_nets_ema.ckpt'})
            done[(w_hpf, img_size)] = root / 'ckpt', root / 'hf', cfg, nets
        return done[(w_hpf, img_size)]
    return get


def outputs(nets, cfg, seed=0):
    """Style codes of both kinds and the translated images (FAN masks for w_hpf > 0), same seed."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(2, 3, cfg.img_size, cfg.img_size, generator=gen) * 2 - 1
    z = torch.randn(2, cfg.latent_dim, generator=gen)
    y = torch.tensor([0, 1])
    with torch.no_grad():
        s_map = nets.mapping_network(z, y)
        s_enc = nets.style_encoder(x, y)
        masks = fan_masks(nets, cfg.w_hpf, x)
        return dict(s_map=s_map, s_enc=s_enc, x_map=nets.generator(x, s_map, masks=masks),
                    x_enc=nets.generator(x, s_enc, masks=masks), **({'masks0': masks[0]} if masks else {}))


def copy_folder(folder, dest, **changes):
    """A copy of the Hub folder ``folder`` whose config.json has ``changes``."""
    dest.mkdir()
    meta = json.loads((folder / 'config.json').read_text())
    meta.update(changes)
    (dest / 'config.json').write_text(json.dumps(meta))
    (dest / 'model.safetensors').write_bytes((folder / 'model.safetensors').read_bytes())
    return dest


def export_args(ckpt, out, *extra):
    return parse_args(['--mode', 'export', '--format', 'hf', '--checkpoint_dir', str(ckpt), '--out', str(out),
                       '--device', 'cpu', '--eval_dir', str(out) + '_eval', *extra])
