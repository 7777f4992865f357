"""batch-size's verdicts: does BN lose accuracy at small batches, does GN not, and how much is BN's running
statistics (the recalibrated control)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from normlab.engine.spec import Claim, StoredRun
from normlab.kit import stats
from normlab.studies.batch_size.config import SOURCE, Config


def values(run: StoredRun, norm: str, batch: int, metric: str) -> np.ndarray:
    """One metric of ``norm`` at ``batch``, one value per seed in seed order."""
    m = run.metrics
    sel = (m["arm"] == norm) & (m["batch_size"] == batch) & (m["metric"] == metric)
    return m[sel].sort_values("seed")["value"].to_numpy(dtype=float)


def claims(run: StoredRun) -> list[Claim]:
    c: Config = run.config
    small, ref = min(c.batch_sizes), c.reference_batch
    acc = lambda norm, b, metric="test_acc": values(run, norm, b, metric)  # noqa: E731
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


def notes(run: StoredRun) -> str:
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
