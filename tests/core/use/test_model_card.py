"""The model card of a Hub folder (core/use/model_card.py): its front matter, contents,
metrics and Python example, and the licence guessed from the training data; the export's
card metadata of a run (core.use.export.hub_metadata)."""
import json

import pytest
import yaml
from hub_helpers import NAMES, copy_folder, export_args
from PIL import Image
from tiny_run import STEP, make_checkpoint

import core.use.hub_folder as hub
from core.cli.arguments import parse_args
from core.use.export import hub_metadata
from core.use.export import run as export_run
from core.use.model_card import IMAGE, model_card, training_data
from metrics.eval import read_results


def card_parts(text):
    assert text.startswith('---\n')
    front, body = text[4:].split('\n---\n', 1)
    return yaml.safe_load(front), body


def test_model_card_front_matter_and_contents(runs):
    _, folder, _, _ = runs(1, 64)
    front, body = card_parts((folder / 'README.md').read_text())
    assert front['library_name'] == 'pytorch' and front['license'] == 'unknown'
    assert {'stargan-v2', 'image-to-image'} <= set(front['tags']) and front['pipeline_tag'] == 'image-to-image'
    assert '0: cat, 1: dog' in body and '64 x 64' in body and f'| iterations | {STEP} |' in body
    assert 'fan' in body and 'unknown, fill in' in body
    assert f'No evaluation of iteration {STEP}' in body


@pytest.mark.parametrize('train_dir,demo,license_,name', [
    ('data/afhq/train', None, 'cc-by-nc-4.0', 'AFHQ'),
    ('/data/AFHQ_v2/train', None, 'cc-by-nc-4.0', 'AFHQ'),
    ('data/celeba_hq/train', None, 'other', 'CelebA-HQ'),
    ('expr/demo/data/train', 'expr/demo/data', 'unknown', "this project's generated shapes (core/datasets/demo_shapes.py)"),
    ('/home/me/photos/train', None, 'unknown', 'unknown'),
    (None, None, 'unknown', 'unknown'),
])
def test_the_licence_of_the_training_data(train_dir, demo, license_, name):
    data = training_data(train_dir, demo)
    assert (data['license'], data['name']) == (license_, name)
    meta = dict(format='stargan-v2', format_version=1,
                img_size=32, num_domains=2, style_dim=16, latent_dim=8, w_hpf=0, domain_names=None,
                step=5, training_data=data, networks=['generator'])
    front, body = card_parts(model_card(meta, hub.CONFIG_NAME, hub.WEIGHTS_NAME))
    assert front['license'] == license_
    if license_ == 'other':  # the Hub wants a name and a link for other licences
        assert front['license_name'] and front['license_link'].startswith('https://')
        assert 'non-commercial research' in body
    if name == 'AFHQ':
        assert 'CC BY-NC 4.0' in body
    if name == 'unknown':
        assert 'unknown, fill in' in body


def write_eval(folder, step, seed=0):
    """What --mode eval writes (metrics.eval's own writer): FID/LPIPS JSON files and metrics.jsonl."""
    from munch import Munch

    from metrics.eval import _write
    for mode in ('latent', 'reference'):
        fid = {f'FID_{mode}/cat2dog': 40.0 + seed, f'FID_{mode}/dog2cat': 50.0, f'FID_{mode}/mean': 45.0 + seed / 2}
        lpips = {f'LPIPS_{mode}/cat2dog': 0.25, f'LPIPS_{mode}/dog2cat': 0.35, f'LPIPS_{mode}/mean': 0.3}
        _write(Munch(eval_dir=str(folder)), step, mode, fid, lpips)


