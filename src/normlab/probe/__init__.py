"""Training instruments cheap enough to leave on: see ``Probe`` and ``docs/probe.md``."""

from normlab.probe.histograms import SymLogBins
from normlab.probe.policy import ReductionPolicy
from normlab.probe.probe import Probe

__all__ = ["Probe", "ReductionPolicy", "SymLogBins"]
