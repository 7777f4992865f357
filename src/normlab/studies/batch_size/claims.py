"""batch-size's verdicts.

The ghost design (fixed optimisation, BatchNorm's statistics batch varied) judges the post's attribution:
BN degrades as its statistics batch shrinks, GN (and the other per-sample norms) do not. The plain sweep
(the batch itself varied, equal examples, linear lr scaling) keeps its claims, judged with its confounds
named. Every comparison between cells is paired by seed: seed ``s`` fixes the initial weights and the data
order in every cell, so one seed is one unit however many norms and sizes it spans.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from normlab.engine.spec import Claim, KeyNumber, StoredRun
from normlab.kit import stats
from normlab.studies.batch_size.config import NORM_LABELS, SOURCE, Config

CONTROLS = ("groupnorm", "layernorm", "instancenorm", "none")  # per-sample statistics (or none)
SEED = "seed"  # the unit: one seed = one initial weight draw and one data order, shared by every cell


def values(run: StoredRun, norm: str, design: str, size: int, metric: str = "test_acc",
           step: int | None = None) -> np.ndarray:
    """One metric of ``norm`` in ``design`` at ``size`` (the ghost size, or the batch size of the plain sweep),
    one value per seed in seed order (NaN where a seed is missing); ``step``: that checkpoint only."""
    m = run.metrics
    col = "ghost" if design == "ghost" else "batch_size"
    sel = (m["arm"] == norm) & (m["design"] == design) & (m[col] == size) & (m["metric"] == metric)
    if step is not None:
        sel &= m["step"] == step
    got = m[sel].groupby("seed")["value"].last()
    return got.reindex(range(run.config.seeds)).to_numpy(dtype=float)


def has(run: StoredRun, norm: str, design: str, *sizes: int) -> bool:
    return all(np.isfinite(values(run, norm, design, s)).any() for s in sizes)


def curve_steps(run: StoredRun, norm: str, size: int) -> list[int]:
    m = run.metrics
    sel = (m["arm"] == norm) & (m["design"] == "ghost") & (m["ghost"] == size) & (m["metric"] == "test_acc_curve")
    return sorted(int(s) for s in m.loc[sel, "step"].unique())


def _drop_is_significant(drop: np.ndarray) -> bool:
    """A per-seed accuracy drop (large minus small) significantly above 0 (paired, one-sided at ALPHA)."""
    d = drop[np.isfinite(drop)]
    return d.size >= 2 and stats.paired_t(d, np.zeros_like(d)).p_greater < stats.ALPHA


def _downgrade(claim: Claim, culprits: list[str], why: str) -> Claim:
    """The effect is there, but a control shows it too: the post's attribution is not supported."""
    if claim.verdict == "supported" and culprits:
        claim.verdict = "inconclusive"
        claim.detail += f"; NOT attributed: control {', '.join(culprits)} {why}"
    return claim


