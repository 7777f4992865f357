"""Claims and notes of the ``overfitting`` study, and the per-seed measures they read from the stored run.

Units of replication: a seed ``s`` fixes the data (train, test and held-out points) and the initial weights
of every arm of its setting, so the arms of a seed are one unit and are compared seed by seed (paired). The
size sweep's sizes of a seed share the initial weights (not the data), so sizes are compared seed by seed
too. The variance claims read the spread *between* seeds; they pair seeds ``(0, 1), (2, 3), ...`` so that
each pair gives one independent estimate (unit: seed pair). The demo's draws are independent draws; the
one-step weight-decay checks are deterministic (unit ``exact``).
"""

from __future__ import annotations

import math

import numpy as np

from normlab.engine.spec import Claim, KeyNumber, StoredRun
from normlab.kit import stats
from normlab.studies.overfitting.config import PAPER, SOURCE

SEED, SWEEP, EXACT = "seed", "sweep", "exact"  # the ``regime`` of a cell
UNIT = "seed"  # one seed = one draw of data and initial weights, shared by every arm of that seed
# An MSE below this is float32 round-off (a residual of 1e-6 on targets of order 1); an interpolating net
# reaches it, and exactly 0 does occur. MSEs are floored here so that log-scale comparisons stay finite
# and a round-off value cannot pass for a real ratio.
MSE_FLOOR = 1e-12


def final(run: StoredRun, arm: str, n_train: int, metric: str, regime: str = SEED) -> np.ndarray:
    """Per-seed value of ``metric`` at the last recorded step, in seed order (``*_mse``: at least ``MSE_FLOOR``)."""
    m = run.metrics
    sel = m[(m["arm"] == arm) & (m["n_train"] == n_train) & (m["metric"] == metric) & (m["regime"] == regime)]
    if sel.empty:
        raise KeyError(f"no {metric!r} for arm {arm!r} at n_train={n_train} ({regime}) in the stored run")
    sel = sel[sel["step"] == sel["step"].max()].sort_values("seed")
    values = sel["value"].to_numpy(dtype=np.float64)
    return np.maximum(values, MSE_FLOOR) if metric.endswith("_mse") else values


def gap(run: StoredRun, arm: str, n_train: int, regime: str = SEED) -> np.ndarray:
    """Held-out MSE minus train MSE (eval mode), per seed."""
    return final(run, arm, n_train, "heldout_mse", regime) - final(run, arm, n_train, "train_mse", regime)


def log_ratio(run: StoredRun, n_train: int, regime: str = SWEEP) -> np.ndarray:
    """Per seed: log10(held-out MSE with dropout / without); below 0 dropout helps."""
    return np.log10(final(run, "dropout", n_train, "heldout_mse", regime)
                    / final(run, "none", n_train, "heldout_mse", regime))


def demo_outputs(run: StoredRun, metric: str) -> np.ndarray:
    """The dropout demo's ``metric`` (``train_output``, ``eval_output``, ``dropped_fraction``,
    ``kept_value_maxdev``), one value per draw, in seed order."""
    m = run.metrics
    return m[(m["arm"] == "dropout-demo") & (m["metric"] == metric)].sort_values("seed")["value"].to_numpy(float)


def exact_value(run: StoredRun, metric: str) -> np.ndarray:
    """Values of the one-step weight-decay check's ``metric``, one per weight entry."""
    m = run.metrics
    sel = m[(m["arm"] == "wd-step") & (m["metric"] == metric)].sort_values("step")
    if sel.empty:
        raise KeyError(f"no {metric!r} from the wd-step cell in the stored run")
    return sel["value"].to_numpy(float)


def curves(run: StoredRun, arm: str, n_train: int, regime: str = SEED) -> np.ndarray:
    """Final fitted curves on the grid, ``(seeds, grid)``, in seed order."""
    p = run.extra["predictions"]
    p = p[(p["arm"] == arm) & (p["n_train"] == n_train) & (p["regime"] == regime)].sort_values(["seed", "x"])
    seeds = p["seed"].unique()
    return p["pred"].to_numpy(float).reshape(len(seeds), -1)


