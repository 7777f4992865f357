"""What a deep-bn cell computes: the deep MLP at initialization, forward std and backward gradient norms
per layer, seed by seed."""

from __future__ import annotations

import itertools
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


# -- the learning-rate sweep -------------------------------------------------------------------------------

CLASSES = 10  # scikit-learn's digits


def training_data() -> tuple[torch.Tensor, torch.Tensor]:
    """The digits' training split, flattened to 64 standardized pixels, and its labels (the test split is
    not used: the sweep judges training, not generalisation)."""
    from normlab.data.images import load_images

    data = load_images("digits")
    return data.x_train.flatten(1), data.y_train


def build_mlp(config: Config, init: str, in_features: int) -> list[tnn.Linear]:
    """The sweep's linears as an independent run with the current torch seed would draw them: ``train_depth``
    hidden ``Linear(., train_width)`` with ``init`` applied to their weights, then the readout to the classes
    (torch's default init; biases keep torch's default everywhere)."""
    dims = [in_features] + [config.train_width] * config.train_depth
    hidden = [tnn.Linear(a, b) for a, b in itertools.pairwise(dims)]
    for lin in hidden:
        _init(lin, init)
    return [*hidden, tnn.Linear(dims[-1], CLASSES)]


def batch_order(n: int, config: Config, seed: int) -> torch.Tensor:
    """``(train_steps, train_batch)`` example indices: epochs of a seeded shuffle, cut into batches."""
    gen = torch.Generator().manual_seed(seed)
    need = config.train_steps * config.train_batch
    order = torch.cat([torch.randperm(n, generator=gen) for _ in range(-(-need // n))])[:need]
    return order.view(config.train_steps, config.train_batch)


def train_seeds(config: Config, init: str, bn: bool, lr: float, seeds: tuple[int, ...],
                x: torch.Tensor, y: torch.Tensor,
                progress: Callable[[int, int], None] = lambda done, total: None) -> torch.Tensor:
    """Train one MLP per seed with SGD (momentum ``config.momentum``) at ``lr``, all seeds stacked; returns
    the minibatch loss of every step, ``(train_steps, len(seeds))`` (inf/NaN where a run diverged).

    Seed ``s`` fixes the weights (``torch.manual_seed(s)`` then :func:`build_mlp`) and the batches
    (:func:`batch_order`), so the BN and no-BN runs of a seed start from the same weights and see the same
    batches at every learning rate. BN is training-mode BatchNorm1d (batch statistics, eps 1e-5, learnable
    weight 1 and bias 0 at the start) after each hidden Linear, before the ReLU. Member ``i`` of the stack
    is exactly an independent run: each member's loss depends on its own parameters only, so the gradient
    of the summed loss is each member's own gradient.
    """
    weights, biases = [], []
    for s in seeds:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(s)
            lins = build_mlp(config, init, x.shape[1])
        weights.append([lin.weight.detach() for lin in lins])
        biases.append([lin.bias.detach() for lin in lins])
    idx = torch.stack([batch_order(len(y), config, s) for s in seeds], dim=1)  # (steps, S, batch)
    n_seeds, width, depth = len(seeds), config.train_width, config.train_depth
    w = [torch.stack([ws[k] for ws in weights]).clone().requires_grad_() for k in range(depth + 1)]
    b = [torch.stack([bs[k] for bs in biases]).unsqueeze(1).clone().requires_grad_() for k in range(depth + 1)]
    params = w + b
    gamma = [torch.ones(n_seeds * width, requires_grad=True) for _ in range(depth)] if bn else []
    beta = [torch.zeros(n_seeds * width, requires_grad=True) for _ in range(depth)] if bn else []
    params += gamma + beta
    bufs = [torch.zeros_like(p) for p in params]
    losses = torch.empty(config.train_steps, n_seeds)
    for t in range(config.train_steps):
        h, yb = x[idx[t]], y[idx[t]]  # (S, batch, in), (S, batch)
        for k in range(depth):
            z = torch.baddbmm(b[k], h, w[k].transpose(1, 2))
            if bn:  # per member and feature, over the batch: one batch_norm call on (batch, S * width)
                nb = z.shape[1]
                z = tnn.functional.batch_norm(z.transpose(0, 1).reshape(nb, -1), None, None, gamma[k], beta[k],
                                              training=True, eps=1e-5).view(nb, n_seeds, width).transpose(0, 1)
            h = torch.relu(z)
        logits = torch.baddbmm(b[-1], h, w[-1].transpose(1, 2))
        loss = tnn.functional.cross_entropy(logits.reshape(-1, CLASSES), yb.reshape(-1),
                                            reduction="none").view(n_seeds, -1).mean(1)
        grads = torch.autograd.grad(loss.sum(), params)
        with torch.no_grad():
            for p, buf, g in zip(params, bufs, grads, strict=True):  # torch.optim.SGD: buf = m*buf + g
                buf.mul_(config.momentum).add_(g)
                p.sub_(lr * buf)
        losses[t] = loss.detach()
        progress(t + 1, config.train_steps)
    return losses


def log_steps(config: Config) -> list[int]:
    """The steps whose minibatch loss is stored for the curves (about 40, always the first and the last)."""
    every = max(1, config.train_steps // 40)
    return sorted({*range(0, config.train_steps, every), config.train_steps - 1})


def run_train_arm(config: Config, init: str, bn: bool, lr: float, seeds: tuple[int, ...],
                  progress: Callable[[int, int], None]) -> CellResult:
    """One learning rate of one sweep arm, every seed: per seed ``final_loss`` (mean over the last ``tail``
    steps; only when finite), ``diverged`` (1 when any step's loss was inf/NaN, else 0) at step
    ``train_steps``, and ``train_loss`` at the logged steps (step t: the loss after t updates; finite values
    only)."""
    x, y = training_data()
    losses = train_seeds(config, init, bn, lr, seeds, x, y, progress)
    rows = []
    for i, seed in enumerate(seeds):
        col = losses[:, i]
        finite = bool(torch.isfinite(col).all())
        rows.append((seed, config.train_steps, "diverged", 0.0 if finite else 1.0))
        if finite:
            rows.append((seed, config.train_steps, "final_loss", float(col[-config.tail:].mean())))
        rows += [(seed, t, "train_loss", float(col[t])) for t in log_steps(config) if math.isfinite(col[t])]
    return CellResult(metrics=metric_rows(rows))