def ghost_claims(run: StoredRun) -> list[Claim]:
    c: Config = run.config
    small, ref = min(c.ghost_sizes), c.reference_ghost
    acc = lambda norm, g, metric="test_acc": values(run, norm, "ghost", g, metric)  # noqa: E731
    out: list[Claim] = []
    bn = "batchnorm" in c.norms and has(run, "batchnorm", "ghost", small, ref)
    gn = "groupnorm" in c.norms and has(run, "groupnorm", "ghost", small, ref)
    moved = [NORM_LABELS[n] for n in CONTROLS if n in c.norms and has(run, n, "ghost", small, ref)
             and _drop_is_significant(acc(n, ref) - acc(n, small))]
    fixed = (f"optimiser batch {c.optimiser_batch}, lr {c.lr:g}, {c.epochs:g} epochs, same data order for every "
             "ghost size")
    if bn:
        claim = stats.compare_claim(
            "bn-degrades-small-ghost", "BatchNorm's accuracy degrades as its statistics batch shrinks", SOURCE,
            f"test accuracy, BN with statistics over {small} vs {ref} images ({fixed}); paired by seed",
            acc("batchnorm", small), acc("batchnorm", ref), "less", min_effect=c.degrade_min_effect,
            paired=True, labels=(f"g={small}", f"g={ref}"), unit=SEED, scale="proportion")
        out.append(_downgrade(claim, moved, f"lose(s) accuracy at ghost size {small} as well, so the drop is "
                                            "not BN's statistics alone"))
    if gn:
        out.append(stats.equivalence_claim(
            "gn-stable-small-ghost", "GroupNorm's accuracy does not degrade as the statistics batch shrinks",
            SOURCE, f"test accuracy, GN at ghost size {small} minus {ref} ({fixed}); equal within "
            f"±{c.equivalence_margin:g}, paired by seed (GN never reads the ghost size: this is the design's "
            "check that nothing but BN's statistics changes)",
            acc("groupnorm", small), acc("groupnorm", ref), c.equivalence_margin, paired=True, unit=SEED))
    others = [n for n in ("layernorm", "instancenorm", "none") if n in c.norms and has(run, n, "ghost", small, ref)]
    if others:
        parts = [stats.equivalence_claim("x", "", "", "", acc(n, small), acc(n, ref), c.equivalence_margin,
                                         paired=True, unit=SEED) for n in others]
        verdict = stats.combine_verdicts([p.verdict for p in parts])
        worst = max(parts, key=lambda p: p.p_value if p.p_value is not None else 1.0)
        out.append(Claim(
            "controls-flat-ghost", "Control: LN, IN and no norm do not change with the ghost size (only BN's "
            "statistics vary in this design)", "control",
            f"test accuracy at ghost size {small} minus {ref}, each of {', '.join(NORM_LABELS[n] for n in others)}; "
            f"equal within ±{c.equivalence_margin:g} (TOST, paired by seed); all must hold", verdict, "tost",
            worst.value, p_value=worst.p_value, effect_size=worst.effect_size, ci=worst.ci,
            n=min(p.n or 0 for p in parts), unit=SEED,
            detail="; ".join(f"{NORM_LABELS[n]}: {p.detail}" for n, p in zip(others, parts, strict=True))))
    if bn and gn:
        out.append(stats.compare_claim(
            "bn-below-gn-small-ghost", "At a small statistics batch GroupNorm works better than BatchNorm",
            SOURCE, f"test accuracy at ghost size {small}: BN vs GN, paired by seed",
            acc("batchnorm", small), acc("groupnorm", small), "less", min_effect=c.degrade_min_effect,
            paired=True, labels=("BN", "GN"), unit=SEED, scale="proportion"))
    if bn:
        out.append(stats.compare_claim(
            "bn-small-ghost-running-stats", "Control: part of BN's small-statistics-batch loss is its running "
            "statistics, recovered by recalibrating them on the training set", "control",
            f"BN test accuracy at ghost size {small}: recalibrated vs running statistics, paired by seed",
            acc("batchnorm", small, "test_acc_recalibrated"), acc("batchnorm", small), "greater", paired=True,
            labels=("recalibrated", "running"), unit=SEED, scale="proportion"))
    if "batchnorm" in c.norms and has(run, "batchnorm", "ghost", ref):
        out.append(plateau_claim(run))
    if "batchnorm" in c.norms and "none" in c.norms and has(run, "batchnorm", "ghost", ref) \
            and has(run, "none", "ghost", ref):
        first = curve_steps(run, "batchnorm", ref)[0]
        epochs = first * c.optimiser_batch / _train_images(run)
        out.append(stats.compare_claim(
            "bn-speeds-training", "BatchNorm speeds up training (vs no normalization)", SOURCE,
            f"test accuracy at the first checkpoint ({epochs:.3g} epochs), BN (statistics over the whole batch "
            f"of {ref}) vs no norm, paired by seed",
            values(run, "batchnorm", "ghost", ref, "test_acc_curve", first),
            values(run, "none", "ghost", ref, "test_acc_curve", first), "greater",
            min_effect=c.degrade_min_effect, paired=True, labels=("BN", "no norm"), unit=SEED, scale="proportion"))
    if gn and "none" in c.norms and has(run, "none", "ghost", ref):
        out.append(stats.compare_claim(
            "gn-suits-images", "GroupNorm suits image models: it trains the CNN better than no normalization",
            SOURCE, f"test accuracy at the end ({c.epochs:g} epochs), GN vs no norm, paired by seed",
            acc("groupnorm", ref), acc("none", ref), "greater", min_effect=c.degrade_min_effect, paired=True,
            labels=("GN", "no norm"), unit=SEED, scale="proportion"))
    out += dependence_claims(run)
    return out


def plateau_claim(run: StoredRun) -> Claim:
    """Design check: the reference cell (BN over the whole optimiser batch) has stopped improving: its test
    accuracy at the last checkpoint exceeds the one at ``plateau_from`` of training by less than the margin."""
    c: Config = run.config
    ref = c.reference_ghost
    steps = curve_steps(run, "batchnorm", ref)
    last = steps[-1]
    earlier = min(steps, key=lambda s: abs(s - c.plateau_from * last))
    gain = (values(run, "batchnorm", "ghost", ref, "test_acc_curve", last)
            - values(run, "batchnorm", "ghost", ref, "test_acc_curve", earlier))
    claim = stats.threshold_claim(
        "design-plateau", f"Design check: the reference cell (BN, statistics over {ref}) is trained to a "
        "plateau", "design check",
        f"test accuracy gain from step {earlier} to the last step {last} ({c.epochs:g} epochs), per seed; "
        f"below {c.plateau_margin:g} counts as stopped improving", gain, "less", c.plateau_margin, unit=SEED)
    return claim


