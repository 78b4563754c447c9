"""Checkpoints in the official format, written atomically.

``{step:06d}_nets.ckpt``, ``{step:06d}_nets_ema.ckpt`` and ``{step:06d}_optims.ckpt`` are
dicts name -> state_dict (no ``module.`` prefix), as the official code writes and
reads them; FAN is saved with the nets when present, as upstream. Our own extra file,
``{step:06d}_state.ckpt``, holds what exact resume needs beyond that (RNG states,
data order); official runs without it still resume.

A set is committed by its state file: a save first removes the step's old state file,
writes the other files (each atomically: a temporary ``.NAME*.tmp`` file, then a rename),
and the state file last. A run killed during a save (even SIGKILL) therefore leaves the
previous sets complete and the cut one without its state file; ``complete_steps`` lists
only complete sets, a resume of a cut one names the newest complete step, and no
temporary file is ever read (the next save removes them). A save that fails (a full disk)
removes what it wrote of its step.

A run that starts at a step below the newest set (``--resume_iter N``, or a fresh start in a
used folder) starts a new branch: the later sets move into an ``abandoned-*`` sub-folder
(``set_aside_later``), so ``latest_step`` and ``prune`` see one branch; ``prune`` never removes
the set a run resumed from nor the one it has just written. Only files named exactly as
``ckpt_path`` names them belong to a set.
"""
from __future__ import annotations

import contextlib
import functools
import math
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import IO, Any, Dict, List, Optional, Set, TypeAlias, TypeVar, cast

import torch
from torch import nn

from core.errors import UserError
from core.io.files import StrPath, atomic_write

NETS, NETS_EMA, OPTIMS, STATE = 'nets', 'nets_ema', 'optims', 'state'

# a module's or an optimiser's state_dict; a checkpoint file holds {name: StateDict}
StateDict: TypeAlias = Dict[str, Any]
# {name: module} / {name: optimiser}, as the official nets Munch holds them
Modules: TypeAlias = Mapping[str, nn.Module]
Optimizers: TypeAlias = Mapping[str, torch.optim.Optimizer]
_T = TypeVar('_T')
_P = TypeVar('_P', str, os.PathLike[str])  # atomic_save returns its path as given


def ckpt_path(ckpt_dir: StrPath, step: int, kind: str) -> str:
    return os.path.join(ckpt_dir, f'{step:06d}_{kind}.ckpt')


def atomic_save(obj: object, path: _P, then: Optional[Callable[[], object]] = None) -> _P:
    """torch.save through a temporary file and a rename (see ``core.io.files``); ``then()``
    runs after the data went out, before the file is closed and renamed (a test hook).
    A write error (a full disk, a quota) leaves no temporary file and becomes one line
    naming the path, the space the file needs and the space free."""
    def write(f: IO[Any]) -> None:
        torch.save(obj, f)
        if then is not None:
            then()
    return atomic_write(path, write, size=tensor_bytes(obj), fix=RESUME_FIX)


RESUME_FIX = 'free some space and resume with --resume_iter latest (the earlier checkpoints are complete)'


def tensor_bytes(obj: object) -> int:
    """Bytes of the tensors in a nested dict/list ``obj`` (what torch.save writes, near enough)."""
    if torch.is_tensor(obj):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(tensor_bytes(v) for v in obj)
    return 0


def set_bytes(nets: Modules, nets_ema: Modules, trained: Iterable[str]) -> int:
    """About the size of one checkpoint set: the networks, their EMA copies and two Adam
    moments per parameter of the ``trained`` networks."""
    moments = sum(2 * p.numel() * p.element_size() for name in trained for p in unwrap(nets[name]).parameters())
    return tensor_bytes(state_dicts(nets)) + tensor_bytes(state_dicts(nets_ema)) + moments


