"""Claims and notes of the ``bn-running-stats`` study, computed from the stored tables only."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from normlab.engine.spec import Claim, KeyNumber, StoredRun
from normlab.kit import stats
from normlab.studies.bn_running_stats.config import SEED_002, SEED_004, Config, middle, momentum_label


def values(run: StoredRun, arm: str, metric: str, step: int | None = None, **params) -> np.ndarray:
    """``metric`` of ``arm`` (at ``step`` and the cell params given, if any), one value per seed in seed order."""
    m = run.metrics
    sel = (m["arm"] == arm) & (m["metric"] == metric)
    if step is not None:
        sel &= m["step"] == step
    for key, val in params.items():
        sel &= m[key] == val
    return m[sel].sort_values("seed")["value"].to_numpy(dtype=float)


def hand_walkthrough(momentum: float, value: float, iterations: int) -> list[tuple[float, float]]:
    """Post 004's hand computation: constant feature ``value`` -> batch mean ``value``, batch var 0."""
    mean, var, out = 0.0, 1.0, []
    for _ in range(iterations):
        mean = (1 - momentum) * mean + momentum * value
        var = (1 - momentum) * var + momentum * 0.0
        out.append((mean, var))
    return out


SEED = "seed"  # the unit of replication of every seeded claim: one seed = one batch stream / one network


