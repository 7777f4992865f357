"""deep-bn (seed 004): a 100-layer ReLU MLP at initialization, three inits, with and without BatchNorm.

The seed runs a 100-layer network under several initializations with and without BN and concludes that
"whatever the init, with BN the output std stays at a very stable value" (its code is omitted). normlab
uses the usual setup of the course the seed follows: ``depth x [Linear(256, 256, bias=False) -> BN ->
ReLU]``, batch 16 of ``randn`` inputs, BN in training mode (batch statistics), and prints the std of
every layer's output like the seed does.

It also runs the backward pass, which the seed does not look at. Yang et al. 2019 ("A Mean Field Theory
of Batch Normalization") show that at initialization BN makes gradients *explode* with depth in plain
(non-residual) nets: for ReLU the squared gradient norm grows by ``π/(π-1)`` per layer in the large-batch
limit, so the norm grows by ``sqrt(π/(π-1)) ≈ 1.21`` per layer going from the output toward the input.
The backward pass starts from a random Gaussian readout ``L = <g, out>`` (any fixed readout works; this one
has no preferred direction).

Per seed ``s``: ``torch.manual_seed(s)``, build the layers (torch's default init draws here), apply the
arm's init, then draw ``x`` and ``g``. Arms: ``{plain, bn}/{default, normal, kaiming}``; control
``bn/kaiming/batch=B`` repeats BN + Kaiming at a larger batch, since Yang's rate is a large-batch limit.

Overflow is data, not a crash: when activations become inf/NaN at layer ``k`` the cell records
``overflow_layer = k``, keeps the finite layers, and skips the backward pass for that seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
import torch.nn as tnn

from normlab.engine.config import (
    Check,
    because,
    integer,
    items,
    number,
    one_of,
    seeds_check,
)
from normlab.engine.spec import Cell, CellContext, CellResult, Claim, Figure, StoredRun, Study
from normlab.kit import stats
from normlab.kit.plots import plot_band
from normlab.nn.registry import create_norm

SOURCE = "seed 004"
YANG = "Yang et al. 2019"
YANG_RELU_RATE = math.sqrt(math.pi / (math.pi - 1))  # gradient-norm growth per layer, ReLU + BN, batch -> inf
INITS = ("default", "normal", "kaiming")


@dataclass
class Config:
    depth: int = 100
    width: int = 256
    batch: int = 16
    inits: tuple[str, ...] = INITS
    seeds: int = 32
    control_batches: tuple[int, ...] = (128,)  # BN + Kaiming at a larger batch (Yang's rate is for batch -> inf)
    fit_skip: int = 10  # layers left out at each end when fitting a per-layer growth factor
    stable_tol: float = 0.01  # a per-layer std factor within 1 ± tol counts as "stable"
    yang_margin: float = 0.02  # relative margin around Yang's 1.21 for "matches"

    checks: ClassVar[dict[str, Check]] = {
        "depth": integer(1),
        "width": integer(1),
        "batch": because(integer(2), "BatchNorm needs two samples per batch"),
        "inits": items(one_of(INITS), unique=True),
        "seeds": seeds_check(),
        "control_batches": items(because(integer(2), "BatchNorm needs two samples per batch"), min_len=0,
                                 unique=True),
        "fit_skip": integer(0),
        "stable_tol": number(0, 1, lo_open=True, hi_open=True),
        "yang_margin": number(0, 1, lo_open=True, hi_open=True),
    }


def _init(linear: tnn.Linear, kind: str) -> None:
    if kind == "normal":
        tnn.init.normal_(linear.weight, mean=0.0, std=1.0)
    elif kind == "kaiming":
        tnn.init.kaiming_normal_(linear.weight, nonlinearity="relu")
    elif kind != "default":  # "default": torch's own Linear init (kaiming_uniform with a=sqrt(5))
        raise ValueError(f"inits: expected names from {INITS}, got {kind!r}")


def _build(config: Config, init: str, bn: bool) -> tuple[tnn.ModuleList, tnn.ModuleList]:
    linears = tnn.ModuleList(tnn.Linear(config.width, config.width, bias=False) for _ in range(config.depth))
    for lin in linears:
        _init(lin, init)
    norms = tnn.ModuleList(
        create_norm("batchnorm" if bn else "none", config.width) for _ in range(config.depth)
    )
    return linears, norms


def run_seed(config: Config, init: str, bn: bool, batch: int, seed: int) -> dict[str, object]:
    """Forward std and backward gradient norms per layer for one seed (layers numbered 1..depth)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        linears, norms = _build(config, init, bn)
        x = torch.randn(batch, config.width)
        g = torch.randn(batch, config.width)  # the readout direction for the backward pass
    acts, stds, overflow, zero = [], [], None, None
    h = x
    for k, (lin, norm) in enumerate(zip(linears, norms, strict=True), start=1):
        h = torch.relu(norm(lin(h)))
        h.retain_grad()
        acts.append(h)
        std = float(h.detach().std())
        if not math.isfinite(std) or not torch.isfinite(h).all():
            overflow = k  # inf (or inf - inf = NaN) at layer k: stop, the rest is meaningless
            break
        stds.append(std)
        if zero is None and std == 0.0:
            zero = k  # underflowed to exact zeros
    out: dict[str, object] = {"act_std": stds, "overflow_layer": overflow, "zero_layer": zero,
                              "grad_w": [], "grad_a": []}
    if overflow is None:
        (h * g).sum().backward()
        out["grad_w"] = [float(lin.weight.grad.norm()) for lin in linears]
        out["grad_a"] = [float(a.grad.norm()) for a in acts]
    return out


