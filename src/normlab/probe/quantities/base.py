"""What a quantity is, and what it reads: the raw moments of the segments of one source.

The device half of the probe reduces every segment (one per tensor and ensemble member) of every source
to four raw moments -- mean, population variance, absmax, fraction of zeros -- whatever quantities are
recorded. A :class:`Quantity` is the host half: plain NumPy algebra, in float64, from those moments to
the values of one ``kind`` in the scalar table. It runs when rows reach the host (at a flush or a read),
never in the training step, so a new quantity costs nothing on the hot path.

Sources (``Sources[name]``): ``"outputs"`` (module outputs and norm-layer inputs, one segment per slot
and member), and the step vector's regions ``"grad"``, ``"weight"`` (the parameters before the step),
``"update"`` (Δp = p_after − p_before), ``"running_value"`` and ``"running_delta"`` (running statistics
and their change since the previous recorded step), one segment per tensor and member. What each
source's segments have reduced besides mean and variance is ``layout.Region.needs``: ``absmax`` of
``update`` and of the running regions, and ``zero_frac`` of everything but the outputs, are not
computed (NaN, resp. 0) on every path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np


@dataclass(frozen=True)
class SegmentMoments:
    """The raw moments of every segment of one source over ``n`` recorded steps (host, float64).

    Arrays ``(n, S)``; ``count`` ``(S,)`` is the number of values of each segment; ``present`` is False
    where a segment has no record at a step (a gradient that was ``None``, a module that did not run,
    the drift of the first step, the update of a parameter no attached optimizer steps). ``names``,
    ``kinds`` and ``members`` ``(S,)`` label the segments.
    """

    mean: np.ndarray
    var: np.ndarray
    absmax: np.ndarray
    zero_frac: np.ndarray
    count: np.ndarray
    present: np.ndarray
    names: np.ndarray
    kinds: np.ndarray
    members: np.ndarray

    @classmethod
    def from_raw(cls, raw: np.ndarray, count: np.ndarray | None = None, present: np.ndarray | None = None,
                 names: np.ndarray | None = None, kinds: np.ndarray | None = None,
                 members: np.ndarray | None = None) -> SegmentMoments:
        """From raw device moments ``(n, 4, S)``; a variance below 0 (float rounding) is clipped to 0.
        Left out: ``count`` unknown (NaN), every segment present, empty labels, member 0."""
        m = raw.astype(np.float64)
        n, _, segments = m.shape
        count = np.full(segments, np.nan) if count is None else count
        present = np.ones((n, segments), bool) if present is None else present
        blank = np.full(segments, "", dtype=object)
        return cls(m[:, 0], np.maximum(m[:, 1], 0.0), m[:, 2], m[:, 3], count, present,
                   blank if names is None else names, blank if kinds is None else kinds,
                   np.zeros(segments, np.int64) if members is None else members)

    @property
    def n_segments(self) -> int:
        return len(self.count)

    @property
    def std(self) -> np.ndarray:
        """Population standard deviation."""
        return np.sqrt(self.var)

    @property
    def norm(self) -> np.ndarray:
        """``sqrt(Σx²) = sqrt(n·(var + mean²))``."""
        return np.sqrt(self.count * (self.var + self.mean**2))

    @property
    def rms(self) -> np.ndarray:
        """``sqrt(mean(x²)) = sqrt(var + mean²)``."""
        return np.sqrt(self.var + self.mean**2)


Sources = dict[str, SegmentMoments]


class Quantity:
    """One kind of record of the scalar table, computed on the host from the sources' raw moments.

    Subclasses declare (class attributes):

    - ``kind``: the ``kind`` column of their rows (``None``: each segment's own kind, as the outputs'
      ``activation`` / ``norm_in`` / ``norm_out``);
    - ``source``: the source whose segments label the rows (``name``, ``member``); the quantity is left
      out when that source has no segments;
    - ``stats``: the ``stat`` column, one value per stat and segment;
    - ``per_model``: one row per member named ``model`` instead of one per segment (a sum over tensors);
    - ``segment_major``: row order within a step, the stats of one segment together (else the segments
      of one stat together);

    and implement :meth:`compute`. Add one to a probe with ``Probe(..., quantities=[*DEFAULT_QUANTITIES,
    MyQuantity()])``; see ``docs/probe.md``, *Adding a statistic*.
    """

    kind: ClassVar[str | None]
    source: ClassVar[str]
    stats: ClassVar[tuple[str, ...]]
    per_model: ClassVar[bool] = False
    segment_major: ClassVar[bool] = False

    def compute(self, sources: Sources) -> tuple[np.ndarray, np.ndarray]:
        """``(values, valid)``, both ``(n, len(stats), S)`` (``S``: the source's segments, or the members
        when ``per_model``); rows where ``valid`` is False are left out of the table (an undefined value
        is absent, not NaN)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(kind={self.kind!r}, stats={self.stats!r})"