def roughness(run: StoredRun, arm: str, n_train: int) -> np.ndarray:
    """Per seed: total variation of the fitted curve's slope on the grid (sum of |second differences| / h).

    A straight line scores 0; every kink adds its change of slope. "Flatter/smoother" = lower."""
    f = curves(run, arm, n_train)
    h = 2.0 / (f.shape[1] - 1)
    return np.abs(np.diff(f, n=2, axis=1)).sum(axis=1) / h


def pair_variance(run: StoredRun, arm: str, n_train: int) -> np.ndarray:
    """Variance of the fitted function between training sets, one independent estimate per seed pair.

    Seeds ``2k`` and ``2k+1`` draw their data and weights independently, so ``mean_x (f_2k - f_2k+1)^2 / 2``
    is an unbiased estimate of the between-run variance of the fit averaged over ``x`` (the bias-variance
    decomposition's variance term), and different pairs are independent."""
    f = curves(run, arm, n_train)
    k = f.shape[0] // 2
    return ((f[0:2 * k:2] - f[1:2 * k:2]) ** 2).mean(axis=1) / 2


def overfits(run: StoredRun, arm: str, n_train: int, regime: str, id: str, claim: str, source: str) -> Claim:
    """The arm fits its training set better than the true line does, and the held-out set worse."""
    tr = stats.compare_claim(
        "", "", source, "", final(run, arm, n_train, "train_mse", regime),
        final(run, arm, n_train, "truth_train_mse", regime), "less", paired=True, transform="log",
        labels=(f"{arm} train", "true line"), unit=UNIT)
    he = stats.compare_claim(
        "", "", source, "", final(run, arm, n_train, "heldout_mse", regime),
        final(run, arm, n_train, "truth_heldout_mse", regime), "greater", paired=True, transform="log",
        labels=(f"{arm} held-out", "true line"), unit=UNIT)
    return stats.all_of_claim(
        id, claim, source,
        "per seed, eval mode: train MSE below the true line's on the same points (it fits the noise) "
        "and held-out MSE above the true line's (it generalizes worse); paired, log scale; both needed",
        [("train below truth", tr), ("held-out above truth", he)], unit=UNIT)


def _raises_train_loss(run: StoredRun, n: int, at: str) -> Claim:
    """The direction is tested; the post's "a little" (略大一些, read off a linear plot) has no stated scale, so
    its size is shown in the data's own units beside the true line's training MSE, not judged."""
    wd, none = final(run, "weight_decay", n, "train_mse"), final(run, "none", n, "train_mse")
    claim = stats.compare_claim(
        "weight_decay-raises-train-loss", "With weight decay the training loss stays higher (the post: 'a little')",
        SOURCE, f"per seed: train MSE (eval mode) {at}; paired by seed; log scale. 'A little' has no scale in the "
        "post: the increase is shown in MSE units, not judged", wd, none, "greater", paired=True, transform="log",
        labels=("weight_decay", "none"), unit=UNIT)
    truth = final(run, "weight_decay", n, "truth_train_mse")
    ok = np.isfinite(wd) & np.isfinite(none)  # the seeds the test compares
    if ok.any():
        claim.detail += (f"; in MSE units the increase is {np.mean(wd[ok] - none[ok]):.3g} (arithmetic mean over "
                         f"{int(ok.sum())} seeds), against the true line's own training MSE "
                         f"{np.nanmean(truth[ok]):.3g} (arithmetic mean)")
    return claim


def claims(run: StoredRun) -> list[Claim]:
    return [*_seed_setup_claims(run), *_weight_decay_step_claims(run), *_demo_claims(run), *_sweep_claims(run)]