def prune(ckpt_dir: StrPath, keep_last: int, keep: Iterable[int] = ()) -> List[int]:
    """--keep_last N: removes our complete sets but the newest N and the steps ``keep`` (the
    training loop passes the set it resumed from and the one it has just written); 0 keeps
    everything, official sets (no state file) are never removed. A set's ``nets_ema`` and state
    files go first, so a removal cut short never leaves a set that looks complete (ours or
    official)."""
    if keep_last <= 0:
        return []
    files = saved_files(ckpt_dir)
    ours = [step for step in complete_steps(ckpt_dir) if STATE in files[step]]
    old = [step for step in ours[:-keep_last] if step not in set(keep)]
    for step in old:
        remove_set(ckpt_dir, step, files[step])
    return old


def remove_set(ckpt_dir: StrPath, step: int, kinds: Iterable[str]) -> None:
    """Removes the files ``kinds`` of ``step``, ``nets_ema`` and state first (the set is then
    no longer complete, whatever happens next)."""
    for kind in sorted(kinds, key=_uncommit_first):
        with contextlib.suppress(FileNotFoundError):
            os.remove(ckpt_path(ckpt_dir, step, kind))


def _uncommit_first(kind: str) -> tuple[bool, bool]:
    """Sort key: ``nets_ema`` then the state file first, the files without which a step is no
    complete set of either kind (see :func:`complete_steps`)."""
    return kind != NETS_EMA, kind != STATE


ABANDONED = 'abandoned-'  # sub-folders of ckpt_dir that hold the sets of an abandoned branch


def _steps_text(steps: Sequence[int]) -> str:
    if len(steps) <= 5:
        return ', '.join(map(str, steps))
    return f'{steps[0]}, {steps[1]}, ..., {steps[-1]} ({len(steps)} sets)'


def set_aside_later(ckpt_dir: StrPath, step: int) -> Optional[str]:
    """A run that starts at ``step`` (a resume, or 0: a fresh start) where complete sets of later
    steps exist starts a new branch: the files of every step above ``step`` (complete sets and
    saves cut short) move into a new sub-folder ``abandoned-{step:06d}-{date-time}/``, so that
    --resume_iter latest and --keep_last see this run's sets only, and nothing is deleted.
    Returns the one line that says so, or None when there was nothing to move."""
    later = [s for s in complete_steps(ckpt_dir) if s > step]
    if not later:
        return None
    files = saved_files(ckpt_dir)
    base = os.path.join(ckpt_dir, f'{ABANDONED}{step:06d}-{time.strftime("%Y%m%d-%H%M%S")}')
    folder, n = base, 1
    while os.path.lexists(folder):
        folder, n = f'{base}-{n}', n + 1
    os.makedirs(folder)
    for s in sorted(k for k in files if k > step):
        for kind in sorted(files[s], key=_uncommit_first):
            os.replace(ckpt_path(ckpt_dir, s, kind), ckpt_path(folder, s, kind))
    return (f'note: this run starts at iteration {step}, so the checkpoint sets of later iterations '
            f'({_steps_text(later)}) belong to an abandoned run: moved to {folder} (nothing deleted); '
            f'--resume_iter latest continues this run')


def unwrap(module: nn.Module) -> nn.Module:
    """The plain module under a DataParallel / DistributedDataParallel wrapper."""
    return getattr(module, 'module', module)


def to_host(obj: _T) -> _T:
    """``obj`` with every tensor copied to the CPU (nested dicts, lists and tuples): files
    written on a GPU load with a plain ``torch.load`` on a machine without one."""
    if torch.is_tensor(obj):
        return cast(_T, obj.detach().cpu())
    if isinstance(obj, dict):
        out = type(obj)((k, to_host(v)) for k, v in obj.items())
        if hasattr(obj, '_metadata'):  # a state_dict's module versions
            setattr(out, '_metadata', getattr(obj, '_metadata'))  # not a declared attribute of dict
        return out
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_host(v) for v in obj)
    return obj


def state_dicts(modules: Modules) -> Dict[str, StateDict]:
    return {name: unwrap(m).state_dict() for name, m in modules.items()}


