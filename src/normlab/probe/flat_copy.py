"""Copy a list of tensors, laid end to end, into one flat buffer, with the fewest kernels for their layout.

The probe captures every parameter, gradient and update into a flat step vector at each recorded step.
What that copy costs depends on how the tensors sit in memory:

* all contiguous (the usual case): flat *views* of them, cached, and one ``torch.cat(views, out=...)``;
* strided views of one storage (an ensemble re-seated in one ``(N, P)`` matrix by
  :mod:`normlab.kit.flat_params`): no flat view exists and ``reshape(-1)`` would copy each tensor
  twice, so the storage position of every element, in the concatenated order, is computed once and
  the capture is one ``index_select`` from the storage;
* anything else: one ``copy_`` per tensor into its slice of the buffer.

A plan is kept while the tensors' data pointers and strides stay the same; parameters updated in place
keep it for the whole run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

Plan = Callable[[torch.Tensor], None]


_data_ptr, _stride = torch.Tensor.data_ptr, torch.Tensor.stride


def _layout_key(tensors: Sequence[torch.Tensor]) -> tuple:
    # Where each tensor starts and how it is strided, with C-level map() calls: this runs at every
    # capture, and a small model's training step is short enough for Python overhead here to show.
    return list(map(_data_ptr, tensors)), list(map(_stride, tensors))


def _views_plan(tensors: Sequence[torch.Tensor]) -> Plan:
    # Gradients set to None by zero_grad() are new tensors every step, so this plan is rebuilt at every
    # capture for them: plain views, no detach (the probe captures under no_grad), keep that cheap.
    views = [t.view(-1) for t in tensors]
    return lambda out: torch.cat(views, out=out)


def _gather_plan(tensors: Sequence[torch.Tensor]) -> Plan:
    first = tensors[0].detach()
    size = first.untyped_storage().nbytes() // first.element_size()
    storage = first.as_strided((size,), (1,), 0)  # the whole storage as one vector (it sees updates)
    positions = torch.arange(size, device=first.device)
    index = torch.cat([positions.as_strided(t.shape, t.stride(), t.storage_offset()).reshape(-1) for t in tensors])
    return lambda out: torch.index_select(storage, 0, index, out=out)


def _copies_plan(tensors: Sequence[torch.Tensor]) -> Plan:
    sources = [t.detach() for t in tensors]

    def copy(out: torch.Tensor) -> None:
        start = 0
        for t in sources:
            out[start : start + t.numel()].view(t.shape).copy_(t)
            start += t.numel()

    return copy


class Flattener:
    """``flattener(tensors, out)`` = ``torch.cat([t.reshape(-1) for t in tensors], out=out)``, faster."""

    def __init__(self, difference_per_tensor_elements: int = 1 << 14) -> None:
        """``difference_per_tensor_elements``: see :meth:`difference` (``ReductionPolicy`` sets it)."""
        self._per_tensor = difference_per_tensor_elements
        self._key: tuple | None = None
        self._plan: Plan | None = None

    def __call__(self, tensors: Sequence[torch.Tensor], out: torch.Tensor) -> None:
        key = _layout_key(tensors)
        if key != self._key or self._plan is None:
            self._plan, self._key = make_plan(tensors), key
        self._plan(out)

    def forget(self) -> None:
        """Drop the plan and the views it holds: a gradients' plan would keep the step's gradients alive
        through the next backward pass (a copy of the parameters) after ``zero_grad()`` let them go."""
        self._key = self._plan = None

    def difference(self, tensors: Sequence[torch.Tensor], minus: torch.Tensor, out: torch.Tensor) -> None:
        """``out = flatten(tensors) - minus`` (the probe's update: parameters after the step minus before).

        Large contiguous tensors are subtracted one by one straight into ``out``: three memory passes
        instead of five for a copy then a subtraction, worth a kernel launch per tensor once tensors
        average ``difference_per_tensor_elements`` (a conv net's weights; not a small MLP's)."""
        if (len(tensors) * self._per_tensor <= out.numel()
                and all(t.is_contiguous() for t in tensors)):
            start = 0
            for t in tensors:
                end = start + t.numel()
                torch.sub(t.view(-1), minus[start:end], out=out[start:end])
                start = end
            return
        self(tensors, out)
        out.sub_(minus)


def make_plan(tensors: Sequence[torch.Tensor]) -> Plan:
    """The cheapest copy for these tensors' layout (see the module docstring)."""
    if all(t.is_contiguous() for t in tensors):
        return _views_plan(tensors)
    storages = {t.untyped_storage().data_ptr() for t in tensors}
    if len(storages) == 1 and len({t.dtype for t in tensors}) == 1:
        return _gather_plan(tensors)
    return _copies_plan(tensors)
