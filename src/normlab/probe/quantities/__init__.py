"""The probe's statistics, one quantity per module (as Cockpit declares its quantities).

Each module declares one :class:`Quantity`: the ``kind`` of its records, the ``source`` it labels its
rows by, its ``stats``, and how they are computed on the host from the raw moments every source is
reduced to on the device (see ``base.py``). ``DEFAULT_QUANTITIES`` is what a Probe records unless given
``quantities=``; a user adds one by subclassing :class:`Quantity` (``docs/probe.md``, *Adding a
statistic*).
"""

from __future__ import annotations

from normlab.probe.quantities.base import Quantity, SegmentMoments, Sources
from normlab.probe.quantities.global_grad_norm import GlobalGradNorm
from normlab.probe.quantities.grad import GradStats
from normlab.probe.quantities.outputs import OutputStats
from normlab.probe.quantities.running_stats import RunningStats
from normlab.probe.quantities.update import UpdateStats, update_ratio
from normlab.probe.quantities.weight import WeightStats

# Table order: outputs, gradients, weights, updates, the global norm, running statistics.
DEFAULT_QUANTITIES: tuple[Quantity, ...] = (
    OutputStats(), GradStats(), WeightStats(), UpdateStats(), GlobalGradNorm(), RunningStats(),
)

__all__ = [
    "DEFAULT_QUANTITIES", "GlobalGradNorm", "GradStats", "OutputStats", "Quantity", "RunningStats",
    "SegmentMoments", "Sources", "UpdateStats", "WeightStats", "update_ratio",
]
