"""What an ``overfitting`` cell trains: the post's MLP and data, the stacked training loop, the dropout demo."""

from __future__ import annotations

import contextlib

import numpy as np
import pandas as pd
import torch
import torch.nn as tnn

from normlab.kit.ensemble import make_ensemble, member_losses
from normlab.kit.flat_params import flatten_parameters
from normlab.kit.tables import metric_rows, with_seeds
from normlab.probe import Probe
from normlab.studies.overfitting.config import ARMS, Config


def mlp(n_hidden: int, dropout: float) -> tnn.Sequential:
    """The post's MLP; with ``dropout > 0`` a Dropout after each hidden ReLU (no parameters, same init)."""
    layers: list[tnn.Module] = [tnn.Linear(1, n_hidden), tnn.ReLU()]
    for _ in range(2):
        layers += [tnn.Dropout(dropout)] if dropout > 0 else []
        layers += [tnn.Linear(n_hidden, n_hidden), tnn.ReLU()]
    layers += [tnn.Dropout(dropout)] if dropout > 0 else []
    layers.append(tnn.Linear(n_hidden, 1))
    return tnn.Sequential(*layers)


def make_data(c: Config, seed: int, n_train: int) -> dict[str, torch.Tensor]:
    """The post's ``gen_data`` (train, then its test set) plus a held-out set, from a generator seeded ``seed``."""
    g = torch.Generator().manual_seed(seed)
    train_x = torch.linspace(-1, 1, n_train).unsqueeze(1)
    train_y = c.w * train_x + torch.normal(0, c.train_noise, size=train_x.size(), generator=g)
    test_x = torch.linspace(-1, 1, c.n_test).unsqueeze(1)
    test_y = c.w * test_x + torch.normal(0, c.test_noise, size=test_x.size(), generator=g)
    held_x = torch.rand(c.n_heldout, 1, generator=g) * 2 - 1
    held_y = c.w * held_x + torch.normal(0, c.test_noise, size=held_x.size(), generator=g)
    return {"train_x": train_x, "train_y": train_y, "test_x": test_x, "test_y": test_y,
            "held_x": held_x, "held_y": held_y}


def train_arm(c: Config, arm: str, seeds: tuple[int, ...], n_train: int, progress=None,
              device: torch.device | str = "cpu", probe: bool = False,
              regime: str = "seed") -> dict[str, pd.DataFrame]:
    """Train one arm for all ``seeds`` as one stacked ensemble; evaluation curves and final predictions.

    ``regime="seed"`` trains as the seed does (SGD ``lr``, ``momentum``, ``steps`` full-batch steps);
    ``regime="sweep"`` as the size sweep does (``sweep_optimizer`` at ``sweep_lr`` for ``sweep_steps``
    full-batch steps). With ``probe``, :class:`normlab.probe.Probe` records weight and gradient statistics
    and histograms of every parameter, per seed, every ``eval_every`` steps.
    """
    p, use_wd = ARMS[arm]
    p = c.dropout if p is None else p
    steps, every = (c.steps, c.eval_every) if regime == "seed" else (c.sweep_steps, c.sweep_eval_every)
    data = [make_data(c, s, n_train) for s in seeds]
    stack = {k: torch.stack([d[k] for d in data]).to(device) for k in data[0]}  # (N, n, 1)
    grid = torch.linspace(-1, 1, 101, device=device).unsqueeze(1)
    model = make_ensemble(lambda: mlp(c.n_hidden, p), seeds).to(device)
    flat = flatten_parameters(model, len(seeds))  # one optimizer tensor (kit/flat_params.py): same updates
    wd = c.weight_decay if use_wd else 0.0
    if regime == "seed" or c.sweep_optimizer == "sgd":
        lr = c.lr if regime == "seed" else c.sweep_lr
        opt: torch.optim.Optimizer = torch.optim.SGD([flat.param], lr=lr, momentum=c.momentum, weight_decay=wd)
    else:
        opt = torch.optim.Adam([flat.param], lr=c.sweep_lr, weight_decay=wd)
    truth = {"truth_train_mse": member_losses(c.w * stack["train_x"], stack["train_y"]),
             "truth_heldout_mse": member_losses(c.w * stack["held_x"], stack["held_y"])}
    rows: list[tuple[int, int, str, float]] = []

    def record(step: int, train_loss: torch.Tensor) -> None:
        model.eval()
        with torch.no_grad():
            mse = {
                "train_loss": train_loss,  # the training-mode loss of this step (with dropout noise)
                "train_mse": member_losses(model(stack["train_x"]), stack["train_y"]),
                "test_mse": member_losses(model(stack["test_x"]), stack["test_y"]),
                "heldout_mse": member_losses(model(stack["held_x"]), stack["held_y"]),
                "function_mse": member_losses(model(grid), c.w * grid),
                "weight_norm": torch.sqrt(sum(q.pow(2).flatten(1).sum(1) for q in model.parameters() if q.dim() == 3)),
                **truth,  # the true line's errors on the same points: the floor an unbiased fit sits at
            }
        model.train()
        for name, v in mse.items():
            rows.extend((s, step, name, float(x)) for s, x in zip(seeds, v.tolist(), strict=True))

    instrument = Probe(model, opt, every=every, histograms=every, modules=lambda n, m: False) \
        if probe else contextlib.nullcontext()
    with instrument:
        for step in range(1, steps + 1):
            losses = member_losses(model(stack["train_x"]), stack["train_y"])  # (N,)
            flat.zero_grad()
            losses.sum().backward()  # sum: each member gets its own MSE gradient
            opt.step()
            if step % every == 0 or step == steps:
                record(step, losses.detach())
            if progress is not None and step % 50 == 0:
                progress(step, steps)
    model.eval()
    with torch.no_grad():
        pred = model(grid).squeeze(-1).cpu()  # (N, 101)
    preds = pd.DataFrame({"seed": np.repeat(seeds, grid.numel()), "x": np.tile(grid.squeeze(1).cpu().numpy(), len(seeds)),
                          "pred": pred.reshape(-1).numpy()})
    first = data[0]
    points = pd.concat([pd.DataFrame({"seed": seeds[0], "set": name, "x": first[f"{name}_x"].squeeze(1).numpy(),
                                      "y": first[f"{name}_y"].squeeze(1).numpy()}) for name in ("train", "test")],
                       ignore_index=True)
    out = {"metrics": metric_rows(rows), "predictions": preds, "points": points}
    if probe:  # keep only occupied histogram bins
        out["probe_scalars"] = with_seeds(instrument.scalars(), seeds)
        out["probe_histograms"] = with_seeds(instrument.histograms(empty_bins=False), seeds)
    return out