def _seed_setup_claims(run: StoredRun) -> list[Claim]:
    c = run.config
    n = c.n_train
    at = f"at step {c.steps}, {n} training points, {c.seeds} seeds"
    out = [
        overfits(run, "none", n, SEED, "none-overfits",
                 "Without weight decay the loss falls very low and the net overfits (poor on the test set)", SOURCE),
        _raises_train_loss(run, n, at),
        overfits(run, "weight_decay", n, SEED, "weight_decay-still-overfits",
                 "With weight decay the net still overfits in this example", SOURCE),
    ]
    for arm, text in (("weight_decay", f"weight decay ({c.weight_decay:g})"), ("dropout", f"dropout ({c.dropout:g})")):
        shrink = stats.compare_claim(
            "", "", SOURCE, "", gap(run, arm, n), gap(run, "none", n), "less", paired=True, labels=(arm, "none"),
            unit=UNIT)
        held = stats.compare_claim(
            f"{arm}-lowers-heldout", f"{text} lowers the held-out error (the gap could also shrink by fitting worse)",
            "control", f"per seed: held-out MSE {at}; paired by seed; log scale",
            final(run, arm, n, "heldout_mse"), final(run, "none", n, "heldout_mse"), "less",
            paired=True, transform="log", labels=(arm, "none"), unit=UNIT)
        # The post reads a smaller gap as less overfitting. A gap also shrinks when the training error rises
        # and the held-out error does not fall: then the control explains it, and the claim is not supported.
        out.append(stats.all_of_claim(
            f"{arm}-reduces-gap", f"{text} reduces the train/test gap (mitigates overfitting)", SOURCE,
            f"per seed {at}: held-out MSE ({c.n_heldout} points) - train MSE (eval mode), paired by seed; needs "
            f"the control {arm}-lowers-heldout too (a gap that shrinks only because the training error rose is "
            "no mitigation)", [("gap smaller", shrink), (f"held-out lower (control {arm}-lowers-heldout)", held)],
            unit=UNIT))
        out.append(held)
        k = c.seeds // 2
        out.append(stats.compare_claim(
            f"{arm}-reduces-variance", f"{text} reduces the variance of the fit (regularization lowers variance)",
            SOURCE, f"per seed pair ({k} pairs of independent seeds): mean over x of (f_a - f_b)^2 / 2, the fitted "
            f"curve's variance between training sets, {at}; the same pairs in both arms, paired; log scale",
            pair_variance(run, arm, n), pair_variance(run, "none", n), "less", paired=True, transform="log",
            labels=(arm, "none"), unit="seed pair"))
    out += [
        stats.compare_claim(
            "weight_decay-smoother-fit", "With weight decay the fitted curve is a little flatter", SOURCE,
            f"per seed: total variation of the fitted curve's slope on 101 grid points in [-1, 1] {at}; "
            "paired by seed; log scale", roughness(run, "weight_decay", n), roughness(run, "none", n), "less",
            paired=True, transform="log", labels=("weight_decay", "none"), unit=UNIT),
        stats.compare_claim(
            "weight_decay-shrinks-weights", "Weight decay keeps the weights small", SOURCE,
            f"per seed: L2 norm of all weight matrices {at}; paired by seed; log scale",
            final(run, "weight_decay", n, "weight_norm"), final(run, "none", n, "weight_norm"), "less",
            paired=True, transform="log", labels=("weight_decay", "none"), unit=UNIT),
    ]
    return out


