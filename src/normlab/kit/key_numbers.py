"""Key numbers from the metrics table: what a study's ``key_numbers`` returns for a metric it stores as is.

A study whose numbers are computed measures (a mean over the last 5% of steps, a ratio of two metrics)
builds :class:`~normlab.engine.spec.KeyNumber` itself from its per-seed values; this covers the common case
of a stored metric at one step.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from normlab.engine.spec import METRIC_COLUMNS, KeyNumber


def arm_label(arm: str, params: dict[str, Any]) -> str:
    """``"bn"`` or ``"bn, batch_size=4"``: the arm and the cell params that tell its rows apart."""
    shown = [f"{k}={v}" for k, v in params.items() if not (isinstance(v, float) and pd.isna(v))]
    return ", ".join([arm, *shown])


def metric_numbers(metrics: pd.DataFrame, metric: str, quantity: str, *, scale: str = "signed",
                   step: int | None = None, arms: tuple[str, ...] | None = None, unit: str = "seed",
                   **where: Any) -> list[KeyNumber]:
    """One :class:`KeyNumber` per arm (and cell params) of ``metric``: each seed's value at ``step`` (``None``:
    the metric's last step in that arm), for the arms in ``arms`` (all when ``None``) and rows matching
    ``where`` (``batch_size=4``). Params fixed by ``where`` are left out of the arm label."""
    sel = metrics[metrics["metric"] == metric]
    if arms is not None:
        sel = sel[sel["arm"].isin(arms)]
    for key, val in where.items():
        sel = sel[sel[key] == val]
    params = [c for c in sel.columns if c not in (*METRIC_COLUMNS, "arm") and c not in where]
    out = []
    order = list(arms) if arms is not None else list(dict.fromkeys(sel["arm"]))
    for keys, g in sel.groupby(["arm", *params], sort=False, dropna=False):
        keys = keys if isinstance(keys, tuple) else (keys,)
        at = g["step"].max() if step is None else step
        values = g[g["step"] == at].sort_values("seed")["value"].to_numpy(dtype=float)
        label = arm_label(str(keys[0]), dict(zip(params, keys[1:], strict=True)))
        out.append((order.index(keys[0]) if keys[0] in order else len(order),
                    KeyNumber(quantity, label, tuple(values), scale, unit)))  # type: ignore[arg-type]
    return [k for _, k in sorted(out, key=lambda t: t[0])]
