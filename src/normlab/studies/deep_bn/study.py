"""The deep-bn study: one cell per arm (init x BN, plus the larger-batch controls), wiring config, model,
claims and figures."""

from __future__ import annotations

from typing import ClassVar

from normlab.engine.spec import Cell, CellContext, CellResult, Claim, Figure, StoredRun, Study
from normlab.studies.deep_bn import claims, figures
from normlab.studies.deep_bn.config import Config, arms
from normlab.studies.deep_bn.model import run_arm


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
        return [Cell(arm, seeds, (("init", init), ("bn", bn), ("batch", b))) for arm, init, bn, b in arms(config)]

    def run_cell(self, config: Config, ctx: CellContext) -> CellResult:
        p = ctx.cell.param_dict
        return run_arm(config, p["init"], p["bn"], p["batch"], ctx.cell.seeds, ctx.progress)

    def claims(self, run: StoredRun) -> list[Claim]:
        return claims.claims(run)

    def figures(self, run: StoredRun) -> list[Figure]:
        return figures.figures(run)

    def notes(self, run: StoredRun) -> str:
        return claims.notes(run)
