"""The batch-size study: its cells (norm x batch size) and the wiring of config, model, claims and figures."""

from __future__ import annotations

from typing import ClassVar

from normlab.data.images import SPLIT_SIZES, check_subset_sizes
from normlab.engine.config import ConfigError
from normlab.engine.spec import Cell, CellContext, CellResult, Claim, Figure, StoredRun, Study
from normlab.studies.batch_size import claims, figures
from normlab.studies.batch_size.config import Config
from normlab.studies.batch_size.model import train_cell


class BatchSize(Study):
    name = "batch-size"
    description = "BN vs GN/LN/IN/no norm at batch sizes 2..64 on real images; BN degrades at small batch?"
    seeds_from = ("003",)
    Config = Config
    threads = 1  # small kernels: a second intra-op thread only spin-waits on a busy machine
    quick_overrides: ClassVar[dict] = {
        "dataset": "digits", "train_size": 400, "test_size": None, "epochs": 1.0, "batch_sizes": (2, 16),
        "reference_batch": 16, "seeds": 2, "widths": (4, 8, 8), "num_groups": 2,
    }

    def check_config(self, config: Config) -> None:
        super().check_config(config)
        check_subset_sizes(config.dataset, config.train_size, config.test_size)
        if config.reference_batch not in config.batch_sizes:
            raise ValueError(f"reference_batch {config.reference_batch} must be one of batch_sizes {config.batch_sizes}")
        images = config.train_size or SPLIT_SIZES[config.dataset][0]
        if max(config.batch_sizes) > images:
            raise ConfigError(f"batch_sizes: expected at most the {images} training images per batch, "
                              f"got {max(config.batch_sizes)}")
        if "groupnorm" in config.norms and any(w % min(config.num_groups, w) for w in config.widths):
            raise ConfigError(f"num_groups: expected a divisor of every width {config.widths} (GroupNorm), "
                              f"got {config.num_groups}")

    def cells(self, config: Config) -> list[Cell]:
        seeds = tuple(range(config.seeds))
        return [Cell(norm, seeds, (("batch_size", b),)) for norm in config.norms for b in config.batch_sizes]

    def run_cell(self, config: Config, ctx: CellContext) -> CellResult:
        return train_cell(config, ctx.cell.arm, ctx.cell.seeds, ctx.cell.param_dict["batch_size"])

    def claims(self, run: StoredRun) -> list[Claim]:
        return claims.claims(run)

    def figures(self, run: StoredRun) -> list[Figure]:
        return figures.figures(run)

    def notes(self, run: StoredRun) -> str:
        return claims.notes(run)
