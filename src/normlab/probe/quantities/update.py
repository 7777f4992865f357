"""The update Δp = p_after − p_before: ``norm``, ``std`` and the update ratio.

The **update ratio** is ``log10(std(Δp) / std(p))`` with ``p`` the parameter before the step: how many
decades smaller than the tensor's own spread one step moves it (the rule of thumb is about −3; far below,
the layer is not learning; far above, each step rewrites it). It is ``-inf`` for a tensor that did not
move, and left out where ``std(p) = 0`` (a constant tensor such as a LayerNorm gain at initialization,
where it is undefined). ``alerts.AlertRules.ratio_band`` watches it. This module is its one definition.
"""

from __future__ import annotations

import numpy as np

from normlab.probe.quantities.base import Quantity, Sources


def update_ratio(std_update: np.ndarray, std_weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(log10(std_update / std_weight), defined)``: defined where ``std_weight > 0``."""
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.log10(std_update / std_weight)  # -inf when a tensor did not move
    return ratio, std_weight > 0


class UpdateStats(Quantity):
    """Per parameter and member; absent for parameters no attached optimizer steps."""

    kind = "update"
    source = "update"
    stats = ("norm", "std", "ratio")

    def compute(self, sources: Sources) -> tuple[np.ndarray, np.ndarray]:
        update, weight = sources["update"], sources["weight"]
        std_update = update.std
        ratio, defined = update_ratio(std_update, weight.std)
        values = np.stack((update.norm, std_update, ratio), axis=1)
        valid = np.stack([np.ones_like(defined)] * 2 + [defined], axis=1) & update.present[:, None, :]
        return values, valid
