r"""``recalibrate_batchnorm``: exact running statistics over a dataset, not an EMA.

After SWA/EMA weight averaging, pruning, quantization or a change of data, a BatchNorm's running
statistics no longer describe the activations it sees. The fix is to measure them again. For channel
``c`` of a BatchNorm whose input over the whole dataset is the set of values :math:`x_{c,i}`,
:math:`i = 1..N` (N = examples × spatial positions):

.. math::
    \hat\mu_c = \frac{1}{N}\sum_i x_{c,i}, \qquad
    \hat\sigma^2_c = \frac{1}{N - 1}\sum_i (x_{c,i} - \hat\mu_c)^2

the unbiased variance, as torch stores in ``running_var``. Batches are merged with Chan et al.'s
parallel update of (count, mean, centred sum of squares) in float64, so unequal batch sizes are exact and
there is no ``E[x²] - E[x]²`` cancellation. (Averaging per-batch means and variances, as a cumulative
``momentum=None`` pass does, is wrong for unequal batches and ignores the between-batch variance.)

Stacked BatchNorms: the input of the second depends on the statistics of the first. ``"population"``
measures what the *eval-mode* model sees: layers are recalibrated one at a time in call order, each
pass running the model in eval mode with the already-recalibrated layers upstream, so every layer's
statistics describe its input under the final statistics of the layers before it. That costs one pass
per BatchNorm; each pass stops right after the layer it measures. ``"one_pass"`` measures every layer in
a single pass with all BatchNorms normalizing by batch statistics (their training behaviour, what
``torch.optim.swa_utils.update_bn`` does), pooled exactly; cheaper, and right for a model that will
keep training. A layer called more than once per forward pools the inputs of all its calls; the
inputs of the later calls are those produced under its previous statistics (one pass has no fixed point
for a layer that feeds itself). Either way dropout and every other module run in eval mode, under ``no_grad``, and each
module's train/eval mode is restored afterwards.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import torch
import torch.nn as nn
from torch.nn.modules.batchnorm import _BatchNorm

from normlab.nn.surgery._tree import Match, find_modules

_WHERE = "recalibrate_batchnorm"
ESTIMATORS = ("population", "one_pass")


class _Stop(BaseException):
    """Raised from a hook to end a forward pass once the measured layer has seen its input (a
    BaseException, like GeneratorExit, so a model's own ``except Exception`` does not swallow it)."""


class PooledMoments:
    """Per-channel count, mean and centred sum of squares, merged batch by batch in float64 (Chan et al.)."""

    def __init__(self) -> None:
        self.count = 0
        self.mean: torch.Tensor | None = None
        self.m2: torch.Tensor | None = None

    def add(self, x: torch.Tensor) -> None:
        """Add a batch (N, C, *): every value except along dim 1 is one sample of its channel."""
        values = x.detach().transpose(0, 1).reshape(x.shape[1], -1).to(torch.float64)  # (C, n)
        n = values.shape[1]
        if n == 0:
            return
        mean = values.mean(dim=1)
        m2 = ((values - mean[:, None]) ** 2).sum(dim=1)
        if self.mean is None:
            self.count, self.mean, self.m2 = n, mean, m2
            return
        total = self.count + n
        delta = mean - self.mean
        self.mean = self.mean + delta * (n / total)
        self.m2 = self.m2 + m2 + delta**2 * (self.count * n / total)
        self.count = total

    def unbiased_var(self) -> torch.Tensor:
        return self.m2 / (self.count - 1)


@dataclass
class RecalibrationReport:
    """Per recalibrated layer: the number of values per channel it pooled; layers skipped with the reason."""

    estimator: str
    batches: int = 0
    passes: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.counts)

    def __iter__(self) -> Iterator[str]:
        return iter(self.counts)

    def __str__(self) -> str:
        lines = [f"recalibrate_batchnorm ({self.estimator}): {len(self.counts)} layer(s), {self.batches} "
                 f"batches, {self.passes} pass(es) over the data"]
        lines += [f"  {name}: {count} values per channel" for name, count in self.counts.items()]
        lines += [f"  skipped {name}: {why}" for name, why in self.skipped]
        return "\n".join(lines)


def _default_forward(model: nn.Module, batch) -> None:
    """A tensor is the input; a (input, target, ...) tuple or list gives its first item; a dict, kwargs."""
    device = next((t.device for t in [*model.parameters(), *model.buffers()]), None)

    def move(x):
        return x.to(device) if isinstance(x, torch.Tensor) and device is not None else x

    if isinstance(batch, dict):
        model(**{k: move(v) for k, v in batch.items()})
    elif isinstance(batch, (tuple, list)):
        model(move(batch[0]))
    else:
        model(move(batch))


def _run(model, batches, forward, stop_early: bool) -> int:
    seen = 0
    for batch in batches:
        seen += 1
        try:
            forward(model, batch)
        except _Stop:
            if not stop_early:
                raise
    return seen


def _measure(model, batches, forward, layers: list[Match], stop_after: Match | None):
    """Pool the inputs of ``layers`` over all batches; with ``stop_after``, end each forward at that layer."""
    moments = {id(m.module): PooledMoments() for m in layers}

    def hook(module, args, kwargs):
        moments[id(module)].add(args[0] if args else kwargs["input"])
        if stop_after is not None and module is stop_after.module:
            raise _Stop

    handles = [m.module.register_forward_pre_hook(hook, with_kwargs=True) for m in layers]
    try:
        seen = _run(model, batches, forward, stop_early=stop_after is not None)
    finally:
        for handle in handles:
            handle.remove()
    return moments, seen


