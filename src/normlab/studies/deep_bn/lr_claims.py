"""deep-bn's learning-rate sweep, judged per seed (a seed fixes the weights and the batches that the BN and
no-BN runs share at every learning rate, so it is the unit, and BN vs no BN is a paired comparison).

* ``bn-larger-lr``: per seed, the largest learning rate of the grid at which each arm trains (final loss
  finite and at most ``trains_below`` x ln(10)); BN's is larger than no-BN's in more seeds than chance
  allows (sign test, one-sided binomial at the lab's ALPHA; ties count against the claim, except ties at the
  top of the grid, where both arms train at every rate tried and the grid cannot tell).
* ``bn-faster``: per seed, the lowest final loss over the grid (each arm at its own best rate) after the
  same number of steps; BN's is lower (paired t on log10).
* ``bn-init-insensitive``: per seed, how much the best final loss changes between torch's default init and
  Kaiming's, ``|log10(best_default / best_kaiming)|``; smaller with BN than without (paired t).

The well-initialised (Kaiming) no-BN net is the control for the first two: it rules out "BN only helps a
badly initialised net".
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats as sps

from normlab.engine.spec import Claim, StoredRun
from normlab.kit import stats
from normlab.studies.deep_bn.config import SOURCE, Config
from normlab.studies.deep_bn.model import CLASSES

SEED = "seed"


def chance_loss() -> float:
    """The cross-entropy of predicting every class equally often: what an untrained net achieves at best."""
    return math.log(CLASSES)


def sweep(metrics: pd.DataFrame, arm: str, c: Config) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(seed x lr) tables of one sweep arm: the final loss (NaN where the run diverged or is missing) and
    whether the run diverged (NaN where the cell is missing)."""
    sel = metrics[(metrics["arm"] == arm) & (metrics["metric"].isin(("final_loss", "diverged")))]
    seeds = range(c.train_seeds)

    def table(metric: str) -> pd.DataFrame:
        rows = sel[sel["metric"] == metric]
        if rows.empty:
            return pd.DataFrame(np.nan, index=seeds, columns=list(c.lrs))
        t = rows.pivot_table(index="seed", columns="lr", values="value", aggfunc="first")
        return t.reindex(index=seeds, columns=list(c.lrs))

    return table("final_loss"), table("diverged")


def trains(final: pd.DataFrame, diverged: pd.DataFrame, c: Config) -> pd.DataFrame:
    """(seed x lr) booleans: the run did not diverge and its final loss is at most trains_below x chance.
    NaN where the cell is missing."""
    ok = (diverged == 0) & (final <= c.trains_below * chance_loss())
    return ok.astype(float).where(diverged.notna())


def lr_max_index(ok: pd.DataFrame) -> np.ndarray:
    """Per seed: the index in the grid of the largest learning rate that trains; -1 when none does; NaN when
    any of the seed's runs is missing."""
    out = []
    for _, row in ok.iterrows():
        vals = row.to_numpy(dtype=float)
        if np.isnan(vals).any():
            out.append(np.nan)
        else:
            hits = np.flatnonzero(vals == 1.0)
            out.append(float(hits.max()) if hits.size else -1.0)
    return np.asarray(out)


def best_loss(final: pd.DataFrame, diverged: pd.DataFrame) -> np.ndarray:
    """Per seed: the lowest final loss over the grid, a diverged run counting as the chance loss (no better
    than an untrained net); NaN when any of the seed's runs is missing."""
    filled = final.where(diverged == 0, chance_loss()).where(diverged.notna())
    return np.asarray([row.min() if row.notna().all() else np.nan for _, row in filled.iterrows()])


def log_lr(index: np.ndarray, lrs: tuple[float, ...]) -> np.ndarray:
    """log10 of the grid's learning rate at ``index``; -1 (no rate trains) sits one grid step below the
    smallest (one decade when the grid has one rate)."""
    grid = np.log10(np.asarray(lrs, dtype=float))
    below = grid[0] - (grid[1] - grid[0] if grid.size > 1 else 1.0)
    out = np.full(index.shape, np.nan)
    ok = np.isfinite(index)
    out[ok] = np.where(index[ok] < 0, below, grid[np.clip(index[ok], 0, None).astype(int)])
    return out


def sign_claim(id: str, claim: str, source: str, measurement: str, a: np.ndarray, b: np.ndarray, top: int,
               lrs: tuple[float, ...], labels: tuple[str, str]) -> Claim:
    """Judge "``a``'s largest trainable learning rate is larger than ``b``'s" from per-seed grid indices.

    A seed is a win when ``a > b``; a loss when ``a < b`` or they tie below the top of the grid; a tie at the
    top (``top``, both train at every rate tried) is left out: the grid cannot tell. ``supported`` when wins
    exceed half the seeds by more than chance allows (one-sided binomial, p < ALPHA), ``refuted`` when they
    fall short of half by more than chance allows, else ``inconclusive``. The effect is the mean difference
    in decades of learning rate, with its 95% interval over seeds.
    """
    keep = np.isfinite(a) & np.isfinite(b) & ~((a == top) & (b == top))
    censored = int((np.isfinite(a) & np.isfinite(b) & (a == top) & (b == top)).sum())
    a_k, b_k = a[keep], b[keep]
    n = int(keep.sum())
    if n < 2:
        return stats.not_judged(id, claim, source, measurement,
                                f"{n} seeds with every run present and not tied at the top of the grid "
                                f"({censored} tied at the top): too few to judge", unit=SEED)
    wins = int((a_k > b_k).sum())
    ties = int((a_k == b_k).sum())
    p_claim = float(sps.binomtest(wins, n, 0.5, alternative="greater").pvalue)
    p_opp = float(sps.binomtest(wins, n, 0.5, alternative="less").pvalue)
    verdict = "supported" if p_claim < stats.ALPHA else "refuted" if p_opp < stats.ALPHA else "inconclusive"
    decades = log_lr(a_k, lrs) - log_lr(b_k, lrs)
    iv = stats.mean_ci(decades)
    detail = (f"{labels[0]} larger in {wins}/{n} seeds, equal in {ties}, smaller in {n - wins - ties}"
              + (f" ({censored} more tied at the grid's top, left out)" if censored else "")
              + f"; sign test one-sided p={p_claim:.3g}; difference {iv.fmt()} decades of learning rate "
              f"(mean [95% CI])")
    return Claim(id=id, claim=claim, source=source, measurement=measurement, verdict=verdict,
                 statistic="sign_test", value=float(wins), p_value=p_claim, effect_size=iv.mean,
                 ci=(iv.lo, iv.hi), n=n, detail=detail, unit=SEED)


