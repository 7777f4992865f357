"""Forward hooks that reduce module outputs (and norm-layer inputs) on the device, without a host sync.

A hook only works on recorded steps, and by default only for forwards that train: under
``torch.no_grad()``/``inference_mode`` or with the module in eval mode it returns at once, so evaluation
passes neither cost anything nor overwrite the training step's statistics. If a module runs several times
in one step (gradient accumulation, weight sharing), the last training forward of the step is kept.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from normlab.nn.surgery import is_norm_class
from normlab.probe.histograms import SymLogBins
from normlab.probe.moments import activation_moments

ModuleSelector = Iterable[str | type[nn.Module]] | Callable[[str, nn.Module], bool] | None


def is_norm_layer(module: nn.Module) -> bool:
    """BatchNorm*, LayerNorm, RMSNorm, GroupNorm, InstanceNorm* of torch.nn or normlab.nn (and their
    subclasses), the frozen BatchNorms, and other libraries' norms known to surgery (Hugging Face's
    ``LlamaRMSNorm``, classes given to ``register_norm_class``): :func:`normlab.nn.surgery.is_norm_class`.
    Decided by class, not name: a ``NormalizedLinear`` is not a norm."""
    return is_norm_class(type(module))


def select_modules(model: nn.Module, modules: ModuleSelector) -> list[tuple[str, nn.Module]]:
    """The modules whose outputs are recorded.

    ``None``: every leaf module (no children). A callable ``(name, module) -> bool``. Or an iterable of
    qualified names (as in ``model.named_modules()``) and/or module classes (``isinstance``).
    """
    named = [(name or "root", module) for name, module in model.named_modules()]
    if modules is None:
        return [(name, m) for name, m in named if not any(True for _ in m.children())]
    if callable(modules) and not isinstance(modules, type):
        return [(name, m) for name, m in named if modules(name, m)]
    if isinstance(modules, (str, bytes)) or not isinstance(modules, Iterable):
        raise TypeError(
            "Probe: modules must be None, a callable (name, module) -> bool, or a list of module names "
            f"and/or classes, got {modules!r}"
        )
    wanted = list(modules)
    by_name = dict(named)
    for item in wanted:
        if isinstance(item, str):
            if item not in by_name:
                valid = ", ".join(list(by_name)[:20]) + (" ..." if len(by_name) > 20 else "")
                raise ValueError(f"Probe: modules names {item!r}, which is not a module of the model; valid: {valid}")
        elif not (isinstance(item, type) and issubclass(item, nn.Module)):
            raise TypeError(f"Probe: modules entries must be module names or nn.Module classes, got {item!r}")
    names = {item for item in wanted if isinstance(item, str)}
    classes = tuple(item for item in wanted if isinstance(item, type))
    return [(name, m) for name, m in named if name in names or (classes and isinstance(m, classes))]


def _first_tensor(value: Any) -> torch.Tensor | None:
    """The tensor itself, or the first floating tensor of a tuple/list output (e.g. an RNN's)."""
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (tuple, list)):
        for item in value:
            if isinstance(item, torch.Tensor) and item.is_floating_point():
                return item
    return None


SAMPLE_ABOVE_ELEMENTS = 1 << 12  # larger outputs (per member) are summarized from a sample of this size


