"""Figures of the ``overfitting`` study (read from the stored run only)."""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np

from normlab.engine.spec import Figure, StoredRun
from normlab.kit import stats
from normlab.kit.plots import heatmap_over_time, plot_band
from normlab.studies.overfitting.claims import SEED, SWEEP, demo_outputs, final, gap
from normlab.studies.overfitting.config import ARM_STYLE


def figures(run: StoredRun) -> list[Figure]:
    figs = [_seed_plot(run), _curves(run), _summary(run), _size_figure(run), _demo_figure(run)]
    if len(run.probe_histograms):
        figs.insert(2, _distributions(run))
    return figs


def _seed_plot(run: StoredRun) -> Figure:
    c = run.config
    pts, preds = run.extra["points"], run.extra["predictions"]
    pts = pts[(pts["arm"] == "none") & (pts["n_train"] == c.n_train) & (pts["regime"] == SEED)]
    seed = int(pts["seed"].min())
    train, test = pts[pts["set"] == "train"], pts[pts["set"] == "test"]
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8), sharey=True)
    for ax, arm in zip(axes[:2], ("weight_decay", "dropout"), strict=True):
        ax.scatter(train["x"], train["y"], c="blue", s=50, alpha=0.3, label="train")
        ax.scatter(test["x"], test["y"], c="red", s=50, alpha=0.3, label="test (at test_x)")
        for a, ls in (("none", "-"), (arm, "--")):
            p = preds[(preds["arm"] == a) & (preds["n_train"] == c.n_train) & (preds["seed"] == seed)
                      & (preds["regime"] == SEED)]
            loss = final(run, a, c.n_train, "train_mse")[0]
            ax.plot(p["x"], p["pred"], ls, color=ARM_STYLE[a][0], lw=2.5, label=f"{ARM_STYLE[a][1]} (train MSE {loss:.4f})")
        ax.plot([-1, 1], [-c.w, c.w], color="grey", lw=1, ls=":", label=f"truth y = {c.w:g}x")
        ax.set_title(f"{ARM_STYLE[arm][1]} vs none, step {c.steps}, seed {seed}")
        ax.legend(loc="upper left", fontsize=8)
        ax.set_xlabel("x")
    axes[2].scatter(train["x"], train["y"], c="blue", s=50, alpha=0.3, label="train")
    axes[2].scatter(test["y"], test["y"], c="red", s=50, alpha=0.3, label="test as the seed drew it: (test_y, test_y)")
    axes[2].set_title("the post's bug: test points on the diagonal")
    axes[2].legend(loc="upper left", fontsize=8)
    axes[0].set_ylim(-2.5, 2.5)
    fig.tight_layout()
    return Figure(
        "seed_plot", "The post's weight-decay and dropout plots, drawn right (one seed)",
        "Blue: the 10 training points; red: the post's 10 test points at their own x (the seed plotted them at "
        "(test_y, test_y), which lines them up on the diagonal: right panel). Solid red: the unregularized fit; "
        "dashed: weight decay (left) or dropout (middle); dotted: the true line. One seed only: the other "
        "figures give the spread over seeds.", fig)


def _curves(run: StoredRun) -> Figure:
    c, m = run.config, run.metrics
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.2))
    for ax, metric, log in ((axes[0], "train_mse", True), (axes[1], "heldout_mse", True), (axes[2], "weight_norm", False)):
        for arm, (color, label) in ARM_STYLE.items():
            sel = m[(m["arm"] == arm) & (m["n_train"] == c.n_train) & (m["metric"] == metric) & (m["regime"] == SEED)]
            plot_band(ax, sel, label=label, color=color, log=log)
        ax.set_title(metric.replace("_", " "))
        ax.set_xlabel("step")
    axes[1].axhline(c.test_noise**2, color="grey", ls=":", lw=1, label=f"noise floor {c.test_noise**2:g}")
    axes[0].legend()
    axes[1].legend(fontsize=8)
    fig.suptitle(f"mean over {c.seeds} seeds, band = 95% CI (geometric for MSE), {c.n_train} training points")
    fig.tight_layout()
    return Figure(
        "curves", "Train error, held-out error and weight norm over training",
        "Left: train MSE in eval mode; middle: MSE on the held-out set (dotted: the noise floor, the error of "
        "the true line); right: L2 norm of all weight matrices. A widening distance between left and middle is "
        "overfitting; a regularizer helps if its held-out curve ends lower than the unregularized one.", fig)


