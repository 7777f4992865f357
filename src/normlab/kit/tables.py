"""Long-table builders: the shapes a study's ``run_cell`` returns, built one way.

A cell's metrics are long rows ``seed, step, metric, value`` (:data:`normlab.engine.spec.METRIC_COLUMNS`;
the engine adds ``arm`` and the cell's params). An ensemble's probe tables name members ``0..N-1``; the
store keys rows by seed, so :func:`with_seeds` maps one to the other.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

from normlab.engine.spec import METRIC_COLUMNS


def metric_rows(rows: Iterable[tuple[int, int, str, float]]) -> pd.DataFrame:
    """``(seed, step, metric, value)`` tuples -> the metrics table (an empty table keeps its columns)."""
    return pd.DataFrame(list(rows), columns=list(METRIC_COLUMNS))


def long_metrics(values: np.ndarray, steps: Sequence[int] | np.ndarray, seeds: Sequence[int],
                 names: Sequence[str]) -> pd.DataFrame:
    """``values`` shaped ``(metrics, steps, members)`` -> long rows ``seed, step, metric, value``.

    Member ``i`` is ``seeds[i]``; rows come metric by metric, step by step, member by member.
    """
    values = np.asarray(values)
    m, s, n = values.shape
    if (m, s, n) != (len(names), len(steps), len(seeds)):
        raise ValueError(f"values shaped {values.shape} do not match {len(names)} metrics x {len(steps)} steps x "
                         f"{len(seeds)} seeds")
    return pd.DataFrame({
        "seed": np.tile(np.asarray(seeds), m * s),
        "step": np.tile(np.repeat(np.asarray(steps), n), m),
        "metric": np.repeat(np.asarray(names, dtype=object), s * n),
        "value": values.reshape(-1).astype(np.float64),
    })


def with_seeds(table: pd.DataFrame, seeds: Sequence[int]) -> pd.DataFrame:
    """A probe table of an ensemble (``member`` = 0..N-1) with the ``seed`` each member was built from."""
    members = table["member"].to_numpy()
    if len(members) and (members.min() < 0 or members.max() >= len(seeds)):
        raise ValueError(f"probe members {sorted(set(members.tolist()))} do not fit {len(seeds)} seeds")
    return table.assign(seed=np.asarray(seeds)[members])