def save_checkpoint(ckpt_dir: StrPath, step: int, nets: Modules, nets_ema: Modules, optims: Optional[Optimizers] = None,
                    state: Optional[StateDict] = None, hook: Optional[Callable[[str], object]] = None) -> None:
    """Writes the official files of ``step`` (and our state file when given).

    Each file is atomic; the state file goes last (after the step's old one was removed),
    so its presence means the set is complete (see the module doc). ``hook(point)``, when
    given, is called at 'before_<kind>' and 'in_<kind>' (that file's temporary copy
    written, not yet renamed): tests/save_pause.py stops a save there to kill it."""
    hook = hook or (lambda point: None)
    remove_stray_temps(ckpt_dir)
    state_file = ckpt_path(ckpt_dir, step, STATE)
    if os.path.exists(state_file):  # re-saving a step: it is incomplete until the new state file is in
        os.remove(state_file)
    files = [(NETS, state_dicts(nets)), (NETS_EMA, state_dicts(nets_ema))]
    if optims is not None:
        files.append((OPTIMS, {name: o.state_dict() for name, o in optims.items()}))
    if state is not None:
        files.append((STATE, state))
    written: List[str] = []
    try:
        for kind, obj in files:
            hook(f'before_{kind}')
            atomic_save(to_host(obj), ckpt_path(ckpt_dir, step, kind), then=functools.partial(hook, f'in_{kind}'))
            written.append(kind)
    except BaseException:  # (a full disk): the files this save wrote, of an uncommitted step, only take space
        remove_set(ckpt_dir, step, written)
        raise


# ``.{step}_{kind}.ckpt<random>.tmp``: what core.io.files.atomic_write leaves when killed mid-write
_TEMP = re.compile(r'\.\d+_(?:nets|nets_ema|optims|state)\.ckpt.*\.tmp')
_FILE = re.compile(r'(\d+)_(nets|nets_ema|optims|state)\.ckpt')


def remove_stray_temps(ckpt_dir: StrPath) -> None:
    """Deletes the temporary files of saves that were killed (never read as checkpoints)."""
    if os.path.isdir(ckpt_dir):
        for name in os.listdir(ckpt_dir):
            if _TEMP.fullmatch(name):
                os.remove(os.path.join(ckpt_dir, name))


def saved_files(ckpt_dir: StrPath) -> Dict[int, Set[str]]:
    """{step: set of kinds} of the checkpoint files in ``ckpt_dir``: files named exactly as
    :func:`ckpt_path` names them (``10_state.ckpt`` or ``0000010_state.ckpt`` is some other
    file, never part of a set; temporary files and folders are left out too)."""
    found: Dict[int, Set[str]] = {}
    if os.path.isdir(ckpt_dir):
        for name in os.listdir(ckpt_dir):
            m = _FILE.fullmatch(name)
            if m and name == os.path.basename(ckpt_path('', int(m.group(1)), m.group(2))) \
                    and os.path.isfile(os.path.join(ckpt_dir, name)):
                found.setdefault(int(m.group(1)), set()).add(m.group(2))
    return found


def complete_steps(ckpt_dir: StrPath) -> List[int]:
    """Ascending steps of the complete checkpoint sets in ``ckpt_dir``.

    Our sets are complete when their state file (written last) is there, with the
    ``nets_ema`` file. Official checkpoints have no state file: a step without one counts
    when it has its ``nets_ema`` file (all that sampling needs) and comes before every step
    of ours (a stateless step after one of ours is a save that was cut short)."""
    files = saved_files(ckpt_dir)
    stated = sorted(step for step, kinds in files.items() if STATE in kinds)
    first_ours = stated[0] if stated else math.inf
    ours = [step for step in stated if NETS_EMA in files[step]]
    official = [step for step, kinds in files.items()
                if STATE not in kinds and NETS_EMA in kinds and step < first_ours]
    return sorted(ours + official)