def _fmt_lr(index: np.ndarray, lrs: tuple[float, ...]) -> str:
    """How often each largest-trainable rate occurs: ``"0.03: 9, 0.1: 3"``."""
    vals = index[np.isfinite(index)].astype(int)
    names = {i: ("none" if i < 0 else f"{lrs[i]:g}") for i in set(vals.tolist())}
    return ", ".join(f"{names[i]}: {int((vals == i).sum())}" for i in sorted(names))


def lr_claims(run: StoredRun) -> list[Claim]:
    c: Config = run.config
    limit = c.trains_below * chance_loss()
    tables = {(bn, init): sweep(run.metrics, f"train/{'bn' if bn else 'plain'}/{init}", c)
              for init in c.train_inits for bn in (False, True)}
    idx = {k: lr_max_index(trains(*v, c)) for k, v in tables.items()}
    best = {k: best_loss(*v) for k, v in tables.items()}
    steps = f"{c.train_steps} SGD steps (momentum {c.momentum:g}, batch {c.train_batch})"
    net = f"{c.train_depth}-hidden-layer width-{c.train_width} ReLU MLP on 8x8 digits"
    out = []

    lr_text = "BN allows a larger learning rate"
    lr_meas = (f"per seed: the largest learning rate of {list(c.lrs)} at which the {net} trains (final loss finite "
               f"and <= {c.trains_below:g} x ln 10 = {limit:.3g} after {steps}), BN vs no BN, both from Kaiming's "
               "init and the same batches; sign test over seeds")
    if "kaiming" in c.train_inits:
        cl = sign_claim("bn-larger-lr", lr_text, SOURCE, lr_meas, idx[(True, "kaiming")], idx[(False, "kaiming")],
                        len(c.lrs) - 1, c.lrs, ("BN", "no BN"))
        cl.detail += (f"; largest rate that trains, BN: {_fmt_lr(idx[(True, 'kaiming')], c.lrs)}; no BN: "
                      f"{_fmt_lr(idx[(False, 'kaiming')], c.lrs)}")
        if "default" in c.train_inits:
            cl.detail += (f"; with torch's default init instead, BN: {_fmt_lr(idx[(True, 'default')], c.lrs)}; "
                          f"no BN: {_fmt_lr(idx[(False, 'default')], c.lrs)}")
    else:
        cl = stats.not_judged("bn-larger-lr", lr_text, SOURCE, lr_meas,
                              "train_inits has no 'kaiming': the well-initialised no-BN control was not run",
                              unit=SEED)
    out.append(cl)

    fast_text = "BN speeds up convergence"
    fast_meas = (f"per seed: the lowest final loss over the learning-rate grid (each arm at its own best rate) "
                 f"after {steps}, {net}, BN vs no BN from Kaiming's init; paired t on log10")
    if "kaiming" in c.train_inits:
        cl = stats.compare_claim("bn-faster", fast_text, SOURCE, fast_meas, best[(True, "kaiming")],
                                 best[(False, "kaiming")], "less", transform="log", paired=True,
                                 labels=("BN", "no BN"), unit=SEED)
    else:
        cl = stats.not_judged("bn-faster", fast_text, SOURCE, fast_meas,
                              "train_inits has no 'kaiming': the well-initialised no-BN control was not run",
                              unit=SEED)
    out.append(cl)

    init_text = "With BN the init need not be designed carefully: training depends less on it"
    init_meas = (f"per seed: |log10(best final loss with torch's default init / with Kaiming's)| over the grid, "
                 f"{net}, {steps}; BN vs no BN, paired t")
    if {"kaiming", "default"} <= set(c.train_inits):
        sens = {bn: np.abs(np.log10(best[(bn, "default")] / best[(bn, "kaiming")])) for bn in (False, True)}
        cl = stats.compare_claim("bn-init-insensitive", init_text, SOURCE, init_meas, sens[True], sens[False],
                                 "less", paired=True, labels=("BN", "no BN"), unit=SEED)
        cl.detail += "; best final loss (geometric mean [95% CI]) " + ", ".join(
            f"{'BN' if bn else 'no BN'}/{init}: {stats.summarise(best[(bn, init)], 'positive').fmt()}"
            for bn in (False, True) for init in ("kaiming", "default"))
    else:
        cl = stats.not_judged("bn-init-insensitive", init_text, SOURCE, init_meas,
                              "train_inits needs both 'kaiming' and 'default'", unit=SEED)
    out.append(cl)
    return out