def test_metrics_of_the_exported_step_come_from_the_eval_folder(tmp_path):
    write_eval(tmp_path / 'eval', STEP)
    write_eval(tmp_path / 'eval', STEP + 1, seed=9)
    metrics = read_results(tmp_path / 'eval', STEP)
    assert metrics['FID_latent/mean'] == 45.0 and metrics['LPIPS_reference/dog2cat'] == 0.35
    assert metrics['from'] == 'eval/{FID,LPIPS}_00003_*.json'
    assert read_results(tmp_path / 'eval', 99) is None and read_results(tmp_path / 'none', STEP) is None
    for f in (tmp_path / 'eval').glob('*.json'):  # metrics.jsonl alone (the last line of a mode wins)
        f.unlink()
    with open(tmp_path / 'eval' / 'metrics.jsonl', 'a') as f:
        f.write('{"step": 3, "mode": "lat')  # a line cut short is skipped
    assert read_results(tmp_path / 'eval', STEP + 1)['FID_latent/mean'] == 49.5
    assert read_results(tmp_path / 'eval', STEP)['from'] == 'eval/metrics.jsonl'
    meta = dict(format='stargan-v2', format_version=1,
                img_size=32, num_domains=2, style_dim=16, latent_dim=8, w_hpf=0, domain_names=NAMES,
                step=STEP, metrics=read_results(tmp_path / 'eval', STEP), networks=[])
    _, body = card_parts(model_card(meta, hub.CONFIG_NAME, hub.WEIGHTS_NAME))
    assert '| task | FID_latent | LPIPS_latent | FID_reference | LPIPS_reference |' in body
    assert '| cat2dog | 40.00 | 0.2500 | 40.00 | 0.2500 |' in body
    assert body.index('| cat2dog') < body.index('| mean |')


def test_export_metadata_names_data_and_metrics_of_the_run(tmp_path):
    make_checkpoint(tmp_path / 'run', names=NAMES)
    cfg = yaml.safe_load((tmp_path / 'run' / 'config.yaml').read_text())
    cfg.update(train_img_dir='data/afhq/train', eval_dir=str(tmp_path / 'run_eval'))
    (tmp_path / 'run' / 'config.yaml').write_text(yaml.safe_dump(cfg))
    write_eval(tmp_path / 'run_eval', STEP)
    args = parse_args(['--mode', 'export', '--format', 'hf', '--checkpoint_dir', str(tmp_path / 'run'),
                       '--eval_dir', str(tmp_path / 'elsewhere')])
    meta = hub_metadata(args, STEP)
    assert meta['training_data']['name'] == 'AFHQ' and meta['source'] == f'run/{STEP:06d}_nets_ema.ckpt'
    assert meta['metrics']['FID_latent/mean'] == 45.0  # --eval_dir had none: the run's recorded eval_dir
    write_eval(tmp_path / 'elsewhere', STEP, seed=4)
    assert hub_metadata(args, STEP)['metrics']['FID_latent/mean'] == 47.0  # --eval_dir first
    assert hub_metadata(args, STEP + 1)['metrics'] is None  # never the metrics of another step
    # an official checkpoint (no config.yaml): --train_img_dir (here from the paper's config) names the data
    make_checkpoint(tmp_path / 'official', with_config=False)
    args = parse_args(['--mode', 'export', '--config', 'configs/celeba_hq.yaml', '--checkpoint_dir',
                       str(tmp_path / 'official'), '--eval_dir', str(tmp_path / 'none')])
    assert hub_metadata(args, STEP)['training_data']['name'] == 'CelebA-HQ'


def test_the_model_cards_python_example_runs(runs, tmp_path, one_thread):
    """The card's Python block, with this folder for FOLDER_OR_REPO_ID and a real image, gives
    the PIL images it says."""
    _, folder, _, _ = runs(0, 64)
    body = (folder / 'README.md').read_text()
    code = body.split('```python\n', 1)[1].split('```', 1)[0]
    photo = tmp_path / 'photo.png'
    Image.new('RGB', (40, 30), (200, 40, 90)).save(photo)
    scope = {}
    exec(code.replace('FOLDER_OR_REPO_ID', str(folder)).replace('photo.jpg', str(photo)), scope)
    assert len(scope['images']) == 4 and all(isinstance(im, Image.Image) and im.size == (64, 64)
                                              for im in scope['images'])


