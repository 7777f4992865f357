"""batch-size's figures: test error against BN's statistics batch (ghost design) beside the GN paper's cited
trend, the error increase relative to the reference, the training curves (the plateau), and the plain
(confounded) batch-size sweep."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from normlab.engine.spec import Figure, StoredRun
from normlab.kit import stats
from normlab.studies.batch_size.claims import curve_steps, has, values
from normlab.studies.batch_size.config import GN_PAPER_ERROR, GN_PAPER_IMAGES_PER_GPU, NORM_LABELS, Config


def figures(run: StoredRun) -> list[Figure]:
    return [_ghost_figure(run), _degradation_figure(run), _plateau_figure(run), _plain_figure(run)]


def _sizes(run: StoredRun, norm: str, design: str) -> list[int]:
    c: Config = run.config
    pool = (c.ghost_sizes if norm == "batchnorm" else c.control_ghost_sizes) if design == "ghost" else c.batch_sizes
    return [s for s in sorted(pool) if has(run, norm, design, s)]


def _percent(proportions) -> stats.Interval:
    """Mean over seeds of a per-seed rate (an error or an accuracy) in %, with its 95% interval kept inside
    [0, 100] (:func:`normlab.kit.stats.proportion_ci`)."""
    iv = stats.proportion_ci(proportions)
    return stats.Interval(100 * iv.mean, 100 * iv.lo, 100 * iv.hi, iv.n, 100 * iv.sd)


def _plot_error(ax, x, ivs, label, **kw) -> None:
    line = ax.plot(x, [iv.mean for iv in ivs], marker="o", label=label, **kw)[0]
    ax.fill_between(x, [iv.lo for iv in ivs], [iv.hi for iv in ivs], color=line.get_color(), alpha=0.15)


def _size_ticks(ax, sizes) -> None:
    """Log-scaled axis labelled at the sizes only, largest on the left (the GN paper's order)."""
    ax.set_xticks(sorted(sizes), [str(b) for b in sorted(sizes)])
    ax.minorticks_off()
    ax.invert_xaxis()


def _cited(ax) -> None:
    for norm, errs in GN_PAPER_ERROR.items():
        ax.plot(GN_PAPER_IMAGES_PER_GPU, errs, marker="s", mfc="none", label=f"{NORM_LABELS[norm]} (cited)")
    ax.set(xscale="log", xlabel="images per GPU", ylabel="ImageNet val error (%)",
           title="cited reference: Wu & He 2018, ResNet-50")
    _size_ticks(ax, GN_PAPER_IMAGES_PER_GPU)
    ax.legend(fontsize=8)


def _error_lines(ax, run: StoredRun, design: str, norms) -> None:
    for norm in norms:
        xs = _sizes(run, norm, design)
        if xs:
            _plot_error(ax, xs, [_percent(1 - values(run, norm, design, s)) for s in xs],
                        NORM_LABELS[norm] + (" (control)" if design == "ghost" and norm != "batchnorm" else ""))
    xs = _sizes(run, "batchnorm", design) if "batchnorm" in norms else []
    if xs:
        _plot_error(ax, xs, [_percent(1 - values(run, "batchnorm", design, s, "test_acc_recalibrated")) for s in xs],
                    "BN, recalibrated (control)", ls="--", color="grey")


def _ghost_figure(run: StoredRun) -> Figure:
    c: Config = run.config
    fig, (ax, ref) = plt.subplots(1, 2, figsize=(11, 4))
    _error_lines(ax, run, "ghost", c.norms)
    ax.set(xscale="log", xlabel="BN statistics batch (ghost size g)", ylabel="test error (%)",
           title=f"measured: optimiser batch {c.optimiser_batch} fixed, {c.epochs:g} epochs")
    _size_ticks(ax, c.ghost_sizes)
    ax.legend(fontsize=7)
    _cited(ref)
    fig.tight_layout()
    return Figure(
        "error_vs_ghost", "Test error vs BatchNorm's statistics batch (ghost batches), beside the GN paper's trend",
        f"Left: our test error (%) against the number of images BatchNorm's statistics average over (largest on the "
        f"left, as in the GN paper), mean and 95% CI over {c.seeds} seeds. Every point trained the same way: "
        f"optimiser batch {c.optimiser_batch}, lr {c.lr:g}, {c.epochs:g} epochs, seed s's initial weights and data "
        "order; only BN's statistics batch changes. The other norms (controls) never read g and are drawn where "
        "they ran. Dashed grey: BN after recalibrating its running statistics on the training set. Right: cited "
        "reference data, not measured here (Wu & He 2018, ResNet-50 on ImageNet, error by images per GPU; there "
        "the total batch and lr shrink with the per-GPU batch too). Compare shapes, not levels.", fig)


def _degradation_figure(run: StoredRun) -> Figure:
    c: Config = run.config
    ref = c.reference_ghost
    fig, ax = plt.subplots(figsize=(6, 4))
    for norm in c.norms:
        xs = _sizes(run, norm, "ghost")
        if ref not in xs:
            continue
        base = values(run, norm, "ghost", ref)
        _plot_error(ax, xs, [stats.mean_ci(100 * (base - values(run, norm, "ghost", g))) for g in xs],
                    NORM_LABELS[norm])  # per seed: same init and data order at every g
    for norm, errs in GN_PAPER_ERROR.items():
        base = errs[GN_PAPER_IMAGES_PER_GPU.index(32)]
        ax.plot(GN_PAPER_IMAGES_PER_GPU, [e - base for e in errs], ls=":", marker="s", mfc="none", color="k",
                alpha=0.5 if norm == "groupnorm" else 0.9, label=f"{NORM_LABELS[norm]} ImageNet (cited)")
    ax.axhline(0, color="grey", lw=0.5)
    ax.set(xscale="log", xlabel="statistics batch (ghost size; images per GPU for cited)",
           ylabel=f"error increase vs g={ref} (points)", title="Degradation as BN's statistics batch shrinks")
    _size_ticks(ax, sorted(set(c.ghost_sizes) | set(GN_PAPER_IMAGES_PER_GPU)))
    ax.legend(fontsize=7)
    fig.tight_layout()
    return Figure(
        "degradation", "Error increase relative to the whole-batch statistics (ghost design)",
        f"Each line: how many points of test error a norm loses at each ghost size compared with g={ref} (per "
        "seed, same initial weights and data order; mean and 95% CI). Dotted black: the same quantity from the "
        "GN paper's cited ImageNet numbers relative to 32 images per GPU. Lines above 0 degrade.", fig)


def _plateau_figure(run: StoredRun) -> Figure:
    c: Config = run.config
    fig, ax = plt.subplots(figsize=(6.5, 4))
    images = run.extra["data"]["train_size"].iloc[0] if "data" in run.extra and len(run.extra["data"]) else 1
    colors = {"groupnorm": "tab:orange", "layernorm": "tab:green", "instancenorm": "tab:red", "none": "tab:purple"}
    bn_sizes = _sizes(run, "batchnorm", "ghost") if "batchnorm" in c.norms else []
    for norm in c.norms:
        for g in _sizes(run, norm, "ghost"):
            steps = curve_steps(run, norm, g)
            if not steps:
                continue
            ivs = [_percent(values(run, norm, "ghost", g, "test_acc_curve", s)) for s in steps]
            epochs = np.asarray(steps) * c.optimiser_batch / images
            if norm == "batchnorm":  # blues, darker for larger g; the reference thick
                shade = 0.35 + 0.6 * bn_sizes.index(g) / max(1, len(bn_sizes) - 1)
                style = {"ls": "-", "color": plt.cm.Blues(shade), "lw": 2.5 if g == c.reference_ghost else 1.2}
            else:
                style = {"ls": ":" if g == c.reference_ghost else "--", "color": colors[norm]}
            _plot_error(ax, epochs, ivs, f"{NORM_LABELS[norm]} g={g}", **style)
    ax.set(xlabel="epochs", ylabel="test accuracy (%)", title="Training curves (ghost design): the plateau")
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    return Figure(
        "plateau", "Test accuracy during training, every ghost-design cell",
        f"Test accuracy (%) at {c.checkpoints} evenly spaced checkpoints, mean and 95% CI over seeds. The thick line "
        f"is the reference cell (BN, statistics over the whole batch of {c.reference_ghost}); the claim "
        "design-plateau checks that it stopped improving (last checkpoint vs the one at "
        f"{c.plateau_from:g} of training). Solid blues: BN at each ghost size (darker = more images); dashed and "
        "dotted: the controls at the smallest and the largest ghost size (one line where they coincide).", fig)


def _plain_figure(run: StoredRun) -> Figure:
    c: Config = run.config
    fig, ax = plt.subplots(figsize=(6, 4))
    _error_lines(ax, run, "plain", c.plain_norms)
    ax.set(xscale="log", xlabel="batch size", ylabel="test error (%)",
           title=f"plain sweep (confounded): {c.plain_epochs:g} epochs, lr x batch")
    _size_ticks(ax, c.batch_sizes)
    ax.legend(fontsize=7)
    fig.tight_layout()
    small, ref = min(c.batch_sizes), max(c.batch_sizes)
    return Figure(
        "plain_sweep", "Test error vs batch size, the plain (confounded) sweep",
        f"Test error (%) against the batch size itself, mean and 95% CI over {c.seeds} seeds. Every run saw "
        f"{c.plain_epochs:g} epochs of examples with lr = {c.lr:g} x batch/{c.optimiser_batch}, so batch {small} took "
        f"{ref // small}x the steps of batch {ref} at 1/{ref // small} of its lr: a change for every norm, not only BN. "
        "The no-norm line shows what that change does without any statistics.", fig)
