"""The key numbers of a report: the short list a study declares, and the full final-step table.

The page shows what the study declares a reader uses (``Study.key_numbers``), each number with its summary
named ("geometric mean over 8 seeds, 95% t interval on the log scale"). A study that declares none gets the
first rows of the full table: every metric at its last step, per arm, arithmetic mean over seeds (it names
that too). ``key_numbers.json`` holds both: the shown rows (``"table": "key"``) and the full table
(``"table": "final step"``).
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from normlab.engine.spec import METRIC_COLUMNS, KeyNumber
from normlab.kit.intervals import summarise
from normlab.kit.key_numbers import arm_label

DEFAULT_ROWS = 15  # the page's share of the full table when a study declares no key numbers
COLUMNS = ["quantity", "arm", "estimate", "lo", "hi", "n", "summary", "scale"]


def _row(quantity: str, arm: str, values: Sequence[float], scale: str, unit: str) -> dict:
    s = summarise(values, scale) if len(values) else None
    if s is None:
        return {"quantity": quantity, "arm": arm, "estimate": float("nan"), "lo": float("nan"),
                "hi": float("nan"), "n": 0, "summary": f"no {unit}s", "scale": scale}
    return {"quantity": quantity, "arm": arm, "estimate": s.estimate, "lo": s.lo, "hi": s.hi, "n": s.n,
            "summary": s.described(f"{unit}s"), "scale": s.scale}


def declared_table(numbers: Sequence[KeyNumber]) -> pd.DataFrame:
    """One row per declared number, in the study's order."""
    if not all(isinstance(k, KeyNumber) for k in numbers):
        raise TypeError(f"key_numbers() must return KeyNumber objects, got {list(numbers)!r:.200}")
    return pd.DataFrame([_row(k.quantity, k.arm, k.values, k.scale, k.unit) for k in numbers], columns=COLUMNS)


def final_step_table(metrics: pd.DataFrame) -> pd.DataFrame:
    """Every metric at its last step, per arm (and cell params): arithmetic mean over seeds with its t-interval,
    plus the ``metric`` and ``step`` columns the quantity is made of."""
    if metrics.empty:
        return pd.DataFrame(columns=[*COLUMNS, "metric", "step"])
    params = [c for c in metrics.columns if c not in (*METRIC_COLUMNS, "arm")]
    rows = []
    for keys, g in metrics.groupby(["arm", *params, "metric"], sort=False, dropna=False):
        arm, *cell, metric = keys if isinstance(keys, tuple) else (keys,)
        last = int(g["step"].max())
        values = g.loc[g["step"] == last, "value"].to_numpy(dtype=float)
        rows.append({**_row(f"{metric} at step {last}", arm_label(str(arm), dict(zip(params, cell, strict=True))),
                            values, "signed", "seed"), "metric": metric, "step": last})
    return pd.DataFrame(rows)


def shown_table(declared: Sequence[KeyNumber], full: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """The table the page shows and one sentence saying what it is."""
    if declared:
        return declared_table(declared), (
            "The numbers this study's claims rest on, each with its summary over seeds named; every metric at "
            f"its last step, per arm ({len(full)} rows), is in `key_numbers.json`.")
    shown = full.head(DEFAULT_ROWS)[COLUMNS]
    more = f"the first {len(shown)} of {len(full)} rows; all are" if len(full) > len(shown) else "all rows are also"
    return shown, f"Each metric at its last step, per arm, arithmetic mean over seeds ({more} in `key_numbers.json`)."


def json_rows(shown: pd.DataFrame, full: pd.DataFrame) -> list[dict]:
    """``key_numbers.json``: the shown rows, then the full final-step table."""
    return ([{"table": "key", **r} for r in shown.to_dict(orient="records")]
            + [{"table": "final step", **r} for r in full.to_dict(orient="records")])
