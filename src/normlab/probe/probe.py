"""``Probe``: per-step training statistics, reduced on the device and copied to the host every K steps.

Example::

    with Probe(model, optimizer, histograms=10, logdir="runs/tb") as probe:
        for x, y in batches:
            loss_fn(model(x), y).backward()
            optimizer.step()          # the probe hooks into this; nothing else to call
            optimizer.zero_grad()
    probe.scalars()                   # long table: step, member, name, kind, stat, value
    probe.save("runs/probe")          # scalars.parquet, histograms.parquet

Design: a recorded step captures everything it reduces into one flat vector (``step_vector.StepVector``,
laid out by ``layout.StepLayout``), reduces it on the device to four raw moments per tensor and member
with a fixed number of kernels for all parameters and all small module outputs together (a few per large
module output), and copies the moments as one row into a device buffer; the only host sync is the
buffer flush every ``flush_every`` recorded steps. The reported statistics are derived from the moments
on the host by the quantities (``quantities/``, one per module). For small models even that fixed set of
kernels costs as much as a training step, so when ``flush_every`` step vectors fit in the
``ReductionPolicy``'s ring budget a recorded step only copies its step vector into a ring (one kernel)
and the ring is reduced every ``flush_every`` steps for all of them at once (``step_ring.StepRing``;
same tables, tested). ``policy.ReductionPolicy`` is the one place that chooses among these paths. Memory: three flat copies of the trainable parameters
(gradients, weights before the step, update) for models small enough for the ring, plus the ring; two
for larger ones (the update, weights and gradients are reduced tensor by tensor, ``StepVector(lean=True)``), plus temporaries
the size of the largest tensor; the small outputs of the current step and the buffer.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from normlab.probe import distributed
from normlab.probe.alerts import AlertMonitor, AlertRules
from normlab.probe.buffer import Chunk, DeviceBuffer
from normlab.probe.flat_copy import Flattener
from normlab.probe.histograms import SymLogBins
from normlab.probe.hooks import SAMPLE_ABOVE_ELEMENTS, ActivationHooks, ModuleSelector, select_modules
from normlab.probe.layout import N_MOMENTS, OUTPUTS, REGIONS, StepLayout
from normlab.probe.policy import DEFAULT_POLICY, ReductionPolicy
from normlab.probe.quantities import DEFAULT_QUANTITIES, Quantity
from normlab.probe.schedule import Schedule, _positive_int
from normlab.probe.step_ring import StepRing
from normlab.probe.step_vector import StepVector
from normlab.probe.tables import Catalog, concat_scalars, histograms_frame, scalars_frame
from normlab.probe.writers import TensorBoardWriter, write_parquet_atomic

RUNNING_BUFFERS = ("running_mean", "running_var")
SOURCES = (OUTPUTS, *REGIONS)
MAX_RINGS = 4  # rings kept for layouts of kept outputs (a smaller last batch is a second layout)


def _handout(cached: pd.DataFrame) -> pd.DataFrame:
    """A copy of a cached table that the caller may modify freely. Under pandas' copy-on-write (the default
    from pandas 3) a shallow copy is that, and free; otherwise the data is copied."""
    major = int(pd.__version__.split(".")[0])
    copy_on_write = major >= 3 or bool(getattr(pd.options.mode, "copy_on_write", False))
    return cached.copy(deep=not copy_on_write)


def _resolve_optimizers(optimizer: object) -> tuple[torch.optim.Optimizer, ...]:
    if optimizer is None:
        return ()
    if isinstance(optimizer, torch.optim.Optimizer):
        return (optimizer,)
    if isinstance(optimizer, Sequence) and not isinstance(optimizer, (str, bytes)) and optimizer and all(
            isinstance(o, torch.optim.Optimizer) for o in optimizer):
        if len({id(o) for o in optimizer}) < len(optimizer):
            raise ValueError("Probe: optimizer lists the same optimizer twice")
        return tuple(optimizer)
    given = type(optimizer).__name__
    if isinstance(optimizer, Sequence) and optimizer:
        given += " of " + ", ".join(sorted({type(o).__name__ for o in optimizer}))
    raise TypeError(f"Probe: optimizer must be a torch.optim.Optimizer, a non-empty list of them, or None, got {given}")


def _storage(t: torch.Tensor) -> int:
    return t.untyped_storage().data_ptr()


def _stepped_by(named: list[tuple[str, torch.Tensor]], optimizers: Sequence[torch.optim.Optimizer]
                ) -> frozenset[int]:
    """Indices (into ``named``) of the parameters that none of ``optimizers`` steps.

    A parameter counts as stepped when an optimizer holds it or the tensor whose storage it views: the
    lab's flat ensembles (``kit/flat_params.py``) step one (N, P) matrix whose views are the model's
    parameters."""
    owner: dict[int, int] = {}
    storages: dict[int, int] = {}
    names = {id(p): name for name, p in named}
    for index, optimizer in enumerate(optimizers):
        for group in optimizer.param_groups:
            for p in group["params"]:
                if owner.get(id(p), index) != index:
                    raise ValueError(f"Probe: parameter {names.get(id(p), '?')!r} is in optimizer {owner[id(p)]} "
                                     f"and optimizer {index}: each parameter must be stepped by one optimizer")
                owner[id(p)] = index
                storages.setdefault(_storage(p), index)
    return frozenset(i for i, (_, p) in enumerate(named) if id(p) not in owner and _storage(p) not in storages)


def _resolve_quantities(quantities: object) -> tuple[Quantity, ...]:
    if isinstance(quantities, Quantity) or not isinstance(quantities, Sequence):
        raise TypeError(f"Probe: quantities must be a list of Quantity, got {quantities!r}")
    for quantity in quantities:
        if not isinstance(quantity, Quantity):
            raise TypeError(f"Probe: quantities must be Quantity instances (normlab.probe.quantities), got {quantity!r}")
        if quantity.source not in SOURCES:
            raise ValueError(f"Probe: {quantity!r} reads source {quantity.source!r}; sources: {', '.join(SOURCES)}")
        if not quantity.stats or not all(isinstance(stat, str) for stat in quantity.stats):
            raise ValueError(f"Probe: {quantity!r} must declare stats, a non-empty tuple of names")
    seen: dict[tuple, Quantity] = {}
    for quantity in quantities:
        for stat in quantity.stats:
            key = (quantity.kind, quantity.source if quantity.kind is None else None, stat, quantity.per_model)
            if key in seen:
                raise ValueError(f"Probe: {quantity!r} and {seen[key]!r} both record stat {stat!r}")
            seen[key] = quantity
    return tuple(quantities)


def _resolve_members(model: nn.Module, members: object) -> int:
    if members is None:
        members = getattr(model, "ensemble_size", None)
        if members is None:
            return 1
        source = "model.ensemble_size"
    else:
        source = "members"
    if isinstance(members, bool) or not isinstance(members, int) or members < 1:
        raise ValueError(f"Probe: {source} must be a positive int (ensemble members), got {members!r}")
    return members


class Probe:
    """Training instruments cheap enough to leave on.

    Args:
        model: the ``nn.Module`` being trained. For a vectorized ensemble of ``N`` members every parameter
            has shape ``(N, ...)`` and every module output ``(N, batch, ...)``; statistics are per member.
        optimizer: an optimizer or a list of them (e.g. one per parameter group of a model): their step
            hooks count steps and capture the update. With several, a step is one step of each: it starts
            at the first of their ``step()`` calls and ends when every one has stepped once (an optimizer
            stepping twice before the others have is an error). Trainable parameters that none of them
            steps get a warning and no ``update`` records. ``None``: call :meth:`step` once after every
            ``optimizer.step()`` (before the gradients are zeroed).
        every: record scalars every ``every`` optimizer steps (step 0 is always recorded).
        histograms: ``False``; ``True`` (on the scalar schedule); or an int interval.
        bins: number of symmetric log-spaced histogram bins (even, >= 6); see ``histograms.py``.
        modules: which module outputs to record: ``None`` (all leaf modules), names, classes or a
            predicate ``(name, module) -> bool``.
        logdir: also write TensorBoard event files there.
        members: ensemble size; default ``model.ensemble_size`` if present, else 1 (member 0).
        record_eval: also record forwards under ``no_grad``/eval mode (off: those are skipped).
        flush_every: recorded steps held on the device between host copies.
        alerts: ``True`` or an :class:`~normlab.probe.alerts.AlertRules` to check every flushed block of
            rows for anomalies (spikes, non-finite values, dead units, update ratios, running-stat drift):
            a :class:`~normlab.probe.alerts.ProbeAlert` warning the first time each (alert, name) occurs,
            every occurrence in :meth:`alerts`. Off the hot path: the rules run on the host at flushes.
        policy: a :class:`~normlab.probe.policy.ReductionPolicy`: which reduction path each step takes
            (default: chosen by the model's size; every path records the same numbers).
        quantities: the statistics derived from the raw moments, one :class:`~normlab.probe.quantities.
            Quantity` per kind of record (default ``quantities.DEFAULT_QUANTITIES``); add your own to
            that list (``docs/probe.md``, *Adding a statistic*).
        process_group: ``"auto"`` (default): a ``DistributedDataParallel`` model is recorded under its
            inner module's names, with module outputs pooled over its process group and only rank 0
            writing (:mod:`normlab.probe.distributed`); any other model records its own batch. ``None``:
            never pooled. A process group: pooled over that group. When pooled, every rank must make
            the probe, step, call ``record_loss`` and read (``scalars``, ``save``, ``close``, ...) alike:
            the reads are collectives.

    Records (long format): :meth:`scalars` has ``step, member, name, kind, stat, value`` with kinds
    ``activation`` / ``norm_in`` / ``norm_out`` (stats mean, std, rms, absmax, zero_frac), ``grad`` and
    ``weight`` (norm, mean, std, absmax), ``update`` (norm, std, ratio: ``quantities/update.py``),
    ``running_stats`` (mean, rms, drift) and ``global`` (grad_norm). :meth:`histograms` has
    ``step, member, name, kind, bin_lo, bin_hi, count``.

    Module outputs larger than ``hooks.SAMPLE_ABOVE_ELEMENTS`` (4096) per member are summarized from a
    fixed uniform random sample of that size; everything else is exact (see ``docs/probe.md``).
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer | Sequence[torch.optim.Optimizer] | None = None,
        *,
        every: int = 1,
        histograms: bool | int = False,
        bins: int = 64,
        modules: ModuleSelector = None,
        logdir: str | os.PathLike | None = None,
        members: int | None = None,
        record_eval: bool = False,
        flush_every: int = 64,
        alerts: bool | AlertRules = False,
        policy: ReductionPolicy | None = None,
        quantities: Sequence[Quantity] = DEFAULT_QUANTITIES,
        process_group: object = distributed.AUTO,
    ):
        if not isinstance(model, nn.Module):
            raise TypeError(f"Probe: model must be a torch.nn.Module, got {type(model).__name__}")
        wrapper = model
        model, self._group = distributed.resolve(model, process_group)
        self._writes = self._group is None or distributed.rank(self._group) == 0
        optimizers = _resolve_optimizers(optimizer)
        if not isinstance(alerts, (bool, AlertRules)):
            raise TypeError(f"Probe: alerts must be True, False or an AlertRules, got {alerts!r}")
        if logdir is not None and not isinstance(logdir, (str, os.PathLike)):
            raise TypeError(f"Probe: logdir must be a path or None, got {logdir!r}")
        if policy is not None and not isinstance(policy, ReductionPolicy):
            raise TypeError(f"Probe: policy must be a ReductionPolicy or None, got {policy!r}")
        self.policy = policy = policy if policy is not None else DEFAULT_POLICY
        quantities = _resolve_quantities(quantities)
        self.schedule = Schedule.from_arguments(every, histograms)
        self.binning = SymLogBins(bins) if self.schedule.histogram_every is not None else None
        if self.binning is None:
            SymLogBins(bins)  # validate bins even when histograms are off
        self.members = _resolve_members(model, members)
        self._flush_every = flush_every = _positive_int("flush_every", flush_every)
        self.model, self.optimizer, self.optimizers = wrapper, optimizer, optimizers

        named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
        # Small parameters first: they form one run in each region of the step vector (see ReductionPlan).
        named.sort(key=lambda item: not policy.is_small(item[1].numel() // self.members))
        unstepped = _stepped_by(named, optimizers) if optimizers else frozenset()
        if unstepped:
            unstepped_names = {named[i][0] for i in unstepped}
            listed = [name for name, _ in model.named_parameters() if name in unstepped_names]  # model order
            shown = ", ".join(listed[:10]) + (f" and {len(listed) - 10} more" if len(listed) > 10 else "")
            warnings.warn(
                f"Probe: {len(listed)} trainable parameter(s) are in no optimizer given to the probe: {shown}. "
                "Their update statistics are left out; to record them pass every optimizer that steps the "
                "model, e.g. Probe(model, [optimizer_1, optimizer_2]).", UserWarning, stacklevel=2)
        running = [(name, b) for name, b in model.named_buffers()
                   if name.rsplit(".", 1)[-1] in RUNNING_BUFFERS and b.is_floating_point()]
        for what, tensors in (("parameter", named), ("buffer", running)):
            for name, tensor in tensors:
                if self.members > 1 and (tensor.dim() == 0 or tensor.shape[0] != self.members):
                    raise ValueError(
                        f"Probe: {what} {name!r} has shape {tuple(tensor.shape)}; an ensemble of {self.members} "
                        f"members needs shape ({self.members}, ...)"
                    )
        device = named[0][1].device if named else torch.device("cpu")
        dtype = torch.float64 if any(p.dtype == torch.float64 for _, p in named) else torch.float32
        self._params = [p for _, p in named]
        self._running = [b for _, b in running]
        selected = select_modules(model, modules)
        self._activations = ActivationHooks(selected, self.members, self.binning, record_eval, policy.reduce_in_hooks)
        rules = alerts if isinstance(alerts, AlertRules) else AlertRules() if alerts else None
        matrices = [name for name, p in named if p.dim() - (self.members > 1) >= 2]  # what update_ratio watches
        self._alerts = AlertMonitor(rules, [name for name, _ in selected], matrices) if rules is not None else None
        self._losses: dict[int, list[torch.Tensor]] = {}  # step -> its losses, on the device until a flush
        self._loss_width: int | None = None  # elements per recorded loss (1, or one per member)
        self._loss_frames: list[pd.DataFrame] = []  # losses of flushed steps, as scalar rows on the host
        # A kept output has at most SAMPLE_ABOVE_ELEMENTS values per member (larger ones are sampled).
        capacity = len(self._activations.slots) * self.members * SAMPLE_ABOVE_ELEMENTS
        # Step vectors too large for a ring are reduced at every recorded step: they need no update region.
        params = [(name, p.numel()) for name, p in named]
        buffers = [(name, b.numel()) for name, b in running]
        full = 3 * sum(n for _, n in params) + 2 * sum(n for _, n in buffers)
        self.layout = StepLayout(self.members, params, buffers, self._activations.slots,
                                 lean=policy.is_lean(full, flush_every))
        self._vector = StepVector(self.layout, device, dtype, self.binning, activation_capacity=capacity,
                                  policy=policy)
        self._running_previous: torch.Tensor | None = None
        # Pooled over ranks (self._group): per recorded step, the values per member each output slot had
        # on this rank (0: none), and the chunks flushed locally but not pooled yet.
        self._slot_counts: dict[int, np.ndarray] = {}
        self._unpooled: tuple[list, list] = ([], [])
        self._unpooled_steps = 0

        self.catalog = Catalog(self.layout, self.binning.edges(dtype) if self.binning is not None else None,
                               unstepped, quantities)
        self._scalar_buffer = DeviceBuffer(self.catalog.scalar_width, flush_every, device, dtype)
        self._histogram_buffer = (
            DeviceBuffer(self.catalog.histogram_segments * self.binning.bins, flush_every, device, torch.int64)
            if self.binning is not None else None
        )
        act_rows = self.layout.output_segments
        self._act_moments = torch.empty((act_rows, N_MOMENTS), device=device, dtype=dtype)
        self._act_counts = (torch.empty((act_rows, self.binning.bins), device=device, dtype=torch.int64)
                            if self.binning is not None else None)
        # Captures copy tensors into the step vector with a plan kept while their layout stays (flat_copy.py).
        per_tensor = policy.difference_per_tensor_elements
        self._flatten_grads, self._flatten_params = Flattener(per_tensor), Flattener(per_tensor)
        self._tensorboard: TensorBoardWriter | None = None  # opened last (below): it starts a writer thread
        self._scalars_cache: pd.DataFrame | None = None
        self._histograms_cache: pd.DataFrame | None = None

        # Deferred reduction (see step_ring.py): rings of raw step vectors, one per layout of kept outputs.
        self._rings: dict[tuple, StepRing | None] = {}
        self._ring: StepRing | None = None  # the ring holding unreduced rows, if any
        self._ring_steps: list[int] = []
        self._ring_missing: list[frozenset] = []

        self._staged_row: tuple[StepRing, int] | None = None  # (ring, row) the fixed regions are written to
        self._step = 0
        self._captured = False
        self._missing_grads: frozenset = frozenset()
        self._closed = False
        self._stepped: set[int] = set()  # attached optimizers that have stepped in the current step
        self._hook_handles = []
        self._warned_skip = False
        if not optimizers and self.schedule.records(0):
            with torch.no_grad():  # (captures copy parameters into the step vector: no graph)
                self._capture_weights()
        self._arm_hooks()
        # The event writer and the hooks last, so that a constructor that fails leaves none behind.
        try:
            if logdir is not None and self._writes:  # under DDP only rank 0 writes
                self._tensorboard = TensorBoardWriter(logdir, self.members, bins)
            for index, opt in enumerate(optimizers):
                self._hook_handles.append(opt.register_step_pre_hook(lambda *_, i=index: self._optimizer_pre(i)))
                self._hook_handles.append(opt.register_step_post_hook(lambda *_, i=index: self._optimizer_post(i)))
            self._activations.attach()
        except BaseException:
            self._remove_hooks()
            if self._tensorboard is not None:
                self._tensorboard.close()
            raise

    # -- the step cycle ------------------------------------------------------------------------------

    @property
    def steps(self) -> int:
        """Optimizer steps counted so far."""
        return self._step

    @torch.no_grad()
    def step(self) -> None:
        """Count one optimizer step; call after ``optimizer.step()`` when no optimizer was given."""
        self._check_open()
        if self.optimizers:
            raise RuntimeError(
                "Probe.step(): this probe was given an optimizer and counts its steps through hooks; "
                "calling step() as well would count every step twice"
            )
        if self.schedule.records(self._step):
            self._capture_gradients()
            self._captured = True
        self._after_step()
        if self.schedule.records(self._step):
            self._capture_weights()  # the weights the next recorded step's gradients are computed at

    def record_loss(self, loss: torch.Tensor) -> None:
        """Record the current step's loss as ``global / loss / value`` (kept on the device: no sync).

        Call it once per step (before or after ``backward()``, before ``optimizer.step()``); called
        several times in one step (gradient accumulation), the mean of the values is recorded. A loss of
        one element is member 0; an ensemble may pass one loss per member, shape ``(members,)``.
        """
        self._check_open()
        if not isinstance(loss, torch.Tensor) or not loss.is_floating_point():
            raise TypeError(f"Probe.record_loss: loss must be a floating-point tensor, got {type(loss).__name__}")
        if loss.numel() not in (1, self.members) or self._loss_width not in (None, loss.numel()):
            expected = f"{self._loss_width} (as before)" if self._loss_width is not None else f"1 or {self.members}"
            raise ValueError(f"Probe.record_loss: loss must have {expected} element(s), got shape {tuple(loss.shape)}")
        self._loss_width = loss.numel()
        if self.schedule.records(self._step):
            self._losses.setdefault(self._step, []).append(loss.detach().reshape(-1))

    def _drain_losses(self, until: int) -> pd.DataFrame:
        """The losses of steps up to ``until`` as scalar rows, moved to the host in one copy."""
        steps = sorted(s for s in self._losses if s <= until)
        if not steps:
            return pd.DataFrame()
        means = torch.stack([torch.stack(self._losses.pop(s)).double().mean(0) for s in steps]).cpu().numpy()
        if self._group is not None:  # the mean over ranks (every rank records the same steps' losses)
            means = distributed.all_sum(means, self._group, self._vector.device) / distributed.world_size(self._group)
        width = means.shape[1]  # (steps, 1 or members)
        frame = pd.DataFrame({"step": np.repeat(np.asarray(steps, dtype=np.int64), width),
                              "member": np.tile(np.arange(width, dtype=np.int64), len(steps)),
                              "name": "loss", "kind": "global", "stat": "value", "value": means.reshape(-1)})
        self._loss_frames.append(frame)
        return frame

    def _arm_hooks(self) -> None:
        self._activations.recording = self.schedule.records(self._step)
        self._activations.histogramming = self.schedule.records_histograms(self._step)

    def _bins(self, step: int) -> bool:
        """Whether ``step`` records histograms (the probe was asked for them, and the schedule says so)."""
        return self._histogram_buffer is not None and self.schedule.records_histograms(step)

    def _capture_gradients(self) -> None:
        if self._params:
            grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self._params]
            if self._vector.lean:
                self._vector.capture_grads(grads, binned=self._bins(self._step))
            else:
                self._flatten_grads(grads, self._vector.region("grad"))
                self._flatten_grads.forget()
        self._missing_grads = frozenset(("grad", i) for i, p in enumerate(self._params) if p.grad is None)

    def _stage(self) -> None:
        """Point the step vector's fixed regions at the next row of the current ring, if there is room:
        when the step keeps that ring, the row is then already written (no copy of the fixed regions)."""
        ring = self._ring
        target = ring.next_row()[: self._vector.fixed_total] if ring is not None and not ring.full else None
        self._vector.stage(target)
        self._staged_row = (ring, ring.filled) if target is not None else None

    def _capture_weights(self) -> None:
        self._stage()  # the first capture of a step (in both the hooked and the manual cycle)
        if self._params and self._vector.lean:
            self._vector.capture_weights(self._params)
        elif self._params:
            self._flatten_params(self._params, self._vector.region("weight"))

    def _optimizer_pre(self, index: int) -> None:
        if index in self._stepped:
            # The others skipped a step (torch.amp.GradScaler skips an optimizer whose gradients hold
            # inf/NaN; user code may step one only every k steps): close the open step without them, so
            # their parameters show the update they got in it, none.
            waiting = [i for i in range(len(self.optimizers)) if i not in self._stepped]
            if not self._warned_skip:
                self._warned_skip = True
                warnings.warn(
                    f"Probe: optimizer {index} stepped again before optimizer(s) {waiting} stepped (e.g. "
                    f"GradScaler skipped them); step {self._step} is recorded without their update. The probe "
                    "counts one training step when each optimizer it was given has stepped once.",
                    UserWarning, stacklevel=3)
            self._stepped.clear()
            self._after_step()
        if not self._stepped:
            self._before_step()

    def _optimizer_post(self, index: int) -> None:
        self._stepped.add(index)
        if len(self._stepped) == len(self.optimizers):
            self._stepped.clear()
            self._after_step()

    @torch.no_grad()
    def _before_step(self) -> None:
        if self.schedule.records(self._step):
            self._capture_weights()
            self._capture_gradients()
            self._captured = True

    @torch.no_grad()
    def _after_step(self) -> None:
        if self._captured:
            self._captured = False
            if self._params and self._vector.lean:
                self._vector.capture_update(self._params)
            elif self._params:
                self._flatten_params.difference(self._params, self._vector.region("weight"),
                                                self._vector.region("update"))
            self._write_step()
            if self._group is not None:
                self._unpooled_steps += 1
                if self._unpooled_steps >= self._flush_every:  # the same step on every rank
                    self._sync()
        self._step += 1
        self._arm_hooks()

    def _write_step(self) -> None:
        step = self._step
        histogram_step = self._bins(step)
        missing = set(self._missing_grads)
        if self._running:
            value = self._vector.region("running_value")
            torch.cat([b.reshape(-1) for b in self._running], out=value)
            if self._running_previous is None:
                self._running_previous = value.clone()
                missing.add(("drift",))
            torch.sub(value, self._running_previous, out=self._vector.region("running_delta"))
            self._running_previous.copy_(value)
        kept = {}
        staged = False  # whether the per-step staging buffers were reset for this step
        if self.catalog.activation_slots:
            if self._activations.has_hook_reductions:
                self._reset_staging(histogram_step)
                staged = True
                kept, missing_slots = self._activations.take(self._act_moments,
                                                             self._act_counts if histogram_step else None)
            else:
                kept, missing_slots = self._activations.take(None, None)
            missing.update(("act", slot) for slot in missing_slots)
            if self._group is not None:
                counts = np.zeros(len(self.catalog.activation_slots), np.int64)
                for slot, count in self._activations.last_counts.items():
                    counts[slot] = count
                self._slot_counts[step] = counts
        if not staged:
            ring = self._ring_for(kept)
            if ring is not None:  # deferred: one copy now, the reduction every ring.capacity steps
                outputs = [kept[slot].reshape(-1) for slot in sorted(kept)]
                if self._staged_row == (ring, ring.filled):  # the fixed regions are in the row already
                    ring.append(outputs, histogram_step, start=self._vector.fixed_total)
                else:
                    ring.append([self._vector.fixed(), *outputs], histogram_step)
                self._ring_steps.append(step)
                self._ring_missing.append(frozenset(missing))
                if ring.full:
                    self._reduce_ring()
                return
            if self.catalog.activation_slots:
                self._reset_staging(histogram_step)
        self._reduce_ring()  # rows reach the buffers in step order
        fixed, act_moments, act_rows, counts = self._vector.reduce(kept, histogram_step)
        if kept:
            self._act_moments.index_copy_(0, act_rows, act_moments.to(self._act_moments.dtype))
        self._append(self._scalar_buffer, step, torch.cat([self._act_moments.reshape(-1), fixed.reshape(-1)]),
                     frozenset(missing))
        if histogram_step:
            param_segments = self.layout.histogram_param_segments
            if kept:
                self._act_counts.index_copy_(0, act_rows, counts[param_segments:])
            row = torch.cat([self._act_counts.reshape(-1), counts[:param_segments].reshape(-1)])
            act_missing = frozenset(key for key in missing if key[0] == "act")
            self._append(self._histogram_buffer, step, row, act_missing)

    def _reset_staging(self, histogram_step: bool) -> None:
        self._act_moments.fill_(float("nan"))
        if histogram_step:
            self._act_counts.zero_()

    def _ring_for(self, kept: dict[int, torch.Tensor]) -> StepRing | None:
        """The ring for this step's layout (None: too large to defer); reduces a ring of another layout."""
        if self._vector.lean:
            return None
        key = tuple((slot, kept[slot].shape) for slot in sorted(kept))
        if key in self._rings:
            ring = self._rings[key]
        else:
            outputs, act_rows, offsets = self._vector.outputs(kept)
            ring = None
            if self.policy.defers(outputs.length, self._flush_every):
                ring = StepRing(self.policy.ring_rows(outputs.length, self._flush_every), self.layout, outputs,
                                self._vector.device, self._vector.dtype, self.binning, offsets, act_rows,
                                self.policy)
            if len(self._rings) >= MAX_RINGS:  # varying shapes: keep the memory bounded
                stale = next(k for k, r in self._rings.items() if r is None or r is not self._ring)
                del self._rings[stale]
            self._rings[key] = ring
        if ring is not self._ring:
            self._reduce_ring()
            self._ring = ring
        return ring

    def _reduce_ring(self) -> None:
        """Reduce the rows held in the ring and append them to the device buffers."""
        ring = self._ring
        if ring is None or ring.filled == 0:
            return
        steps, missing = self._ring_steps, self._ring_missing
        histogram_rows = list(ring.histogram_rows)
        self._ring_steps, self._ring_missing = [], []
        moments, counts = ring.reduce()  # (K, 4, S), (H, segments, bins)
        k, fixed_segments = len(steps), self.layout.fixed_segments
        rows = moments[:, :, :fixed_segments].reshape(k, -1)
        act_width = self.layout.output_segments
        if act_width:
            act = moments.new_full((k, act_width, N_MOMENTS), float("nan"))
            if ring.act_rows.numel():
                act.index_copy_(1, ring.act_rows, moments[:, :, fixed_segments:].transpose(1, 2))
            rows = torch.cat([act.reshape(k, -1), rows], dim=1)
        self._append_rows(self._scalar_buffer, steps, rows, missing)
        if counts is not None:
            h, param_segments = len(histogram_rows), self.layout.histogram_param_segments
            rows = counts[:, :param_segments].reshape(h, -1)
            if act_width:
                act = counts.new_zeros((h, act_width, self.binning.bins))
                if ring.act_rows.numel():
                    act.index_copy_(1, ring.act_rows, counts[:, param_segments:])
                rows = torch.cat([act.reshape(h, -1), rows], dim=1)
            act_missing = [frozenset(key for key in missing[i] if key[0] == "act") for i in histogram_rows]
            self._append_rows(self._histogram_buffer, [steps[i] for i in histogram_rows], rows, act_missing)

    def _append_rows(self, buffer: DeviceBuffer, steps: list[int], rows: torch.Tensor,
                     missing: list[frozenset]) -> None:
        done = 0
        while done < len(steps):
            if buffer.full:
                self._flush()
            done += buffer.append_rows(steps[done:], rows[done:], missing[done:])

    def _append(self, buffer: DeviceBuffer, step: int, row: torch.Tensor, missing: frozenset) -> None:
        if buffer.full:
            self._flush()
        buffer.append(step, row, missing)

    # -- records -------------------------------------------------------------------------------------

    def _sync(self) -> None:
        """Bring every recorded step to the host tables: reduce the ring, copy the buffers, and when pooled
        over ranks pool the new rows (collectives: every rank calls this at the same points)."""
        self._reduce_ring()
        self._flush()
        if self._group is not None:
            self._pool()

    def _pool(self) -> None:
        """Pool the rows flushed since the last call over the ranks of ``self._group`` (collectives; see
        :mod:`normlab.probe.distributed`): output moments and activation histogram counts become those of
        the union of the ranks' batches, an output slot is present where any rank had it; gradients,
        weights, updates and running statistics are left as they are (identical on every rank under DDP,
        or rank 0's)."""
        scalar_chunks, histogram_chunks = self._unpooled
        self._unpooled, self._unpooled_steps = ([], []), 0
        slots, members = len(self.catalog.activation_slots), self.members
        device, group = self._vector.device, self._group
        present_at: dict[int, np.ndarray] = {}  # step -> (slots,) present on some rank
        merged_scalars = merged_histograms = None
        if scalar_chunks:
            steps = np.concatenate([c.steps for c in scalar_chunks])
            values = np.concatenate([c.values for c in scalar_chunks])
            if slots:
                n, width = len(steps), self.layout.output_width
                counts = np.stack([self._slot_counts.pop(int(step)) for step in steps])  # (n, slots)
                counts = np.repeat(counts, members, axis=1).astype(np.float64)[..., None]  # (n, segments, 1)
                raw = values[:, :width].reshape(n, slots * members, N_MOMENTS).astype(np.float64)
                mine = np.concatenate([counts, np.where(counts > 0, raw, 0.0)], axis=-1)
                pooled, total = distributed.pool_moments(distributed.gather(mine, group, device))
                values[:, :width] = pooled.reshape(n, width)
                present = total.reshape(n, slots, members)[:, :, 0] > 0
                present_at = dict(zip(steps.tolist(), present, strict=True))
            merged_scalars = self._rewrite(scalar_chunks, steps, values, present_at)
        if histogram_chunks:
            steps = np.concatenate([c.steps for c in histogram_chunks])
            values = np.concatenate([c.values for c in histogram_chunks])
            if slots:
                act = slots * members * self.binning.bins
                values[:, :act] = distributed.all_sum(values[:, :act], group, device)
            merged_histograms = self._rewrite(histogram_chunks, steps, values, present_at)
        self._scalars_cache = self._histograms_cache = None
        self._publish(merged_scalars, merged_histograms)

    @staticmethod
    def _rewrite(chunks: list, steps: np.ndarray, values: np.ndarray, present_at: dict[int, np.ndarray]):
        """Write pooled ``values`` back into ``chunks`` (in place: the buffers' chunk lists hold them), with
        each row's missing output slots those missing on every rank; returns them as one chunk."""
        missing_rows = []
        offset = 0
        for chunk in chunks:
            rows = len(chunk.steps)
            chunk.values[...] = values[offset : offset + rows]
            for i, step in enumerate(chunk.steps.tolist()):
                present = present_at.get(step)
                if present is not None:
                    kept = frozenset(key for key in chunk.missing[i] if key[0] != "act")
                    chunk.missing[i] = kept | {("act", slot) for slot in np.flatnonzero(~present).tolist()}
            missing_rows.extend(chunk.missing)
            offset += rows
        return Chunk(steps, values, missing_rows)

    def _flush(self) -> None:
        """Copy both device buffers to the host (one sync each) and hand new rows to TensorBoard.

        When pooled over ranks, the new chunks wait for :meth:`_pool` (this may run at a different point
        on each rank, when a buffer fills, so it holds no collective)."""
        new_scalars = self._scalar_buffer.flush()
        new_histograms = self._histogram_buffer.flush() if self._histogram_buffer is not None else None
        if new_scalars is None and new_histograms is None:
            return
        if self._group is not None:
            self._scalars_cache = self._histograms_cache = None
            for pending, chunk in zip(self._unpooled, (new_scalars, new_histograms), strict=True):
                if chunk is not None:
                    pending.append(chunk)
            return
        self._publish(new_scalars, new_histograms)

    def _publish(self, new_scalars, new_histograms) -> None:
        """Hand new host rows to the alerts and TensorBoard (and move their steps' losses to the host)."""
        self._scalars_cache = self._histograms_cache = None
        if new_scalars is not None and not len(new_scalars.steps):
            new_scalars = None
        if new_histograms is not None and not len(new_histograms.steps):
            new_histograms = None
        if new_scalars is None and new_histograms is None:
            return
        losses = self._drain_losses(int(new_scalars.steps[-1])) if new_scalars is not None else pd.DataFrame()
        if self._alerts is not None and new_scalars is not None:
            self._alerts.update(concat_scalars([scalars_frame(self.catalog, [new_scalars]), losses]))
        if self._tensorboard is not None:
            self._tensorboard.write(
                scalars_frame(self.catalog, [new_scalars] if new_scalars is not None else []),
                histograms_frame(self.catalog, [new_histograms]) if new_histograms is not None
                else histograms_frame(self.catalog, []),
            )

    def scalars(self) -> pd.DataFrame:
        """All scalar records so far: ``step, member, name, kind, stat, value``."""
        self._sync()
        if self._scalars_cache is None:
            frame = scalars_frame(self.catalog, self._scalar_buffer.chunks)
            self._scalars_cache = concat_scalars([frame, *self._loss_frames]) if self._loss_frames else frame
        return _handout(self._scalars_cache)

    def alerts(self) -> pd.DataFrame:
        """Every anomaly flagged so far (``alerts=`` must be on): ``step, member, name, alert, value,
        threshold, message``; see :mod:`normlab.probe.alerts`."""
        if self._alerts is None:
            raise RuntimeError("Probe.alerts(): this probe was made without alerts; pass Probe(..., alerts=True)")
        self._sync()
        return self._alerts.table()

    def histograms(self, *, empty_bins: bool = True) -> pd.DataFrame:
        """All histogram records so far: ``step, member, name, kind, bin_lo, bin_hi, count``.

        Every bin of every histogram by default (pivots straight into a step × bin grid);
        ``empty_bins=False`` returns only the bins with a nonzero count (far fewer rows, same information).
        """
        self._sync()
        chunks = self._histogram_buffer.chunks if self._histogram_buffer is not None else []
        if not empty_bins:
            return histograms_frame(self.catalog, chunks, empty_bins=False)
        if self._histograms_cache is None:
            self._histograms_cache = histograms_frame(self.catalog, chunks)
        return _handout(self._histograms_cache)

    def save(self, directory: str | os.PathLike) -> Path:
        """Write ``scalars.parquet`` and ``histograms.parquet`` into ``directory``, each atomically.

        Pooled over ranks (DDP): only rank 0 writes; every rank must call it (the pooling is collective)."""
        if not isinstance(directory, (str, os.PathLike)):
            raise TypeError(f"Probe.save: directory must be a path, got {directory!r}")
        directory = Path(directory)
        if not self._writes:  # pooled over ranks: rank 0 writes; this rank takes part in the pooling
            self._sync()
            return directory
        write_parquet_atomic(self.scalars(), directory / "scalars.parquet")
        write_parquet_atomic(self.histograms(), directory / "histograms.parquet")
        if self._tensorboard is not None and not self._closed:
            self._tensorboard.flush()
        return directory

    # -- lifetime ------------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("Probe: this probe is closed")

    def _remove_hooks(self) -> None:
        self._activations.remove()
        handles, self._hook_handles = self._hook_handles, []
        for handle in handles:
            handle.remove()

    def close(self) -> None:
        """Remove all hooks (the module forward hooks and the optimizers' step hooks: the probe installs
        no others), copy what is left to the host and close TensorBoard files. Idempotent; the records
        stay readable. The hooks are removed first, whatever happens after."""
        if self._closed:
            return
        self._closed = True
        try:
            self._remove_hooks()
        finally:
            try:
                self._sync()
            finally:
                if self._tensorboard is not None:
                    self._tensorboard.close()

    def __enter__(self) -> Probe:
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        if exc is None:
            self.close()
            return
        try:  # the training loop's exception propagates unchanged, whatever closing does
            self.close()
        except Exception as error:
            if hasattr(exc, "add_note"):  # Python >= 3.11
                exc.add_note(f"Probe.close() failed as well: {error!r}")

    def __repr__(self) -> str:
        return (f"Probe(steps={self._step}, every={self.schedule.every}, "
                f"histogram_every={self.schedule.histogram_every}, members={self.members}, "
                f"modules={len(self.catalog.activation_slots)} slots, params={len(self.catalog.param_names)})")