def _summary(run: StoredRun) -> Figure:
    c = run.config
    arms = list(ARM_STYLE)
    panels = [("train MSE", lambda a: final(run, a, c.n_train, "train_mse")),
              ("held-out MSE", lambda a: final(run, a, c.n_train, "heldout_mse")),
              ("seed's 10-point test MSE", lambda a: final(run, a, c.n_train, "test_mse")),
              ("gap = held-out - train", lambda a: gap(run, a, c.n_train))]
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.6))
    for ax, (title, get) in zip(axes, panels, strict=True):
        for i, arm in enumerate(arms):
            iv = stats.mean_ci(get(arm))
            ax.errorbar(i, iv.mean, yerr=[[iv.mean - iv.lo], [iv.hi - iv.mean]], fmt="o", capsize=5, color=ARM_STYLE[arm][0])
        ax.set_xticks(range(len(arms)), [ARM_STYLE[a][1] for a in arms], fontsize=8)
        ax.set_title(title)
    fig.suptitle(f"step {c.steps}: mean and 95% CI over {c.seeds} seeds")
    fig.tight_layout()
    return Figure(
        "summary", "Final errors and the train/test gap per arm",
        "Each dot is a mean over seeds with its 95% CI. A smaller gap alone is not better generalization: "
        "check that the held-out MSE also falls. The post's own 10-point test set sits at the training x "
        "positions and has only 10 points, so its error is noisier than the held-out one.", fig)


def _size_figure(run: StoredRun) -> Figure:
    c = run.config
    sizes = sorted(c.size_sweep)
    fig, axes = plt.subplots(1, 3, figsize=(16, 4))
    for ax, metric in ((axes[0], "heldout_mse"), (axes[1], "train_mse")):
        for arm in ("none", "dropout"):  # geometric mean and its 95% CI (the axis is logarithmic)
            ivs = [stats.mean_ci(np.log10(final(run, arm, n, metric, SWEEP))) for n in sizes]
            mid = np.array([10**i.mean for i in ivs])
            ax.errorbar(sizes, mid, yerr=[mid - [10**i.lo for i in ivs], [10**i.hi for i in ivs] - mid],
                        fmt="o-", capsize=4, color=ARM_STYLE[arm][0], label=ARM_STYLE[arm][1])
        truth = [float(np.mean(final(run, "none", n, f"truth_{metric}", SWEEP))) for n in sizes]
        ax.plot(sizes, truth, ":", color="grey", label="the true line on the same points")
        ax.set_ylabel(metric.replace("_", " ") + " (eval mode)")
        ax.set_yscale("log")
    ratios = [final(run, "dropout", n, "heldout_mse", SWEEP) / final(run, "none", n, "heldout_mse", SWEEP) for n in sizes]
    ivs = [stats.mean_ci(np.log10(r)) for r in ratios]
    axes[2].errorbar(sizes, [10**i.mean for i in ivs], yerr=[[10**i.mean - 10**i.lo for i in ivs],
                     [10**i.hi - 10**i.mean for i in ivs]], fmt="o-", capsize=4, color="black",
                     label="geometric mean over seeds, 95% CI")
    axes[2].axhline(1.0, color="grey", lw=1)
    axes[2].axhline(1 - c.min_gain, color="grey", lw=1, ls=":", label=f"{c.min_gain:.0%} gain")
    axes[2].set_ylabel("dropout / none (held-out MSE, per seed)")
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xlabel("training points")
        ax.legend(fontsize=8)
    fig.suptitle(f"size sweep: {c.sweep_optimizer}(lr={c.sweep_lr:g}), {c.sweep_steps} full-batch steps at every size, "
                 f"{c.sweep_seeds} seeds", fontsize=10)
    fig.tight_layout()
    return Figure(
        "dropout_vs_size", "Does dropout help more with more data?",
        "Left: held-out MSE with and without dropout at each training-set size (geometric mean, 95% CI; dotted: the true "
        "line's error on the same held-out points, the floor). Middle: train MSE in eval mode (dotted: the true "
        "line's error on the training points; below it the net fits noise, i.e. overfits). Right: the per-seed "
        "ratio dropout/none (geometric mean, 95% CI); below 1 dropout helps, below the dotted line by the "
        "margin the claims use. Srivastava et al. saw no gain on tiny sets and a gain on larger ones.", fig)


