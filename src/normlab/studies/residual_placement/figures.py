"""residual-placement figures, drawn from the stored metrics only."""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from normlab.engine.spec import Figure, StoredRun
from normlab.kit import stats
from normlab.studies.residual_placement.claims import final_values, training_rows
from normlab.studies.residual_placement.config import COLORS, Config


def figures(run: StoredRun) -> list[Figure]:
    return [_loss_vs_depth(run), _divergence(run), _init_grads(run), _first_updates(run),
            _stream(run), _curves(run)]


def _mean_ci(values: np.ndarray) -> tuple[float, float]:
    v = values[np.isfinite(values)]
    if v.size == 0:
        return math.nan, math.nan
    if v.size == 1:
        return float(v[0]), 0.0
    iv = stats.mean_ci(v)
    return iv.mean, iv.hi - iv.mean


def _loss_vs_depth(run: StoredRun) -> Figure:
    c: Config = run.config
    f = final_values(run.metrics, "val_loss")
    uni = final_values(run.metrics, "unigram_loss")["value"]
    fig, axes = plt.subplots(len(c.norms), len(c.warmups), figsize=(5 * len(c.warmups), 3.8 * len(c.norms)),
                             sharey=True, squeeze=False)
    for i, norm in enumerate(c.norms):
        for j, warm in enumerate(c.warmups):
            ax = axes[i][j]
            for p in c.placements:
                sel = f[(f["placement"] == p) & (f["norm"] == norm) & (f["warmup"] == warm)]
                pts = [(d, *_mean_ci(sel[sel["depth"] == d]["value"].to_numpy())) for d in c.depths]
                d_, mu, half = (np.array(x, dtype=float) for x in zip(*pts, strict=True))
                ax.errorbar(d_, mu, yerr=half, marker="o", capsize=3, color=COLORS[p], label=p)
            if len(uni):
                ax.axhline(float(uni.iloc[0]), color="black", ls="--", lw=1, label="unigram model")
            ax.set_title(f"{norm}, " + (f"warmup {warm} steps" if warm else "no warmup"))
            ax.set_xlabel("depth (blocks)")
            ax.set_xticks(list(c.depths))
        axes[i][0].set_ylabel("final validation loss (nats/char)")
    axes[0][0].legend(fontsize=8)
    fig.suptitle(f"Validation loss vs depth per placement (mean ± 95% CI over {c.seeds} seeds)")
    fig.tight_layout()
    return Figure("val_loss_vs_depth", "Validation loss vs depth, per placement",
                  "Each point is the final validation loss (held-out plays) averaged over seeds, with a 95% "
                  "interval. Lower is better. The dashed line is the unigram model: a run at or above it learned "
                  "nothing from context (counted as diverged). Rows: LayerNorm / RMSNorm; columns: without and "
                  "with learning-rate warmup. Post-LN's failure shows as its line jumping to the dashed line at "
                  "depth without warmup.", fig)


def _divergence(run: StoredRun) -> Figure:
    c: Config = run.config
    f = final_values(run.metrics, "diverged")
    fig, axes = plt.subplots(1, len(c.warmups), figsize=(5 * len(c.warmups), 3.6), sharey=True, squeeze=False)
    width = 0.8 / max(len(c.placements), 1)
    for j, warm in enumerate(c.warmups):
        ax = axes[0][j]
        for k, p in enumerate(c.placements):
            rates, ns = [], []
            for d in c.depths:
                v = f[(f["placement"] == p) & (f["warmup"] == warm) & (f["depth"] == d)]["value"]
                rates.append(v.mean() if len(v) else math.nan)
                ns.append(len(v))
            xs = np.arange(len(c.depths)) + (k - (len(c.placements) - 1) / 2) * width
            ax.bar(xs, rates, width, color=COLORS[p], label=p)
        ax.set_xticks(np.arange(len(c.depths)), [str(d) for d in c.depths])
        ax.set_xlabel("depth (blocks)")
        ax.set_ylim(0, 1.05)
        ax.set_title("no warmup" if not warm else f"warmup {warm} steps")
    axes[0][0].set_ylabel("fraction of runs diverged")
    axes[0][0].legend(fontsize=8)
    fig.suptitle(f"Divergence rate (both norms pooled, {c.seeds} seeds each: n = {c.seeds * len(c.norms)} per bar)")
    fig.tight_layout()
    return Figure("divergence_rate", "Divergence rate by depth and placement",
                  "Each bar is the fraction of runs (seeds x norms) whose final validation loss was not better than "
                  "the unigram model's by the margin in the notes, or not finite. A bar at 0 means every run trained.",
                  fig)


def _per_layer(m: pd.DataFrame, metric: str, placement: str, depth: int, norm: str | None = None,
               warmup: int = 0) -> pd.DataFrame:
    sel = training_rows(m)
    sel = sel[(sel["metric"] == metric) & (sel["placement"] == placement) & (sel["depth"] == depth)
              & (sel["warmup"] == warmup)]
    if norm is not None:
        sel = sel[sel["norm"] == norm]
    return sel.pivot_table(index=["norm", "seed"], columns="step", values="value", aggfunc="first")


