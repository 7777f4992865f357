"""Claims and notes of the ``overfitting`` study, and the per-seed measures they read from the stored run."""

from __future__ import annotations

import math

import numpy as np

from normlab.engine.spec import Claim, StoredRun
from normlab.kit import stats
from normlab.studies.overfitting.config import PAPER, SOURCE


def final(run: StoredRun, arm: str, n_train: int, metric: str) -> np.ndarray:
    """Per-seed value of ``metric`` at the last recorded step, in seed order."""
    m = run.metrics
    sel = m[(m["arm"] == arm) & (m["n_train"] == n_train) & (m["metric"] == metric)]
    if sel.empty:
        raise KeyError(f"no {metric!r} for arm {arm!r} at n_train={n_train} in the stored run")
    sel = sel[sel["step"] == sel["step"].max()].sort_values("seed")
    return sel["value"].to_numpy(dtype=np.float64)


def gap(run: StoredRun, arm: str, n_train: int) -> np.ndarray:
    """Held-out MSE minus train MSE (eval mode), per seed."""
    return final(run, arm, n_train, "heldout_mse") - final(run, arm, n_train, "train_mse")


def demo_outputs(run: StoredRun, metric: str) -> np.ndarray:
    """The dropout demo's ``metric`` (``train_output`` or ``eval_output``), one value per draw, in seed order."""
    m = run.metrics
    return m[(m["arm"] == "dropout-demo") & (m["metric"] == metric)].sort_values("seed")["value"].to_numpy(float)


def claims(run: StoredRun) -> list[Claim]:
    c = run.config
    n = c.n_train
    out = []
    for arm, text in (("weight_decay", f"weight decay ({c.weight_decay:g})"), ("dropout", f"dropout ({c.dropout:g})")):
        out.append(stats.compare_claim(
            f"{arm}-reduces-gap", f"{text} reduces the train/test gap", SOURCE,
            f"per seed at step {c.steps}: held-out MSE ({c.n_heldout} points) - train MSE (eval mode); paired by seed",
            gap(run, arm, n), gap(run, "none", n), "less", paired=True, labels=(arm, "none")))
        out.append(stats.compare_claim(
            f"{arm}-lowers-heldout", f"{text} lowers the held-out error (the gap could also shrink by fitting worse)",
            "control", f"per seed: held-out MSE at step {c.steps}; paired by seed; log scale",
            final(run, arm, n, "heldout_mse"), final(run, "none", n, "heldout_mse"), "less",
            paired=True, transform="log", labels=(arm, "none")))
    out.insert(1, stats.compare_claim(
        "weight_decay-raises-train-loss", "With weight decay the training loss stays higher", SOURCE,
        f"per seed: train MSE at step {c.steps}; paired by seed; log scale",
        final(run, "weight_decay", n, "train_mse"), final(run, "none", n, "train_mse"), "greater",
        paired=True, transform="log", labels=("weight_decay", "none")))
    # The paper's "no gain on tiny data" is the *absence* of a >= min_gain improvement: invert the test of
    # "dropout lowers held-out error by at least min_gain".
    for size in sorted({n, *c.size_sweep}):
        gain = stats.compare_claim(
            f"dropout-gain/n={size}", "", PAPER, "", final(run, "dropout", size, "heldout_mse"),
            final(run, "none", size, "heldout_mse"), "less", min_effect=c.min_gain, paired=True,
            transform="log", labels=("dropout", "none"))
        if size == n:
            flip = {"supported": "refuted", "refuted": "supported", "inconclusive": "inconclusive"}
            gain.id, gain.verdict = "dropout-no-gain-tiny", flip[gain.verdict]
            gain.claim = f"Dropout gives no gain on a tiny training set ({size} points)"
            gain.measurement = (f"held-out MSE, dropout vs none, paired; 'gain' = at least {c.min_gain:.0%} lower; "
                                "supported when the data rule such a gain out")
        else:
            gain.claim = f"Dropout lowers held-out error by >= {c.min_gain:.0%} with {size} training points"
            gain.measurement = "held-out MSE, dropout vs none, paired by seed, log scale"
        out.append(gain)
    out += _demo_claims(run)
    return out