def _arms(config: Config) -> list[tuple[str, str, bool, int]]:
    arms = [(f"{'bn' if bn else 'plain'}/{init}", init, bn, config.batch) for bn in (False, True) for init in config.inits]
    arms += [(f"bn/kaiming/batch={b}", "kaiming", True, b) for b in config.control_batches]
    return arms


class DeepBn(Study):
    name = "deep-bn"
    description = "100-layer ReLU MLP at init: forward std and gradient per layer, 3 inits, with/without BN"
    seeds_from = ("004",)
    Config = Config
    quick_overrides: ClassVar[dict] = {"seeds": 4, "depth": 40, "control_batches": ()}
    threads = 1  # tiny kernels: more threads only spin-wait on a busy machine

    def check_config(self, config: Config) -> None:
        super().check_config(config)
        if config.depth <= 2 * config.fit_skip + 2:
            raise ValueError(f"depth: expected > 2*fit_skip + 2 = {2 * config.fit_skip + 2}, got {config.depth}")

    def cells(self, config: Config) -> list[Cell]:
        seeds = tuple(range(config.seeds))
        return [Cell(arm, seeds, (("init", init), ("bn", bn), ("batch", b))) for arm, init, bn, b in _arms(config)]

    def run_cell(self, config: Config, ctx: CellContext) -> CellResult:
        p = ctx.cell.param_dict
        rows = []
        for i, seed in enumerate(ctx.cell.seeds):
            r = run_seed(config, p["init"], p["bn"], p["batch"], seed)
            for metric in ("act_std", "grad_w", "grad_a"):
                rows += [(seed, k, metric, v) for k, v in enumerate(r[metric], start=1)]
            for metric in ("overflow_layer", "zero_layer"):
                if r[metric] is not None:
                    rows.append((seed, 0, metric, float(r[metric])))
            if r["grad_w"]:  # float32 underflow: a vanished gradient is stored as the count of exact zeros
                rows.append((seed, 0, "grad_w_zero_layers", float(sum(v == 0.0 for v in r["grad_w"]))))
            ctx.progress(i + 1, len(ctx.cell.seeds))
        return CellResult(metrics=pd.DataFrame(rows, columns=["seed", "step", "metric", "value"]))

    def claims(self, run: StoredRun) -> list[Claim]:
        c: Config = run.config
        fwd = {arm: _factors(run.metrics, arm, "act_std", c, backward=False) for arm, *_ in _arms(c)}
        bwd = {arm: _factors(run.metrics, arm, "grad_w", c, backward=True) for arm, *_ in _arms(c)}
        bn_arms = [f"bn/{i}" for i in c.inits]
        out = [
            _all_of("bn-std-stable", "With BN the output std stays stable whatever the init", SOURCE,
                    f"per seed: per-layer growth factor of the activation std (fit over layers {c.fit_skip + 1}.."
                    f"{c.depth - c.fit_skip}); stable = within 1 ± {c.stable_tol:g}, for every init",
                    [stats.equivalence_claim(a, "", "", "", fwd[a], 1.0, c.stable_tol) for a in bn_arms], bn_arms),
        ]
        plain = {
            "default": ("vanishes", "less", "Without BN, torch's default init makes the output std vanish"),
            "normal": ("explodes", "greater", "Without BN, normal(0,1) init makes the output std explode"),
        }
        for init in c.inits:
            arm = f"plain/{init}"
            if init in plain:
                tag, direction, text = plain[init]
                bound = 1 - c.stable_tol if direction == "less" else 1 + c.stable_tol
                cl = stats.threshold_claim(f"plain-{init}-{tag}", text, SOURCE,
                                           f"per seed: per-layer std growth factor, vs {bound:g}", fwd[arm],
                                           direction, bound)
            else:
                cl = stats.equivalence_claim("plain-kaiming-stable", "Without BN, Kaiming init keeps the std stable",
                                             SOURCE, f"per seed: per-layer std growth factor, within 1 ± {c.stable_tol:g}",
                                             fwd[arm], 1.0, c.stable_tol)
            cl.detail += _overflow_note(run.metrics, arm)
            out.append(cl)
        out.append(_all_of(
            "bn-grad-grows", "BN makes gradients grow with depth at init (toward the input)", YANG,
            "per seed: per-layer growth factor of ||dL/dW_l|| going from the output toward the input, > 1, every init",
            [stats.threshold_claim(a, "", "", "", bwd[a], "greater", 1.0) for a in bn_arms], bn_arms))
        margin = c.yang_margin * YANG_RELU_RATE
        for arm in [*bn_arms, *(a for a, *_ in _arms(c) if "batch=" in a)]:
            cl = stats.equivalence_claim(
                f"bn-grad-rate/{arm}", f"Gradient norm grows ≈ sqrt(π/(π-1)) = {YANG_RELU_RATE:.3f}x per layer "
                f"({arm})", YANG, f"per-layer gradient growth factor within ±{c.yang_margin:.0%} of {YANG_RELU_RATE:.3f}",
                bwd[arm], YANG_RELU_RATE, margin)
            cl.detail = f"factor {stats.mean_ci(bwd[arm]).fmt(4)}; " + cl.detail
            out.append(cl)
        if "kaiming" in c.inits:
            out.append(stats.equivalence_claim(
                "plain-kaiming-grad-flat", "Control: without BN (Kaiming) gradients do not grow with depth",
                "control arm", f"per-layer gradient growth factor within 1 ± {c.stable_tol:g}",
                bwd["plain/kaiming"], 1.0, c.stable_tol))
        return out

    def figures(self, run: StoredRun) -> list[Figure]:
        return [_per_layer_figure(run, "act_std"), _per_layer_figure(run, "grad_w"), _factor_figure(run)]

    def notes(self, run: StoredRun) -> str:
        c: Config = run.config
        return (
            f"The seed omits its code; normlab uses the course's usual setup: {c.depth} x [Linear({c.width},"
            f"{c.width}, bias=False) → BN → ReLU], batch {c.batch} of randn inputs, BN in training mode, "
            f"{c.seeds} seeds per arm. Growth factors are exp(slope) of a least-squares line through log(value) "
            f"vs layer over layers {c.fit_skip + 1}..{c.depth - c.fit_skip} (or the finite ones). Controls: "
            "`plain/kaiming` shows that depth alone does not make gradients grow; `bn/kaiming/batch=B` checks "
            f"whether the rate approaches Yang et al.'s large-batch value {YANG_RELU_RATE:.3f} as the batch grows. "
            "Arms whose activations overflow record the layer (`overflow_layer`) and have no backward pass."
        )


