"""core/io/ckpt_files.py: official-format checkpoints: round trip, released-file quirks, wrong
configuration, complete sets, pruning and branches, a full disk, host copies and optimiser
state on resume."""
import contextlib
import errno
import os

import helpers
import pytest
import torch
import torch.nn as nn
from helpers import adam_after_one_step, tiny_nets
from munch import Munch
from torch._subclasses.fake_tensor import FakeTensorMode

import core.io.ckpt_files as ckpt_mod
from core.errors import UserError
from core.io.ckpt_files import (
    atomic_save,
    check_complete,
    ckpt_path,
    complete_steps,
    describe,
    latest_step,
    load_checkpoint,
    load_modules,
    load_optimizers,
    prune,
    save_checkpoint,
    saved_files,
    set_aside_later,
    to_host,
)
from core.train.step import TrainConfig, build_optimizers

pytestmark = pytest.mark.usefixtures('one_thread')  # tiny tensors (and FAN): threads only spin


def built(seed=0, **over):
    """``(args, nets, nets_ema)``: the tiny networks (helpers.tiny_nets), with the high-pass
    path and its FAN (w_hpf 1) unless ``over`` says otherwise."""
    nets, nets_ema, args = tiny_nets(seed=seed, **{'w_hpf': 1, **over})
    return args, nets, nets_ema


