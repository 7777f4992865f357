"""sync-bn's figures: test error against the images per rank for BN, SyncBN and GN beside Wu & He's cited
trend, and SyncBN's paired gain over BN at each per-rank batch."""

from __future__ import annotations

import matplotlib.pyplot as plt

from normlab.engine.spec import Figure, StoredRun
from normlab.kit import stats
from normlab.studies.batch_size.config import GN_PAPER_ERROR, GN_PAPER_IMAGES_PER_GPU
from normlab.studies.sync_bn.claims import has, values
from normlab.studies.sync_bn.config import ARM_LABELS, Config

CITED_LABELS = {"batchnorm": "BN", "groupnorm": "GN"}
COLORS = {"batchnorm": "tab:blue", "syncbn": "tab:orange", "groupnorm": "tab:green"}  # the cited lines match


def figures(run: StoredRun) -> list[Figure]:
    return [_error_figure(run), _gain_figure(run)]


def _plot(ax, x, ivs, label, **kw) -> None:
    line = ax.plot(x, [iv.mean for iv in ivs], marker="o", label=label, **kw)[0]
    ax.fill_between(x, [iv.lo for iv in ivs], [iv.hi for iv in ivs], color=line.get_color(), alpha=0.15)


def _size_axis(ax, sizes, label: str) -> None:
    """Log-scaled axis labelled at the sizes only, largest on the left (the GN paper's order)."""
    ax.set(xscale="log", xlabel=label)
    ax.set_xticks(sorted(sizes), [str(b) for b in sorted(sizes)])
    ax.minorticks_off()
    ax.invert_xaxis()


def _error_figure(run: StoredRun) -> Figure:
    c: Config = run.config
    fig, (ax, ref) = plt.subplots(1, 2, figsize=(11, 4))
    for arm in c.arms:
        xs = [b for b in sorted(c.per_rank_batches) if has(run, arm, b)]
        if xs:
            _plot(ax, xs, [stats.mean_ci(100 * (1 - values(run, arm, b))) for b in xs], ARM_LABELS[arm],
                  color=COLORS[arm])
    _size_axis(ax, c.per_rank_batches, "images per rank (b)")
    ax.set(ylabel="test error (%)", title=f"measured: {c.ranks} ranks, global batch {c.ranks}b, lr x {c.ranks}b")
    ax.legend(fontsize=8)
    for norm, errs in GN_PAPER_ERROR.items():
        ref.plot(GN_PAPER_IMAGES_PER_GPU, errs, marker="s", mfc="none", color=COLORS[norm],
                 label=f"{CITED_LABELS[norm]} (cited)")
    _size_axis(ref, GN_PAPER_IMAGES_PER_GPU, "images per GPU")
    ref.set(ylabel="ImageNet val error (%)", title="cited reference: Wu & He 2018, ResNet-50, 8 GPUs")
    ref.legend(fontsize=8)
    fig.tight_layout()
    return Figure(
        "error_vs_images_per_rank", "Test error vs images per rank: BN, SyncBN, GN, beside Wu & He's trend",
        f"Left: our test error (%) against b, the images each of {c.ranks} ranks trains on per step (largest on "
        f"the left, as in the GN paper), mean and 95% CI over {c.seeds} seeds (running statistics). At one b every "
        "arm shares the global batch, lr, data order and initial weights; BN normalizes over each rank's b images, "
        f"SyncBN over all {c.ranks}b, GN over each image alone. Across b the global batch and lr change too: GN's "
        "line shows what that change does without batch statistics. Right: cited reference data, not measured "
        "here (Wu & He 2018, ImageNet error by images per GPU; they had no SyncBN line). BN degrading while "
        "SyncBN and GN stay flat would match their attribution; BN as flat as the others would not. Compare "
        "shapes, not levels.", fig)


def _gain_figure(run: StoredRun) -> Figure:
    c: Config = run.config
    fig, ax = plt.subplots(figsize=(6, 4))
    xs = [b for b in sorted(c.per_rank_batches) if has(run, "syncbn", b) and has(run, "batchnorm", b)]
    for metric, label, style in (("test_acc", "running statistics", {}),
                                 ("test_acc_recalibrated", "both recalibrated (control)",
                                  {"ls": "--", "color": "grey"})):
        if xs:
            _plot(ax, xs, [stats.mean_ci(100 * (values(run, "syncbn", b, metric) - values(run, "batchnorm", b, metric)))
                           for b in xs], label, **style)  # per seed: same init, data order, global batch, lr
    ax.axhline(0, color="grey", lw=0.5)
    _size_axis(ax, c.per_rank_batches, "images per rank (b)")
    ax.set(ylabel="SyncBN minus BN test accuracy (points)", title="What SyncBN buys at each per-rank batch")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return Figure(
        "syncbn_gain", "SyncBN's accuracy gain over per-rank BN at each per-rank batch (paired by seed)",
        "Per seed, SyncBN's test accuracy minus BN's at the same b (same global batch, lr, data order and initial "
        "weights: only the statistics batch differs), mean and 95% CI over seeds. Solid: with the running "
        "statistics; dashed grey: after recalibrating both models' running statistics on the training set. "
        "Above 0: synchronizing the statistics helps; a gain that grows as b shrinks is Wu & He's attribution.",
        fig)