def latest_step(ckpt_dir: StrPath) -> Optional[int]:
    """The newest complete step in ``ckpt_dir``, or None when there is none."""
    steps = complete_steps(ckpt_dir)
    return steps[-1] if steps else None


def check_complete(ckpt_dir: StrPath, step: int, needed: Sequence[str] = (NETS, NETS_EMA, OPTIMS)) -> None:
    """UserError, one line naming the newest usable step, unless ``step`` is a complete
    set holding the files ``needed`` (default: what a training resume reads)."""
    files = saved_files(ckpt_dir)
    usable = [s for s in complete_steps(ckpt_dir) if set(needed) <= files[s]]
    if step in usable:
        return
    kinds = files.get(step, set())
    if not kinds:
        problem = f'checkpoint {step} not found in {ckpt_dir}'
    elif STATE in kinds or step in complete_steps(ckpt_dir):
        missing = [k for k in needed if k not in kinds]
        problem = f'checkpoint {step} in {ckpt_dir} has no {", ".join(missing)} file{"s" if len(missing) > 1 else ""}'
    else:
        problem = f'checkpoint {step} in {ckpt_dir} is incomplete (its save was cut short: no {STATE} file)'
    fix = (f'the newest complete one is {usable[-1]}: use --resume_iter {usable[-1]}' if usable
           else 'no complete checkpoint is there')
    raise UserError(f'{problem}; {fix}')


def read(path: StrPath) -> Any:
    if not os.path.isfile(path):
        raise UserError(f'checkpoint not found: {path} (check --checkpoint_dir and --resume_iter, '
                        f'or run `bash download.sh` for the released models)')
    try:
        return torch.load(path, map_location='cpu', weights_only=True)
    except Exception as e:
        raise UserError(f'cannot read checkpoint {path}: {str(e).splitlines()[0][:200]}') from None


def strip_prefix(state: StateDict) -> StateDict:
    """Drops the ``module.`` prefix that DataParallel-wrapped saves carry."""
    if state and all(k.startswith('module.') for k in state):
        return {k[len('module.'):]: v for k, v in state.items()}
    return state


def _count(state: StateDict, prefix: str, suffix: str) -> int:
    return len({k.split('.')[1] for k in state if k.startswith(prefix) and k.endswith(suffix)})


def describe(states: Mapping[str, StateDict]) -> Dict[str, int | str]:
    """Best-effort configuration of a dict name -> state_dict of StarGAN v2 networks."""
    info: Dict[str, int | str] = {}
    mapping = states.get('mapping_network') or {}
    if mapping:
        info['num_domains'] = _count(mapping, 'unshared.', '.0.weight')
        info['latent_dim'] = mapping['shared.0.weight'].shape[1]
    trunk = states.get('style_encoder') or {}
    trunk_prefix = 'shared.'
    if not trunk:
        trunk, trunk_prefix = states.get('discriminator') or {}, 'main.'
    img_size = None
    if trunk:
        info['img_size'] = img_size = 2 ** (_count(trunk, trunk_prefix, '.conv1.weight') + 2)
    gen = states.get('generator') or {}
    if gen:
        info['style_dim'] = gen['decode.0.norm1.fc.weight'].shape[1]
        if 'to_rgb.0.weight' not in gen:
            info['to_rgb_norm'] = 0  # named only when it is not the official generator
        if 'hpf.filter' in gen:
            info['w_hpf'] = round(-1 / float(gen['hpf.filter'][0, 0]))
        elif img_size is not None:
            extra = _count(gen, 'encode.', '.conv1.weight') - 2 - (int(math.log2(img_size)) - 4)
            info['w_hpf'] = 0 if extra == 0 else '>0'
    return info


def _fmt(info: Mapping[str, object]) -> str:
    return ', '.join(f'{k}={v}' for k, v in info.items()) or 'unknown'