def _distributions(run: StoredRun) -> Figure:
    c, h = run.config, run.probe_histograms
    h = h[(h["n_train"] == c.n_train) & h["name"].astype(str).str.endswith("weight")]
    if "regime" in h.columns:
        h = h[h["regime"] == SEED]
    fig, axes = plt.subplots(2, len(ARM_STYLE), figsize=(15, 7), sharex=True)
    fig.subplots_adjust(left=0.06, right=0.9, top=0.9, bottom=0.08, hspace=0.3, wspace=0.3)  # no layout engine: cheap
    mesh = None
    for col, (arm, (_, label)) in enumerate(ARM_STYLE.items()):
        for row, kind in enumerate(("weight", "grad")):
            sel = h[(h["arm"] == arm) & (h["kind"] == kind)]
            ax = axes[row, col]
            if sel.empty:
                ax.text(0.5, 0.5, "no probe data for this arm", ha="center", transform=ax.transAxes)
                continue
            mesh = heatmap_over_time(ax, sel, ylabel=f"{kind} value", linthresh=1e-7)
            ax.set_title(f"{label}: {kind}s of all weight matrices", fontsize=10)
    if mesh is not None:
        fig.colorbar(mesh, cax=fig.add_axes((0.92, 0.15, 0.012, 0.7)), label="fraction of entries (per step)")
    fig.suptitle(f"distributions over training, pooled over {c.seeds} seeds (symmetric log scale)")
    return Figure(
        "distributions", "Weight and gradient distributions over training",
        "Each panel is a heatmap: x = step, y = value on a symmetric log scale (sign × magnitude), color = "
        "the fraction of all weight-matrix entries (top) or of their gradients (bottom) in that bin, pooled "
        "over seeds. A weight band that drifts toward 0 over time is weight decay shrinking the weights; a "
        "gradient band that sinks toward 0 means training has settled, one that stays wide means every step "
        "still pushes (as a fresh dropout mask each step would).", fig)


def _demo_figure(run: StoredRun) -> Figure:
    c = run.config
    train, ev = demo_outputs(run, "train_output"), demo_outputs(run, "eval_output")
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.hist(train, bins=40, density=True, color="tab:green", alpha=0.6, label=f"train mode, {len(train)} draws")
    sd = math.sqrt(c.demo_units * c.dropout / (1 - c.dropout))
    xs = np.linspace(train.min(), train.max(), 200)
    ax.plot(xs, np.exp(-0.5 * ((xs - c.demo_units) / sd) ** 2) / (sd * math.sqrt(2 * math.pi)), color="black",
            lw=1, label="theory: Binomial(n, 1-p)/(1-p), normal approx.")
    for i, v in enumerate(np.unique(ev)[:3]):  # one line if eval is exact, as it should be
        ax.axvline(v, color="tab:blue", lw=2, label=f"eval mode: {v:g} ({np.mean(ev == v):.0%} of draws)" if i < 3 else None)
    ax.axvline(c.demo_seed_output, color="tab:red", ls="--", label=f"the post's draw {c.demo_seed_output:g}")
    ax.set_xlabel("output")
    ax.legend(fontsize=8)
    ax.set_title(f"Dropout({c.dropout:g}) → Linear(weight 1) on ones({c.demo_units}); naive expectation "
                 f"{c.demo_units * (1 - c.dropout):g} is off the chart", fontsize=9)
    fig.tight_layout()
    return Figure(
        "inverted_dropout", "Inverted dropout: the training output keeps its scale",
        "Histogram: the training-mode output over many draws; black: the theoretical distribution "
        "(each kept unit is scaled by 1/(1-p)); blue: the eval output (the same number every draw); red: the "
        "single value the seed printed.", fig)