def dependence_claims(run: StoredRun) -> list[Claim]:
    """Exact checks on the trained reference models: does a sample's training-mode output change with the
    other images of its batch (batches of 2 vs all of ``dependence_images``)?"""
    c: Config = run.config
    ref, out = c.reference_ghost, []
    tol = c.dependence_tolerance
    if "layernorm" in c.norms and has(run, "layernorm", "ghost", ref):
        dep = values(run, "layernorm", "ghost", ref, "batch_dependence")
        out.append(stats.exact_claim(
            "ln-output-batch-independent", "LayerNorm's output for a sample does not depend on the batch it is "
            "in", SOURCE, f"largest change of any logit over {c.dependence_images} test images and every seed's "
            "trained LN model (training mode), batches of 2 vs all together", float(np.nanmax(dep)), 0.0,
            rtol=0.0, atol=tol))
    if "batchnorm" in c.norms and has(run, "batchnorm", "ghost", ref):
        dep = values(run, "batchnorm", "ghost", ref, "batch_dependence")
        smallest = float(np.nanmin(dep))
        ok = math.isfinite(smallest) and smallest > tol
        out.append(Claim(
            "bn-output-batch-dependent", "BatchNorm's output for a sample depends on the batch it is in "
            "(the quantity the LN check would miss if it could not see a dependence)", SOURCE,
            f"smallest over seeds of the largest logit change, batches of 2 vs all {c.dependence_images} "
            "test images, trained BN model (training mode)",
            "supported" if ok else "refuted", "min_abs_diff", smallest, n=None, unit="exact",
            detail=f"smallest per-seed change {smallest:.3g} vs tolerance {tol:g}"))
    return out


def plain_claims(run: StoredRun) -> list[Claim]:
    c: Config = run.config
    small, ref = min(c.batch_sizes), c.reference_batch
    acc = lambda norm, b: values(run, norm, "plain", b)  # noqa: E731
    norms = [n for n in c.plain_norms if has(run, n, "plain", small, ref)]
    confound = (f"CONFOUNDED: batch {small} takes {ref // small}x the steps of batch {ref} at 1/{ref // small} "
                f"the lr ({c.plain_epochs:g} epochs each, not trained to a plateau)")
    out: list[Claim] = []
    moved = [NORM_LABELS[n] for n in ("none",) if n in norms and _drop_is_significant(acc(n, ref) - acc(n, small))]
    if "batchnorm" in norms:
        claim = stats.compare_claim(
            "bn-degrades-small-batch", "BatchNorm's accuracy degrades at small batch sizes (plain sweep)", SOURCE,
            f"test accuracy, BN at batch {small} vs {ref}, paired by seed; {confound}",
            acc("batchnorm", small), acc("batchnorm", ref), "less", min_effect=c.degrade_min_effect, paired=True,
            labels=(f"B={small}", f"B={ref}"), unit=SEED, scale="proportion")
        out.append(_downgrade(claim, moved, f"loses accuracy at batch {small} too: the drop is the plain sweep's "
                                            "optimisation change"))
    if "groupnorm" in norms:
        out.append(stats.equivalence_claim(
            "gn-stable-small-batch", "GroupNorm's accuracy does not degrade at small batch sizes (plain sweep)",
            SOURCE, f"test accuracy, GN at batch {small} minus {ref}, within ±{c.equivalence_margin:g}, paired by "
            f"seed; {confound}", acc("groupnorm", small), acc("groupnorm", ref), c.equivalence_margin,
            paired=True, unit=SEED))
    if {"batchnorm", "groupnorm"} <= set(norms):
        bn_drop = acc("batchnorm", ref) - acc("batchnorm", small)
        gn_drop = acc("groupnorm", ref) - acc("groupnorm", small)
        out.append(stats.compare_claim(
            "bn-degrades-more-than-gn", "BN loses more accuracy than GN going to small batches (plain sweep)",
            SOURCE, f"accuracy at batch {ref} minus at {small}, per seed: BN vs GN, paired by seed (the "
            "difference removes what the optimisation change does to both alike)",
            bn_drop, gn_drop, "greater", effect="cohen_d", paired=True, labels=("BN drop", "GN drop"),
            unit=SEED))  # cohen_d: a drop relative to GN's own (near-zero) drop would be unreadable
    if "none" in norms:
        out.append(stats.equivalence_claim(
            "none-stable-small-batch", "Control: without any norm, the plain sweep's batch size does not change "
            "accuracy (refuted = the sweep is confounded by its optimisation change)", "control",
            f"test accuracy, no norm at batch {small} minus {ref}, within ±{c.equivalence_margin:g}, paired by "
            f"seed; {confound}", acc("none", small), acc("none", ref), c.equivalence_margin, paired=True,
            unit=SEED))
    return out