def outputs(nets, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(2, 3, 32, 32, generator=g) * 2 - 1
    z = torch.randn(2, 8, generator=g)
    y = torch.tensor([0, 1])
    with torch.no_grad():
        s = nets.mapping_network(z, y)
        masks = nets.fan.get_heatmap(x) if 'fan' in nets else None
        return torch.cat([nets.generator(x, s, masks=masks).flatten(), nets.style_encoder(x, y).flatten()])


def test_round_trip_official_format(tmp_path):
    args, nets, nets_ema = built(0)
    optims = build_optimizers(nets, TrainConfig.from_args(args))
    save_checkpoint(str(tmp_path), 7, nets, nets_ema, optims, state={'step': 7})
    names = sorted(os.listdir(tmp_path))
    assert names == ['000007_nets.ckpt', '000007_nets_ema.ckpt', '000007_optims.ckpt', '000007_state.ckpt']
    raw = torch.load(tmp_path / '000007_nets_ema.ckpt', weights_only=True)
    assert set(raw) == {'generator', 'mapping_network', 'style_encoder', 'fan'}
    assert not any(k.startswith('module.') for sd in raw.values() for k in sd)

    _, nets2, nets_ema2 = built(123)  # other weights
    assert not torch.equal(outputs(nets_ema), outputs(nets_ema2))
    optims2 = build_optimizers(nets2, TrainConfig.from_args(args))
    state = load_checkpoint(str(tmp_path), 7, nets2, nets_ema2, optims2)
    assert state == {'step': 7}
    assert torch.equal(outputs(nets_ema), outputs(nets_ema2))
    assert torch.equal(outputs(nets), outputs(nets2))
    for k in nets.discriminator.state_dict():
        assert torch.equal(nets.discriminator.state_dict()[k], nets2.discriminator.state_dict()[k])
    assert optims2.generator.state_dict()['param_groups'] == optims.generator.state_dict()['param_groups']


def test_released_file_without_hpf_filter_and_module_prefixes(tmp_path):
    _, _, nets_ema = built(0)
    reference = outputs(nets_ema)
    sd = {name: dict(m.state_dict()) for name, m in nets_ema.items()}
    del sd['generator']['hpf.filter']  # as the released CelebA-HQ 100000_nets_ema.ckpt
    torch.save(sd, tmp_path / 'no_filter.ckpt')
    prefixed = {name: {'module.' + k: v for k, v in s.items()} for name, s in sd.items()}
    torch.save(prefixed, tmp_path / 'prefixed.ckpt')
    for fname in ('no_filter.ckpt', 'prefixed.ckpt'):
        _, _, fresh = built(99)
        assert not torch.equal(outputs(fresh), reference)
        load_modules(str(tmp_path / fname), fresh)
        assert torch.equal(outputs(fresh), reference), fname
        assert torch.equal(fresh.generator.hpf.filter, nets_ema.generator.hpf.filter)


@pytest.mark.parametrize('other', [dict(num_domains=3), dict(img_size=64), dict(w_hpf=0)])
def test_wrong_configuration_one_line_error(tmp_path, other):
    _, nets, nets_ema = built(0, **other)
    save_checkpoint(str(tmp_path), 1, nets, nets_ema)
    args, _, mine = built(0)
    with pytest.raises(UserError) as e:
        load_modules(ckpt_path(str(tmp_path), 1, 'nets_ema'), mine)
    msg = str(e.value)
    assert '\n' not in msg
    key, value = next(iter(other.items()))
    assert f'{key}={value}' in msg  # the checkpoint's configuration
    assert f'{key}={args[key]}' in msg  # this run's configuration


def test_describe_reads_the_configuration():
    _, nets, _ = built(0, num_domains=3, w_hpf=2, img_size=64)
    info = describe({n: m.state_dict() for n, m in nets.items()})
    assert info == {'num_domains': 3, 'latent_dim': 8, 'img_size': 64, 'style_dim': 16, 'w_hpf': 2}


def test_missing_and_corrupt_files_give_one_line_errors(tmp_path):
    _, _, nets_ema = built(0)
    with pytest.raises(UserError, match='checkpoint not found'):
        load_modules(str(tmp_path / 'nope.ckpt'), nets_ema)
    (tmp_path / 'bad.ckpt').write_bytes(b'not a checkpoint')
    with pytest.raises(UserError, match='cannot read checkpoint'):
        load_modules(str(tmp_path / 'bad.ckpt'), nets_ema)


@pytest.mark.parametrize('entry', [[1, 2], {'shared.0.weight': 'not a tensor'}, 7, {0: torch.zeros(1)}])
def test_a_weights_only_file_whose_entries_are_not_tensors_is_one_line(tmp_path, entry):
    """torch.load(weights_only=True) reads lists, strings and numbers too: an entry that is not
    names -> tensors is refused in one line (an AttributeError before)."""
    _, _, nets_ema = built(0)
    saved = {name: net.state_dict() for name, net in nets_ema.items()}
    saved['mapping_network'] = entry
    saved['other'] = [3, 4]  # an extra entry of any kind is left alone
    torch.save(saved, tmp_path / 'odd.ckpt')
    with pytest.raises(UserError, match="odd.ckpt: its 'mapping_network' is not a state dict") as e:
        load_modules(str(tmp_path / 'odd.ckpt'), nets_ema)
    assert '\n' not in str(e.value)


def test_atomic_save_keeps_old_file_when_writing_fails(tmp_path):
    path = tmp_path / 'x.ckpt'
    atomic_save({'a': torch.ones(1)}, str(path))

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError('boom')

    with pytest.raises(RuntimeError):
        atomic_save({'a': Unpicklable()}, str(path))
    assert torch.equal(torch.load(path, weights_only=True)['a'], torch.ones(1))
    assert os.listdir(tmp_path) == ['x.ckpt']  # no temporary file left behind


# ---------------------------------------------------------------------------- complete sets

def _small():
    return Munch(generator=nn.Linear(2, 2)), Munch(generator=nn.Linear(2, 2))


def _save(folder, step, optims=True, state=True):
    nets, nets_ema = _small()
    opt = {'generator': torch.optim.Adam(nets.generator.parameters())} if optims else None
    save_checkpoint(str(folder), step, nets, nets_ema, opt, state={'step': step} if state else None)


def _cut(folder, step, kinds):
    """Files a save killed after ``kinds`` leaves behind."""
    for kind in kinds:
        atomic_save({'generator': {}}, ckpt_path(str(folder), step, kind))


def test_complete_steps_leave_out_cut_saves_and_temporary_files(tmp_path):
    assert complete_steps(str(tmp_path / 'absent')) == [] and latest_step(str(tmp_path)) is None
    _save(tmp_path, 2)
    _save(tmp_path, 4)
    _cut(tmp_path, 6, ('nets', 'nets_ema', 'optims'))  # killed before its state file
    (tmp_path / '.000008_nets.ckptk3j2.tmp').write_bytes(b'half')  # killed inside a file
    assert complete_steps(str(tmp_path)) == [2, 4] and latest_step(str(tmp_path)) == 4
    check_complete(str(tmp_path), 2)
    for step, problem in ((6, 'checkpoint 6 in .* is incomplete'), (8, 'checkpoint 8 not found'),
                          (5, 'checkpoint 5 not found')):
        with pytest.raises(UserError, match=problem + '.*newest complete one is 4: use --resume_iter 4$'):
            check_complete(str(tmp_path), step)


def test_official_checkpoints_without_state_files_count(tmp_path):
    _cut(tmp_path, 100000, ('nets_ema',))  # a released model: nets_ema only
    assert complete_steps(str(tmp_path)) == [100000]
    check_complete(str(tmp_path), 100000, needed=('nets_ema',))  # enough to sample
    with pytest.raises(UserError, match='has no nets, optims files; no complete checkpoint'):
        check_complete(str(tmp_path), 100000)  # not enough to resume training
    # an official training run resumed by ours: its stateless steps count up to our first one
    _cut(tmp_path, 10, ('nets', 'nets_ema', 'optims'))
    _save(tmp_path, 20)
    _cut(tmp_path, 30, ('nets', 'nets_ema', 'optims'))
    assert complete_steps(str(tmp_path)) == [10, 20]
    check_complete(str(tmp_path), 10)


def test_a_save_that_fails_uncommits_the_step_and_removes_stray_temps(tmp_path):
    _save(tmp_path, 2)
    _save(tmp_path, 4)
    stray = tmp_path / '.000004_optims.ckptab12.tmp'
    stray.write_bytes(b'half')
    keep = tmp_path / '.notes.tmp'
    keep.write_bytes(b'someone else')

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError('boom')

    class BrokenOptim:
        def state_dict(self):
            return {'x': Unpicklable()}

    nets, nets_ema = _small()
    with pytest.raises(RuntimeError, match='boom'):  # re-saving step 4 fails at its optims file
        save_checkpoint(str(tmp_path), 4, nets, nets_ema, {'generator': BrokenOptim()}, state={'step': 4})
    assert complete_steps(str(tmp_path)) == [2]  # the old state file went first: 4 is not a mix
    assert not stray.exists() and keep.exists()
    _save(tmp_path, 4)
    assert complete_steps(str(tmp_path)) == [2, 4]


# ---------------------------------------------------------------------------- pruning, branches, stray names

def _files(folder):
    """{name: bytes} of every file under ``folder`` (sub-folders included)."""
    return {os.path.relpath(os.path.join(d, f), folder): open(os.path.join(d, f), 'rb').read()
            for d, _, names in os.walk(folder) for f in names}


def test_prune_keeps_the_resume_point_and_the_set_just_written(tmp_path):
    for step in (1, 2, 3, 4, 5):
        _save(tmp_path, step)
    assert prune(str(tmp_path), 2, keep=(2, 5)) == [1, 3]  # 4, 5 the newest two; 2 the resume point
    assert complete_steps(str(tmp_path)) == [2, 4, 5]
    assert prune(str(tmp_path), 0, keep=()) == [] and complete_steps(str(tmp_path)) == [2, 4, 5]


def test_a_resume_below_the_newest_set_moves_the_later_sets_aside(tmp_path):
    """A resume from 2 where 3 and 4 (and a save of 5 cut short) exist: those files move into
    one abandoned-* sub-folder, byte for byte; latest is then 2 and the next prune sees only
    this branch. Nothing moves when nothing complete lies above the start."""
    for step in (1, 2, 3, 4):
        _save(tmp_path, step)
    _cut(tmp_path, 5, ('nets', 'nets_ema'))
    (tmp_path / 'config.yaml').write_text('kept')
    before = _files(tmp_path)
    note = set_aside_later(str(tmp_path), 2)
    folders = [d for d in os.listdir(tmp_path) if (tmp_path / d).is_dir()]
    assert len(folders) == 1 and folders[0].startswith('abandoned-000002-')
    aside = tmp_path / folders[0]
    assert '\n' not in note and 'iterations (3, 4)' in note and str(aside) in note and 'nothing deleted' in note
    assert complete_steps(str(tmp_path)) == [1, 2] and latest_step(str(tmp_path)) == 2
    assert complete_steps(str(aside)) == [3, 4] and saved_files(str(aside))[5] == {'nets', 'nets_ema'}
    after = _files(tmp_path)
    assert sorted(os.path.basename(k) for k in after) == sorted(before)  # moved, not lost
    assert all(after[k] == before[os.path.basename(k)] for k in after)
    assert set_aside_later(str(tmp_path), 2) is None  # nothing left above 2
    _save(tmp_path, 3)
    assert prune(str(tmp_path), 1, keep=(2, 3)) == [1]
    assert complete_steps(str(tmp_path)) == [2, 3] and complete_steps(str(aside)) == [3, 4]
    # a save cut short above the newest complete set (the same branch, killed) stays where it is
    _cut(tmp_path, 4, ('nets',))
    assert set_aside_later(str(tmp_path), 3) is None and saved_files(str(tmp_path))[4] == {'nets'}
    # a fresh start (0) in a used folder sets the old run aside too
    assert 'starts at iteration 0' in set_aside_later(str(tmp_path), 0)
    assert complete_steps(str(tmp_path)) == [] and len(os.listdir(tmp_path)) == 3  # config.yaml and two folders


def test_files_named_like_checkpoints_are_not_sets(tmp_path):
    """'10_state.ckpt' (not a name a save makes) was taken for step 10: latest_step said 10
    while sets 1 and 2 were the newest, and once real steps passed 10 every prune failed
    removing '000010_state.ckpt'. Such names, and folders, are no part of any set."""
    (tmp_path / '10_state.ckpt').write_bytes(b'notes')
    (tmp_path / '0000011_state.ckpt').write_bytes(b'notes')
    (tmp_path / '000012_state.ckpt').mkdir()
    for step in (1, 2):
        _save(tmp_path, step)
    assert complete_steps(str(tmp_path)) == [1, 2] and latest_step(str(tmp_path)) == 2
    check_complete(str(tmp_path), 2)
    _save(tmp_path, 13)
    assert prune(str(tmp_path), 1, keep=(13,)) == [1, 2]
    assert set_aside_later(str(tmp_path), 13) is None
    assert sorted(os.listdir(tmp_path)) == ['0000011_state.ckpt', '000012_state.ckpt', '000013_nets.ckpt',
                                            '000013_nets_ema.ckpt', '000013_optims.ckpt', '000013_state.ckpt',
                                            '10_state.ckpt']


def test_a_removal_cut_short_never_leaves_a_set_that_looks_complete(tmp_path, monkeypatch):
    for step in (1, 2):
        _save(tmp_path, step)
    real_remove = os.remove
    calls = []

    def remove_once(path):
        calls.append(path)
        if len(calls) > 1:
            raise KeyboardInterrupt  # the run is stopped during the removal
        real_remove(path)

    monkeypatch.setattr(os, 'remove', remove_once)
    with pytest.raises(KeyboardInterrupt):
        prune(str(tmp_path), 1)
    monkeypatch.undo()
    assert complete_steps(str(tmp_path)) == [2]  # step 1 lost its state file first: never resumed half-gone


# ---------------------------------------------------------------------------- a full disk

class _FillsUp:
    """A file whose disk fills after ``room`` bytes: the write that crosses it writes what fits
    and fails with ENOSPC; later (small) writes go through, as on a real file system."""

    def __init__(self, f, room):
        self.f, self.room, self.full = f, room, False

    def write(self, data):
        data = memoryview(data).cast('B')
        if not self.full and len(data) > self.room:
            self.f.write(data[:self.room])
            self.full = True
            raise OSError(errno.ENOSPC, 'No space left on device')
        self.room -= len(data)
        return self.f.write(data)

    def flush(self):
        self.f.flush()


def test_a_disk_full_inside_torch_save_is_one_line_and_keeps_the_old_file(tmp_path, monkeypatch):
    """torch's zip writer turns the OSError of a full disk into a RuntimeError ('unexpected
    pos'); the save still ends in one line naming the file, its size and the free space."""
    path = tmp_path / '000002_nets.ckpt'
    atomic_save({'a': torch.ones(3)}, str(path))
    real_save = torch.save
    monkeypatch.setattr(ckpt_mod.torch, 'save', lambda obj, f: real_save(obj, _FillsUp(f, 1000)))
    obj = {'a': torch.zeros(100_000)}
    with pytest.raises(UserError) as e:
        atomic_save(obj, str(path))
    msg = str(e.value)
    kib = round(obj['a'].numel() * obj['a'].element_size() / 1024)  # the tensor's bytes
    assert '\n' not in msg and msg.startswith(f'cannot write {path}: No space left on device; it needs about {kib} KiB,')
    assert 'free there:' in msg and '--resume_iter latest' in msg
    assert os.listdir(tmp_path) == ['000002_nets.ckpt']  # no temporary left
    assert torch.equal(torch.load(path, weights_only=True)['a'], torch.ones(3))


def test_a_save_cut_short_removes_only_the_files_it_wrote(tmp_path):
    """A save of a step that fails part-way removes what it wrote (the step is not complete),
    and no file of that step it did not write (here an official optimiser file)."""
    from core.io.ckpt_files import NETS, NETS_EMA, OPTIMS, ckpt_path, save_checkpoint
    nets, nets_ema, _ = tiny_nets(0)
    torch.save({'kept': torch.ones(1)}, ckpt_path(str(tmp_path), 5, OPTIMS))

    def stop(point):
        if point == f'before_{NETS_EMA}':
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(str(tmp_path), 5, nets, nets_ema, hook=stop)
    assert not os.path.exists(ckpt_path(str(tmp_path), 5, NETS))
    assert torch.load(ckpt_path(str(tmp_path), 5, OPTIMS), weights_only=True)['kept'].item() == 1


@pytest.fixture
def small_disk(tmp_path):
    """``make(size)``: a real file system of ``size`` bytes (helpers.small_disk), unmounted afterwards."""
    with contextlib.ExitStack() as stack:
        yield lambda size: stack.enter_context(helpers.small_disk(tmp_path / f'disk{size}', size))


def test_a_real_disk_that_fills_at_the_second_set(tmp_path, small_disk):
    """On a real small file system (tmpfs) the first set fits and the second does not: one
    line naming the file, the bytes needed and free; set 1 complete; no temporary file and no
    file of set 2 left."""
    nets, nets_ema = Munch(generator=nn.Linear(64, 64)), Munch(generator=nn.Linear(64, 64))
    save_checkpoint(str(tmp_path / 'probe'), 1, nets, nets_ema, state={'step': 1})
    one_set = sum(os.path.getsize(tmp_path / 'probe' / f) for f in os.listdir(tmp_path / 'probe'))
    disk = small_disk(one_set * 3 // 2 + 4 * 4096)  # a page per file besides the data
    save_checkpoint(str(disk), 1, nets, nets_ema, state={'step': 1})
    with pytest.raises(UserError) as e:
        save_checkpoint(str(disk), 2, nets, nets_ema, state={'step': 2})
    msg = str(e.value)
    assert '\n' not in msg and 'No space left on device; it needs about ' in msg and 'free there:' in msg
    assert msg.startswith(f'cannot write {disk}{os.sep}000002_')
    assert complete_steps(str(disk)) == [1]
    assert sorted(os.listdir(disk)) == sorted(os.listdir(tmp_path / 'probe'))  # set 1, nothing else
    load_checkpoint(str(disk), 1, nets, nets_ema)


# ---------------------------------------------------------------------------- GPU paths on CPU (docs/first_gpu_run.md items 3, 9)

def test_checkpoints_hold_cpu_tensors():
    """Saved state (networks, Adam moments, RNG) is moved to the CPU first, so a plain
    torch.load works on a machine without a GPU; a state_dict keeps its version metadata."""
    sd = nn.Linear(2, 2).state_dict()
    with FakeTensorMode() as mode:
        state = {'net': {k: mode.from_tensor(v).to('cuda') for k, v in sd.items()},
                 'rng': [torch.zeros(3, device='cuda')], 'step': 7}
        state['net'] = type(sd)(state['net'])
        state['net']._metadata = sd._metadata
        host = to_host(state)
    assert all(t.device.type == 'cpu' for t in (*host['net'].values(), *host['rng']))
    assert host['step'] == 7 and host['net']._metadata == sd._metadata


def test_resume_keeps_fused_adam_and_the_grad_scaler_steps(tmp_path):
    """A checkpoint written by an unfused Adam (CPU run, official code) no longer makes the
    fused optimiser unfused; with it, the GradScaler's step (fp16) runs."""
    torch.manual_seed(0)
    model = nn.Conv2d(3, 4, 3)
    atomic_save({'discriminator': adam_after_one_step(model).state_dict()}, str(tmp_path / 'optims.ckpt'))
    fused = torch.optim.Adam(model.parameters(), lr=1e-2, fused=True)
    load_optimizers(str(tmp_path / 'optims.ckpt'), {'discriminator': fused})
    assert fused.param_groups[0]['fused'] is True
    assert fused.param_groups[0]['lr'] == 1e-2 and fused.state[model.weight]['step'] == 1  # the file's state
    scaler = torch.amp.GradScaler('cpu', init_scale=2.0 ** 10)
    with torch.autocast('cpu', dtype=torch.float16):
        loss = model(torch.randn(2, 3, 8, 8)).float().pow(2).sum()
    scaler.scale(loss).backward()
    scaler.step(fused)  # an unfused Adam asserts 'Expected grad_scale and found_inf to be None'
    assert fused.state[model.weight]['step'] == 2
