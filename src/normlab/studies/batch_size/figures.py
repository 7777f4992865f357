"""batch-size's figures: test error against batch size beside the GN paper's cited trend, and each norm's
error increase relative to the reference batch."""

from __future__ import annotations

import matplotlib.pyplot as plt

from normlab.engine.spec import Figure, StoredRun
from normlab.kit import stats
from normlab.studies.batch_size.claims import values
from normlab.studies.batch_size.config import GN_PAPER_ERROR, GN_PAPER_IMAGES_PER_GPU, NORM_LABELS, Config


def figures(run: StoredRun) -> list[Figure]:
    return [_accuracy_figure(run), _degradation_figure(run)]


def _curve(run: StoredRun, norm: str, metric: str = "test_acc") -> tuple[list[int], list[stats.Interval]]:
    c: Config = run.config
    bs = sorted(c.batch_sizes)
    return bs, [stats.mean_ci(100 * (1 - values(run, norm, b, metric))) for b in bs]


def _plot_error(ax, x, ivs, label, **kw) -> None:
    line = ax.plot(x, [iv.mean for iv in ivs], marker="o", label=label, **kw)[0]
    ax.fill_between(x, [iv.lo for iv in ivs], [iv.hi for iv in ivs], color=line.get_color(), alpha=0.15)


def _batch_ticks(ax, sizes) -> None:
    """Log-scaled batch axis labelled at the batch sizes only, largest on the left (the GN paper's order)."""
    ax.set_xticks(sorted(sizes), [str(b) for b in sorted(sizes)])
    ax.minorticks_off()
    ax.invert_xaxis()


def _accuracy_figure(run: StoredRun) -> Figure:
    c: Config = run.config
    fig, (ax, ref) = plt.subplots(1, 2, figsize=(11, 4))
    for norm in c.norms:
        bs, ivs = _curve(run, norm)
        _plot_error(ax, bs, ivs, NORM_LABELS[norm])
    if "batchnorm" in c.norms:
        bs, ivs = _curve(run, "batchnorm", "test_acc_recalibrated")
        _plot_error(ax, bs, ivs, "BN, recalibrated (control)", ls="--", color="grey")
    ax.set(xscale="log", xlabel="batch size", ylabel="test error (%)", title=f"measured: {c.dataset}, small CNN")
    _batch_ticks(ax, c.batch_sizes)
    ax.legend(fontsize=8)
    for norm, errs in GN_PAPER_ERROR.items():
        ref.plot(GN_PAPER_IMAGES_PER_GPU, errs, marker="s", mfc="none", label=f"{NORM_LABELS[norm]} (cited)")
    ref.set(xscale="log", xlabel="images per GPU", ylabel="ImageNet val error (%)",
            title="cited reference: Wu & He 2018, ResNet-50")
    _batch_ticks(ref, GN_PAPER_IMAGES_PER_GPU)
    ref.legend(fontsize=8)
    fig.tight_layout()
    return Figure(
        "error_vs_batch", "Test error vs batch size per norm, beside the GroupNorm paper's trend",
        f"Left: our test error (%) per norm against batch size (largest on the left, as in the GN paper), mean "
        f"and 95% CI over {c.seeds} seeds; every point saw the same number of training examples. The dashed "
        "grey line is BN with its running statistics recalibrated on the training set. Right: cited reference "
        "data, not measured here (Wu & He 2018: ResNet-50 on ImageNet, error by images per GPU): BN's error "
        "rises as the batch shrinks, GN's stays flat. Read the left panel for the same shape.", fig)


def _degradation_figure(run: StoredRun) -> Figure:
    c: Config = run.config
    fig, ax = plt.subplots(figsize=(6, 4))
    for norm in c.norms:
        bs = sorted(c.batch_sizes)
        ref = values(run, norm, c.reference_batch, "test_acc")
        ivs = [stats.mean_ci(100 * (ref - values(run, norm, b, "test_acc"))) for b in bs]  # per seed
        _plot_error(ax, bs, ivs, NORM_LABELS[norm])
    for norm, errs in GN_PAPER_ERROR.items():
        base = errs[GN_PAPER_IMAGES_PER_GPU.index(32)]
        ax.plot(GN_PAPER_IMAGES_PER_GPU, [e - base for e in errs], ls=":", marker="s", mfc="none", color="k",
                alpha=0.5 if norm == "groupnorm" else 0.9, label=f"{NORM_LABELS[norm]} ImageNet (cited)")
    ax.axhline(0, color="grey", lw=0.5)
    ax.set(xscale="log", xlabel="batch size (images per GPU for cited)",
           ylabel=f"error increase vs batch {c.reference_batch} (points)", title="Degradation at small batch")
    _batch_ticks(ax, c.batch_sizes)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return Figure(
        "degradation", "Error increase relative to the reference batch",
        f"Each line: how many points of test error a norm loses at each batch size compared with batch "
        f"{c.reference_batch} (per seed, same initial weights; mean and 95% CI). Dotted black: the same "
        "quantity from the GN paper's cited ImageNet numbers relative to 32 images per GPU. Lines above 0 "
        "degrade; a norm that does not depend on the batch stays near 0 unless small batches change "
        "optimization for every norm alike (then all lines move together).", fig)