def _call_order(model, batches, forward, layers: list[Match]) -> tuple[list[Match], set[int], list[Match]]:
    """Run the first batch: the layers in the order they are first called, the ids of those called more
    than once per forward (they cannot stop the pass early), and the layers never called."""
    order: list[int] = []
    calls: dict[int, int] = {}

    def hook(module, args):
        if id(module) not in calls:
            order.append(id(module))
        calls[id(module)] = calls.get(id(module), 0) + 1

    handles = [m.module.register_forward_pre_hook(hook) for m in layers]
    try:
        first = next(iter(batches), None)
        if first is None:
            raise ValueError(f"{_WHERE}: batches is empty")
        forward(model, first)
    finally:
        for handle in handles:
            handle.remove()
    by_id = {id(m.module): m for m in layers}
    repeated = {key for key, count in calls.items() if count > 1}
    return [by_id[key] for key in order], repeated, [m for m in layers if id(m.module) not in calls]


@torch.no_grad()
def _store(bn: _BatchNorm, moments: PooledMoments, batches: int, name: str) -> None:
    if moments.count < 2:
        raise ValueError(f"{_WHERE}: {name} saw {moments.count} value(s) per channel; need at least 2 for a variance")
    bn.running_mean.copy_(moments.mean.to(bn.running_mean.dtype))
    bn.running_var.copy_(moments.unbiased_var().to(bn.running_var.dtype))
    if bn.num_batches_tracked is not None:
        bn.num_batches_tracked.fill_(batches)


def recalibrate_batchnorm(model: nn.Module, batches: Iterable, *, estimator: str = "population",
                          forward: Callable[[nn.Module, object], object] | None = None) -> RecalibrationReport:
    """Set every BatchNorm's running mean and (unbiased) variance to their exact values over ``batches``.

    Args:
        model: any module tree; BatchNorms with ``track_running_stats=False`` are skipped and reported.
        batches: an iterable of batches: tensors, ``(input, target, ...)`` tuples (a DataLoader) or dicts
            of keyword inputs. ``"population"`` iterates it once per BatchNorm, so it must be re-iterable
            (a list, a DataLoader), not a generator, and yield the same data every time: random
            augmentation would give each layer a different sample.
        estimator: ``"population"`` (eval-mode statistics, layer by layer; see the module doc) or
            ``"one_pass"`` (all layers in one pass, BatchNorms normalizing with batch statistics).
        forward: ``forward(model, batch)`` to call the model, when the default handling above does not fit.

    Sets ``num_batches_tracked`` to the number of batches (what a cumulative ``momentum=None`` average over
    them would count). Returns a :class:`RecalibrationReport`.

    Example::

        >>> report = recalibrate_batchnorm(swa_model, train_loader)
    """
    if estimator not in ESTIMATORS:
        raise ValueError(f"{_WHERE}: estimator must be one of {ESTIMATORS}, got {estimator!r}")
    # An Iterator (a generator) is exhausted after one pass; a DataLoader or a list is not (and calling
    # iter() on a DataLoader to find out would start its workers).
    if estimator == "population" and isinstance(batches, Iterator):
        raise TypeError(
            f"{_WHERE}: estimator='population' iterates the data once per BatchNorm, so batches must be "
            f"re-iterable (a list or a DataLoader); got a one-shot {type(batches).__name__}. "
            "Pass list(batches) or estimator='one_pass'"
        )
    forward = forward or _default_forward
    report = RecalibrationReport(estimator)
    layers = []
    for match in find_modules(model, lambda m: isinstance(m, _BatchNorm), _WHERE):
        if match.module.running_mean is None:
            report.skipped.append((match.name, "track_running_stats=False: no running statistics"))
        else:
            layers.append(match)
    modes = {id(m): (m, m.training) for m in model.modules()}
    grad_was_enabled = torch.is_grad_enabled()
    # Layers are written one by one, so an error on a later layer (too little data, a bad batch) would
    # leave a half-recalibrated model: keep the old statistics to put back.
    saved = {id(m.module): {k: v.clone() for k, v in m.module.named_buffers(recurse=False)} for m in layers}
    try:
        torch.set_grad_enabled(False)  # restored in `finally`, with the modes
        model.eval()
        if estimator == "one_pass":
            for match in layers:
                match.module.train()  # normalize by batch statistics, as in training
            moments, report.batches = _measure(model, batches, forward, layers, stop_after=None)
            report.passes = 1
            for match in layers:
                pooled = moments[id(match.module)]
                if pooled.count == 0:
                    report.skipped.append((match.name, "not called by the forward pass"))
                    continue
                _store(match.module, pooled, report.batches, match.name)
                report.counts[match.name] = pooled.count
        else:
            ordered, repeated, never = _call_order(model, batches, forward, layers)
            report.skipped += [(m.name, "not called by the forward pass") for m in never]
            for match in ordered:
                # Upstream layers are already recalibrated and run in eval mode: this layer's input is
                # what the final eval-mode model feeds it.
                stop = None if id(match.module) in repeated else match
                moments, report.batches = _measure(model, batches, forward, [match], stop_after=stop)
                report.passes += 1
                pooled = moments[id(match.module)]
                _store(match.module, pooled, report.batches, match.name)
                report.counts[match.name] = pooled.count
    except BaseException:
        with torch.no_grad():
            for match in layers:
                for name, value in saved[id(match.module)].items():
                    getattr(match.module, name).copy_(value)
        raise
    finally:
        torch.set_grad_enabled(grad_was_enabled)
        for module, training in modes.values():
            module.training = training
    return report