def _exact_facts(run: StoredRun, c: Config) -> list[Claim]:
    out: list[Claim] = []
    # Post 004's printed numbers after iteration 0, then its rule for every later iteration.
    for j, value in ((0, 1.0), (1, 2.0)):
        hand = hand_walkthrough(c.walk_momentum, value, c.walk_iterations)
        observed = [(values(run, "walkthrough", f"running_mean/f{j}", step=k)[0],
                     values(run, "walkthrough", f"running_var/f{j}", step=k)[0]) for k in range(len(hand))]
        worst = max(max(abs(o[0] - h[0]), abs(o[1] - h[1])) for o, h in zip(observed, hand, strict=True))
        claim = stats.exact_claim(
            f"walkthrough-feature-{int(value)}s",
            f"BatchNorm1d(momentum={c.walk_momentum:g}): a feature of constant {value:g}s has running mean "
            f"{hand[0][0]:.1f}, var {hand[0][1]:.1f} after iteration 0, and follows (1-m)*old + m*batch",
            SEED_004, f"max |layer - hand computation| over {len(hand)} iterations (mean and var)",
            worst, 0.0, atol=1e-6)
        claim.detail += "; layer: " + ", ".join(f"({a:.4f}, {b:.4f})" for a, b in observed)
        out.append(claim)

    facts = {k: values(run, "layer-facts", k)[0] for k in (
        "default_momentum", "seed002_formula_momentum", "momentum0.9_mean_ratio", "running_var_over_unbiased",
        "output_vs_biased_maxdiff", "output_vs_unbiased_maxdiff", "initial_mean_maxabs", "initial_var_maxdev",
        "train_output_diff_other_running", "eval_output_diff_other_running", "eval_vs_running_maxdiff",
        "running_in_state_dict", "mode_switch_diff_track_true", "mode_switch_diff_track_false")}
    formula = stats.exact_claim(
        "seed002-momentum-in-its-formula",
        "In post 002's formula (moving = moving*momentum + batch*(1-momentum)) PyTorch's value is 0.9",
        SEED_002, "decay of the old value in one step of a default torch.nn.BatchNorm1d, solved from "
        "running_mean = (1 - decay) * batch_mean", facts["seed002_formula_momentum"], 0.9, atol=1e-9)
    arg = stats.exact_claim(
        "seed002-momentum-argument", "PyTorch's BatchNorm momentum is 0.9", SEED_002,
        "torch.nn.BatchNorm1d(...).momentum (the argument's default)", facts["default_momentum"], 0.9, atol=1e-9)
    arg.detail += (f"; torch's momentum weights the *new* batch: BatchNorm1d(momentum=0.9) sets running_mean "
                   f"to {facts['momentum0.9_mean_ratio']:.3g} x the batch mean after one step, the opposite of "
                   "post 002's formula; the statement holds only in Keras's convention (0.9 = 1 - 0.1)")
    out += [formula, arg]
    init = stats.exact_claim(
        "initial-running-stats", "The running statistics start at mean 0, variance 1 (a standard normal)",
        SEED_002, "max(|running_mean|, |running_var - 1|) of a fresh torch.nn.BatchNorm1d",
        max(facts["initial_mean_maxabs"], facts["initial_var_maxdev"]), 0.0, atol=0.0)
    out.append(init)
    out.append(stats.exact_claim(
        "running-var-unbiased", "The running variance is updated with the unbiased batch variance (B/(B-1))",
        "STUDIES.md", "running_var / unbiased batch var with momentum=1 (float64)",
        facts["running_var_over_unbiased"], 1.0, rtol=1e-9))
    out.append(stats.exact_claim(
        "normalize-biased", "The training forward normalizes with the batch's mean and biased variance",
        SEED_002, "max |output - (x - mean)/sqrt(biased var + eps)| (float64)",
        facts["output_vs_biased_maxdiff"], 0.0, atol=1e-9))
    out[-1].detail += f"; with the unbiased variance the max difference would be {facts['output_vs_unbiased_maxdiff']:.3g}"
    ignore = stats.exact_claim(
        "running-stats-not-used-in-training",
        "The moving average does not affect the training-mode output, only the prediction (eval) output",
        SEED_002, "max |train-mode output| difference between two layers whose running statistics differ "
        "(float64)", facts["train_output_diff_other_running"], 0.0, atol=1e-12)
    ignore.detail += (f"; their eval outputs differ by up to {facts['eval_output_diff_other_running']:.3g}, "
                      "so the running statistics do reach prediction")
    if not facts["eval_output_diff_other_running"] > 1e-9:
        ignore.verdict = "refuted"
        ignore.detail += " (they do not: eval ignores them too)"
    out.append(ignore)
    evals = stats.exact_claim(
        "eval-uses-running", "At test time BatchNorm normalizes with the running (moving-average) statistics, "
        "saved with the weights", SEED_002,
        "max |eval output - (x - running_mean)/sqrt(running_var + eps)| (float64)",
        facts["eval_vs_running_maxdiff"], 0.0, atol=1e-12)
    evals.detail += f"; running_mean and running_var in the state dict: {bool(facts['running_in_state_dict'])}"
    if facts["running_in_state_dict"] != 1.0:
        evals.verdict = "refuted"
    out.append(evals)
    track = stats.exact_claim(
        "track-running-stats-is-mode", "track_running_stats chooses between the training and the test state",
        SEED_004, "max |train() output - eval() output| of one layer with track_running_stats=True fixed "
        "(0 if the flag, not train()/eval(), set the state)", facts["mode_switch_diff_track_true"], 0.0,
        atol=1e-12)
    track.detail += (f"; with track_running_stats=False, train() vs eval() differ by "
                     f"{facts['mode_switch_diff_track_false']:.3g}: the flag keeps no running statistics and uses "
                     "batch statistics in both modes; train()/eval() is the state switch")
    out.append(track)

    worst = {kind: max(float(np.max(values(run, "conventions", f"maxdiff/{kind}/m={m:g}", step=c.convention_steps)))
                       for m in c.convention_momenta) for kind in ("torch", "keras")}
    conv = stats.exact_claim(
        "keras-equals-torch", "Keras momentum 0.99 is torch momentum 0.01 (keras m = 1 - torch m)", "STUDIES.md",
        f"max |running stats| difference, normlab keras 1-m vs torch.nn m, m in {list(c.convention_momenta)}, "
        f"{c.convention_steps} steps, {c.seeds} seeds", worst["keras"], 0.0, atol=0.0)
    conv.detail += f"; normlab torch convention vs torch.nn: {worst['torch']:.3g}"
    out.append(conv)
    return out


