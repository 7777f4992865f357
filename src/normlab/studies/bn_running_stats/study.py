"""The ``bn-running-stats`` study: its cells, the checks that span fields, and the wiring of the rest."""

from __future__ import annotations

from typing import ClassVar

from normlab.data.images import SPLIT_SIZES, check_subset_sizes
from normlab.engine.config import ConfigError
from normlab.engine.spec import Cell, CellContext, CellResult, Claim, Figure, StoredRun, Study
from normlab.studies.bn_running_stats.claims import claims as judge
from normlab.studies.bn_running_stats.claims import notes as write_notes
from normlab.studies.bn_running_stats.config import Config, momentum_label
from normlab.studies.bn_running_stats.figures import figures as draw
from normlab.studies.bn_running_stats.model import (
    conventions,
    converge,
    gap_accuracy,
    layer_facts,
    walkthrough,
)


class BnRunningStats(Study):
    name = "bn-running-stats"
    description = "BatchNorm's running mean/var: update rule, momentum conventions, convergence, eval gap"
    seeds_from = ("002", "004")
    Config = Config
    threads = 1  # small kernels: a second intra-op thread only spin-waits on a busy machine
    quick_overrides: ClassVar[dict] = {
        "seeds": 10, "walk_iterations": 3, "convention_steps": 20, "momenta": (0.3, 0.05, None),
        "batch_sizes": (4, 64), "population": 2048, "features": 8, "steps": 150, "dataset": "digits",
        "train_size": None, "test_size": None, "gap_momenta": (0.1, 0.01), "gap_steps": (10, 80),
        "gap_seeds": 3, "widths": (8, 8, 8),
    }

    def check_config(self, config: Config) -> None:
        super().check_config(config)
        check_subset_sizes(config.dataset, config.train_size, config.test_size)
        if config.early_step > config.steps:
            raise ConfigError(f"early_step: expected at most steps={config.steps}, got {config.early_step}")
        if max(config.batch_sizes) > config.population:
            raise ConfigError(f"batch_sizes: expected at most population={config.population}, "
                              f"got {max(config.batch_sizes)}")
        if config.gap_steps[0] >= config.gap_steps[1]:
            raise ConfigError(f"gap_steps: expected (short, long) with short < long, got {config.gap_steps}")
        images = config.train_size or SPLIT_SIZES[config.dataset][0]
        if config.gap_batch_size > images:
            raise ConfigError(f"gap_batch_size: expected at most the {images} training images, "
                              f"got {config.gap_batch_size}")

    def cells(self, config: Config) -> list[Cell]:
        seeds, gap_seeds = tuple(range(config.seeds)), tuple(range(config.gap_seeds))
        cells = [Cell("walkthrough", (0,)), Cell("layer-facts", (0,)), Cell("conventions", seeds)]
        cells += [Cell(f"converge/m={momentum_label(m)}", seeds, (("batch_size", b),))
                  for m in config.momenta for b in config.batch_sizes]
        cells += [Cell(f"gap/m={momentum_label(m)}", gap_seeds, (("steps", s),))
                  for m in config.gap_momenta for s in config.gap_steps]
        return cells

    def run_cell(self, config: Config, ctx: CellContext) -> CellResult:
        arm = ctx.cell.arm
        if arm == "walkthrough":
            return CellResult(walkthrough(config))
        if arm == "layer-facts":
            return CellResult(layer_facts())
        if arm == "conventions":
            return CellResult(conventions(config, ctx.cell.seeds))
        momentum = {momentum_label(m): m for m in (*config.momenta, *config.gap_momenta)}[arm.split("=", 1)[1]]
        if arm.startswith("converge/"):
            return CellResult(converge(config, momentum, ctx.cell.param_dict["batch_size"], ctx.cell.seeds))
        return CellResult(gap_accuracy(config, momentum, ctx.cell.param_dict["steps"], ctx))

    def claims(self, run: StoredRun) -> list[Claim]:
        return judge(run)

    def figures(self, run: StoredRun) -> list[Figure]:
        return draw(run)

    def notes(self, run: StoredRun) -> str:
        return write_notes(run)
