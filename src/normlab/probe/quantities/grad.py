"""Gradients: ``norm``, ``mean``, ``std``, ``absmax`` of the gradient each step consumed."""

from __future__ import annotations

import numpy as np

from normlab.probe.quantities.base import Quantity, SegmentMoments, Sources

TENSOR_STATS = ("norm", "mean", "std", "absmax")


def tensor_stats(m: SegmentMoments) -> np.ndarray:
    """``(n, 4, S)`` in ``TENSOR_STATS`` order: ``norm = sqrt(Σx²)``, mean, population std, ``max |x|``."""
    return np.stack((m.norm, m.mean, m.std, m.absmax), axis=1)


class GradStats(Quantity):
    """Per parameter and member; absent where the parameter's ``.grad`` was ``None``."""

    kind = "grad"
    source = "grad"
    stats = TENSOR_STATS

    def compute(self, sources: Sources) -> tuple[np.ndarray, np.ndarray]:
        grad = sources[self.source]
        return tensor_stats(grad), grad.present[:, None, :]
