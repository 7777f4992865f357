"""Weights: ``norm``, ``mean``, ``std``, ``absmax`` of each parameter *before* the step."""

from __future__ import annotations

import numpy as np

from normlab.probe.quantities.base import Quantity, Sources
from normlab.probe.quantities.grad import TENSOR_STATS, tensor_stats


class WeightStats(Quantity):
    """Per parameter and member (the weights the step's gradients were computed at)."""

    kind = "weight"
    source = "weight"
    stats = TENSOR_STATS

    def compute(self, sources: Sources) -> tuple[np.ndarray, np.ndarray]:
        weight = sources[self.source]
        return tensor_stats(weight), weight.present[:, None, :]