def _series(metrics: pd.DataFrame, arm: str, metric: str) -> pd.DataFrame:
    """A (seed x layer) table of one per-layer metric; missing layers (after an overflow) are NaN."""
    sel = metrics[(metrics["arm"] == arm) & (metrics["metric"] == metric) & (metrics["step"] > 0)]
    return sel.pivot_table(index="seed", columns="step", values="value", aggfunc="first")


def _factors(metrics: pd.DataFrame, arm: str, metric: str, c: Config, backward: bool) -> np.ndarray:
    """Per seed: exp(slope) of log(value) vs layer over the fit window (growth toward the input if backward)."""
    table = _series(metrics, arm, metric)
    out = []
    for _, row in table.iterrows():
        layers, vals = row.index.to_numpy(dtype=float), row.to_numpy(dtype=float)
        keep = np.isfinite(vals) & (vals > 0) & (layers > c.fit_skip)
        if (layers[keep] <= c.depth - c.fit_skip).sum() >= 3:  # inside the window when the run reached it
            keep &= layers <= c.depth - c.fit_skip
        if keep.sum() < 3:
            out.append(np.nan)
            continue
        slope = np.polyfit(layers[keep], np.log(vals[keep]), 1)[0]
        out.append(math.exp(-slope if backward else slope))
    return np.asarray(out)


