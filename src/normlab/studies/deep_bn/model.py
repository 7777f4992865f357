"""What a deep-bn cell computes: the deep MLP at initialization, forward std and backward gradient norms
per layer, seed by seed."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn as tnn

from normlab.engine.spec import CellResult
from normlab.kit.tables import metric_rows
from normlab.nn.registry import create_norm
from normlab.studies.deep_bn.config import INITS, Config


def _init(linear: tnn.Linear, kind: str) -> None:
    if kind == "normal":
        tnn.init.normal_(linear.weight, mean=0.0, std=1.0)
    elif kind == "kaiming":
        tnn.init.kaiming_normal_(linear.weight, nonlinearity="relu")
    elif kind != "default":  # "default": torch's own Linear init (kaiming_uniform with a=sqrt(5))
        raise ValueError(f"inits: expected names from {INITS}, got {kind!r}")


def build(config: Config, init: str, bn: bool) -> tuple[tnn.ModuleList, tnn.ModuleList]:
    """The ``depth`` bias-free linears (with ``init`` applied) and their norms (BatchNorm or identity)."""
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
        linears, norms = build(config, init, bn)
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


def run_arm(config: Config, init: str, bn: bool, batch: int, seeds: tuple[int, ...],
            progress: Callable[[int, int], None]) -> CellResult:
    """Every seed of one arm as long rows: per-layer metrics at step = layer, events at step 0."""
    rows = []
    for i, seed in enumerate(seeds):
        r = run_seed(config, init, bn, batch, seed)
        for metric in ("act_std", "grad_w", "grad_a"):
            rows += [(seed, k, metric, v) for k, v in enumerate(r[metric], start=1)]
        for metric in ("overflow_layer", "zero_layer"):
            if r[metric] is not None:
                rows.append((seed, 0, metric, float(r[metric])))
        if r["grad_w"]:  # float32 underflow: a vanished gradient is stored as the count of exact zeros
            rows.append((seed, 0, "grad_w_zero_layers", float(sum(v == 0.0 for v in r["grad_w"]))))
        progress(i + 1, len(seeds))
    return CellResult(metrics=metric_rows(rows))