def _geo_line(ax, table: pd.DataFrame, color: str, label: str) -> None:
    logv = np.log10(table.where(table > 0))
    mean = logv.mean()
    half = (logv.std(ddof=1) * 1.96 / np.sqrt(logv.count())).fillna(0)
    xs = mean.index.to_numpy()
    ax.plot(xs, 10**mean, color=color, marker=".", label=label)
    ax.fill_between(xs, 10 ** (mean - half), 10 ** (mean + half), color=color, alpha=0.2)


def _init_grads(run: StoredRun) -> Figure:
    c: Config = run.config
    d = max(c.depths)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=False)
    for ax, metric, what in ((axes[0], "init_grad_ffn", "||dL/dW|| of the FFN output weight"),
                             (axes[1], "init_grad_block", "||dL/dθ|| of all block parameters")):
        for p in c.placements:
            table = _per_layer(run.metrics, metric, p, d)
            if not table.empty:
                _geo_line(ax, table, COLORS[p], p)
        ax.set_yscale("log")
        ax.set_xlabel("layer (1 = next to the embedding, right = next to the output)")
        ax.set_ylabel(what)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"Gradient norm per layer at initialization, depth {d} (geometric mean over seeds and norms)")
    fig.tight_layout()
    return Figure("init_grad_per_layer", "Gradient norm per layer at initialization (Xiong et al. 2020, Fig. 3)",
                  "One batch, no update. Each line is a layer's gradient norm, geometric mean over seeds and both "
                  "norms with a 95% band, log scale. Xiong et al.: Post-LN's line rises toward the output (right), "
                  "Pre-LN's is flat; the claims table tests exactly the last/first ratio.", fig)


def _first_updates(run: StoredRun) -> Figure:
    c: Config = run.config
    d = max(c.depths)
    fig, axes = plt.subplots(1, len(c.warmups), figsize=(5 * len(c.warmups), 3.8), sharey=True, squeeze=False)
    for j, warm in enumerate(c.warmups):
        ax = axes[0][j]
        for p in c.placements:
            table = _per_layer(run.metrics, "update_rms", p, d, warmup=warm)
            if not table.empty:
                _geo_line(ax, table, COLORS[p], p)
        ax.set_yscale("log")
        ax.set_xlabel("update step")
        ax.set_title("no warmup" if not warm else f"warmup {warm} steps")
    axes[0][0].set_ylabel("RMS change of the last hidden state since init")
    axes[0][0].legend(fontsize=8)
    fig.suptitle(f"Size of the first updates, depth {d} (DeepNet's ||ΔF||)")
    fig.tight_layout()
    return Figure("first_updates", "Size of the first updates (DeepNet's account of Post-LN's failure)",
                  "How far the model's last hidden state (what the LM head reads; normalized in every placement, "
                  "so comparable) on a fixed batch has moved from its initial value after each of the first "
                  "updates. DeepNet: Post-LN's early updates are large, which pushes its LayerNorm inputs into a "
                  "regime where gradients vanish; DeepNorm bounds them. Warmup shrinks the first updates for every "
                  "placement.", fig)


def _stream(run: StoredRun) -> Figure:
    c: Config = run.config
    d = max(c.depths)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, metric in ((axes[0], "stream_rms"), (axes[1], "stream_maxabs")):
        for p in c.placements:
            table = _per_layer(run.metrics, metric, p, d)
            if not table.empty:
                _geo_line(ax, table, COLORS[p], p)
        ax.set_yscale("log")
        ax.set_xlabel("layer (0 = embeddings)")
        ax.set_ylabel({"stream_rms": "RMS of the residual stream", "stream_maxabs": "max |value| in the stream"}[metric])
    axes[0].legend(fontsize=8)
    fig.suptitle(f"Residual stream after training, depth {d}, no warmup (geometric mean over seeds and norms)")
    fig.tight_layout()
    return Figure("residual_stream", "Residual stream magnitude after training (value explosion)",
                  "The residual stream x after each block, on a fixed validation batch, after training. Post-LN "
                  "and DeepNorm renormalize it in every block (flat near 1); Pre-LN adds unnormalized branch "
                  "outputs, so it can grow with depth; Sandwich-LN normalizes each branch before adding it.", fig)


def _curves(run: StoredRun) -> Figure:
    c: Config = run.config
    d = max(c.depths)
    m = training_rows(run.metrics)
    fig, axes = plt.subplots(1, len(c.warmups), figsize=(5 * len(c.warmups), 3.8), sharey=True, squeeze=False)
    for j, warm in enumerate(c.warmups):
        ax = axes[0][j]
        for p in c.placements:
            sel = m[(m["metric"] == "train_loss") & (m["placement"] == p) & (m["depth"] == d) & (m["warmup"] == warm)]
            if sel.empty:
                continue
            g = sel.groupby("step")["value"]
            ax.plot(g.mean().index, g.mean().to_numpy(), color=COLORS[p], label=p)
            ax.fill_between(g.min().index, g.min().to_numpy(), g.max().to_numpy(), color=COLORS[p], alpha=0.15)
        ax.set_xlabel("step")
        ax.set_title("no warmup" if not warm else f"warmup {warm} steps")
    axes[0][0].set_ylabel("training loss (nats/char)")
    axes[0][0].legend(fontsize=8)
    fig.suptitle(f"Training loss at depth {d} (mean over seeds and norms; band = min..max)")
    fig.tight_layout()
    return Figure("loss_curves", f"Training loss curves at depth {d}",
                  "Training loss (mean over each logging window) per placement; the band spans all runs. A flat "
                  "line near the start value is a run that never learned from context.", fig)
