"""Dropout vs none on a tiny noisy regression: the example of docs/writing-a-study.md.

Run it from anywhere, without editing normlab: ``normlab run docs/examples/my_study.py --quick``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import pandas as pd
import torch
from torch import nn

from normlab.engine.config import Check, integer, items, number, one_of, seeds_check
from normlab.engine.spec import Cell, CellContext, CellResult, Claim, Figure, StoredRun, Study
from normlab.kit.ensemble import make_ensemble, member_losses
from normlab.kit.plots import arm_colors, new_figure, plot_band
from normlab.kit.stats import compare_claim

ARMS = ("dropout", "none")


@dataclass
class MyConfig:
    seeds: int = 16          # `--seeds N` maps here (name it `seeds`)
    steps: int = 2000        # `--steps N` maps here (name it `steps`)
    lr: float = 0.01
    hidden: int = 64
    n_train: int = 20
    arms: tuple[str, ...] = ARMS  # `--set arms=dropout` runs one arm

    checks: ClassVar[dict[str, Check]] = {  # every field's allowed range: a bad --set is a clear error
        "seeds": seeds_check(),
        "steps": integer(1),
        "lr": number(0, lo_open=True),
        "hidden": integer(1),
        "n_train": integer(2),
        "arms": items(one_of(ARMS), unique=True),
    }


def make_data(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` points of ``y = sin(3x) + noise`` on ``[-1, 1]``: few enough for a wide net to overfit."""
    x = torch.rand(n, 1, generator=generator) * 2 - 1
    return x, torch.sin(3 * x).squeeze(1) + 0.3 * torch.randn(n, generator=generator)


def build(arm: str, hidden: int) -> nn.Module:
    drop = [nn.Dropout(0.5)] if arm == "dropout" else []
    return nn.Sequential(nn.Linear(1, hidden), nn.ReLU(), *drop, nn.Linear(hidden, 1))


class MyStudy(Study):
    name = "my-study"
    description = "Dropout vs none on a tiny noisy regression (the writing-a-study example)."
    seeds_from = ()
    Config = MyConfig
    quick_overrides: ClassVar[dict] = {"seeds": 4, "steps": 30}
    threads = 1              # tiny models run fastest on one torch thread

    def cells(self, config: MyConfig) -> list[Cell]:
        return [Cell(arm=a, seeds=tuple(range(config.seeds))) for a in config.arms]

    def run_cell(self, config: MyConfig, ctx: CellContext) -> CellResult:
        data = torch.Generator().manual_seed(0)  # the same data for every seed and arm
        x, y = make_data(config.n_train, data)
        x_test, y_test = make_data(200, data)
        model = make_ensemble(lambda: build(ctx.cell.arm, config.hidden), ctx.cell.seeds)  # (N, ...) params
        opt = torch.optim.Adam(model.parameters(), lr=config.lr)
        rows = []
        for step in range(config.steps):
            model.train()
            losses = member_losses(model(x).squeeze(-1), y)  # (N,): one loss per seed
            losses.sum().backward()                           # the sum: each member gets its own gradient
            opt.step()
            opt.zero_grad()
            model.eval()
            with torch.no_grad():
                test = member_losses(model(x_test).squeeze(-1), y_test)
            for seed, tr, te in zip(ctx.cell.seeds, losses.tolist(), test.tolist(), strict=True):
                rows += [(seed, step, "train_loss", tr), (seed, step, "test_loss", te)]
            ctx.progress(step + 1, config.steps)
        return CellResult(metrics=pd.DataFrame(rows, columns=["seed", "step", "metric", "value"]))

    def claims(self, run: StoredRun) -> list[Claim]:
        m = run.metrics
        last = m[(m.metric == "test_loss") & (m.step == m.step.max())]
        if set(last.arm) != set(ARMS):  # an arm was left out with --set arms=...: no verdict
            return [Claim(id="C1", claim="dropout lowers the test loss", source="example",
                          measurement="test MSE at the last step", verdict="inconclusive",
                          statistic="none", value=float("nan"), detail="needs both arms (dropout, none)")]
        a = last[last.arm == "dropout"].sort_values("seed")["value"].to_numpy()
        b = last[last.arm == "none"].sort_values("seed")["value"].to_numpy()
        return [compare_claim("C1", "dropout lowers the test loss", "example",
                              "test MSE at the last step (>= 5% lower)", a, b, "less",
                              transform="log", paired=True, min_effect=0.05, labels=("dropout", "none"))]

    def figures(self, run: StoredRun) -> list[Figure]:
        fig, axes = new_figure(1, 2)
        colors = arm_colors(run.config.arms)
        for col, metric in enumerate(("train_loss", "test_loss")):
            for arm, g in run.metrics[run.metrics.metric == metric].groupby("arm"):
                plot_band(axes[0, col], g, label=arm, color=colors[arm], log=True)
            axes[0, col].set_title(metric)
            axes[0, col].legend()
        return [Figure("loss", "Training and test loss",
                       "Mean over seeds per step, shaded: 95% interval. The claim is supported if the "
                       "dropout band ends clearly below the none band on the right panel.", fig)]

    def notes(self, run: StoredRun) -> str:
        return "A wide ReLU net on 20 noisy points; dropout (p=0.5) after the hidden layer vs none."