def load_modules(path: StrPath, modules: Modules, strict_names: Optional[Sequence[str]] = None) -> Dict[str, StateDict]:
    """Loads a file of name -> state_dict into ``modules`` (a dict name -> nn.Module).

    Accepts ``module.`` prefixes and a generator without ``hpf.filter`` (the released
    CelebA-HQ model: the buffer is fixed by w_hpf, so the model's own is kept).
    Anything else must match exactly; a file of another configuration fails with one
    line naming both. ``fan`` is loaded when the file has it (else left as built).
    """
    saved = read(path)
    if not isinstance(saved, dict):
        raise UserError(f'{path} is not a StarGAN v2 checkpoint (expected a dict name -> state_dict)')
    for name in modules:  # each entry to load must be names -> tensors (weights-only files may hold anything)
        sd = saved.get(name)
        if sd is not None and not (isinstance(sd, dict) and all(isinstance(k, str) and torch.is_tensor(v)
                                                                for k, v in sd.items())):
            raise UserError(f"{path}: its '{name}' is not a state dict (names -> tensors) but a {type(sd).__name__}: "
                            f'it is not a StarGAN v2 checkpoint; point at the run\'s own files')
    saved = {name: strip_prefix(sd) if name in modules else sd for name, sd in saved.items()}
    ours = {name: unwrap(m).state_dict() for name, m in modules.items()}
    required = [n for n in ours if n != 'fan'] if strict_names is None else strict_names
    missing = [n for n in required if n not in saved]
    if missing:
        raise UserError(f'{path} lacks {", ".join(missing)}: it is not a {os.path.basename(path).split("_", 1)[-1]} '
                        f'file of this model (has: {", ".join(saved) or "nothing"})')
    for name, module in modules.items():
        if name not in saved:
            continue
        state = dict(saved[name])
        if name == 'generator' and 'hpf.filter' in ours[name] and 'hpf.filter' not in state:
            state['hpf.filter'] = ours[name]['hpf.filter']  # released CelebA-HQ file predates the buffer
        mismatch = set(state) != set(ours[name]) or any(
            state[k].shape != ours[name][k].shape for k in state)
        if mismatch:
            raise UserError(f'{path} holds a model of another configuration ({_fmt(describe(saved))}) '
                            f'than this run ({_fmt(describe(ours))}): pass matching flags or --config')
        unwrap(module).load_state_dict(state, strict=True)
    return saved


# How this process runs Adam, not what it optimises: ``load_state_dict`` would take them from
# the file (a CPU or official checkpoint would make CUDA training unfused, and an unfused Adam
# rejects the GradScaler's arguments), so the optimiser's own settings are kept.
IMPLEMENTATION_KEYS = ('fused', 'foreach', 'capturable', 'differentiable')


def load_optimizers(path: StrPath, optims: Optimizers) -> None:
    saved = read(path)
    for name, optim in optims.items():
        if name not in saved:
            raise UserError(f'{path} lacks the optimiser of {name}')
        own = [{k: group[k] for k in IMPLEMENTATION_KEYS if k in group} for group in optim.param_groups]
        try:
            optim.load_state_dict(saved[name])
        except (ValueError, KeyError) as e:
            raise UserError(f'{path}: optimiser of {name} does not fit this model ({e})') from None
        for group, settings in zip(optim.param_groups, own):
            group.update(settings)


def load_checkpoint(ckpt_dir: StrPath, step: int, nets: Optional[Modules] = None, nets_ema: Optional[Modules] = None,
                    optims: Optional[Optimizers] = None) -> Optional[StateDict]:
    """Restores what is given from the files of ``step``; returns our state dict or None
    (official runs have no state file)."""
    if nets is not None:
        load_modules(ckpt_path(ckpt_dir, step, NETS), nets)
    if nets_ema is not None:
        load_modules(ckpt_path(ckpt_dir, step, NETS_EMA), nets_ema)
    if optims is not None:
        load_optimizers(ckpt_path(ckpt_dir, step, OPTIMS), optims)
    state_file = ckpt_path(ckpt_dir, step, STATE)
    return read(state_file) if os.path.isfile(state_file) else None
