"""Module outputs (and norm-layer inputs): ``mean``, ``std``, ``rms``, ``absmax``, ``zero_frac``."""

from __future__ import annotations

import numpy as np

from normlab.probe.quantities.base import Quantity, SegmentMoments, Sources


class OutputStats(Quantity):
    """Per output slot and member; kind ``activation``, or ``norm_in``/``norm_out`` for a norm layer.

    ``mean``, ``std`` (population), ``rms = sqrt(mean² + std²)``, ``absmax = max |x|``,
    ``zero_frac = #{x == 0} / n``. Outputs larger than the sample size are summarized from their sample.
    """

    kind = None  # the slot's own kind
    source = "outputs"
    stats = ("mean", "std", "rms", "absmax", "zero_frac")
    segment_major = True

    def compute(self, sources: Sources) -> tuple[np.ndarray, np.ndarray]:
        return output_stats(sources[self.source]), sources[self.source].present[:, None, :]


def output_stats(m: SegmentMoments) -> np.ndarray:
    """``(n, 5, S)`` in ``OutputStats.stats`` order."""
    return np.stack((m.mean, m.std, m.rms, m.absmax, m.zero_frac), axis=1)