def _weight_decay_step_claims(run: StoredRun) -> list[Claim]:
    """One SGD step with ``weight_decay`` and a zero data gradient, on known weights (the ``wd-step`` cell)."""
    c = run.config
    lam, lr = c.weight_decay, c.lr
    factor = exact_value(run, "wd_factor")  # w_after / w_before, per entry
    w = f"SGD(lr={lr:g}, momentum={c.momentum:g}, weight_decay={lam:g}), one step, zero data gradient, float64"
    post = stats.exact_claim(
        "weight_decay-step-post-formula", f"PyTorch's weight decay multiplies w by (1 - λ) = {1 - lam:g} each update",
        SOURCE, f"{w}: the entry of w_after / w_before farthest from (1 - λ)",
        float(factor[np.argmax(np.abs(factor - (1 - lam)))]), 1 - lam, rtol=1e-9, atol=1e-12)
    sgd = stats.exact_claim(
        "weight_decay-step-sgd-formula", f"SGD's weight decay multiplies w by (1 - lr·λ) = {1 - lr * lam:g} each step",
        "control", f"{w}: the entry of w_after / w_before farthest from (1 - lr·λ) (torch.optim.SGD's update "
        "w - lr·(g + λw))", float(factor[np.argmax(np.abs(factor - (1 - lr * lam)))]), 1 - lr * lam,
        rtol=1e-9, atol=1e-12)
    l2 = stats.exact_claim(
        "weight_decay-is-l2-penalty", "weight_decay is the L2 term of the objective (cost + λ/2·||w||²)", SOURCE,
        f"one step of SGD(lr={lr:g}, momentum={c.momentum:g}) with weight_decay={lam:g} on a known gradient vs "
        "the same step without it on loss + λ/2·||w||²: largest |difference| of the new weights (float64)",
        float(np.max(exact_value(run, "l2_vs_wd_absdiff"))), 0.0, rtol=0.0, atol=1e-12)
    return [post, sgd, l2]


def _demo_claims(run: StoredRun) -> list[Claim]:
    c = run.config
    train, ev = demo_outputs(run, "train_output"), demo_outputs(run, "eval_output")
    units = c.demo_units
    mean = stats.equivalence_claim(
        "inverted-dropout-train-mean", f"In training the output is about {units}, not {units * (1 - c.dropout):g}",
        SOURCE, f"{len(train)} draws of Dropout({c.dropout:g}) → Linear(weight 1) on ones({units}); "
        "equal within ±1%", train, float(units), 0.01 * units, unit="draw")
    theory_sd = math.sqrt(units * c.dropout / (1 - c.dropout))  # sd of Binomial(units, 1-p) / (1-p)
    mean.detail += (f"; sd over draws {np.std(train, ddof=1):.4g} (theory for Binomial/(1-p): {theory_sd:.4g}); "
                    f"naive {units * (1 - c.dropout):g} is {abs(np.mean(train) - units * (1 - c.dropout)) / theory_sd:.0f} sd away")
    exact = stats.exact_claim(
        "inverted-dropout-eval-exact", f"In eval mode the output is exactly {units}", SOURCE,
        "largest |eval output - units| over all draws", float(np.max(np.abs(ev - units))), 0.0, rtol=0.0, atol=0.0)
    q = float(np.mean(train <= c.demo_seed_output))
    inside = 0.025 <= q <= 0.975
    plausible = Claim(
        id="seed-draw-typical", claim=f"The post's printed {c.demo_seed_output:g} is an ordinary draw", source=SOURCE,
        measurement=f"fraction of {len(train)} draws <= {c.demo_seed_output:g} (typical: within the central 95%)",
        verdict="supported" if inside else "refuted", statistic="empirical_quantile", value=q, n=len(train),
        unit="draw", ci=(float(np.quantile(train, 0.025)), float(np.quantile(train, 0.975))),
        detail=f"central 95% of draws: [{np.quantile(train, 0.025):g}, {np.quantile(train, 0.975):g}]; "
               f"{len(np.unique(train))} distinct values over {len(train)} draws (it changes every run)")
    dropped = stats.equivalence_claim(
        "dropout-drops-fraction-p", f"Dropout(p) drops a fraction p of the units ({c.dropout:g})", SOURCE,
        f"per draw: fraction of the {units} dropout outputs that are 0 (read by a forward hook in the demo's own "
        "forward); mean over draws equal to p within ±0.01", demo_outputs(run, "dropped_fraction"),
        float(c.dropout), 0.01, unit="draw")
    scale = stats.exact_claim(
        "inverted-dropout-scale", f"In training the kept units are multiplied by 1/(1-p) = {1 / (1 - c.dropout):g}",
        SOURCE, "largest |kept dropout output - 1/(1-p)| over all units of all draws (input ones; float32)",
        float(np.max(demo_outputs(run, "kept_value_maxdev"))), 0.0, rtol=0.0, atol=1e-6)
    scale.detail += "; the weights are not touched (the post says the weights are scaled: it is the activations)"
    return [mean, exact, plausible, dropped, scale]