def claims(run: StoredRun) -> list[Claim]:
    c: Config = run.config
    return [*_exact_facts(run, c), *_convergence_claims(run, c), *_gap_claims(run, c)]


# What each seeded claim says, by id: the claim text for the report, also when it cannot be judged.
_CONVERGENCE = {
    "running-stats-approach-truth": (SEED_002, "Over training the running statistics move from (0, 1) toward the "
                                     "training set's true statistics"),
    "ema-error-plateaus": (SEED_002, "...but do not keep approaching: a batch is not the whole set, so the end "
                           "values fluctuate around the truth"),
    "larger-step-converges-faster": (SEED_002, "A smaller Keras momentum (larger torch momentum) approaches the "
                                     "true statistics faster than a larger one"),
    "larger-step-fluctuates-more": (SEED_002, "...but fluctuates more: after enough steps the smaller Keras "
                                    "momentum ends farther from the true statistics"),
    "small-batch-noisier": (SEED_002, "With a small batch, running estimates sit farther from the true "
                            "distribution"),
    "cumulative-closest-stationary": ("STUDIES.md", "On a stationary population, momentum=None (cumulative "
                                      "average) ends closer to the population's statistics than the slowest "
                                      "exponential average"),
    "running-var-unbiased-estimate": ("STUDIES.md", "The running variance estimates the population variance "
                                      "without the biased estimator's (B-1)/B shortfall"),
}

# The plateau: between steps/10 and steps, an error on its floor changes by less than this factor (a
# still-converging 1/sqrt(t) error would shrink by sqrt(10) = 3.2).
PLATEAU_FACTOR = 1.25


def _skip(cid: str, table: dict, measurement: str, why: str) -> Claim:
    source, text = table[cid]
    return stats.not_judged(cid, text, source, measurement, why, unit=SEED)