def dropout_demo(c: Config, seeds: tuple[int, ...]) -> pd.DataFrame:
    """The post's ``Net``: Dropout(0.5) → Linear(units, 1, bias=False) with weight 1, on ones(units).

    A forward hook reads the dropout layer's output inside the post's own forward (it draws nothing): the
    fraction of units set to 0 and the largest distance of a kept unit from ``1/(1-p)``.
    """
    rows = []
    x = torch.ones(c.demo_units)
    seen: dict[str, torch.Tensor] = {}
    for s in seeds:
        torch.manual_seed(s)  # then the post's order: build (Linear init draws), fill weight, forward
        net = tnn.Sequential(tnn.Dropout(c.dropout), tnn.Linear(c.demo_units, 1, bias=False), tnn.ReLU())
        hook = net[0].register_forward_hook(lambda mod, inp, out: seen.__setitem__("out", out.detach().clone()))
        with torch.no_grad():
            net[1].weight.fill_(1.0)
            net.train()
            train_out = float(net(x))
            hook.remove()
            net.eval()
            eval_out = float(net(x))
        mask = seen["out"]
        kept = mask[mask != 0]
        maxdev = float((kept - 1.0 / (1.0 - c.dropout)).abs().max()) if kept.numel() else 0.0
        rows += [(s, 0, "train_output", train_out), (s, 0, "eval_output", eval_out),
                 (s, 0, "dropped_fraction", float((mask == 0).float().mean())), (s, 0, "kept_value_maxdev", maxdev)]
    return metric_rows(rows)


WD_CHECK_W = (1.0, -2.0, 0.5, 3.0, -0.25)  # known weights of the one-step weight-decay check
WD_CHECK_G = (0.1, -0.3, 0.2, 0.0, 0.7)  # a known data gradient (the L2 comparison)


def weight_decay_step(c: Config) -> pd.DataFrame:
    """One step of the post's optimizer (SGD, ``lr``, ``momentum``, ``weight_decay``) on known weights, float64.

    ``wd_factor``: ``w_after / w_before`` with a zero data gradient, per entry (the post says ``1 - λ``;
    torch.optim.SGD does ``w - lr·(g + λ·w)``, i.e. ``1 - lr·λ``). ``l2_vs_wd_absdiff``: the step with
    ``weight_decay=λ`` on the loss ``Σ g·w`` against the step without it on ``Σ g·w + λ/2·||w||²``, per entry.
    """
    w0 = torch.tensor(WD_CHECK_W, dtype=torch.float64)
    g = torch.tensor(WD_CHECK_G, dtype=torch.float64)

    def step(weight_decay: float, loss_of) -> torch.Tensor:
        w = torch.nn.Parameter(w0.clone())
        opt = torch.optim.SGD([w], lr=c.lr, momentum=c.momentum, weight_decay=weight_decay)
        opt.zero_grad()
        loss_of(w).backward()
        opt.step()
        return w.detach()

    decayed = step(c.weight_decay, lambda w: (w * 0.0).sum())
    with_wd = step(c.weight_decay, lambda w: (w * g).sum())
    with_l2 = step(0.0, lambda w: (w * g).sum() + c.weight_decay / 2 * w.pow(2).sum())
    # One row per entry of w: seed 0 (nothing random), ``step`` = the entry's index.
    rows = [(0, i, "wd_factor", float(decayed[i] / w0[i])) for i in range(len(w0))]
    rows += [(0, i, "l2_vs_wd_absdiff", float((with_wd[i] - with_l2[i]).abs())) for i in range(len(w0))]
    return metric_rows(rows)
