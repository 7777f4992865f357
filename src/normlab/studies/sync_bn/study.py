"""The sync-bn study: its cells (arm x images per rank, every seed in one cell, each cell on ``ranks`` gloo
processes) and the wiring of config, model, claims and figures."""

from __future__ import annotations

from typing import ClassVar

from normlab.data.images import SPLIT_SIZES, check_subset_sizes
from normlab.engine.config import ConfigError
from normlab.engine.spec import Cell, CellContext, CellResult, Claim, Figure, KeyNumber, StoredRun, Study
from normlab.studies.sync_bn import claims, figures
from normlab.studies.sync_bn.config import Config
from normlab.studies.sync_bn.model import train_cell


class SyncBN(Study):
    name = "sync-bn"
    description = ("BN vs SyncBN vs GN at small images per rank, each cell data-parallel on 2 gloo ranks "
                   "(Wu & He's images per GPU): what does SyncBN buy?")
    seeds_from = ()  # extends batch-size (post 003's section) with Wu & He's setting; owns no post sentence
    Config = Config
    threads = 1  # the cell's own process only waits for its ranks, which run one thread each
    starts_processes = True  # each cell spawns its torch.distributed ranks (engine/ranks.py)
    quick_overrides: ClassVar[dict] = {
        "dataset": "digits", "train_size": 400, "test_size": None, "per_rank_batches": (2, 4), "epochs": 0.5,
        "seeds": 2, "widths": (4, 8, 8), "num_groups": 2, "cell_timeout": 300.0, "collective_timeout": 120.0,
    }

    def check_config(self, config: Config) -> None:
        super().check_config(config)
        check_subset_sizes(config.dataset, config.train_size, config.test_size)
        images = config.train_size or SPLIT_SIZES[config.dataset][0]
        if config.ranks * config.largest > images:
            raise ConfigError(f"per_rank_batches: a global batch of {config.ranks} x {config.largest} exceeds the "
                              f"{images} training images")
        if "groupnorm" in config.arms and any(w % min(config.num_groups, w) for w in config.widths):
            raise ConfigError(f"num_groups: expected a divisor of every width {config.widths} (GroupNorm), "
                              f"got {config.num_groups}")
        if config.collective_timeout > config.cell_timeout:
            raise ConfigError(f"collective_timeout: expected at most cell_timeout {config.cell_timeout:g} s, got "
                              f"{config.collective_timeout:g}")

    def cells(self, config: Config) -> list[Cell]:
        seeds = tuple(range(config.seeds))
        return [Cell(arm, seeds, (("per_rank_batch", b),)) for b in sorted(config.per_rank_batches)
                for arm in config.arms]

    def run_cell(self, config: Config, ctx: CellContext) -> CellResult:
        return train_cell(config, ctx.cell.arm, ctx.cell.param_dict["per_rank_batch"], ctx.cell.seeds)

    def claims(self, run: StoredRun) -> list[Claim]:
        return claims.claims(run)

    def figures(self, run: StoredRun) -> list[Figure]:
        return figures.figures(run)

    def notes(self, run: StoredRun) -> str:
        return claims.notes(run)

    def key_numbers(self, run: StoredRun) -> list[KeyNumber]:
        return claims.key_numbers(run)