def _demo_claims(run: StoredRun) -> list[Claim]:
    c = run.config
    train, ev = demo_outputs(run, "train_output"), demo_outputs(run, "eval_output")
    units = c.demo_units
    mean = stats.equivalence_claim(
        "inverted-dropout-train-mean", f"In training the output is about {units}, not {units * (1 - c.dropout):g}",
        SOURCE, f"{len(train)} draws of Dropout({c.dropout:g}) → Linear(weight 1) on ones({units}); "
        "equal within ±1%", train, float(units), 0.01 * units)
    theory_sd = math.sqrt(units * c.dropout / (1 - c.dropout))  # sd of Binomial(units, 1-p) / (1-p)
    mean.detail += (f"; sd over draws {np.std(train, ddof=1):.4g} (theory for Binomial/(1-p): {theory_sd:.4g}); "
                    f"naive {units * (1 - c.dropout):g} is {abs(np.mean(train) - units * (1 - c.dropout)) / theory_sd:.0f} sd away")
    exact = stats.exact_claim(
        "inverted-dropout-eval-exact", f"In eval mode the output is exactly {units}", SOURCE,
        "largest |eval output - units| over all draws", float(np.max(np.abs(ev - units))), 0.0, rtol=0.0, atol=0.0)
    q = float(np.mean(train <= c.demo_seed_output))
    inside = 0.025 <= q <= 0.975
    plausible = Claim(
        id="seed-draw-typical", claim=f"The seed's printed {c.demo_seed_output:g} is an ordinary draw", source=SOURCE,
        measurement=f"fraction of {len(train)} draws <= {c.demo_seed_output:g} (typical: within the central 95%)",
        verdict="supported" if inside else "refuted", statistic="empirical_quantile", value=q, n=len(train),
        ci=(float(np.quantile(train, 0.025)), float(np.quantile(train, 0.975))),
        detail=f"central 95% of draws: [{np.quantile(train, 0.025):g}, {np.quantile(train, 0.975):g}]")
    return [mean, exact, plausible]


def notes(run: StoredRun) -> str:
    c = run.config
    return (
        f"Settings of this run (the default preset is the seed's: MLP 1→{c.n_hidden}→{c.n_hidden}→{c.n_hidden}→1, {c.n_train} train "
        f"points, SGD lr={c.lr:g} momentum={c.momentum:g}, {c.steps} full-batch steps, weight_decay={c.weight_decay:g}), "
        f"{c.seeds} seeds per arm trained as one stacked ensemble. The seed's dropout code is omitted: normlab uses "
        f"Dropout({c.dropout:g}) after each hidden ReLU. All arms of a seed share the data and the initial weights, "
        "so comparisons are paired. The seed's test set has the same x as its training set and only 10 points; "
        f"normlab adds {c.n_heldout} held-out points (same noise) and reports both. The seed's plot put the test "
        "points at (test_y, test_y); normlab draws them at (test_x, test_y) and shows the seed's version beside it. "
        "Control: a smaller gap can come from fitting the training set worse, so each gap claim has a held-out "
        f"error claim beside it. The dropout-vs-size sweep ({', '.join(map(str, c.size_sweep))} points) tests "
        "Srivastava et al.'s observation that dropout gives no gain on very small training sets."
        + _budget_note(run)
    )


def _budget_note(run: StoredRun) -> str:
    """Every size trains for the seed's fixed number of steps: say how well each arm fits at the largest."""
    c = run.config
    size = max({c.n_train, *c.size_sweep})
    fit = {arm: stats.mean_ci(final(run, arm, size, "train_mse")) for arm in ("none", "dropout")}
    return (f" All sizes train for the same {c.steps} full-batch steps; at {size} points the train MSE (eval "
            f"mode) is {fit['none'].fmt()} without and {fit['dropout'].fmt()} with dropout, so compare the "
            "held-out errors knowing how far each arm got in fitting the training set.")
