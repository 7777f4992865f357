"""A preallocated device buffer of per-step rows, copied to the host with one sync every K rows.

Each recorded step writes one row with a single device copy. When the buffer is full (or a reader asks),
the filled rows are copied to the host in one ``.cpu()`` call -- the only host sync of the probe -- and
kept as a raw NumPy chunk; turning chunks into tables is left to the reader (``tables.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch


@dataclass
class Chunk:
    """Rows copied to the host: ``values[i]`` is the row of ``steps[i]``; ``missing[i]`` names absent parts."""

    steps: np.ndarray
    values: np.ndarray
    missing: list[frozenset] = field(default_factory=list)


class DeviceBuffer:
    """``capacity`` rows of ``width`` values of ``dtype`` on ``device``."""

    def __init__(self, width: int, capacity: int, device: torch.device, dtype: torch.dtype):
        self.width = width
        self.capacity = capacity
        self._rows = torch.empty((capacity, width), device=device, dtype=dtype)
        self._steps: list[int] = []
        self._missing: list[frozenset] = []
        self.chunks: list[Chunk] = []

    @property
    def full(self) -> bool:
        return len(self._steps) == self.capacity

    def append(self, step: int, row: torch.Tensor, missing: frozenset = frozenset()) -> None:
        """Write ``row`` (``width`` values) for ``step``; flushes first if full."""
        if self.full:
            self.flush()
        self._rows[len(self._steps)].copy_(row.reshape(-1))
        self._steps.append(step)
        self._missing.append(missing)

    def append_rows(self, steps: list[int], rows: torch.Tensor, missing: list[frozenset]) -> int:
        """Write as many of ``rows`` ``(n, width)`` as fit (one copy); returns how many were written."""
        start = len(self._steps)
        n = min(len(steps), self.capacity - start)
        if n > 0:
            self._rows[start : start + n].copy_(rows[:n].reshape(n, self.width))
            self._steps.extend(steps[:n])
            self._missing.extend(missing[:n])
        return n

    def flush(self) -> Chunk | None:
        """Copy the filled rows to the host (one sync); returns the new chunk, or None if empty."""
        if not self._steps:
            return None
        values = self._rows[: len(self._steps)].cpu().numpy().copy()
        chunk = Chunk(np.array(self._steps, dtype=np.int64), values, self._missing)
        self.chunks.append(chunk)
        self._steps, self._missing = [], []
        return chunk