def test_reexporting_a_folder_with_edited_card_fields_works(runs, tmp_path):
    """config.json fields that only the card reads, changed by hand or by another writer
    (a string for training_data, a list for metrics, a number for source): the export keeps
    what is valid and says 'unknown' for the rest."""
    _, folder, _, _ = runs(0, 32)
    for i, changes in enumerate([
            dict(training_data='CC-BY', metrics=[1, 2], source=5),
            dict(training_data={'name': 'AFHQ', 'license': 'other', 'text': 'x'}, metrics={'FID_latent/mean': 'bad'}),
            dict(training_data={'name': 3}, metrics={'FID_latent/mean': 12.5, 'from': 7}, source=None)]):
        bad = copy_folder(folder, tmp_path / f'edited{i}', **changes)
        export_run(export_args(bad, tmp_path / f"out{i}"))
        card = (tmp_path / f'out{i}' / 'README.md').read_text()
        front, body = card_parts(card)
        assert front['license'] == 'unknown' and 'unknown, fill in' in body
        written = json.loads((tmp_path / f'out{i}' / 'config.json').read_text())
        assert isinstance(written['source'], str) and written['training_data']['license'] == 'unknown'
        assert written.get('metrics') in (None, {'FID_latent/mean': 12.5})
        hub.load_hub_folder(tmp_path / f'out{i}', 'cpu')


def test_the_cards_commands_quote_the_domain_names():
    import ast
    import shlex
    names = ["it's", 'a b', '$(touch x)']
    meta = dict(format='stargan-v2', format_version=1,
                img_size=32, num_domains=3, style_dim=16, latent_dim=8, w_hpf=0, domain_names=names,
                step=5, networks=['generator'])
    card = model_card(meta, hub.CONFIG_NAME, hub.WEIGHTS_NAME)
    command = next(line for line in card.splitlines() if '--trg_domain' in line)
    words = shlex.split(command)
    assert words[words.index('--trg_domain') + 1] == names[-1]
    python = next(line for line in card.splitlines() if 'model.translate(' in line)
    call = ast.parse(python.split('  #')[0].split('= ', 1)[1]).body[0].value
    assert ast.literal_eval(next(k.value for k in call.keywords if k.arg == 'domain')) == names[-1]


def test_the_demo_licence_needs_whole_path_components():
    data = training_data('expr/demo/data_celeba/train', 'expr/demo/data')
    assert data['name'] == 'CelebA-HQ'
    assert training_data('expr/demo/data/train', 'expr/demo/data/')['license'] == 'unknown'
    assert training_data('./expr/demo/data/train/cat', 'expr/demo/data')['name'].startswith("this project's")


def test_export_metadata_of_a_run_with_odd_recorded_paths(tmp_path):
    """A run's config.yaml edited so that train_img_dir or eval_dir are not paths: the export
    says 'unknown' for the data and looks for metrics elsewhere."""
    make_checkpoint(tmp_path / 'run', names=NAMES)
    cfg = yaml.safe_load((tmp_path / 'run' / 'config.yaml').read_text())
    cfg.update(train_img_dir=['data', 'afhq'], demo_data=3, eval_dir={'a': 1})
    (tmp_path / 'run' / 'config.yaml').write_text(yaml.safe_dump(cfg))
    args = parse_args(['--mode', 'export', '--format', 'hf', '--checkpoint_dir', str(tmp_path / 'run'),
                       '--eval_dir', str(tmp_path / 'none')])
    meta = hub_metadata(args, STEP)
    assert meta['training_data']['license'] == 'unknown' and meta['metrics'] is None


def test_the_card_names_the_folders_format_and_files(runs):
    """The card names the format and files that core.use.hub_folder writes."""
    _, folder, _, _ = runs(0, 32)
    body = card_parts((folder / 'README.md').read_text())[1]
    assert f'`{hub.FORMAT}` folder format, version {hub.FORMAT_VERSION}' in body
    assert f'`{hub.CONFIG_NAME}` holds the model configuration, `{hub.WEIGHTS_NAME}` the weights' in body
    assert hub.IMAGE == IMAGE and f'Images are {IMAGE.format(32)}.' in body