class ActivationHooks:
    """Forward hooks on the selected modules; their reductions are collected by :meth:`take` at the step.

    Slots: one ``(name, "activation")`` per ordinary module; norm layers get ``(name, "norm_in")`` and
    ``(name, "norm_out")`` instead.

    How it stays cheap: a small output costs a kernel launch per statistic but almost no arithmetic, so
    the hook only keeps a reference and the Probe reduces all kept outputs of the step together in one
    fixed set of kernels (``step_vector.StepVector``). A kept tensor whose version counter moved was
    changed in place after the hook (an ``inplace=True`` activation, ``x += ...``): that step's value is
    dropped and the module is reduced exactly in its hook from then on. An output larger than
    ``SAMPLE_ABOVE_ELEMENTS`` per member would cost as much to summarize as the layer costs to compute, so
    the hook copies a uniform random sample of that many elements per member (fixed indices per shape,
    drawn with replacement, sorted so the copy reads memory in order) and that sample is reduced and
    binned instead: its statistics are estimates.
    """

    def __init__(self, selected: list[tuple[str, nn.Module]], members: int, binning: SymLogBins | None,
                 record_eval: bool, reduce_in_hooks: bool = False):
        """``reduce_in_hooks``: reduce every output in its hook (``ReductionPolicy.reduce_in_hooks``)."""
        self.members = members
        self.binning = binning
        self.record_eval = record_eval
        self.recording = False  # set by the Probe at each step boundary
        self.histogramming = False
        self.slots: list[tuple[str, str]] = []
        self._kept: dict[int, tuple[torch.Tensor, int]] = {}  # slot -> (output, its version at the hook)
        self._reduced: dict[int, torch.Tensor] = {}  # slot -> (members, 4) moments computed in the hook
        self._reduced_histograms: dict[int, torch.Tensor] = {}
        self._reduce_in_hook: set[int] = set()
        self._numel: dict[int, int] = {}  # slot -> values per member of its recorded tensor (before sampling)
        self.last_counts: dict[int, int] = {}  # slot -> that count, for the slots of the last ``take``
        self._member_offsets: dict[torch.device, torch.Tensor] = {}
        self._sample_indices: dict[tuple[int, torch.device], torch.Tensor] = {}
        # Samples taken this step, by the identity of the sampled tensor: a norm layer's input is often the
        # previous module's output, the same tensor, and is then sampled once. A weak reference, so that
        # no activation is kept alive for this; the version guards against an in-place change in between.
        self._step_samples: dict[int, tuple[weakref.ref, int, torch.Tensor]] = {}
        self._handles = []
        self._pending = []  # (module, hook) registered by attach()
        for name, module in selected:
            if is_norm_layer(module):
                slot_in, slot_out = len(self.slots), len(self.slots) + 1
                self.slots += [(name, "norm_in"), (name, "norm_out")]
            else:
                slot_in, slot_out = None, len(self.slots)
                self.slots.append((name, "activation"))
            self._pending.append((module, self._make_hook(name, slot_in, slot_out)))
        if reduce_in_hooks:
            self._reduce_in_hook.update(range(len(self.slots)))

    def _make_hook(self, name: str, slot_in: int | None, slot_out: int):
        def hook(module: nn.Module, args: tuple, output: Any) -> None:
            if not self.recording:
                return
            if not self.record_eval and not (module.training and torch.is_grad_enabled()):
                return
            if slot_in is not None and args:
                self._record(name, slot_in, _first_tensor(args[0]))
            self._record(name, slot_out, _first_tensor(output))

        return hook

    def _record(self, name: str, slot: int, x: torch.Tensor | None) -> None:
        if x is None or not x.is_floating_point() or x.numel() == 0:
            return
        members = self.members
        if members > 1 and (x.dim() == 0 or x.shape[0] != members):
            raise ValueError(
                f"Probe: module {name!r} gave a tensor of shape {tuple(x.shape)}; an ensemble of {members} "
                f"members needs shape ({members}, batch, ...)"
            )
        # the last training forward of the step wins
        self._reduced.pop(slot, None)
        self._reduced_histograms.pop(slot, None)
        per_member = x.numel() // members
        self._numel[slot] = per_member
        if per_member > SAMPLE_ABOVE_ELEMENTS:
            sample = self._sampled(x, members, per_member)
            self._kept[slot] = (sample, sample._version)  # a copy: later in-place changes cannot reach it
            return
        x = x.detach()
        if slot not in self._reduce_in_hook:
            self._kept[slot] = (x, x._version)
            return
        self._kept.pop(slot, None)
        self._reduced[slot] = activation_moments(x, members)
        if self.histogramming and self.binning is not None:
            flat = x.reshape(members, -1)
            if flat.dtype not in (torch.float32, torch.float64):
                flat = flat.float()  # the smallest edges underflow in half precision
            self._reduced_histograms[slot] = self.binning.segment_counts(flat, self._offsets(flat.device), members)

    def _sampled(self, x: torch.Tensor, members: int, per_member: int) -> torch.Tensor:
        """The fixed sample of ``x`` (``(members, SAMPLE_ABOVE_ELEMENTS)``), taken once per tensor and step."""
        taken = self._step_samples.get(id(x))
        if taken is not None and taken[0]() is x and taken[1] == x._version:
            return taken[2]
        sample = x.detach().reshape(members, per_member).index_select(1, self._sample(per_member, x.device))
        self._step_samples[id(x)] = (weakref.ref(x), x._version, sample)
        return sample

    def _sample(self, size: int, device: torch.device) -> torch.Tensor:
        key = (size, device)
        index = self._sample_indices.get(key)
        if index is None:
            generator = torch.Generator().manual_seed(size)  # reproducible, and the same at every step
            index = torch.randint(size, (SAMPLE_ABOVE_ELEMENTS,), generator=generator).sort().values.to(device)
            self._sample_indices[key] = index
        return index

    def _offsets(self, device: torch.device) -> torch.Tensor:
        offsets = self._member_offsets.get(device)
        if offsets is None:
            width = self.binning.bins + 1
            offsets = self._member_offsets[device] = (torch.arange(self.members, device=device) * width)[:, None]
        return offsets

    @property
    def has_hook_reductions(self) -> bool:
        """Whether some output of this step was reduced in its hook (``take`` then needs its buffers)."""
        return bool(self._reduced)

    def take(self, moments_out: torch.Tensor | None, histograms_out: torch.Tensor | None
             ) -> tuple[dict[int, torch.Tensor], frozenset[int]]:
        """End of step: write the moments reduced in hooks into ``moments_out`` ``(slots * members, 4)``
        (and counts into ``histograms_out`` ``(slots * members, bins)`` if given); return the kept outputs
        still unchanged (slot -> tensor), to be reduced together, and the slots with no record."""
        members = self.members
        kept = {}
        for slot, (x, version) in self._kept.items():
            if x._version == version:
                kept[slot] = x
            else:
                self._reduce_in_hook.add(slot)  # changed in place after the hook: reduce in the hook
        for slot, moments in self._reduced.items():
            moments_out[slot * members : (slot + 1) * members] = moments
        if histograms_out is not None:
            for slot, counts in self._reduced_histograms.items():
                histograms_out[slot * members : (slot + 1) * members] = counts
        missing = frozenset(range(len(self.slots))) - kept.keys() - self._reduced.keys()
        self.last_counts = {slot: self._numel[slot] for slot in (*kept, *self._reduced)}
        self._kept, self._reduced, self._reduced_histograms, self._step_samples = {}, {}, {}, {}
        self._numel = {}
        return kept, missing

    def attach(self) -> None:
        """Register the forward hooks (once; the Probe does it last in its constructor, so that a failed
        construction leaves no hook behind)."""
        pending, self._pending = self._pending, []
        for module, hook in pending:
            self._handles.append(module.register_forward_hook(hook))

    def remove(self) -> None:
        self._pending = []
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self._kept, self._reduced, self._reduced_histograms, self._step_samples = {}, {}, {}, {}
        self._numel = {}