def _all_of(id: str, claim: str, source: str, measurement: str, parts: list[Claim], names: list[str]) -> Claim:
    """One claim that must hold for every arm: combined verdict, the weakest arm's numbers."""
    verdict = stats.combine_verdicts([p.verdict for p in parts])
    rank = {"refuted": 0, "inconclusive": 1, "supported": 2}
    worst = min(parts, key=lambda p: rank[p.verdict])
    detail = "; ".join(f"{n}: {p.verdict} ({p.detail})" for n, p in zip(names, parts, strict=True))
    return Claim(id=id, claim=claim, source=source, measurement=measurement, verdict=verdict,
                 statistic=worst.statistic, value=worst.value, p_value=worst.p_value,
                 effect_size=worst.effect_size, ci=worst.ci, n=worst.n, detail=detail)


def _no_data_reason(metrics: pd.DataFrame, arm: str, metric: str, table: pd.DataFrame) -> str:
    """Why a per-layer series has nothing to plot ('' when it has)."""
    if table.empty:
        overflowed = ((metrics["arm"] == arm) & (metrics["metric"] == "overflow_layer")).any()
        return "no data: forward overflowed to inf" if overflowed else "no data"
    if not (table > 0).to_numpy().any():
        return f"all {metric} values are exactly 0 (float32 underflow)"
    return ""


def _overflow_note(metrics: pd.DataFrame, arm: str) -> str:
    notes = []
    for metric, what in (("overflow_layer", "inf/NaN"), ("zero_layer", "exact zeros")):
        sel = metrics[(metrics["arm"] == arm) & (metrics["metric"] == metric)]["value"]
        if len(sel):
            notes.append(f"{what} at layer {int(sel.min())}-{int(sel.max())} in {len(sel)} seeds")
    zeros = metrics[(metrics["arm"] == arm) & (metrics["metric"] == "grad_w_zero_layers")]["value"]
    if len(zeros) and zeros.max() > 0:
        notes.append(f"weight gradients exactly 0 (underflow) in {zeros.mean():.0f} layers per seed on average")
    return ("; " + ", ".join(notes)) if notes else ""


_LABELS = {"act_std": ("std of layer output (post-ReLU)", "forward: activation std per layer"),
           "grad_w": ("||dL/dW_l|| / ||dL/dW_last||", "backward: weight-gradient norm per layer")}


