"""overfitting (seed 004): weight decay and dropout on a 10-point regression, and inverted dropout.

The seed fits ``y = 1.5x + noise`` with a wide MLP ``1→200→200→200→1`` (ReLU) on 10 points, full batch,
SGD(lr=0.01, momentum=0.9), 2000 steps, with ``weight_decay=1e-2`` vs none, and then the same MLP with
dropout vs none (that code is omitted in the seed; normlab uses the course's usual one: ``Dropout(0.5)``
after each hidden ReLU, before the next Linear, as the seed's own notes say). It judges overfitting by eye
from one run and plots its test points at ``(test_y, test_y)`` (a bug: x should be ``test_x``).

normlab trains every arm over many seeds at once (a stacked ensemble: member ``i`` is exactly the model
``torch.manual_seed(seeds[i])`` would build). For a seed ``s`` all arms share the initial weights and the
data, so arms are compared seed by seed (paired tests). The data of seed ``s`` come from a generator
seeded with ``s``, in the seed's order: 10 train points on ``linspace(-1, 1)`` with noise 0.5, the seed's
own 10-point test set (same ``x`` as the training points, noise 0.3), then a held-out set of
``n_heldout`` uniform points (noise 0.3) that makes a test error worth the name. ``function_mse`` is the
error against the noise-free line ``1.5x`` on a grid. Train error is measured in eval mode (no dropout).

The inverted-dropout demo: ``x = ones(10000)``, ``Dropout(0.5) → Linear(10000, 1, bias=False)`` with weight
1. In training mode dropout keeps each unit with probability ``1-p`` and scales it by ``1/(1-p)``, so the
output is ``2·Binomial(10000, 0.5)``: mean 10000 (not 5000), sd 100. In eval mode it is exactly 10000.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pandas as pd
import torch
import torch.nn as tnn

from normlab.engine.config import (
    Check,
    integer,
    items,
    number,
    seeds_check,
)
from normlab.engine.spec import Cell, CellContext, CellResult, Claim, Figure, StoredRun, Study
from normlab.kit.ensemble import make_ensemble, member_losses
from normlab.kit.flat_params import flatten_parameters
from normlab.probe import Probe
from normlab.studies import _overfitting_report as report

SOURCE = "seed 004"


@dataclass
class Config:
    n_hidden: int = 200
    steps: int = 2000
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-2
    dropout: float = 0.5
    n_train: int = 10
    w: float = 1.5  # y = w x + noise
    train_noise: float = 0.5
    test_noise: float = 0.3
    n_test: int = 10  # the seed's own test set
    n_heldout: int = 1000  # normlab's held-out set
    eval_every: int = 200  # the seed's disp_interval
    seeds: int = 32
    size_sweep: tuple[int, ...] = (40, 160)  # extra train-set sizes for dropout vs none (tiny-data claim)
    demo_units: int = 10000
    demo_draws: int = 1000
    demo_seed_output: float = 9994.0  # the one draw the seed printed
    min_gain: float = 0.1  # "dropout helps" needs >= 10% lower held-out error

    checks: ClassVar[dict[str, Check]] = {
        "n_hidden": integer(1),
        "steps": integer(1),
        "lr": number(0, lo_open=True),
        "momentum": number(0, 1, hi_open=True),
        "weight_decay": number(0),
        "dropout": number(0, 1, lo_open=True, hi_open=True),
        "n_train": integer(2),
        "w": number(),
        "train_noise": number(0),
        "test_noise": number(0),
        "n_test": integer(1),
        "n_heldout": integer(1),
        "eval_every": integer(1),
        "seeds": seeds_check(),
        "size_sweep": items(integer(2), min_len=0, unique=True),
        "demo_units": integer(1),
        "demo_draws": seeds_check(),
        "demo_seed_output": number(),
        "min_gain": number(0, 1, hi_open=True),
    }


def mlp(n_hidden: int, dropout: float) -> tnn.Sequential:
    """The seed's MLP; with ``dropout > 0`` a Dropout after each hidden ReLU (no parameters, same init)."""
    layers: list[tnn.Module] = [tnn.Linear(1, n_hidden), tnn.ReLU()]
    for _ in range(2):
        layers += [tnn.Dropout(dropout)] if dropout > 0 else []
        layers += [tnn.Linear(n_hidden, n_hidden), tnn.ReLU()]
    layers += [tnn.Dropout(dropout)] if dropout > 0 else []
    layers.append(tnn.Linear(n_hidden, 1))
    return tnn.Sequential(*layers)


def make_data(c: Config, seed: int, n_train: int) -> dict[str, torch.Tensor]:
    """The seed's ``gen_data`` (train, then its test set) plus a held-out set, from a generator seeded ``seed``."""
    g = torch.Generator().manual_seed(seed)
    train_x = torch.linspace(-1, 1, n_train).unsqueeze(1)
    train_y = c.w * train_x + torch.normal(0, c.train_noise, size=train_x.size(), generator=g)
    test_x = torch.linspace(-1, 1, c.n_test).unsqueeze(1)
    test_y = c.w * test_x + torch.normal(0, c.test_noise, size=test_x.size(), generator=g)
    held_x = torch.rand(c.n_heldout, 1, generator=g) * 2 - 1
    held_y = c.w * held_x + torch.normal(0, c.test_noise, size=held_x.size(), generator=g)
    return {"train_x": train_x, "train_y": train_y, "test_x": test_x, "test_y": test_y,
            "held_x": held_x, "held_y": held_y}


ARMS = {"none": (0.0, False), "weight_decay": (0.0, True), "dropout": (None, False)}  # (dropout p, use wd)


