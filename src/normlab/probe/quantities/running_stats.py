"""Running statistics (``running_mean``/``running_var`` buffers): ``mean``, ``rms``, ``drift``."""

from __future__ import annotations

import numpy as np

from normlab.probe.quantities.base import Quantity, Sources


class RunningStats(Quantity):
    """Per buffer and member: its ``mean``, ``rms = norm / sqrt(n)``, and ``drift`` = the rms of its
    change since the previous recorded step (absent at the first)."""

    kind = "running_stats"
    source = "running_value"
    stats = ("mean", "rms", "drift")

    def compute(self, sources: Sources) -> tuple[np.ndarray, np.ndarray]:
        value, delta = sources["running_value"], sources["running_delta"]
        root_n = np.sqrt(value.count)
        values = np.stack((value.mean, value.norm / root_n, delta.norm / root_n), axis=1)
        valid = np.stack((value.present, value.present, delta.present), axis=1)
        return values, valid
