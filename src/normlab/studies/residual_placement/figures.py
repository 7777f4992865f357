"""residual-placement: the figures, drawn from the stored metrics (the same selections as the claims)."""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from normlab.engine.spec import Figure, StoredRun
from normlab.kit import stats
from normlab.kit.plots import shared_legend
from normlab.studies.residual_placement.claims import _select, final_values, training_rows
from normlab.studies.residual_placement.config import COLORS, Config


def figures(run: StoredRun) -> list[Figure]:
    return [_loss_vs_depth(run), _stability_map(run), _init_grads(run), _first_updates(run), _stream(run),
            _curves(run)]


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
    fig, axes = plt.subplots(1, len(c.lrs), figsize=(5 * len(c.lrs), 3.8), sharey=True, squeeze=False)
    for j, lr in enumerate(c.lrs):
        ax = axes[0][j]
        for p in c.placements:
            sel = _select(f, placement=p, lr=lr, warmup=0, norm="layernorm")
            pts = [(d, *_mean_ci(sel[sel["depth"] == d]["value"].to_numpy(dtype=float))) for d in c.depths]
            d_, mu, half = (np.array(x, dtype=float) for x in zip(*pts, strict=True))
            ax.errorbar(d_, mu, yerr=half, marker="o", capsize=3, color=COLORS[p], label=p)
        if len(uni):
            ax.axhline(float(uni.iloc[0]), color="black", ls="--", lw=1, label="unigram model")
        ax.set_title(f"LayerNorm, lr {lr:g}, no warmup")
        ax.set_xlabel("depth (blocks)")
        ax.set_xticks(list(c.depths))
    axes[0][0].set_ylabel("final validation loss (nats/char)")
    axes[0][0].legend(fontsize=8)
    fig.suptitle(f"Validation loss after {c.steps} steps vs depth (mean ± 95% CI over {c.seeds} seeds)")
    fig.tight_layout()
    return Figure("val_loss_vs_depth", "Validation loss vs depth, per placement and learning rate",
                  "Each point is the final validation loss (held-out plays) averaged over seeds, with a 95% "
                  "interval; lower is better. The dashed line is the unigram model: a run at or above it learned "
                  "nothing from context. One panel per learning rate of the stability map.", fig)


def _stability_map(run: StoredRun) -> Figure:
    c: Config = run.config
    f = final_values(run.metrics, "diverged")
    fig, axes = plt.subplots(1, len(c.placements), figsize=(3.2 * len(c.placements), 3.2), squeeze=False)
    for k, p in enumerate(c.placements):
        ax = axes[0][k]
        grid = np.full((len(c.lrs), len(c.depths)), np.nan)
        for i, lr in enumerate(c.lrs):
            for j, d in enumerate(c.depths):
                v = _select(f, placement=p, depth=d, lr=lr, warmup=0, norm="layernorm")["value"]
                if len(v):
                    grid[i, j] = v.mean()
                    ax.text(j, i, f"{int(v.sum())}/{len(v)}", ha="center", va="center", fontsize=9)
        ax.imshow(grid, vmin=0, vmax=1, cmap="Reds", origin="lower", aspect="auto")
        ax.set_xticks(range(len(c.depths)), [str(d) for d in c.depths])
        ax.set_yticks(range(len(c.lrs)), [f"{lr:g}" for lr in c.lrs])
        ax.set_xlabel("depth")
        ax.set_title(p)
    axes[0][0].set_ylabel("learning rate")
    fig.suptitle(f"Stability map: runs diverged of {c.seeds} seeds (LayerNorm, no warmup, {c.steps} steps)")
    fig.tight_layout()
    return Figure("stability_map", "Stability map: divergence by depth x learning rate",
                  "Each square counts the seeds whose run diverged: blew up (non-finite loss, or training loss far "
                  "above its start) or never left the unigram plateau after all steps. White = every seed trained, "
                  "dark red = every seed failed.", fig)


def _per_layer(m: pd.DataFrame, metric: str, placement: str, **where) -> pd.DataFrame:
    sel = _select(training_rows(m)[lambda d: d["metric"] == metric], placement=placement, **where)
    return sel.pivot_table(index=["norm", "lr", "warmup", "seed"], columns="step", values="value", aggfunc="first")


def _geo_line(ax, table: pd.DataFrame, color: str, label: str, **kw) -> None:
    logv = np.log10(table.where(table > 0))
    mean = logv.mean()
    half = (logv.std(ddof=1) * 1.96 / np.sqrt(logv.count())).fillna(0)
    xs = mean.index.to_numpy()
    ax.plot(xs, 10**mean, color=color, marker=".", label=label, **kw)
    ax.fill_between(xs, 10 ** (mean - half), 10 ** (mean + half), color=color, alpha=0.2)


