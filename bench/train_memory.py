"""Peak training memory as a figure on any device, CPU included: a count, not a measurement.

Through one training iteration, ``MemoryCount`` follows

- the tensors autograd saves for backward (``torch.autograd.graph.saved_tensors_hooks``;
  several tensors on one storage count once, and a saved tensor that is a parameter's or
  an input's storage is not counted again: it is in the parameters or inputs),
- the parameters, their gradients (added when autograd accumulates them, dropped when an
  optimiser's ``zero_grad`` frees them) and the optimiser states (read after every step),
- the fixed input batch,

and records, per phase of the iteration (the four optimiser steps: D latent, D ref,
G latent, G ref), the largest sum of these that was alive at one moment.

What it leaves out (so on a GPU the allocator's peak, ``torch.cuda.max_memory_allocated``,
is higher; ``bench/train_speed.py`` prints both there): temporaries that no backward keeps
(the output of an op that only its successor reads, gradients of activations flowing
through the backward, workspace of cuDNN / matmul kernels), the activations an
activation-checkpointed block recomputes in backward (one block at a time), the CUDA
context and the allocator's rounding and fragmentation. Compiled (torch.compile) graphs
save what their fused kernels need, not what eager saves: count the eager setting.

    from bench.train_memory import MemoryCount
    with MemoryCount(nets, optims, inputs) as count:
        train_step(...)
    print(count.report())
"""
import functools

import torch

PHASES = ('D latent', 'D ref', 'G latent', 'G ref', 'EMA')


def storage_key(t):
    """(device, storage object) of a tensor: the same for every view of it."""
    return (str(t.device), t.untyped_storage()._cdata)  # the StorageImpl: unique among live storages, meta included


def storage_bytes(t):
    return t.untyped_storage().nbytes()


def unique_bytes(tensors, exclude=()):
    """Bytes of the distinct storages of ``tensors`` (keys in ``exclude`` left out)."""
    seen = {}
    for t in tensors:
        if t is None or not torch.is_tensor(t):
            continue
        key = storage_key(t)
        if key not in exclude:
            seen[key] = storage_bytes(t)
    return sum(seen.values())


def optimizer_state_tensors(optim):
    for state in optim.state.values():
        for value in state.values():
            if torch.is_tensor(value):
                yield value


class _Saved:
    """What the pack hook stores: the saved tensor, detached (autograd puts its grad_fn back
    when it unpacks; holding the attached output of an op here would make a reference cycle
    through that op's node), counted while this object lives (autograd drops it when it
    frees the saved tensors of that node)."""
    __slots__ = ('tensor', 'key', 'count')

    def __init__(self, tensor, key, count):
        self.tensor, self.key, self.count = tensor, key, count

    def __del__(self):
        self.count._release(self.key)


