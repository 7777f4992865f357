"""``ReductionPolicy``: the one place that decides how a Probe reduces what it captured.

The probe has four ways to turn a recorded step into statistics. They compute the same numbers (the
tests run every one of them against a naive per-tensor oracle); they differ in how many kernels they
launch and how much memory they hold, and which one is cheapest depends on the model's size:

``deferred``
    The step vector (``step_vector.py``) is copied into a row of a ring (``step_ring.py``) and the ring
    is reduced every ``flush_every`` steps for all its rows together. Chosen when at least two step
    vectors fit in ``ring_elements`` values: for small models, whose cost is kernel launches and not
    arithmetic, a recorded step is then one copy.
``segments``
    The step vector is reduced at its step with a fixed set of segment kernels (``index_add_``,
    ``scatter_reduce_``) whatever the number of tensors. Chosen when the ring is not (too large, or
    ``ring_elements=0``) and the vector has at most ``split_above_elements`` values.
``split``
    Larger vectors follow a ``moments.ReductionPlan``: runs of tensors of at most
    ``small_tensor_elements`` values per member through the segment kernels, larger ones row-wise
    with streaming kernels (the per-element cost of the segment kernels would dominate). A vector
    too large for the ring is also *lean*: it has no update region, the update's moments are taken
    tensor by tensor right after the optimizer step, so the probe holds one flat copy of the
    parameters fewer, and the weights' and gradients' moments are taken tensor by tensor where they
    are captured (``tensorwise.py``).
``hooks``
    Module outputs are reduced inside their forward hooks rather than kept by reference until the
    step. Always used for an output changed in place after its hook; ``reduce_in_hooks=True`` does it
    for every output (no reference to any output is held across the backward pass).

The remaining fields pick between equivalent kernels inside a path. Every field is a plain threshold, so
a test (or a user measuring their own model) chooses a path by choosing the thresholds, e.g.
``ReductionPolicy(ring_elements=0)`` for the per-step paths, ``ReductionPolicy(ring_elements=0,
split_above_elements=0)`` for the lean split path.
"""

from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass(frozen=True)
class ReductionPolicy:
    """How a :class:`~normlab.probe.Probe` reduces its captures (see the module docstring for the paths).

    Attributes:
        ring_elements: values (not bytes) one ring of deferred step vectors may hold. The ring is used
            when at least ``MIN_RING_ROWS`` step vectors fit; ``0`` never defers.
        split_above_elements: step vectors with more values than this are reduced with a
            ``ReductionPlan`` (tensor by tensor for large tensors) instead of the segment kernels;
            ``0`` always splits.
        small_tensor_elements: in a ``ReductionPlan``, tensors of at most this many values per member
            are grouped into runs reduced by the segment kernels, larger ones are reduced row-wise.
            Also orders the parameters: small ones first, so they form one run per region.
        reduce_in_hooks: reduce every module output in its forward hook instead of at the step.
        gather_max_elements: in a ring, segments of at most this many values may be gathered into
            groups of equal length; longer ones are read in place.
        in_place_min_elements: in a ring, a run of consecutive equal-length segments with at least
            this many values in total (the members of one tensor) is read in place, not gathered.
        long_segment_elements: when a large step vector is binned, segments of at least this many
            values add one constant offset to their bin indices instead of one offset per value.
        difference_per_tensor_elements: the update (parameters after the step minus before) is
            subtracted tensor by tensor, straight into the step vector, once the tensors average this
            many values; below, the parameters are copied in one kernel and subtracted in one more.
    """

    ring_elements: int = 1 << 22
    split_above_elements: int = 1 << 17
    small_tensor_elements: int = 1 << 10
    reduce_in_hooks: bool = False
    gather_max_elements: int = 1 << 10
    in_place_min_elements: int = 1 << 12
    long_segment_elements: int = 1 << 12
    difference_per_tensor_elements: int = 1 << 14

    MIN_RING_ROWS = 2  # a ring of one row would only delay the per-step reduction

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if field.name == "reduce_in_hooks":
                if not isinstance(value, bool):
                    raise TypeError(f"ReductionPolicy: reduce_in_hooks must be True or False, got {value!r}")
            elif isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"ReductionPolicy: {field.name} must be an int >= 0 (a number of values), "
                                 f"got {value!r}")

    def ring_rows(self, row_length: int, flush_every: int) -> int:
        """Rows of a ring for step vectors of ``row_length`` values (at most ``flush_every``)."""
        return min(flush_every, self.ring_elements // max(row_length, 1))

    def defers(self, row_length: int, flush_every: int) -> bool:
        """Whether step vectors of ``row_length`` values go through a ring."""
        return self.ring_rows(row_length, flush_every) >= self.MIN_RING_ROWS

    def splits(self, row_length: int) -> bool:
        """Whether a step vector of ``row_length`` values is reduced with a ``ReductionPlan``."""
        return row_length > self.split_above_elements

    def is_lean(self, full_length: int, flush_every: int) -> bool:
        """Whether step vectors of ``full_length`` values (with their update region) drop that region:
        never deferred, always split."""
        return not self.defers(full_length, flush_every) and self.splits(full_length)

    def is_small(self, elements_per_member: int) -> bool:
        """Whether a tensor joins a run of the segment kernels in a ``ReductionPlan``."""
        return elements_per_member <= self.small_tensor_elements


DEFAULT_POLICY = ReductionPolicy()