def _convergence_claims(run: StoredRun, c: Config) -> list[Claim]:
    emas = [m for m in c.momenta if m is not None]
    mid_b, small_b, big_b = middle(c.batch_sizes), min(c.batch_sizes), max(c.batch_sizes)

    def err(m: float | None, step: int, b: int, metric: str = "mean_err") -> np.ndarray:
        return values(run, f"converge/m={momentum_label(m)}", metric, step, batch_size=b)

    def judge(cid: str, measurement: str, *args, **kw) -> Claim:
        source, text = _CONVERGENCE[cid]
        return stats.compare_claim(cid, text, source, measurement, *args, paired=True, unit=SEED, **kw)

    out: list[Claim] = []
    ref = 0.1 if 0.1 in emas else (max(emas) if emas else None)
    if ref is None:
        why = f"momenta {list(c.momenta)} has no exponential average (a number)"
        out += [_skip(cid, _CONVERGENCE, "running-mean error", why) for cid in
                ("running-stats-approach-truth", "small-batch-noisier")]
    else:
        out.append(judge(
            "running-stats-approach-truth", f"RMS error of the running mean (units of σ), m={ref:g}, batch {mid_b}: "
            f"after {c.steps} steps vs after 1", err(ref, c.steps, mid_b), err(ref, 1, mid_b), "less",
            transform="log", min_effect=0.2, labels=(f"step {c.steps}", "step 1")))
        if small_b == big_b:
            out.append(_skip("small-batch-noisier", _CONVERGENCE, "running-mean error by batch size",
                             f"batch_sizes {list(c.batch_sizes)} has one size"))
        else:
            out.append(judge(
                "small-batch-noisier", f"RMS error of the running mean after {c.steps} steps, m={ref:g}: batch "
                f"{small_b} vs {big_b}", err(ref, c.steps, small_b), err(ref, c.steps, big_b), "greater",
                min_effect=0.2, labels=(f"B={small_b}", f"B={big_b}")))
    if len(emas) < 2:
        why = f"momenta {list(c.momenta)} has fewer than two exponential averages (numbers)"
        out += [_skip(cid, _CONVERGENCE, "running-mean error, fastest vs slowest momentum", why) for cid in
                ("larger-step-converges-faster", "larger-step-fluctuates-more")]
    else:
        fast, slow = max(emas), min(emas)
        labels = (f"m={fast:g}", f"m={slow:g}")
        out.append(judge(
            "larger-step-converges-faster", f"RMS error of the running mean (units of σ) after {c.early_step} steps, "
            f"batch {mid_b}: torch m={fast:g} (Keras {1 - fast:g}) vs {slow:g} (Keras {1 - slow:g})",
            err(fast, c.early_step, mid_b), err(slow, c.early_step, mid_b), "less", min_effect=0.2, labels=labels))
        claim = judge(
            "larger-step-fluctuates-more", f"RMS error of the running mean after {c.steps} steps, batch {mid_b}: "
            f"torch m={fast:g} (Keras {1 - fast:g}) vs {slow:g} (Keras {1 - slow:g})",
            err(fast, c.steps, mid_b), err(slow, c.steps, mid_b), "greater", min_effect=0.2, labels=labels)
        # "Fluctuates more" is about the end of *enough* training: the slow average must have forgotten its
        # (0, 1) start, whose weight after T steps is (1 - m)^T.
        leftover = (1 - slow) ** c.steps
        if leftover > 0.01:
            claim = _skip("larger-step-fluctuates-more", _CONVERGENCE, claim.measurement,
                          f"after {c.steps} steps m={slow:g} still carries (1-m)^T = {leftover:.2g} of its initial "
                          "value (needs <= 0.01)")
        out.append(claim)
    # The plateau of the fastest average: from a logged step near steps/10 (once its start is forgotten)
    # to the end, its error must stay within a factor PLATEAU_FACTOR.
    measurement = "mean log(error at the end / error near steps/10), running mean, fastest momentum"
    if not emas:
        out.append(_skip("ema-error-plateaus", _CONVERGENCE, measurement,
                         f"momenta {list(c.momenta)} has no exponential average"))
    else:
        fast = max(emas)
        logged = sorted(run.metrics.loc[run.metrics["arm"] == f"converge/m={momentum_label(fast)}", "step"].unique())
        mid_step = int(min(logged, key=lambda s: abs(s - c.steps / 10))) if len(logged) else c.steps
        left = (1 - fast) ** mid_step
        source, text = _CONVERGENCE["ema-error-plateaus"]
        measurement = (f"mean log(error after {c.steps} steps / after {mid_step}), running mean, m={fast:g}, "
                       f"batch {mid_b}; equivalence within ±log({PLATEAU_FACTOR:g})")
        if mid_step >= c.steps or left > 0.01:
            out.append(stats.not_judged("ema-error-plateaus", text, source, measurement,
                                        f"step {mid_step} is not before the end, or m={fast:g} still carries "
                                        f"{left:.2g} of its start there (needs <= 0.01)", unit=SEED))
        else:
            ratio = np.log(err(fast, c.steps, mid_b)) - np.log(err(fast, mid_step, mid_b))
            claim = stats.equivalence_claim("ema-error-plateaus", text, source, measurement, ratio, 0.0,
                                            margin=math.log(PLATEAU_FACTOR), unit=SEED)
            claim.detail += f"; the error itself stays at {np.mean(err(fast, c.steps, mid_b)):.3g} σ, not 0"
            out.append(claim)
    if None not in c.momenta or not emas:
        why = f"momenta {list(c.momenta)} needs None and at least one exponential average"
        out += [_skip("cumulative-closest-stationary", _CONVERGENCE, "running-mean error, None vs slowest", why)]
    else:
        slow = min(emas)
        out.append(judge(
            "cumulative-closest-stationary", f"RMS error of the running mean after {c.steps} steps on the fixed "
            f"population, batch {mid_b}: None vs m={slow:g}", err(None, c.steps, mid_b), err(slow, c.steps, mid_b),
            "less", labels=("None", f"m={slow:g}")))
    if None not in c.momenta:
        out.append(_skip("running-var-unbiased-estimate", _CONVERGENCE, "log(running var / population var)",
                         f"momenta {list(c.momenta)} has no None (the cumulative average)"))
    else:
        source, text = _CONVERGENCE["running-var-unbiased-estimate"]
        shortfall = abs(math.log((small_b - 1) / small_b))
        claim = stats.equivalence_claim(
            "running-var-unbiased-estimate", text + f" at batch {small_b}", source,
            f"mean log(running_var / population var) after {c.steps} steps, momentum None, batch {small_b}",
            err(None, c.steps, small_b, "var_bias"), 0.0, margin=shortfall / 2, unit=SEED)
        claim.detail += f"; a biased estimator would sit at log((B-1)/B) = {-shortfall:.3g}"
        out.append(claim)
    return out