class MemoryCount:
    """Context manager counting one training iteration's memory (see the module doc).

    ``nets``: the networks trained (a dict or Munch; wrappers such as DDP or torch.compile
    are looked through by their parameters); ``optims``: their optimisers (dict);
    ``inputs``: tensors alive through the iteration (the batch). A phase ends at the first
    optimiser step after a ``zero_grad``; steps before any phase boundary (the other
    optimisers of the G latent step) belong to the next phase's resident set.
    """

    def __init__(self, nets, optims, inputs=(), phases=PHASES):
        self.params = []
        seen = set()
        for net in nets.values():
            for p in net.parameters():
                if id(p) not in seen:
                    seen.add(id(p))
                    self.params.append(p)
        self.optims = dict(optims)
        self.inputs = [t for t in (inputs.values() if isinstance(inputs, dict) else inputs) if torch.is_tensor(t)]
        self.phase_names = list(phases)
        self.param_keys = {storage_key(p) for p in self.params}
        self.param_bytes = unique_bytes(self.params)
        self.input_bytes = unique_bytes(self.inputs, exclude=self.param_keys)
        self.resident_keys = self.param_keys | {storage_key(t) for t in self.inputs}
        self._live = {}        # storage key -> [references, bytes, resident] of every saved tensor
        self.saved_now = 0     # bytes of saved tensors alive now, parameters and inputs left out
        self.saved_all_now = 0  # the same with them (every distinct storage saved)
        self.saved_all_peak = 0
        self._grads = {}       # id(param) -> bytes of its .grad
        self.grads_now = 0
        self.states_now = 0
        self.phase = 0
        self.phases = []       # one dict per finished phase
        self._reset_phase()
        self._handles = []
        self._stepped = False

    # ---------------------------------------------------------------- bookkeeping
    def _reset_phase(self):
        self.peak = 0
        self.peak_parts = None
        self.saved_peak = 0
        self.grads_peak = 0

    def _mark(self):
        total = self.param_bytes + self.input_bytes + self.states_now + self.grads_now + self.saved_now
        self.saved_peak = max(self.saved_peak, self.saved_now)
        self.grads_peak = max(self.grads_peak, self.grads_now)
        if total > self.peak:
            self.peak = total
            self.peak_parts = dict(params=self.param_bytes, inputs=self.input_bytes, states=self.states_now,
                                   grads=self.grads_now, saved=self.saved_now)

    def _pack(self, t):
        key = storage_key(t)
        entry = self._live.get(key)
        if entry is None:  # [references, bytes, resident: a parameter's or an input's storage]
            entry = self._live[key] = [0, storage_bytes(t), key in self.resident_keys]
            self.saved_all_now += entry[1]
            if not entry[2]:
                self.saved_now += entry[1]
            self.saved_all_peak = max(self.saved_all_peak, self.saved_all_now)
            self._mark()
        entry[0] += 1
        return _Saved(t.detach(), key, self)

    @staticmethod
    def _unpack(saved):
        return saved.tensor

    def _release(self, key):
        entry = self._live.get(key)
        if entry is None:
            return
        entry[0] -= 1
        if entry[0] == 0:
            del self._live[key]
            self.saved_all_now -= entry[1]
            if not entry[2]:
                self.saved_now -= entry[1]

    def _rescan_grads(self):
        self._grads = {id(p): storage_bytes(p.grad) for p in self.params if p.grad is not None}
        self.grads_now = sum(self._grads.values())

    def _rescan_states(self):
        tensors = [t for o in self.optims.values() for t in optimizer_state_tensors(o)]
        self.states_now = unique_bytes(tensors, exclude=self.param_keys)

    def _grad_added(self, p):
        if p.grad is not None and id(p) not in self._grads:
            self._grads[id(p)] = storage_bytes(p.grad)
            self.grads_now += self._grads[id(p)]
            self._mark()

    def _zero_grad(self, original, *args, **kwargs):
        original(*args, **kwargs)
        self._rescan_grads()
        self._stepped = False

    def _after_step(self, optim, args, kwargs):
        if not self._stepped:  # the first step after a zero_grad closes a phase
            self._close_phase()
            self._stepped = True
        self._rescan_states()
        self._mark()

    def _close_phase(self):
        name = self.phase_names[self.phase] if self.phase < len(self.phase_names) else f'phase {self.phase}'
        self.phases.append(dict(name=name, peak=self.peak, saved=self.saved_peak, grads=self.grads_peak,
                                parts=self.peak_parts))
        self.phase += 1
        self._reset_phase()
        self._mark()

    # ---------------------------------------------------------------- context
    def __enter__(self):
        self._rescan_grads()
        self._rescan_states()
        for p in self.params:
            if p.requires_grad:
                self._handles.append(p.register_post_accumulate_grad_hook(self._grad_added))
        for optim in self.optims.values():
            self._handles.append(optim.register_step_post_hook(self._after_step))
            original = optim.zero_grad
            optim.zero_grad = functools.partial(self._zero_grad, original)
            self._handles.append(_Restore(optim))
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack)
        self._hooks.__enter__()
        self._mark()
        return self

    def __exit__(self, *exc):
        self._hooks.__exit__(*exc)
        for h in self._handles:
            h.remove()
        self._handles = []
        self._close_phase()  # what came after the last step (the EMA update)
        return False

    # ---------------------------------------------------------------- results
    def report(self):
        """{'peak': bytes, 'phases': [{'name', 'peak', 'saved', 'grads', 'parts'}, ...], 'params',
        'states', 'inputs'}: the peak is the largest of the phases'."""
        return dict(peak=max((p['peak'] for p in self.phases), default=0), phases=list(self.phases),
                    params=self.param_bytes, states=self.states_now, inputs=self.input_bytes,
                    saved_all=self.saved_all_peak)


class _Restore:
    """Handle that takes the counting zero_grad off an optimiser again."""

    def __init__(self, optim):
        self.optim = optim

    def remove(self):
        self.optim.__dict__.pop('zero_grad', None)


def count_iteration(step, nets, optims, inputs=()):
    """Run ``step()`` (one training iteration) under a MemoryCount; its report."""
    with MemoryCount(nets, optims, inputs) as count:
        step()
    return count.report()


def gib(n):
    return n / 2 ** 30


def format_phases(report):
    """'D latent 1.23 / D ref 1.20 / G latent 2.50 / G ref 2.41' (GiB)."""
    return ' / '.join(f'{p["name"]} {gib(p["peak"]):.2f}' for p in report['phases'] if p['name'] in PHASES[:4])
