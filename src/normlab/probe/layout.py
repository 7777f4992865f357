"""``StepLayout``: where every value of a recorded step sits, described once.

A recorded step is captured into one flat *step vector*, reduced to raw moments (mean, variance, absmax,
fraction of zeros) per *segment* -- one segment per tensor and ensemble member, tensor-major, member-minor
-- and the moments are stored as one *scalar row* (histogram counts as one *histogram row*). The step
vector (``step_vector.py``), the ring of deferred step vectors (``step_ring.py``) and the tables
(``tables.py``, through the quantities) all read this one description instead of each deriving it::

    step vector  | update Δp | running value | running Δ | grad | weight (before the step) | kept outputs |
    elements       T_p         T_r             T_r         T_p    T_p                        varies
    segments       S_p         S_r             S_r         S_p    S_p                        per output

    scalar row   | output moments (output slots × members, 4) | fixed moments (4, fixed segments) |
    histogram row| output counts (output slots × members, bins) | grad, weight counts (2 S_p, bins) |

The *fixed regions* (everything but the outputs) have the same layout at every step; the kept module
outputs vary (a smaller last batch, an output reduced in its hook instead) and are described per set of
kept slots and shapes by an ``OutputsLayout``. In a *lean* layout the update region is not stored in the
step vector (its moments are computed right after the step, see ``StepVector.capture_update``) but keeps
its segments in the scalar row.

Each region also says what its segments need reduced besides mean and variance (``needs``): the ring
skips the extremes nobody reads.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

N_MOMENTS = 4  # raw moments per segment: mean, var (population), absmax, fraction of zeros
MOMENTS = ("mean", "var", "absmax", "zero_frac")

# What a segment needs besides mean and variance.
NEEDS_MEAN_VAR, NEEDS_ABSMAX, NEEDS_ZERO_FRAC = 0, 1, 2

OUTPUTS = "outputs"  # the name of the module outputs' source, beside the fixed regions'


@dataclass(frozen=True)
class Region:
    """One fixed region of the step vector: tensors laid end to end, cut into member segments.

    ``start``/``stop``: its elements in the step vector (``stop == start`` when it is not stored);
    ``segments``: its segments among the fixed segments (= its columns of the fixed moments);
    ``needs``: ``NEEDS_*``; ``binned``: whether it is part of the histogram row.
    """

    name: str
    tensor_names: tuple[str, ...]
    tensor_lengths: tuple[int, ...]
    counts: np.ndarray  # values per segment, (len(tensor_names) * members,)
    start: int
    stop: int
    segments: slice
    needs: int
    binned: bool
    stored: bool

    @property
    def n_segments(self) -> int:
        return self.segments.stop - self.segments.start

    @property
    def elements(self) -> slice:
        return slice(self.start, self.stop)


# name, which tensors (parameters or running buffers), needs, binned -- in step-vector order.
_REGIONS = (
    ("update", "params", NEEDS_MEAN_VAR, False),
    ("running_value", "running", NEEDS_MEAN_VAR, False),
    ("running_delta", "running", NEEDS_MEAN_VAR, False),
    ("grad", "params", NEEDS_ABSMAX, True),
    ("weight", "params", NEEDS_ABSMAX, True),
)
REGIONS = tuple(name for name, *_ in _REGIONS)


def segment_counts(lengths: Sequence[int], members: int) -> np.ndarray:
    """Values per segment of tensors of ``lengths`` values, each cut into ``members`` segments."""
    return np.repeat(np.asarray(lengths, dtype=np.int64) // members, members)


class StepLayout:
    """The layout of one probe's step vectors and rows (see the module docstring).

    Args:
        members: ensemble members (segments per tensor).
        params: ``(name, number of values)`` of every recorded parameter, in capture order.
        running: the same for the running-statistics buffers.
        output_slots: ``(module name, kind)`` of every output slot (``hooks.ActivationHooks.slots``).
        lean: the update region is not stored in the step vector.
    """

    def __init__(self, members: int, params: Sequence[tuple[str, int]], running: Sequence[tuple[str, int]],
                 output_slots: Sequence[tuple[str, str]], lean: bool = False):
        self.members, self.lean = members, lean
        self.output_slots = tuple(output_slots)
        groups = {"params": tuple(params), "running": tuple(running)}
        self.regions: dict[str, Region] = {}
        start = segment = 0
        for name, group, needs, binned in _REGIONS:
            names = tuple(n for n, _ in groups[group])
            lengths = tuple(int(length) for _, length in groups[group])
            counts = segment_counts(lengths, members)
            stored = not (lean and name == "update")
            stop = start + sum(lengths) if stored else start
            self.regions[name] = Region(name, names, lengths, counts, start, stop,
                                        slice(segment, segment + len(counts)), needs, binned, stored)
            start, segment = stop, segment + len(counts)
        self.fixed_total, self.fixed_segments = start, segment
        self.fixed_counts = np.concatenate([r.counts for r in self.regions.values()])
        self.fixed_needs = np.concatenate([np.full(r.n_segments, r.needs, np.int64) for r in self.regions.values()])
        binned = [r for r in self.regions.values() if r.binned]
        self.histogram_start = binned[0].start  # the binned regions and the outputs are one suffix
        self.histogram_param_segments = sum(r.n_segments for r in binned)
        self.stored_lengths = [n for r in self.regions.values() if r.stored for n in r.tensor_lengths]
        self._outputs: dict[tuple, OutputsLayout] = {}

    # -- the rows ------------------------------------------------------------------------------------

    @property
    def output_segments(self) -> int:
        """Segments of all output slots (one per slot and member), whether kept at a step or not."""
        return len(self.output_slots) * self.members

    @property
    def output_width(self) -> int:
        """Values of the output moments at the start of a scalar row."""
        return self.output_segments * N_MOMENTS

    @property
    def scalar_width(self) -> int:
        return self.output_width + N_MOMENTS * self.fixed_segments

    @property
    def histogram_segments(self) -> int:
        return self.output_segments + self.histogram_param_segments

    def region_moments(self, rows: np.ndarray, region: str) -> np.ndarray:
        """Raw moments ``(n, 4, S)`` of ``region`` in scalar rows ``(n, scalar_width)``."""
        fixed = rows[:, self.output_width :].reshape(len(rows), N_MOMENTS, self.fixed_segments)
        return fixed[:, :, self.regions[region].segments]

    def output_moments(self, rows: np.ndarray) -> np.ndarray:
        """Raw moments ``(n, 4, output segments)`` of the outputs in scalar rows ``(n, scalar_width)``."""
        raw = rows[:, : self.output_width].reshape(len(rows), self.output_segments, N_MOMENTS)
        return raw.transpose(0, 2, 1)

    # -- the step vector's tail -----------------------------------------------------------------------

    def outputs(self, slots: tuple[int, ...], shapes: tuple) -> OutputsLayout:
        """The layout of the kept outputs of ``slots`` (sorted) with ``shapes`` (cached)."""
        key = (slots, shapes)
        layout = self._outputs.get(key)
        if layout is None:
            layout = self._outputs[key] = OutputsLayout(self, slots, shapes)
        return layout


class OutputsLayout:
    """The kept module outputs at the end of a step vector: one set of slots and shapes.

    ``lengths``: values of each kept output; ``total``: of all; ``n_segments``: theirs (slot-major,
    member-minor); ``rows``: the output segment (``slot * members + member``) of each of them;
    ``segment_lengths``/``needs``: of every segment of the whole step vector, fixed regions first.
    """

    def __init__(self, step: StepLayout, slots: tuple[int, ...], shapes: tuple):
        members = step.members
        self.slots, self.shapes = slots, shapes
        self.lengths = [int(np.prod(shape, dtype=np.int64)) for shape in shapes]
        self.total = int(sum(self.lengths))
        self.counts = segment_counts(self.lengths, members)
        self.n_segments = len(self.counts)
        self.rows = np.array([slot * members + m for slot in slots for m in range(members)], dtype=np.int64)
        self.length = step.fixed_total + self.total  # of the whole step vector
        self.segment_lengths = np.concatenate([step.fixed_counts, self.counts])
        self.needs = np.concatenate([step.fixed_needs, np.full(self.n_segments, NEEDS_ZERO_FRAC, np.int64)])
        self.histogram_segments = step.histogram_param_segments + self.n_segments
