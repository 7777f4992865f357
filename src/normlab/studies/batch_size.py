"""batch-size (seed 003's BN/LN/IN/GN section; Wu & He 2018): which norms survive small batches.

A small CNN (:class:`normlab.models.cnn.SmallCNN`) trained on real images with BatchNorm, GroupNorm, LayerNorm
(GN with one group), InstanceNorm (GN with one channel per group) or no norm, at batch sizes 2 to 64.

Fair across batch sizes:

* every run sees the same number of training **examples** (``epochs`` passes over ``train_size``
  images), so a batch of 2 takes 32x the steps of a batch of 64;
* the learning rate follows the linear scaling rule (Goyal et al. 2017; the GN paper's ``0.1 N / 256``):
  ``lr = lr_per_32 * batch_size / 32``, SGD with momentum 0.9;
* every norm and batch size starts seed ``s`` from the same ``torch.manual_seed(s)`` initial weights.

BatchNorm is evaluated with its running statistics (momentum 0.1, as trained) and, as a control, after
recalibrating them to the training set's exact statistics: the difference separates "small batches
trained a worse network" from "small batches left noisy running estimates".

The GroupNorm paper's ResNet-50 ImageNet errors are *cited reference data* (Wu & He 2018, Figure 1 /
Table 2), drawn beside our measurements as the trend to compare with; they are not measured here.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import ClassVar

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from normlab.data.images import DATASETS, SPLIT_SIZES, check_subset_sizes, load_images
from normlab.engine.config import (
    Check,
    ConfigError,
    because,
    integer,
    items,
    number,
    one_of,
    optional,
    seeds_check,
)
from normlab.engine.spec import Cell, CellContext, CellResult, Claim, Figure, StoredRun, Study
from normlab.kit import stats
from normlab.models.cnn import (
    CNN_NORMS,
    build_members,
    member_accuracy,
    recalibrate,
    train_members,
)

SOURCE = "seed 003; Wu & He 2018"
# Cited: Wu & He, "Group Normalization", ECCV 2018: ResNet-50 top-1 validation error (%) on ImageNet by
# images per GPU. Reference data for the figure, not a measurement of this study.
GN_PAPER_IMAGES_PER_GPU = (32, 16, 8, 4, 2)
GN_PAPER_ERROR = {"batchnorm": (23.6, 23.7, 24.8, 27.3, 34.7), "groupnorm": (24.1, 24.2, 24.0, 24.2, 24.1)}

NORM_LABELS = {"batchnorm": "BN", "groupnorm": "GN", "layernorm": "LN", "instancenorm": "IN", "none": "no norm"}


@dataclass
class Config:
    dataset: str = "fashion-mnist"  # falls back to "digits" (with a notice) when Fashion-MNIST is absent
    train_size: int | None = 3000  # a fixed random subset of the 60,000 training images
    test_size: int | None = 2000  # ... and of the 10,000 test images
    downsample: int = 2  # average-pool the images by this factor (28x28 -> 14x14): 4x less compute
    epochs: float = 3.0  # examples per run = epochs * train_size, equal for every batch size
    norms: tuple[str, ...] = CNN_NORMS
    batch_sizes: tuple[int, ...] = (2, 4, 8, 16, 32, 64)
    reference_batch: int = 32  # "large batch" for the claims (the GN paper's 32 images per GPU)
    seeds: int = 8
    lr_per_32: float = 0.05  # lr = lr_per_32 * batch_size / 32
    widths: tuple[int, int, int] = (8, 16, 16)
    num_groups: int = 4  # GroupNorm groups (2 or 4 channels per group at these widths)
    equivalence_margin: float = 0.015  # |accuracy change| counted as "does not degrade" (1.5 points)
    degrade_min_effect: float = 0.01  # relative accuracy drop counted as "degrades" (1%)

    checks: ClassVar[dict[str, Check]] = {
        "dataset": one_of(DATASETS),
        "train_size": optional(integer(1, max(n for n, _ in SPLIT_SIZES.values()))),
        "test_size": optional(integer(1, max(n for _, n in SPLIT_SIZES.values()))),
        "downsample": because(integer(1, 7), "28 / 7 = 4 pixels still survive the CNN's two 2x2 max-pools"),
        "epochs": number(0, lo_open=True),
        "norms": items(one_of(CNN_NORMS), unique=True),
        "batch_sizes": items(because(integer(2), "BatchNorm needs two samples per batch"), unique=True),
        "reference_batch": integer(2),
        "seeds": seeds_check(),
        "lr_per_32": number(0, lo_open=True),
        "widths": items(integer(1), min_len=3, max_len=3),
        "num_groups": integer(1),
        "equivalence_margin": number(0, 1),
        "degrade_min_effect": number(0, 1),
    }


class BatchSize(Study):
    name = "batch-size"
    description = "BN vs GN/LN/IN/no norm at batch sizes 2..64 on real images; BN degrades at small batch?"
    seeds_from = ("003",)
    Config = Config
    threads = 1  # small kernels: a second intra-op thread only spin-waits on a busy machine
    quick_overrides: ClassVar[dict] = {
        "dataset": "digits", "train_size": 400, "test_size": None, "epochs": 1.0, "batch_sizes": (2, 16),
        "reference_batch": 16, "seeds": 2, "widths": (4, 8, 8), "num_groups": 2,
    }

    def check_config(self, config: Config) -> None:
        super().check_config(config)
        check_subset_sizes(config.dataset, config.train_size, config.test_size)
        if config.reference_batch not in config.batch_sizes:
            raise ValueError(f"reference_batch {config.reference_batch} must be one of batch_sizes {config.batch_sizes}")
        images = config.train_size or SPLIT_SIZES[config.dataset][0]
        if max(config.batch_sizes) > images:
            raise ConfigError(f"batch_sizes: expected at most the {images} training images per batch, "
                              f"got {max(config.batch_sizes)}")
        if "groupnorm" in config.norms and any(w % min(config.num_groups, w) for w in config.widths):
            raise ConfigError(f"num_groups: expected a divisor of every width {config.widths} (GroupNorm), "
                              f"got {config.num_groups}")

    def cells(self, config: Config) -> list[Cell]:
        seeds = tuple(range(config.seeds))
        return [Cell(norm, seeds, (("batch_size", b),)) for norm in config.norms for b in config.batch_sizes]

    def run_cell(self, config: Config, ctx: CellContext) -> CellResult:
        norm, seeds, batch = ctx.cell.arm, ctx.cell.seeds, ctx.cell.param_dict["batch_size"]
        data = load_images(config.dataset, train_size=config.train_size, test_size=config.test_size,
                           downsample=config.downsample)
        model = build_members(seeds, num_classes=data.num_classes, widths=config.widths, norm=norm,
                              num_groups=config.num_groups)
        examples = round(config.epochs * len(data.x_train))
        lr = config.lr_per_32 * batch / 32
        steps = train_members(model, data.x_train, data.y_train, seeds, batch_size=batch, examples=examples, lr=lr)
        acc = member_accuracy(model.eval(), data.x_test, data.y_test)
        train_acc = member_accuracy(model, data.x_train, data.y_train)
        rows = []
        for s, seed in enumerate(seeds):
            rows += [(seed, steps, "test_acc", float(acc[s])), (seed, steps, "train_acc", float(train_acc[s])),
                     (seed, steps, "lr", lr)]
        if norm == "batchnorm":
            recal = copy.deepcopy(model)
            recalibrate(recal, data.x_train)
            acc_recal = member_accuracy(recal.eval(), data.x_test, data.y_test)
            rows += [(seed, steps, "test_acc_recalibrated", float(acc_recal[s])) for s, seed in enumerate(seeds)]
        metrics = pd.DataFrame(rows, columns=["seed", "step", "metric", "value"])
        # A diverged member predicts from NaN logits: record its accuracy as missing, not as chance.
        finite = torch.stack([p.detach().reshape(model.members, -1).isfinite().all(1) for p in model.parameters()])
        for s, seed in enumerate(seeds):
            if not bool(finite[:, s].all()):
                metrics.loc[metrics["seed"] == seed, "value"] = math.nan
        info = pd.DataFrame({"dataset": [data.name], "notice": [data.notice], "train_size": [len(data.x_train)],
                             "test_size": [len(data.x_test)], "image_size": [data.x_train.shape[-1]]})
        return CellResult(metrics, extra={"data": info})

    def claims(self, run: StoredRun) -> list[Claim]:
        c: Config = run.config
        small, ref = min(c.batch_sizes), c.reference_batch
        acc = lambda norm, b, metric="test_acc": _values(run, norm, b, metric)  # noqa: E731
        out = []
        if "batchnorm" in c.norms:
            out.append(stats.compare_claim(
                "bn-degrades-small-batch", "BatchNorm's accuracy degrades at small batch sizes", SOURCE,
                f"test accuracy, BN at batch {small} vs {ref} (equal examples, linear lr scaling)",
                acc("batchnorm", small), acc("batchnorm", ref), "less", min_effect=c.degrade_min_effect,
                labels=(f"B={small}", f"B={ref}")))
        if "groupnorm" in c.norms:
            out.append(stats.equivalence_claim(
                "gn-stable-small-batch", "GroupNorm's accuracy does not degrade at small batch sizes", SOURCE,
                f"test accuracy, GN at batch {small} minus batch {ref}; equal within ±{c.equivalence_margin:g}",
                acc("groupnorm", small), acc("groupnorm", ref), c.equivalence_margin))
        if {"batchnorm", "groupnorm"} <= set(c.norms):
            # Each seed's own drop (same initial weights at both batch sizes), BN's vs GN's: this removes
            # what small batches do to optimization for every norm alike.
            bn_drop = acc("batchnorm", ref) - acc("batchnorm", small)
            gn_drop = acc("groupnorm", ref) - acc("groupnorm", small)
            out.append(stats.compare_claim(
                "bn-degrades-more-than-gn", "BN loses more accuracy than GN going to small batches", SOURCE,
                f"accuracy at batch {ref} minus at batch {small}, per seed: BN vs GN",
                bn_drop, gn_drop, "greater", effect="cohen_d", labels=("BN drop", "GN drop")))
            recal = acc("batchnorm", small, "test_acc_recalibrated")
            out.append(stats.compare_claim(
                "bn-small-batch-running-stats", "Control: part of BN's small-batch loss is its noisy running "
                "statistics, recovered by recalibrating them on training data", "control",
                f"BN test accuracy at batch {small}: recalibrated vs running statistics",
                recal, acc("batchnorm", small), "greater", paired=True, labels=("recalibrated", "running")))
        return out

    def figures(self, run: StoredRun) -> list[Figure]:
        return [_accuracy_figure(run), _degradation_figure(run)]

    def notes(self, run: StoredRun) -> str:
        c: Config = run.config
        info = run.extra.get("data", pd.DataFrame())
        name = info["dataset"].iloc[0] if len(info) else c.dataset
        notice = info["notice"].iloc[0] if len(info) and info["notice"].iloc[0] else ""
        sizes = (f"{info['train_size'].iloc[0]} training / {info['test_size'].iloc[0]} test images of "
                 f"{info['image_size'].iloc[0]}x{info['image_size'].iloc[0]} pixels" if len(info) else "")
        text = (
            f"Data: {name} ({sizes}, a fixed random subset). Every run sees {c.epochs:g} epochs of training "
            f"examples whatever its batch size; lr = {c.lr_per_32:g} x batch/32 (linear scaling), SGD momentum "
            f"0.9; {c.seeds} seeds per norm and batch size share initial weights across batch sizes. The GN "
            "paper's ImageNet errors are cited reference data for the trend, not measured here: a few thousand "
            "small images and a 3-layer CNN are far from ResNet-50 on ImageNet, so compare shapes, not levels."
        )
        if len(info):
            side, small = int(info["image_size"].iloc[0]), min(c.batch_sizes)
            sides = (side, side // 2, side // 4)  # the three conv stages (max-pool after the first two)
            text += (f"\n\nAt batch {small}, BatchNorm's per-channel statistics average "
                     + ", ".join(f"{small * h * h}" for h in sides)
                     + " values in the three layers (batch x H x W); the GN paper's ResNet-50 at 2 images per "
                     "GPU averages 2 x 7 x 7 = 98 in its last stage.")
        return text + (f"\n\n**Dataset notice:** {notice}" if notice else "")


def _values(run: StoredRun, norm: str, batch: int, metric: str) -> np.ndarray:
    m = run.metrics
    sel = (m["arm"] == norm) & (m["batch_size"] == batch) & (m["metric"] == metric)
    return m[sel].sort_values("seed")["value"].to_numpy(dtype=float)


def _curve(run: StoredRun, norm: str, metric: str = "test_acc") -> tuple[list[int], list[stats.Interval]]:
    c: Config = run.config
    bs = sorted(c.batch_sizes)
    return bs, [stats.mean_ci(100 * (1 - _values(run, norm, b, metric))) for b in bs]


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
        ref = _values(run, norm, c.reference_batch, "test_acc")
        ivs = [stats.mean_ci(100 * (ref - _values(run, norm, b, "test_acc"))) for b in bs]  # per seed
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