def _init_grads(run: StoredRun) -> Figure:
    c: Config = run.config
    d = max(c.depths)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=False)
    for ax, metric, what in ((axes[0], "init_grad_ffn", "||dL/dW|| of the FFN output weight"),
                             (axes[1], "init_grad_block", "||dL/dθ|| of all block parameters")):
        for p in c.placements:
            table = _per_layer(run.metrics, metric, p, depth=d, lr=c.low_lr, warmup=0, norm="layernorm")
            if not table.empty:
                _geo_line(ax, table, COLORS[p], p)
        ax.set_yscale("log")
        ax.set_xlabel("layer (1 = next to the embedding, right = next to the output)")
        ax.set_ylabel(what)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"Gradient norm per layer at initialization, depth {d}, LayerNorm (geometric mean over seeds)")
    fig.tight_layout()
    return Figure("init_grad_per_layer", "Gradient norm per layer at initialization (Xiong et al. 2020, Fig. 3)",
                  "One batch, no update. Each line is a layer's gradient norm, geometric mean over seeds with a 95% "
                  "band, log scale. Xiong et al.: Post-LN's line rises toward the output (right), Pre-LN's is flat; "
                  "the claims table tests the last/first ratio.", fig)


def _first_updates(run: StoredRun) -> Figure:
    c: Config = run.config
    d = max(c.depths)
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), squeeze=False)
    for ax, metric, what in ((axes[0][0], "update_rms", "RMS change of the last hidden state since init"),
                             (axes[0][1], "weight_update_rel", "||θ - θ_0|| / ||θ_0|| of the block parameters")):
        for p in c.placements:
            table = _per_layer(run.metrics, metric, p, depth=d, lr=c.high_lr, warmup=0, norm="layernorm")
            if not table.empty:
                _geo_line(ax, table, COLORS[p], p)
        ax.set_yscale("log")
        ax.set_xlabel("update step")
        ax.set_ylabel(what)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(f"Size of the first updates, depth {d}, lr {c.high_lr:g}, no warmup (geometric mean over seeds)")
    fig.tight_layout()
    return Figure("first_updates", "Size of the first updates: the model (DeepNet's ||ΔF||) and the parameters",
                  "Left: how far the model's last hidden state (what the LM head reads) on a fixed batch has moved "
                  "from its initial value after each of the first updates (DeepNet's ||ΔF||). Right: the relative "
                  "change of the block parameters. DeepNet: DeepNorm bounds the first; the seed speaks of the second.",
                  fig)


def _stream(run: StoredRun) -> Figure:
    c: Config = run.config
    d = max(c.depths)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, metric in ((axes[0], "stream_rms"), (axes[1], "stream_maxabs")):
        for p in c.placements:
            table = _per_layer(run.metrics, metric, p, depth=d, warmup=0)
            if not table.empty:
                _geo_line(ax, table, COLORS[p], p)
        ax.set_yscale("log")
        ax.set_xlabel("layer (0 = embeddings)")
        ax.set_ylabel({"stream_rms": "RMS of the residual stream", "stream_maxabs": "max |value| in the stream"}[metric])
    axes[0].legend(fontsize=8)
    fig.suptitle(f"Residual stream after training, depth {d}, no warmup (geometric mean over runs)")
    fig.tight_layout()
    return Figure("residual_stream", "Residual stream magnitude after training (value explosion)",
                  "The residual stream x after each block, on a fixed validation batch, after training (all "
                  "learning rates and norms). Post-LN and DeepNorm renormalize it in every block; Pre-LN adds "
                  "unnormalized branch outputs, so it can grow with depth; Sandwich-LN normalizes each branch "
                  "before adding it.", fig)


def _curves(run: StoredRun) -> Figure:
    c: Config = run.config
    d = max(c.depths)
    m = training_rows(run.metrics)
    fig, axes = plt.subplots(1, len(c.lrs), figsize=(5 * len(c.lrs) + 1.5, 3.8), sharey=True, squeeze=False,
                             layout="constrained")
    for j, lr in enumerate(c.lrs):
        ax = axes[0][j]
        for p in c.placements:
            for warm, ls in ((0, "-"), (c.warmup, ":")):
                sel = _select(m[m["metric"] == "train_loss"], placement=p, depth=d, lr=lr, warmup=warm,
                              norm="layernorm")
                if sel.empty:
                    continue
                g = sel.groupby("step")["value"]
                label = p + ("" if not warm else f" + warmup {warm}")
                ax.plot(g.mean().index, g.mean().to_numpy(), color=COLORS[p], ls=ls, label=label)
                ax.fill_between(g.min().index, g.min().to_numpy(), g.max().to_numpy(), color=COLORS[p], alpha=0.12)
        ax.set_xlabel("step")
        ax.set_title(f"lr {lr:g}")
    axes[0][0].set_ylabel("training loss (nats/char)")
    # One legend for both panels: the warmup arms run only at the highest learning rate's panel.
    shared_legend(fig, axes.ravel())
    fig.suptitle(f"Training loss at depth {d}, LayerNorm (mean over seeds; band = min..max)")
    return Figure("loss_curves", f"Training loss curves at depth {d}",
                  "Training loss (mean over each logging window) per placement; the band spans all seeds; dotted: "
                  "the warmup arms. A flat line near 3.3 is a run on the unigram plateau.", fig)