def _per_layer_figure(run: StoredRun, metric: str) -> Figure:
    c: Config = run.config
    ylabel, title = _LABELS[metric]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharex=True)
    for ax, family in zip(axes, ("plain", "bn"), strict=True):
        for init, color in zip(c.inits, ("tab:blue", "tab:red", "tab:green"), strict=False):
            arm = f"{family}/{init}"
            table = _series(run.metrics, arm, metric)
            if metric == "grad_w" and not table.empty:
                table = table.div(table[table.columns.max()], axis=0)  # relative to the last layer
            reason = _no_data_reason(run.metrics, arm, metric, table)
            if reason:  # say why a line is missing; never drop it silently
                ax.plot([], [], color=color, label=f"{init}: {reason}")
                continue
            long = table.stack().rename("value").reset_index()  # seed, step, value
            plot_band(ax, long, label=f"{init} (n={len(table)})", color=color, log=True)
            mean = 10 ** np.log10(table.where(table > 0)).mean()
            stop = run.metrics[(run.metrics["arm"] == arm) & (run.metrics["metric"] == "overflow_layer")]["value"]
            if len(stop):
                k = int(stop.median())
                ax.axvline(k, color=color, ls=":", lw=1)
                ax.annotate(f"inf at layer {k}\n({len(stop)}/{len(table)} seeds)", (k, mean.dropna().iloc[-1]),
                            color=color, fontsize=8, xytext=(5, -10), textcoords="offset points")
        if metric == "grad_w" and family == "bn":
            ref = YANG_RELU_RATE ** (c.depth - np.arange(1, c.depth + 1))
            ax.plot(np.arange(1, c.depth + 1), ref, color="black", ls="--", lw=1, label=f"{YANG_RELU_RATE:.3f}^(L-l) (Yang)")
        ax.set_yscale("log")
        ax.set_xlabel("layer l (1 = input side)")
        ax.set_title(f"{'with BN' if family == 'bn' else 'without BN'}")
        ax.legend(fontsize=8)
    axes[0].set_ylabel(ylabel)
    fig.suptitle(f"{title}; geometric mean over seeds, band = 95% CI, batch {c.batch}")
    fig.tight_layout()
    how = {
        "act_std": "Each line is the std of a layer's output (what the seed prints), geometric mean over seeds "
                   "with a 95% band; log scale. Left, without BN; right, with BN. A line that falls (rises) "
                   "steadily means the std vanishes (explodes) with depth; a dotted vertical line marks the layer "
                   "where an arm overflowed to inf, with how many seeds did. The seed's claim holds if the three "
                   "right-hand lines are flat and lie on top of each other.",
        "grad_w": "Each line is a layer's weight-gradient norm divided by the last layer's, geometric mean over "
                  "seeds with a 95% band; log scale; the backward pass runs from the right (output) to the left. "
                  "A line rising to the left means gradients grow with depth; parallel to the dashed line means "
                  "Yang et al.'s large-batch rate. Arms without a usable gradient (forward overflow, or every "
                  "value underflowed to 0) say so in the legend.",
    }[metric]
    return Figure(f"per_layer_{metric}", title, how, fig)


def _factor_figure(run: StoredRun) -> Figure:
    c: Config = run.config
    arms = [a for a, *_ in _arms(c)]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    for ax, metric, backward, ref in ((axes[0], "act_std", False, None), (axes[1], "grad_w", True, YANG_RELU_RATE)):
        for i, arm in enumerate(arms):
            vals = _factors(run.metrics, arm, metric, c, backward)
            iv = stats.mean_ci(vals) if np.isfinite(vals).any() else None
            if iv is None:
                reason = _no_data_reason(run.metrics, arm, metric, _series(run.metrics, arm, metric))
                ax.text(1.0, i, f"  {reason or 'too few finite layers to fit'}", va="center", fontsize=8)
                continue
            ax.errorbar(iv.mean, i, xerr=[[iv.mean - iv.lo], [iv.hi - iv.mean]] if iv.n > 1 else None, fmt="o", capsize=4)
        ax.axvline(1.0, color="grey", lw=1)
        ax.set_ylim(-0.6, len(arms) - 0.4)
        if ref:
            ax.axvline(ref, color="black", ls="--", lw=1, label=f"Yang: {ref:.3f}")
            ax.legend(fontsize=8)
        if not backward:
            ax.set_xscale("log")
        ax.set_yticks(range(len(arms)), arms)
    axes[0].set_xlabel("per-layer factor of the activation std (forward)")
    axes[1].set_xlabel("per-layer factor of ||dL/dW|| toward the input (backward)")
    fig.suptitle("growth factor per layer, mean and 95% CI over seeds (1 = flat)")
    fig.tight_layout()
    return Figure(
        "growth_factors", "Growth per layer, forward and backward",
        "Each dot is the per-layer growth factor (exp of the slope of log value vs layer, fitted per seed) with "
        "its 95% CI over seeds; 1 means flat. Left (log scale): forward std; a stable arm sits on the line at 1. "
        "Right: weight-gradient norm going toward the input; above 1 means gradients grow with depth; dashed: "
        "Yang et al.'s large-batch rate sqrt(π/(π-1)).", fig)