def claims(run: StoredRun) -> list[Claim]:
    return ghost_claims(run) + plain_claims(run)


def _train_images(run: StoredRun) -> int:
    info = run.extra.get("data", pd.DataFrame())
    return int(info["train_size"].iloc[0]) if len(info) else int(run.config.train_size or 1)


def notes(run: StoredRun) -> str:
    c: Config = run.config
    info = run.extra.get("data", pd.DataFrame())
    name = info["dataset"].iloc[0] if len(info) else c.dataset
    notice = info["notice"].iloc[0] if len(info) and info["notice"].iloc[0] else ""
    sizes = (f"{info['train_size'].iloc[0]} training / {info['test_size'].iloc[0]} test images of "
             f"{info['image_size'].iloc[0]}x{info['image_size'].iloc[0]} pixels" if len(info) else "")
    text = (
        f"Data: {name} ({sizes}, a fixed random subset).\n\n"
        f"**Ghost design** (judges the post's attribution): every cell trains with optimiser batch "
        f"{c.optimiser_batch}, lr {c.lr:g} (SGD, momentum 0.9, constant), {c.epochs:g} epochs, and seed s's "
        f"initial weights and data order; BatchNorm computes its statistics over consecutive sub-batches of g "
        f"images (g in {sorted(c.ghost_sizes)}), as per-GPU BatchNorm does over the images of one GPU. GN, LN, IN "
        f"and no norm run at g in {sorted(c.control_ghost_sizes)} as controls: their statistics are per sample, "
        "so only a leak of g into something other than BN's statistics could move them.\n\n"
        f"**Plain sweep** (kept, confounded): the batch itself is {sorted(c.batch_sizes)} with equal examples "
        f"({c.plain_epochs:g} epochs) and lr = {c.lr:g} x batch/{c.optimiser_batch}, so small batches take more "
        "steps at a smaller lr and every norm's accuracy can move for that reason alone.\n\n"
        "Wu & He's ImageNet errors are cited reference data, not measured here; their per-GPU batch changes both "
        "BN's statistics batch and the total batch (8 GPUs, lr 0.1 x N/32, same epochs), so their GN line is "
        "their control for the optimisation change. A few thousand small images and a 3-layer CNN are far from "
        "ResNet-50 on ImageNet: compare shapes, not levels."
    )
    if len(info):
        side, small = int(info["image_size"].iloc[0]), min(c.ghost_sizes)
        sides = (side, side // 2, side // 4)  # the three conv stages (max-pool after the first two)
        text += (f"\n\nAt ghost size {small}, BatchNorm's per-channel statistics average "
                 + ", ".join(f"{small * h * h}" for h in sides)
                 + " values in the three layers (images x H x W), but from only "
                 f"{small} images: neighbouring pixels of one image are strongly correlated, so the images, not "
                 "the values, set how noisy the statistics are. The GN paper's ResNet-50 at 2 images per GPU "
                 "averages 2 x 7 x 7 = 98 values in its last stage.")
    return text + (f"\n\n**Dataset notice:** {notice}" if notice else "")


def key_numbers(run: StoredRun) -> list[KeyNumber]:
    """Test accuracy at the end of training, the proportion every claim compares: BN at each ghost size (running
    and, at the smallest, recalibrated statistics), the controls at the two ghost sizes they run at, and the plain
    sweep's norms at its smallest and largest batch."""
    c: Config = run.config
    out: list[KeyNumber] = []

    def add(norm: str, design: str, size: int, metric: str = "test_acc", how: str = "") -> None:
        v = values(run, norm, design, size, metric)
        if np.isfinite(v).any():
            where = f"ghost size {size}" if design == "ghost" else f"batch {size} (plain sweep)"
            out.append(KeyNumber(f"test accuracy at the end{how}", f"{NORM_LABELS[norm]}, {where}", tuple(v),
                                 "proportion", SEED))

    for g in sorted(c.ghost_sizes):
        add("batchnorm", "ghost", g)
    add("batchnorm", "ghost", min(c.ghost_sizes), "test_acc_recalibrated", ", recalibrated statistics")
    for norm in (n for n in c.norms if n != "batchnorm"):
        for g in sorted(c.control_ghost_sizes):
            add(norm, "ghost", g)
    for norm in c.plain_norms:
        for b in sorted({min(c.batch_sizes), c.reference_batch}):
            add(norm, "plain", b)
    return out
