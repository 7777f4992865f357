"""Anomaly alerts: what large-run trainers watch for, read off the probe's scalar table.

Off the hot path: the rules run on the host over the long table (``Probe.scalars()`` or a stored
``scalars.parquet``), never in a hook. Each rule looks at one kind of row, per member and per name
(thresholds are the fields of :class:`AlertRules`):

- ``loss_spike``: the recorded loss (``global/loss/value``, see ``Probe.record_loss``) exceeds
  ``spike_factor`` x the median of the previous ``window`` recorded values (once ``min_history`` exist).
- ``grad_norm_spike``: the same for the global gradient norm (``global/model/grad_norm``).
- ``non_finite``: a NaN or infinite statistic (an update ratio of -inf is not one: it is an update whose
  std is 0, which ``update_ratio`` reports). Reported once per step, at the *first* module in forward
  order whose output (or norm input/output) is non-finite, or else at the first parameter whose
  gradient is: where the NaN came from, not everything it reached.
- ``dead_units``: a module output whose ``zero_frac`` is >= ``dead_fraction`` for ``patience`` recorded
  steps in a row (ReLUs that no input switches on).
- ``update_ratio``: ``update/ratio`` (defined in ``quantities/update.py``) outside ``ratio_band`` for ``patience``
  recorded steps in a row, for weight matrices and kernels (the Probe passes the parameters of two or
  more dims per member): the rule of thumb is about -3; far below, the layer is not learning; far
  above, each step rewrites it; a ratio of -inf (an update whose std is 0) is below the band. Biases and norm gains are left out: a gain's std is its spread around
  1 and a bias starts at 0, so early in any healthy run their ratio is near 10^0.
- ``running_stats_drift``: a norm layer's channel-averaged running mean differs from the
  channel-averaged mean of its training input by more than ``drift_tolerance`` standard deviations of
  that input, and that gap has not shrunk (by 5 % a step, as a warming-up average's does), for
  ``patience`` recorded steps in a row: running statistics that do not describe the data they will
  normalize in eval. (Per-channel deviations of opposite sign can cancel in this average: it is a cheap
  screen, not a proof.)

The result is a long table, one row per alert: ``step, member, name, alert, value, threshold, message``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

ALERT_COLUMNS = ("step", "member", "name", "alert", "value", "threshold", "message")
ALERTS = ("loss_spike", "grad_norm_spike", "non_finite", "dead_units", "update_ratio", "running_stats_drift")


@dataclass(frozen=True)
class AlertRules:
    """Thresholds of the alert rules (see the module docstring)."""

    spike_factor: float = 5.0
    window: int = 20
    min_history: int = 5
    dead_fraction: float = 0.99
    patience: int = 3
    ratio_band: tuple[float, float] = (-5.0, -1.0)
    drift_tolerance: float = 1.0

    def __post_init__(self):
        for name in ("spike_factor", "dead_fraction", "drift_tolerance"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and np.isfinite(value) and value > 0):
                raise ValueError(f"AlertRules: {name} must be a finite number > 0, got {value!r}")
        if self.spike_factor <= 1:
            raise ValueError(f"AlertRules: spike_factor must be > 1, got {self.spike_factor!r}")
        if self.dead_fraction > 1:
            raise ValueError(f"AlertRules: dead_fraction must be in (0, 1], got {self.dead_fraction!r}")
        for name in ("window", "min_history", "patience"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"AlertRules: {name} must be a positive int, got {value!r}")
        lo, hi = self.ratio_band
        if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
            raise ValueError(f"AlertRules: ratio_band must be (low, high) with low < high, got {self.ratio_band!r}")


def _series(table: pd.DataFrame, kind: str, stat: str) -> pd.DataFrame:
    rows = table[(table["kind"] == kind) & (table["stat"] == stat)]
    return rows[["step", "member", "name", "value"]].sort_values(["member", "name", "step"])


def _row(step, member, name, alert, value, threshold, message) -> dict:
    return {"step": int(step), "member": int(member), "name": str(name), "alert": alert, "value": float(value),
            "threshold": float(threshold), "message": message}


def _spikes(table, kind, name, stat, alert, what, rules) -> list[dict]:
    found = []
    rows = _series(table, kind, stat)
    rows = rows[rows["name"] == name]
    for member, group in rows.groupby("member", sort=True):
        values, steps = group["value"].to_numpy(float), group["step"].to_numpy()
        for i in range(rules.min_history, len(values)):
            history = values[max(0, i - rules.window):i]
            history = history[np.isfinite(history)]
            if len(history) < rules.min_history or not np.isfinite(values[i]):
                continue  # a non-finite value is the non_finite rule's
            baseline = float(np.median(history))
            limit = rules.spike_factor * baseline
            if baseline > 0 and values[i] > limit:
                found.append(_row(steps[i], member, name, alert, values[i], limit,
                                  f"{what} {values[i]:.4g} is {values[i] / baseline:.1f}x the median "
                                  f"{baseline:.4g} of the previous {len(history)} recorded steps"))
    return found


def _non_finite(table, module_order) -> list[dict]:
    found = []
    values = table["value"].to_numpy(float)
    # An update ratio of -inf is an update with std 0 (log10 of 0: the tensor did not move, or every entry
    # moved by the same amount), not a non-finite value: the update_ratio rule reports it as below its band.
    still = (table["kind"] == "update").to_numpy() & (table["stat"] == "ratio").to_numpy() & (values == -np.inf)
    bad = table[~np.isfinite(values) & ~still]
    if bad.empty:
        return found
    rank = {name: i for i, name in enumerate(module_order)}
    for (step, member), group in bad.groupby(["step", "member"], sort=True):
        outputs = group[group["kind"].isin(["activation", "norm_in", "norm_out"])]
        grads = group[group["kind"] == "grad"]
        if not outputs.empty:
            names = sorted(set(outputs["name"].astype(str)), key=lambda n: (rank.get(n, len(rank)), n))
            first, where = names[0], "output"
        elif not grads.empty:
            first, where = str(grads["name"].iloc[0]), "gradient"
        else:
            first, where = str(group["name"].iloc[0]), str(group["kind"].iloc[0])
        found.append(_row(step, member, first, "non_finite", np.nan, np.nan,
                          f"first non-finite {where} this step: {first}"
                          + (f" (then {len(set(group['name'])) - 1} more)" if len(set(group["name"])) > 1 else "")))
    return found


def _runs(table, kind, stat, outside, alert, describe, threshold, rules) -> list[dict]:
    return _patient(_series(table, kind, stat), outside, alert, describe, threshold, rules)


def _patient(series, outside, alert, describe, threshold, rules) -> list[dict]:
    """Alert at the step where ``outside(value)`` has held for ``patience`` recorded steps in a row
    (``series``: step, member, name, value)."""
    found = []
    for (member, name), group in series.groupby(["member", "name"], sort=True, observed=True):
        run = 0
        for step, value in zip(group["step"], group["value"], strict=True):
            run = run + 1 if not np.isnan(value) and outside(value) else 0  # -inf: a ratio of 0
            if run == rules.patience:
                limit = threshold(value) if callable(threshold) else threshold
                found.append(_row(step, member, name, alert, value, limit, describe(value)))
    return found


def _drift(table, rules) -> list[dict]:
    """Running mean against batch mean, in batch standard deviations, for ``patience`` steps in a row (the
    running statistics start at 0 and take a few steps to warm up at torch's momentum 0.1)."""
    running = _series(table, "running_stats", "mean")
    running = running[running["name"].astype(str).str.endswith(".running_mean")]
    if running.empty:
        return []
    running = running.assign(name=running["name"].astype(str).str.removesuffix(".running_mean"))
    inputs = table[table["kind"] == "norm_in"].astype({"name": str, "stat": str})
    batch = inputs.pivot_table(index=["step", "member", "name"], columns="stat", values="value", observed=True)
    if not {"mean", "std"} <= set(batch.columns):
        return []
    joined = running.join(batch[["mean", "std"]], on=["step", "member", "name"], how="inner")
    joined = joined[(joined["std"] > 0) & np.isfinite(joined["mean"]) & np.isfinite(joined["value"])]
    gaps = joined.assign(value=(joined["value"] - joined["mean"]).abs() / joined["std"])
    gaps = gaps[["step", "member", "name", "value"]].sort_values(["member", "name", "step"])
    # A warming-up average closes its gap geometrically (x (1 - momentum) per step); running statistics
    # that are stuck, or data that moved away from them, do not. Only a gap that did not shrink by 5 %
    # since the previous recorded step counts.
    previous = gaps.groupby(["member", "name"], observed=True)["value"].shift(1)
    stalled = gaps["value"].where(previous.isna() | (gaps["value"] >= 0.95 * previous), 0.0)
    gaps = gaps.assign(value=stalled)
    return _patient(gaps, lambda v: v > rules.drift_tolerance, "running_stats_drift",
                    lambda v: (f"running mean {v:.2f} input stds from the batch mean for {rules.patience} "
                               "recorded steps in a row"),
                    rules.drift_tolerance, rules)


def find_alerts(table: pd.DataFrame, rules: AlertRules | None = None, module_order=(),
                ratio_names=None) -> pd.DataFrame:
    """Every alert in a probe scalar table (``step, member, name, kind, stat, value``), in step order.

    ``module_order``: module names in forward order, to name the first non-finite output of a step
    (default: the table's order of names, which is the model's module order). ``ratio_names``: the
    parameters the update-ratio rule watches (default: all in the table).
    """
    rules = rules or AlertRules()
    missing = {"step", "member", "name", "kind", "stat", "value"} - set(table.columns)
    if missing:
        raise ValueError(f"find_alerts: the table lacks columns {sorted(missing)}")
    table = table.astype({"name": str, "kind": str, "stat": str})
    if not module_order:
        module_order = list(dict.fromkeys(table["name"]))
    low, high = rules.ratio_band
    ratios = table if ratio_names is None else table[~(table["kind"] == "update") | table["name"].isin(ratio_names)]
    found = [
        *_spikes(table, "global", "loss", "value", "loss_spike", "loss", rules),
        *_spikes(table, "global", "model", "grad_norm", "grad_norm_spike", "global gradient norm", rules),
        *_non_finite(table, module_order),
        *_runs(table, "activation", "zero_frac", lambda v: v >= rules.dead_fraction, "dead_units",
               lambda v: f"{v:.1%} of the outputs are exactly zero for {rules.patience} recorded steps in a row",
               rules.dead_fraction, rules),
        *_runs(ratios, "update", "ratio", lambda v: not low <= v <= high, "update_ratio",
               lambda v: ((f"update/weight ratio 10^{v:.2f} outside [10^{low:g}, 10^{high:g}]" if np.isfinite(v)
                           else "update std 0 (the tensor did not move, or every entry moved alike)")
                          + f" for {rules.patience} recorded steps in a row"),
               lambda v: low if v < low else high, rules),
        *_drift(table, rules),
    ]
    frame = pd.DataFrame(found, columns=list(ALERT_COLUMNS))
    return frame.sort_values(["step", "member", "alert", "name"], kind="stable").reset_index(drop=True)


class ProbeAlert(UserWarning):
    """The warning category of probe alerts (filter it with ``warnings.filterwarnings``)."""


# the rows the rules read: everything else is dropped from the monitor's history
_WATCHED = (("global", None), ("activation", "zero_frac"), ("update", "ratio"), ("running_stats", "mean"),
            ("norm_in", "mean"), ("norm_in", "std"), ("activation", None), ("norm_out", None), ("grad", None))


class AlertMonitor:
    """Runs the rules on each new block of rows as the probe flushes, with just enough history for the
    spike windows and patience runs; warns once per (alert, name) and keeps every alert in a table."""

    def __init__(self, rules: AlertRules, module_order=(), ratio_names=None):
        self.rules = rules
        self.module_order = list(module_order)
        self.ratio_names = ratio_names
        self._history = pd.DataFrame(columns=["step", "member", "name", "kind", "stat", "value"])
        self._found: list[pd.DataFrame] = []
        self._last_step = -1
        self._warned: set[tuple[str, str]] = set()
        self.suppressed = 0

    def update(self, rows: pd.DataFrame) -> pd.DataFrame:
        """Alerts at steps not seen before, from ``rows`` (new scalar rows, loss rows included)."""
        if rows.empty:
            return pd.DataFrame(columns=list(ALERT_COLUMNS))
        rows = rows.astype({"name": str, "kind": str, "stat": str})
        rows = rows[rows["step"] > self._last_step]
        keep = np.zeros(len(rows), dtype=bool)
        for kind, stat in _WATCHED:
            keep |= (rows["kind"] == kind).to_numpy() & (stat is None or (rows["stat"] == stat).to_numpy())
        table = pd.concat([self._history, rows[keep]], ignore_index=True) if len(self._history) else rows[keep]
        alerts = find_alerts(table, self.rules, self.module_order, self.ratio_names)
        new = alerts[alerts["step"] > self._last_step]
        if len(rows):
            self._last_step = int(rows["step"].max())
        steps = np.sort(table["step"].unique())
        horizon = steps[-max(self.rules.window, self.rules.patience):]
        self._history = table[table["step"].isin(horizon)].reset_index(drop=True)
        self._found.append(new)
        self._warn(new)
        return new

    def _warn(self, alerts: pd.DataFrame) -> None:
        import warnings

        for row in alerts.itertuples(index=False):
            key = (row.alert, row.name)
            if key in self._warned:
                self.suppressed += 1
                continue
            self._warned.add(key)
            warnings.warn(f"normlab.probe alert: {row.alert} at step {row.step} in {row.name}: {row.message}",
                          ProbeAlert, stacklevel=4)

    def table(self) -> pd.DataFrame:
        """Every alert so far, in step order."""
        frames = [f for f in self._found if len(f)]
        if not frames:
            return pd.DataFrame(columns=list(ALERT_COLUMNS))
        return pd.concat(frames, ignore_index=True)