_GAP = {
    "short-training-eval-gap": (SEED_002, "After short training a large Keras momentum leaves the running "
                                "statistics short of the true ones, hurting prediction"),
    "recalibration-closes-gap": ("STUDIES.md", "Recalibrating the statistics on training data closes the "
                                 "train/eval gap"),
    "long-training-shrinks-gap": (SEED_002, "With enough steps the large Keras momentum's running statistics get "
                                  "close to the true ones"),
    "cumulative-lags-in-training": ("STUDIES.md", "While the network trains (a moving population), momentum=None "
                                    "(cumulative average) lags: its running statistics end farther from the "
                                    "network's current statistics than the slowest exponential average"),
    "small-batch-large-momentum": (SEED_002, "With a small batch, a large (Keras) momentum gives running "
                                   "statistics closer to the truth than a small one"),
    "large-batch-small-momentum": (SEED_002, "...and conversely (反之): with a large batch, a small (Keras) "
                                   "momentum gives running statistics closer to the truth"),
    "batch-size-shifts-best-momentum": (SEED_002, "The advantage of a large (Keras) momentum over a small one "
                                        "shrinks as the batch grows"),
}


# A CNN "trained" when its recalibrated test accuracy is at least twice chance (both datasets have 10
# classes): a network that did not learn is no moving population of a training run, and its accuracies say
# nothing about prediction.
TRAINED = 0.2


