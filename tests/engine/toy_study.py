"""A tiny study for engine tests: linear regression ensembles, two arms, one claim, one figure."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import pandas as pd
import torch
from torch import nn

from normlab.engine.spec import Cell, CellContext, CellResult, Claim, Figure, StoredRun, Study
from normlab.kit.ensemble import make_ensemble, member_losses
from normlab.kit.plots import new_figure, plot_band
from normlab.kit.stats import compare_claim


@dataclass
class ToyConfig:
    seeds: int = 4
    steps: int = 30
    lr: float = 0.05
    arms: tuple[str, ...] = ("fast", "slow")


class ToyStudy(Study):
    name = "toy"
    description = "Two learning rates on a linear regression (engine tests only)."
    seeds_from = ()
    Config = ToyConfig
    quick_overrides = {"steps": 10}  # noqa: RUF012

    def cells(self, config: ToyConfig) -> list[Cell]:
        return [Cell(arm=a, seeds=tuple(range(config.seeds))) for a in config.arms]

    def run_cell(self, config: ToyConfig, ctx: CellContext) -> CellResult:
        x = torch.linspace(-1, 1, 16).unsqueeze(1)
        y = 3 * x.squeeze(1) + 1
        model = make_ensemble(lambda: nn.Sequential(nn.Linear(1, 4), nn.Linear(4, 1)), ctx.cell.seeds)
        lr = config.lr if ctx.cell.arm == "fast" else config.lr / 10
        opt = torch.optim.SGD(model.parameters(), lr=lr)
        rows = []
        for step in range(config.steps):
            losses = member_losses(model(x).squeeze(-1), y)
            losses.sum().backward()
            opt.step()
            opt.zero_grad()
            for s, v in zip(ctx.cell.seeds, losses.tolist(), strict=True):
                rows.append((s, step, "loss", v))
            ctx.progress(step + 1, config.steps)
        if os.environ.get("TOY_FAIL_ARM") == ctx.cell.arm:  # lets the parallel test see a failing cell
            raise ValueError(f"toy: arm {ctx.cell.arm} fails on request")
        if os.environ.get("TOY_SLEEP_ARM") == ctx.cell.arm:  # a long cell, for the progress heartbeat
            time.sleep(float(os.environ["TOY_SLEEP_S"]))
        if os.environ.get("TOY_HANG_ARM") == ctx.cell.arm:  # lets the kill -9 test interrupt mid-study
            open(os.path.join(os.environ["TOY_MARK_DIR"], f"{ctx.cell.arm}.started"), "w").close()
            time.sleep(600)
        once = os.path.join(os.environ.get("TOY_MARK_DIR", ""), f"{ctx.cell.arm}.stalled")
        if ctx.cell.arm in os.environ.get("TOY_STALL_ONCE_ARM", "").split(",") and not os.path.exists(once):
            # the first attempt stalls (its pid in the mark, for a test to kill it); a retry runs through
            with open(once + ".tmp", "w") as f:
                f.write(str(os.getpid()))
            os.replace(once + ".tmp", once)
            time.sleep(600)
        metrics = pd.DataFrame(rows, columns=["seed", "step", "metric", "value"])
        return CellResult(metrics=metrics, extra={"final": metrics[metrics.step == config.steps - 1]})

    def claims(self, run: StoredRun) -> list[Claim]:
        m = run.metrics
        last = m[(m.metric == "loss") & (m.step == m.step.max())]
        fast = last[last.arm == "fast"].sort_values("seed")["value"].to_numpy()
        slow = last[last.arm == "slow"].sort_values("seed")["value"].to_numpy()
        return [compare_claim("T1", "a larger learning rate reaches a lower loss", "toy", "final loss",
                              fast, slow, "less", transform="log", paired=True, labels=("fast", "slow"), unit="seed")]

    def figures(self, run: StoredRun) -> list[Figure]:
        fig, axes = new_figure()
        for arm, g in run.metrics.groupby("arm"):
            plot_band(axes[0, 0], g, label=arm, log=True)
        axes[0, 0].legend()
        return [Figure("loss", "Loss", "Mean over seeds with a 95% band.", fig)]

    def notes(self, run: StoredRun) -> str:
        return "Toy study.\n\n- one bullet\n- another `code`"
