"""Plotting helpers for studies: mean curves with 95% bands over seeds, distributions over time.

Studies draw with matplotlib (Agg backend, no display needed) and return the Figure objects; the report
saves them (:func:`normlab.report.figures.save_figure`). Every curve over seeds is the mean with its 95%
Student-t band.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import matplotlib

matplotlib.use("Agg")  # headless: figures are files, never windows

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.ticker import MaxNLocator
from scipy import stats as sps

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#7f7f7f", "#9467bd", "#ff7f0e", "#17becf", "#8c564b",
           "#e377c2", "#bcbd22")


def arm_colors(arms: Sequence[str]) -> dict[str, str]:
    """A stable color per arm (in the given order)."""
    return {a: PALETTE[i % len(PALETTE)] for i, a in enumerate(arms)}


def _natural(name: str) -> tuple:
    """``"linears.10.weight"`` after ``"linears.2.weight"``: digit runs compare as numbers."""
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"(\d+)", name) if p)


def series_styles(names: Iterable[str]) -> dict[str, dict[str, str]]:
    """One style (``color``, ``linestyle``) per series name, the same in every panel of a figure: a layer keeps
    its colour whichever panels show it, however many others a panel adds. Names are ordered naturally
    (``linears.2`` before ``linears.10``); past the palette's 10 colours the line style changes."""
    ordered = sorted(set(names), key=_natural)
    styles = ("-", "--", ":", "-.")
    return {n: {"color": PALETTE[i % len(PALETTE)], "linestyle": styles[(i // len(PALETTE)) % len(styles)]}
            for i, n in enumerate(ordered)}


def shared_legend(fig: plt.Figure, axes: Iterable[plt.Axes], **kw: object) -> None:
    """One legend for the whole figure holding every labelled series of ``axes`` once (the first artist drawn
    under each label), beside the panels: no panel's legend leaves out a series another panel draws."""
    seen: dict[str, object] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            seen.setdefault(label, handle)
    kw.setdefault("loc", "outside right upper")
    kw.setdefault("fontsize", 7)
    fig.legend(list(seen.values()), list(seen), **kw)


def new_figure(nrows: int = 1, ncols: int = 1, *, width: float = 6.0, height: float = 4.0,
               **kw: object) -> tuple[plt.Figure, np.ndarray]:
    """A figure with an ``(nrows, ncols)`` array of axes sized ``width x height`` inches each."""
    kw.setdefault("layout", "constrained")  # no overlapping titles/labels, colorbars included
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows), squeeze=False, **kw)
    return fig, axes


def mean_band(values: pd.DataFrame, x: str = "step", y: str = "value", seed: str = "seed",
              confidence: float = 0.95) -> pd.DataFrame:
    """Per ``x``: mean over seeds, Student-t band ``lo``/``hi``, and ``n`` (a band needs n >= 2)."""
    g = values.groupby(x)[y]
    out = g.agg(["mean", "std", "count"]).rename(columns={"count": "n"})
    t = sps.t.ppf(0.5 + confidence / 2, np.maximum(out["n"] - 1, 1))
    half = np.where(out["n"] > 1, t * out["std"] / np.sqrt(out["n"]), np.nan)
    out["lo"] = out["mean"] - half
    out["hi"] = out["mean"] + half
    return out.reset_index()


def plot_band(ax: plt.Axes, values: pd.DataFrame, *, label: str, color: str | None = None,
              x: str = "step", y: str = "value", log: bool = False, alpha: float = 0.2,
              max_points: int = 400, linestyle: str = "-") -> None:
    """Draw the mean over seeds as a line and its 95% band as a shaded area.

    With ``log=True`` the mean and band are computed on ``log10(y)`` (geometric mean): the right average
    for losses that span orders of magnitude, and a band that stays positive.
    """
    v = values[[x, y]].copy()
    if log:
        v = v[v[y] > 0]
        v[y] = np.log10(v[y])
    band = mean_band(v, x=x, y=y)
    if len(band) > max_points:  # thin long curves evenly (keeps the last point): smaller, faster files
        keep = np.unique(np.append(np.linspace(0, len(band) - 1, max_points).round().astype(int), len(band) - 1))
        band = band.iloc[keep]
    mean, lo, hi = band["mean"], band["lo"], band["hi"]
    if log:
        mean, lo, hi = 10**mean, 10**lo, 10**hi
    (line,) = ax.plot(band[x], mean, label=label, color=color, lw=1.5, linestyle=linestyle)
    ax.fill_between(band[x], lo, hi, color=line.get_color(), alpha=alpha, lw=0)
    if log:
        ax.set_yscale("log")
    integer_ticks(ax, values[x])


def integer_ticks(ax: plt.Axes, x: Sequence[float] | pd.Series | np.ndarray, axis: str = "x") -> None:
    """Integer-valued positions (steps, layers, iterations) get integer ticks only: no "step 0.5"."""
    v = np.asarray(x, dtype=float)
    if v.size and np.isfinite(v).all() and np.array_equal(v, np.round(v)):
        (ax.xaxis if axis == "x" else ax.yaxis).set_major_locator(MaxNLocator(integer=True))


def symlog_transform(edges: np.ndarray, linthresh: float | None = None) -> tuple[np.ndarray, float]:
    """Map bin edges to a symmetric-log axis: ``sign(e) * (1 + log10(|e| / m))`` for ``|e| >= m``, linear
    ``e / m`` inside ``(-m, m)``, where ``m`` is ``linthresh`` or else the smallest positive finite edge;
    ``±inf`` edges land one unit beyond the last finite one. Returns ``(positions, m)``."""
    e = np.asarray(edges, dtype=float)
    finite = e[np.isfinite(e)]
    pos = np.abs(finite[finite != 0])
    m = float(linthresh) if linthresh else (float(pos.min()) if pos.size else 1.0)
    out = np.where(np.abs(e) >= m, np.sign(e) * (1 + np.log10(np.maximum(np.abs(e), m) / m)), e / m)
    fin = np.isfinite(out)
    top = float(np.abs(out[fin]).max()) if fin.any() else 1.0
    return np.where(np.isposinf(e), top + 1, np.where(np.isneginf(e), -top - 1, out)), m


def heatmap_over_time(ax: plt.Axes, hist: pd.DataFrame, *, step: str = "step", lo: str = "bin_lo",
                      hi: str = "bin_hi", count: str = "count", ylabel: str = "value", symlog: bool = True,
                      linthresh: float | None = None, cmap: str = "magma") -> object:
    """Distribution over time: x = step, y = bin, color = fraction of entries (per step, log color scale).

    ``hist`` has one row per (step, bin) (absent bins count 0) with the same bin edges at every step, such
    as ``normlab.probe`` histograms; rows of several members/names are summed. Counts are normalized per
    step, so a narrow (concentrated) distribution shows as a thin bright band. ``symlog`` draws the value
    axis on a symmetric log scale (use it with the probe's symmetric log bins, whose outer edges are ±inf;
    pass their smallest magnitude as ``linthresh`` so every panel shares one axis).
    """
    h = hist.groupby([step, lo, hi], as_index=False, observed=True)[count].sum()
    steps = np.sort(h[step].unique())
    edges = np.unique(np.concatenate([h[lo].to_numpy(float), h[hi].to_numpy(float)]))
    grid = np.zeros((edges.size - 1, steps.size))
    si = np.searchsorted(steps, h[step].to_numpy())
    bi = np.searchsorted(edges, h[lo].to_numpy(float))
    np.add.at(grid, (bi, si), h[count].to_numpy(dtype=float))
    totals = grid.sum(axis=0, keepdims=True)
    frac = np.divide(grid, totals, out=np.zeros_like(grid), where=totals > 0)
    x_edges = np.append(steps, steps[-1] + (steps[-1] - steps[-2] if steps.size > 1 else 1))
    if symlog:
        y_edges, m = symlog_transform(edges, linthresh)
    else:
        if not np.isfinite(edges).all():
            raise ValueError("heatmap_over_time: infinite bin edges need symlog=True")
        y_edges, m = edges, 1.0
    from matplotlib.colors import LogNorm

    # Empty bins take the colour of the smallest fraction, not the page's white: otherwise every empty bin
    # inside the distribution shows as a white speck. No edges or antialiasing: no seams between cells.
    colours = plt.get_cmap(cmap).with_extremes(bad=plt.get_cmap(cmap)(0.0), under=plt.get_cmap(cmap)(0.0))
    mesh = ax.pcolormesh(x_edges, y_edges, np.where(frac > 0, frac, np.nan), cmap=colours,
                         norm=LogNorm(vmin=1e-4, vmax=1.0), shading="flat", rasterized=True, edgecolors="none",
                         antialiased=False)
    integer_ticks(ax, steps)
    if symlog:
        # Ticks at every other decade present, labelled in original units.
        ticks, labels = [0.0], ["0"]
        top = int(np.floor(np.nanmax(np.abs(y_edges[np.isfinite(edges)])))) if np.isfinite(edges).any() else 1
        for k in range(1, top + 1, 2):
            v = m * 10 ** (k - 1)
            ticks += [k, -k]
            labels += [f"{v:.0e}", f"-{v:.0e}"]
        order = np.argsort(ticks)
        ax.set_yticks(np.asarray(ticks)[order], np.asarray(labels)[order], fontsize=7)
        occupied = np.nonzero(grid.sum(axis=1) > 0)[0]
        if occupied.size:
            ax.set_ylim(y_edges[occupied[0]] - 0.5, y_edges[occupied[-1] + 1] + 0.5)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    return mesh
