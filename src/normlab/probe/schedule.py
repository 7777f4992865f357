"""Which optimizer steps a Probe records.

Steps are counted from 0 and are *optimizer* steps: step ``s`` covers the forward and backward passes that
produce the gradients consumed by the ``s``-th call of ``optimizer.step()``. A step is recorded when it
falls on the scalar interval or on the histogram interval; a histogram step also records scalars, so every
histogram has the scalars of the same step beside it.
"""

from __future__ import annotations

from dataclasses import dataclass


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"Probe: {name} must be a positive int (record every N optimizer steps), got {value!r}")
    return value


@dataclass(frozen=True)
class Schedule:
    """Scalars every ``every`` steps; histograms every ``histogram_every`` steps (``None``: never)."""

    every: int = 1
    histogram_every: int | None = None

    @classmethod
    def from_arguments(cls, every: object, histograms: object) -> Schedule:
        """``histograms``: ``False`` (off), ``True`` (same interval as scalars) or a positive int interval."""
        every = _positive_int("every", every)
        if histograms is False or histograms is None:
            return cls(every, None)
        if histograms is True:
            return cls(every, every)
        return cls(every, _positive_int("histograms", histograms))

    def records(self, step: int) -> bool:
        return step % self.every == 0 or self.records_histograms(step)

    def records_histograms(self, step: int) -> bool:
        return self.histogram_every is not None and step % self.histogram_every == 0