def _gap_claims(run: StoredRun, c: Config) -> list[Claim]:
    short, long = c.gap_steps
    bm, small_b, big_b = middle(c.gap_batch_sizes), min(c.gap_batch_sizes), max(c.gap_batch_sizes)
    emas = [m for m in c.gap_momenta if m is not None]

    def v(metric: str, steps: int, b: int, m: float | str | None = "") -> np.ndarray:
        name = metric if m == "" else f"{metric}/m={momentum_label(m)}"
        return values(run, "gap", name, steps, batch_size=b)

    def judge(cid: str, measurement: str, *args, **kw) -> Claim:
        source, text = _GAP[cid]
        return stats.compare_claim(cid, text, source, measurement, *args, paired=True, unit=SEED, **kw)

    def untrained(b: int) -> str:
        """Why batch ``b``'s networks cannot stand for training (they did not learn), or ``""``."""
        acc = float(np.mean(v("acc_recalibrated", long, b)))
        return "" if acc >= TRAINED else (f"the CNN trained at batch {b} did not learn: recalibrated test accuracy "
                                          f"{acc:.3f} after {long} steps (needs >= {TRAINED:g}, twice chance)")

    out: list[Claim] = []
    why = untrained(bm) or ("" if emas else f"gap_momenta {list(c.gap_momenta)} has no exponential average")
    if why:
        return [_skip(cid, _GAP, "test accuracy / running-statistics error of the CNN", why) for cid in _GAP]
    # Keras's default 0.99 is torch 0.01: the post's "large momentum".
    large = 0.01 if 0.01 in emas else min(emas)
    run_s, recal_s, batch_s = v("acc_running", short, bm, large), v("acc_recalibrated", short, bm), \
        v("acc_batch_stats", short, bm)
    out.append(judge(
        "short-training-eval-gap", f"test accuracy after {short} steps, batch {bm}: running stats (torch "
        f"m={large:g}, Keras {1 - large:g}) vs recalibrated stats", run_s, recal_s, "less", min_effect=0.05,
        labels=("running", "recalibrated"), scale="proportion"))
    out.append(judge(
        "recalibration-closes-gap", f"|batch-stat accuracy - eval accuracy| after {short} steps, batch {bm}, "
        f"m={large:g}: recalibrated vs running stats", np.abs(batch_s - recal_s), np.abs(batch_s - run_s), "less",
        min_effect=0.5, labels=("recalibrated", "running")))
    # The short run is the long run's first steps (same seed, start and batch order): paired by seed.
    out.append(judge(
        "long-training-shrinks-gap", f"recalibrated - running test accuracy, m={large:g}, batch {bm}: {long} vs "
        f"{short} steps", v("acc_recalibrated", long, bm) - v("acc_running", long, bm, large), recal_s - run_s,
        "less", labels=(f"{long} steps", f"{short} steps")))
    slow = min(emas)
    # Claims about the end of training compare the slow average once it has forgotten its (0, 1) start.
    leftover = (1 - slow) ** long
    unburnt = (f"after {long} steps m={slow:g} still carries (1-m)^T = {leftover:.2g} of its initial value "
               "(needs <= 0.01)") if leftover > 0.01 else ""
    if None not in c.gap_momenta or unburnt:
        out.append(_skip("cumulative-lags-in-training", _GAP, "running-statistics error, None vs slowest",
                         unburnt or f"gap_momenta {list(c.gap_momenta)} has no None (the cumulative average)"))
    else:
        claim = judge(
            "cumulative-lags-in-training", f"RMS running-statistics error against the recalibrated statistics "
            f"(mean in σ, log var; all BatchNorm channels) after {long} steps, batch {bm}: None vs m={slow:g}",
            v("stat_err", long, bm, None), v("stat_err", long, bm, slow), "greater", transform="log",
            labels=("None", f"m={slow:g}"))
        claim.detail += (f"; test accuracy with running stats: None {np.mean(v('acc_running', long, bm, None)):.3f}, "
                         f"m={slow:g} {np.mean(v('acc_running', long, bm, slow)):.3f}, recalibrated "
                         f"{np.mean(v('acc_recalibrated', long, bm)):.3f}")
        out.append(claim)
    advice = ("small-batch-large-momentum", "large-batch-small-momentum", "batch-size-shifts-best-momentum")
    if len(emas) < 2 or small_b == big_b or unburnt or untrained(small_b) or untrained(big_b):
        why = unburnt or untrained(small_b) or untrained(big_b) or (
            f"needs two exponential averages in gap_momenta {list(c.gap_momenta)} and two sizes in "
            f"gap_batch_sizes {list(c.gap_batch_sizes)}")
        return out + [_skip(cid, _GAP, "running-statistics error by momentum and batch size", why) for cid in advice]
    fast = max(emas)
    labels = (f"Keras {1 - slow:g}", f"Keras {1 - fast:g}")

    def errs(b: int) -> tuple[np.ndarray, np.ndarray]:
        return v("stat_err", long, b, slow), v("stat_err", long, b, fast)

    for cid, b in (("small-batch-large-momentum", small_b), ("large-batch-small-momentum", big_b)):
        e_slow, e_fast = errs(b)
        a, bb, direction = (e_slow, e_fast, "less") if b == small_b else (e_fast, e_slow, "less")
        claim = judge(
            cid, f"RMS running-statistics error against the recalibrated statistics after {long} steps, batch {b}: "
            + (f"torch m={slow:g} vs {fast:g}" if b == small_b else f"torch m={fast:g} vs {slow:g}"),
            a, bb, direction, transform="log", labels=labels if b == small_b else labels[::-1])
        claim.detail += (f"; test accuracy with running stats: Keras {1 - slow:g} "
                         f"{np.mean(v('acc_running', long, b, slow)):.3f}, Keras {1 - fast:g} "
                         f"{np.mean(v('acc_running', long, b, fast)):.3f}")
        out.append(claim)
    (s_small, f_small), (s_big, f_big) = errs(small_b), errs(big_b)
    out.append(judge(
        "batch-size-shifts-best-momentum", f"per seed log(error m={slow:g} / error m={fast:g}) after {long} steps: "
        f"batch {small_b} vs {big_b} (Cohen's d of the paired difference)", np.log(s_small / f_small),
        np.log(s_big / f_big), "less", effect="cohen_d", labels=(f"B={small_b}", f"B={big_b}")))
    return out