def _sweep_claims(run: StoredRun) -> list[Claim]:
    """Dropout's held-out benefit by training-set size, all sizes in the sweep's one regime, paired by seed."""
    c = run.config
    sizes = sorted(c.size_sweep)
    regime = (f"{c.sweep_optimizer}(lr={c.sweep_lr:g}), {c.sweep_steps} full-batch steps at every size")
    out = []
    for size in sizes:
        out.append(stats.compare_claim(
            f"dropout-gain/n={size}", f"Dropout lowers held-out error by >= {c.min_gain:.0%} with {size} training points",
            PAPER, f"per seed: held-out MSE, dropout vs none, {regime}; paired by seed, log scale",
            final(run, "dropout", size, "heldout_mse", SWEEP), final(run, "none", size, "heldout_mse", SWEEP),
            "less", min_effect=c.min_gain, paired=True, transform="log", labels=("dropout", "none"), unit=UNIT))
    ids = ("sweep-overfits-at-largest", "dropout-gain-grows-with-data", "dropout-no-gain-tiny")
    if len(sizes) < 2:
        why = f"the size sweep has {len(sizes)} size(s); the contrast needs a tiny and a larger one"
        return out + [stats.not_judged(i, i, PAPER, "", why, unit=UNIT) for i in ids]
    tiny, large = sizes[0], sizes[-1]
    out.append(overfits(
        run, "none", large, SWEEP, ids[0],
        f"Without dropout the net overfits at the largest size ({large} points), so dropout has something to fix",
        "control"))
    grows = stats.threshold_claim(
        ids[1], f"Dropout's held-out benefit is larger with {large} than with {tiny} training points", PAPER,
        f"per seed: log10(dropout/none held-out MSE) at {large} minus at {tiny} points (the same seed's initial "
        f"weights at both sizes), {regime}; one-sample t-test below 0",
        log_ratio(run, large) - log_ratio(run, tiny), "less", 0.0, unit=UNIT)
    floor = math.log10(1 - c.min_gain)
    absent = stats.threshold_claim(
        "", "", PAPER, "", log_ratio(run, tiny), "greater", floor, unit=UNIT)
    absent.detail = (f"log10(dropout/none) at {tiny} points vs log10(1 - {c.min_gain:g}) = {floor:.3g}: "
                     f"a gain of {c.min_gain:.0%} or more is {'ruled out' if absent.verdict == 'supported' else 'not ruled out'}; "
                     + absent.detail)
    gain_large = next(cl for cl in out if cl.id == f"dropout-gain/n={large}")
    tiny_claim = stats.all_of_claim(
        ids[2], f"Dropout gives no gain on tiny data ({tiny} points), unlike on more data ({large} points)", PAPER,
        f"{regime}; paired by seed. Needs all three: (1) at {tiny} points a gain of {c.min_gain:.0%} or more is "
        f"ruled out; (2) at {large} points dropout lowers held-out MSE by >= {c.min_gain:.0%} (the control: "
        "without it 'no gain' is not a tiny-data effect); (3) the benefit is larger at the larger size",
        [(f"no gain at {tiny}", absent), (f"gain at {large} (control)", gain_large), ("benefit grows", grows)], unit=UNIT)
    return [*out, grows, tiny_claim]


