"""The global gradient norm: ``global / model / grad_norm``, one per member."""

from __future__ import annotations

import numpy as np

from normlab.probe.quantities.base import Quantity, Sources


class GlobalGradNorm(Quantity):
    """``sqrt(Σ over parameters of ‖grad‖²)`` per member (the norm gradient clipping reads); parameters
    whose ``.grad`` was ``None`` count as 0."""

    kind = "global"
    source = "grad"
    stats = ("grad_norm",)
    per_model = True

    def compute(self, sources: Sources) -> tuple[np.ndarray, np.ndarray]:
        grad = sources[self.source]
        n, members = len(grad.present), int(grad.members.max()) + 1
        squares = np.where(grad.present, grad.norm**2, 0.0).reshape(n, -1, members)
        values = np.sqrt(squares.sum(axis=1))[:, None, :]
        return values, np.ones(values.shape, bool)
