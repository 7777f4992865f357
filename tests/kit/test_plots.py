"""Plotting helpers: bands are the mean over seeds with a t-interval; integer axes tick at integers; empty
histogram bins are drawn in the colour of the smallest fraction, not as white specks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from normlab.kit.plots import heatmap_over_time, mean_band, new_figure, plot_band


def _curves(steps, seeds=4):
    rng = np.random.default_rng(0)
    return pd.DataFrame([(s, k, 1.0 + k + rng.normal()) for s in range(seeds) for k in steps],
                        columns=["seed", "step", "value"])


def test_mean_band_is_the_t_interval_over_seeds():
    df = _curves([0, 1, 2])
    band = mean_band(df).set_index("step")
    for step, g in df.groupby("step"):
        v = g["value"].to_numpy()
        lo, hi = sps.t.interval(0.95, v.size - 1, loc=v.mean(), scale=sps.sem(v))
        assert band.loc[step, "mean"] == pytest.approx(v.mean())
        assert (band.loc[step, "lo"], band.loc[step, "hi"]) == pytest.approx((lo, hi))


@pytest.mark.parametrize("steps, integer", [([0, 1, 2, 3], True), ([0.0, 0.25, 0.5], False)])
def test_integer_positions_get_integer_ticks(steps, integer):
    fig, axes = new_figure()
    plot_band(axes[0, 0], _curves(steps), label="a")
    fig.canvas.draw()
    ticks = axes[0, 0].get_xticks()
    assert np.array_equal(ticks, np.round(ticks)) == integer


def test_empty_bins_are_not_white():
    rows = [(step, lo, lo + 1.0, count) for step in range(3) for lo, count in ((0.0, 5), (1.0, 0), (2.0, 5))]
    hist = pd.DataFrame(rows, columns=["step", "bin_lo", "bin_hi", "count"])
    fig, axes = new_figure()
    mesh = heatmap_over_time(axes[0, 0], hist, symlog=False)
    fig.canvas.draw()
    empty = mesh.to_rgba(np.ma.masked_invalid([np.nan]))[0]
    assert tuple(np.round(empty[:3], 3)) != (1.0, 1.0, 1.0)
    assert tuple(empty) == tuple(mesh.cmap(0.0))