def notes(run: StoredRun) -> str:
    c = run.config
    return (
        f"Settings of this run (the post's setting: MLP 1→{c.n_hidden}→{c.n_hidden}→{c.n_hidden}→1, {c.n_train} train "
        f"points, SGD lr={c.lr:g} momentum={c.momentum:g}, {c.steps} full-batch steps, weight_decay={c.weight_decay:g}), "
        f"{c.seeds} seeds per arm trained as one stacked ensemble. The post's dropout code is omitted: normlab uses "
        f"Dropout({c.dropout:g}) after each hidden ReLU. All arms of a seed share the data and the initial weights, "
        "so comparisons are paired (unit: seed). The post's test set has the same x as its training set and only "
        f"10 points; normlab adds {c.n_heldout} held-out points (same noise) and reports both. 'Overfits' means: "
        "fits the training points better than the true line does and the held-out points worse. The post's plot "
        "put the test points at (test_y, test_y); normlab draws them at (test_x, test_y). Control: a smaller gap "
        "can come from fitting the training set worse, so each gap claim has a held-out error claim beside it. "
        f"The size sweep ({', '.join(map(str, sorted(c.size_sweep)))} points) trains none and dropout with "
        f"{c.sweep_optimizer}(lr={c.sweep_lr:g}) for {c.sweep_steps} full-batch steps at every size and judges "
        "Srivastava et al.'s 'no gain on very small training sets' as a contrast: no gain at the smallest size "
        "*and* a gain at the largest."
        + _budget_note(run)
    )


def _budget_note(run: StoredRun) -> str:
    """How far each sweep arm got: train MSE at the end vs three quarters of the way (a plateau check)."""
    c = run.config
    if not c.size_sweep:
        return ""
    m = run.metrics
    parts = []
    for size in sorted(c.size_sweep):
        for arm in ("none", "dropout"):
            sel = m[(m["arm"] == arm) & (m["n_train"] == size) & (m["metric"] == "train_mse") & (m["regime"] == SWEEP)]
            steps = np.sort(sel["step"].unique())
            if len(steps) < 2:
                continue
            late = steps[max(int(np.searchsorted(steps, 0.75 * steps[-1], side="right")) - 1, 0)]
            end = sel[sel["step"] == steps[-1]].sort_values("seed")["value"].to_numpy(float)
            mid = sel[sel["step"] == late].sort_values("seed")["value"].to_numpy(float)
            parts.append(f"{arm} at {size}: {stats.mean_ci(end).fmt()} (x{np.mean(end) / np.mean(mid):.2f} "
                         f"since step {late})")
    return (" Convergence of the sweep (train MSE in eval mode at the last step, and the ratio of its mean to the "
            "mean three quarters of the way): " + "; ".join(parts) + f". MSEs below {MSE_FLOOR:g} (float32 "
            "round-off; an interpolating net reaches exactly 0) count as that floor in the claims.")


def key_numbers(run: StoredRun) -> list[KeyNumber]:
    """The post's setup per arm (train and held-out MSE, weight norm: positive, compared on the log scale as the
    claims do), and the held-out MSE of no-dropout vs dropout at every size of the sweep."""
    c = run.config
    out: list[KeyNumber] = []
    rows = [(arm, c.n_train, SEED, metric, what) for metric, what in (
        ("train_mse", "train MSE at the last step, eval mode"), ("heldout_mse", "held-out MSE at the last step"),
        ("weight_norm", "L2 norm of all weight matrices at the last step")) for arm in ("none", "weight_decay", "dropout")]
    rows += [(arm, n, SWEEP, "heldout_mse", f"held-out MSE at the last step, size sweep, {n} training points")
             for n in sorted(c.size_sweep) for arm in ("none", "dropout")]
    for arm, n, regime, metric, what in rows:
        try:
            v = final(run, arm, n, metric, regime)
        except KeyError:  # an arm or size this run left out
            continue
        out.append(KeyNumber(what if regime == SWEEP else f"{what}, {n} training points", arm, tuple(v), "positive",
                             UNIT))
    return out