def train_arm(c: Config, arm: str, seeds: tuple[int, ...], n_train: int, progress=None,
              device: torch.device | str = "cpu", probe: bool = False) -> dict[str, pd.DataFrame]:
    """Train one arm for all ``seeds`` as one stacked ensemble; evaluation curves and final predictions.

    With ``probe``, :class:`normlab.probe.Probe` records weight and gradient statistics and histograms of
    every parameter, per seed, every ``eval_every`` steps (the weight/gradient distributions over time).
    """
    p, use_wd = ARMS[arm]
    p = c.dropout if p is None else p
    data = [make_data(c, s, n_train) for s in seeds]
    stack = {k: torch.stack([d[k] for d in data]).to(device) for k in data[0]}  # (N, n, 1)
    grid = torch.linspace(-1, 1, 101, device=device).unsqueeze(1)
    model = make_ensemble(lambda: mlp(c.n_hidden, p), seeds).to(device)
    flat = flatten_parameters(model, len(seeds))  # one optimizer tensor (kit/flat_params.py): same updates
    opt = torch.optim.SGD([flat.param], lr=c.lr, momentum=c.momentum,
                          weight_decay=c.weight_decay if use_wd else 0.0)
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
            }
        model.train()
        for name, v in mse.items():
            rows.extend((s, step, name, float(x)) for s, x in zip(seeds, v.tolist(), strict=True))

    instrument = Probe(model, opt, every=c.eval_every, histograms=c.eval_every, modules=lambda n, m: False) \
        if probe else contextlib.nullcontext()
    with instrument:
        for step in range(1, c.steps + 1):
            losses = member_losses(model(stack["train_x"]), stack["train_y"])  # (N,)
            flat.zero_grad()
            losses.sum().backward()  # sum: each member gets its own MSE gradient
            opt.step()
            if step % c.eval_every == 0 or step == c.steps:
                record(step, losses.detach())
            if progress is not None and step % 50 == 0:
                progress(step, c.steps)
    model.eval()
    with torch.no_grad():
        pred = model(grid).squeeze(-1).cpu()  # (N, 101)
    preds = pd.DataFrame({"seed": np.repeat(seeds, grid.numel()), "x": np.tile(grid.squeeze(1).cpu().numpy(), len(seeds)),
                          "pred": pred.reshape(-1).numpy()})
    first = data[0]
    points = pd.concat([pd.DataFrame({"seed": seeds[0], "set": name, "x": first[f"{name}_x"].squeeze(1).numpy(),
                                      "y": first[f"{name}_y"].squeeze(1).numpy()}) for name in ("train", "test")],
                       ignore_index=True)
    out = {"metrics": pd.DataFrame(rows, columns=["seed", "step", "metric", "value"]), "predictions": preds,
           "points": points}
    if probe:  # probe rows name members 0..N-1: add the seed; keep only occupied histogram bins
        member_seed = dict(enumerate(seeds))
        out["probe_scalars"] = instrument.scalars().assign(seed=lambda d: d["member"].map(member_seed))
        hist = instrument.histograms(empty_bins=False)
        out["probe_histograms"] = hist.assign(seed=lambda d: d["member"].map(member_seed))
    return out


def dropout_demo(c: Config, seeds: tuple[int, ...]) -> pd.DataFrame:
    """The seed's ``Net``: Dropout(0.5) → Linear(units, 1, bias=False) with weight 1, on ones(units)."""
    rows = []
    x = torch.ones(c.demo_units)
    for s in seeds:
        torch.manual_seed(s)  # then the seed's order: build (Linear init draws), fill weight, forward
        net = tnn.Sequential(tnn.Dropout(c.dropout), tnn.Linear(c.demo_units, 1, bias=False), tnn.ReLU())
        with torch.no_grad():
            net[1].weight.fill_(1.0)
            net.train()
            train_out = float(net(x))
            net.eval()
            eval_out = float(net(x))
        rows += [(s, 0, "train_output", train_out), (s, 0, "eval_output", eval_out)]
    return pd.DataFrame(rows, columns=["seed", "step", "metric", "value"])


class Overfitting(Study):
    name = "overfitting"
    description = "Weight decay and dropout on the seed's 10-point regression, held-out data; inverted dropout"
    seeds_from = ("004",)
    Config = Config
    quick_overrides: ClassVar[dict] = {"seeds": 4, "steps": 200, "eval_every": 100, "n_hidden": 32,
                                       "size_sweep": (20,), "demo_draws": 200, "n_heldout": 200}
    threads = 1  # tiny kernels: more threads only spin-wait on a busy machine

    def cells(self, c: Config) -> list[Cell]:
        seeds = tuple(range(c.seeds))
        cells = [Cell(arm, seeds, (("n_train", c.n_train),)) for arm in ARMS]
        cells += [Cell(arm, seeds, (("n_train", n),)) for n in c.size_sweep if n != c.n_train
                  for arm in ("none", "dropout")]
        return [*cells, Cell("dropout-demo", tuple(range(c.demo_draws)), (("n_train", 0),))]

    def run_cell(self, c: Config, ctx: CellContext) -> CellResult:
        if ctx.cell.arm == "dropout-demo":
            return CellResult(metrics=dropout_demo(c, ctx.cell.seeds))
        n_train = ctx.cell.param_dict["n_train"]
        out = train_arm(c, ctx.cell.arm, ctx.cell.seeds, n_train, ctx.progress, ctx.device, probe=n_train == c.n_train)
        return CellResult(metrics=out["metrics"], probe_scalars=out.get("probe_scalars"),
                          probe_histograms=out.get("probe_histograms"),
                          extra={"predictions": out["predictions"], "points": out["points"]})

    def claims(self, run: StoredRun) -> list[Claim]:
        return report.claims(run)

    def figures(self, run: StoredRun) -> list[Figure]:
        return report.figures(run)

    def notes(self, run: StoredRun) -> str:
        return report.notes(run)