def key_numbers(run: StoredRun) -> list[KeyNumber]:
    """What the seeded claims read: the CNN's test accuracies (proportions) at both training lengths, and the
    running statistics' errors (positive) at the end of each part."""
    c: Config = run.config
    out: list[KeyNumber] = []
    bm = middle(c.gap_batch_sizes)
    for steps in c.gap_steps:
        acc = [(f"acc_running/m={momentum_label(m)}", f"running stats, torch m={momentum_label(m)}")
               for m in c.gap_momenta]
        for metric, how in (*acc, ("acc_recalibrated", "recalibrated stats"), ("acc_batch_stats", "batch stats")):
            out.append(KeyNumber(f"test accuracy after {steps} steps, batch {bm}, {how}", "gap",
                                 tuple(values(run, "gap", metric, steps, batch_size=bm)), "proportion", SEED))
    long = c.gap_steps[1]
    for b in sorted({min(c.gap_batch_sizes), max(c.gap_batch_sizes)}):
        for m in c.gap_momenta:
            out.append(KeyNumber(f"running-statistics error vs recalibrated after {long} steps, batch {b}, torch "
                                 f"m={momentum_label(m)}", "gap",
                                 tuple(values(run, "gap", f"stat_err/m={momentum_label(m)}", long, batch_size=b)),
                                 "positive", SEED))
    mid_b = middle(c.batch_sizes)
    for m in c.momenta:
        out.append(KeyNumber(f"RMS error of the running mean (units of σ) after {c.steps} steps, batch {mid_b}",
                             f"converge/m={momentum_label(m)}",
                             tuple(values(run, f"converge/m={momentum_label(m)}", "mean_err", c.steps, batch_size=mid_b)),
                             "positive", SEED))
    return [k for k in out if k.values]


NOTES = """\
Post 002 writes the moving average as `moving = moving*momentum + batch*(1-momentum)` and says PyTorch's
value is 0.9: in that (Keras) form the statement is right, but PyTorch's *argument* means the opposite weight
(default 0.1); the two claims above separate the formula from the argument. Post 004's walk-through is
reproduced by the layer itself, iteration by iteration. The convergence arms use a fixed (stationary)
population whose exact statistics are known, so "closer to the truth" is measured, not inferred. The CNN arms
are the moving case: the statistics a BatchNorm should hold change as the network trains, so an average that
remembers everything (momentum=None) lags, and post 002's batch-size advice becomes a trade-off between noise
(small batches) and lag (slow averages). Every momentum there is tracked in the same training run (training
never reads the running statistics), so momenta are compared on identical networks; recalibration (exact
statistics of the training data under the final weights) is the reference for "the truth" and the control that
separates a stale running estimate from a worse network.
"""


def dataset_used(run: StoredRun) -> str:
    """The images the CNN cells trained on: the stored record (``digits`` after a fallback), else the configured
    name (runs stored before the record existed)."""
    info = run.extra.get("data", pd.DataFrame())
    if not len(info):
        return str(run.config.dataset)
    name, notice = str(info["dataset"].iloc[0]), str(info["notice"].iloc[0] or "")
    return f"{name}: Fashion-MNIST was unavailable" if notice else name


def notes(run: StoredRun) -> str:
    """The report's notes, with the loader's notice when the CNN cells fell back to another dataset."""
    info = run.extra.get("data", pd.DataFrame())
    notice = str(info["notice"].iloc[0]) if len(info) and info["notice"].iloc[0] else ""
    return NOTES + (f"\n**Dataset notice:** {notice}\n" if notice else "")
