"""The batch-size study: its cells (ghost design: norm x ghost size; plain sweep: norm x batch size) and the
wiring of config, model, claims, figures and the seed post's sentences."""

from __future__ import annotations

from typing import ClassVar

from normlab.data.images import SPLIT_SIZES, check_subset_sizes
from normlab.engine.config import ConfigError
from normlab.engine.spec import Cell, CellContext, CellResult, Claim, Figure, KeyNumber, StoredRun, Study
from normlab.studies.batch_size import claims, figures
from normlab.studies.batch_size.config import Config
from normlab.studies.batch_size.model import train_cell
from normlab.studies.batch_size.sentences import POST_TITLES, SEED_SENTENCES


class BatchSize(Study):
    name = "batch-size"
    description = ("BN's statistics batch (ghost batches, fixed optimisation) and the plain batch size, vs "
                   "GN/LN/IN/no norm on real images; BN degrades at small batch?")
    seeds_from = ("003",)
    Config = Config
    threads = 1  # small kernels: a second intra-op thread only spin-waits on a busy machine
    post_titles = POST_TITLES
    seed_sentences = SEED_SENTENCES
    quick_overrides: ClassVar[dict] = {
        "dataset": "digits", "train_size": 400, "test_size": None, "epochs": 2.0, "checkpoints": 2,
        "ghost_sizes": (2, 16), "control_ghost_sizes": (2, 16), "optimiser_batch": 16, "batch_sizes": (2, 16),
        "plain_epochs": 1.0, "seeds": 2, "widths": (4, 8, 8), "num_groups": 2, "dependence_images": 32,
    }

    def check_config(self, config: Config) -> None:
        super().check_config(config)
        check_subset_sizes(config.dataset, config.train_size, config.test_size)
        images = config.train_size or SPLIT_SIZES[config.dataset][0]
        for what, sizes in (("batch_sizes", config.batch_sizes), ("optimiser_batch", (config.optimiser_batch,))):
            if max(sizes) > images:
                raise ConfigError(f"{what}: expected at most the {images} training images per batch, got {max(sizes)}")
        if config.reference_ghost != config.optimiser_batch:
            raise ConfigError(f"ghost_sizes: the largest must be the optimiser batch {config.optimiser_batch} "
                              f"(the reference: plain BatchNorm), got {config.ghost_sizes}")
        for what, sizes in (("ghost_sizes", config.ghost_sizes), ("control_ghost_sizes", config.control_ghost_sizes)):
            bad = [g for g in sizes if config.optimiser_batch % g]
            if bad:
                raise ConfigError(f"{what}: expected divisors of optimiser_batch {config.optimiser_batch}, got {bad}")
        if set(config.control_ghost_sizes) - set(config.ghost_sizes):
            raise ConfigError(f"control_ghost_sizes: expected a subset of ghost_sizes {config.ghost_sizes}, "
                              f"got {config.control_ghost_sizes}")
        bad = [g for g in config.ghost_sizes if config.dependence_images % g]
        if bad:
            raise ConfigError(f"dependence_images: expected a multiple of every ghost size, got "
                              f"{config.dependence_images} (not a multiple of {bad})")
        if config.dependence_images > (config.test_size or SPLIT_SIZES[config.dataset][1]):
            raise ConfigError(f"dependence_images: expected at most the test images, got {config.dependence_images}")
        norms = set(config.norms) | set(config.plain_norms)
        if "groupnorm" in norms and any(w % min(config.num_groups, w) for w in config.widths):
            raise ConfigError(f"num_groups: expected a divisor of every width {config.widths} (GroupNorm), "
                              f"got {config.num_groups}")

    def cells(self, config: Config) -> list[Cell]:
        seeds = tuple(range(config.seeds))
        ghost = [Cell(norm, seeds, (("design", "ghost"), ("batch_size", config.optimiser_batch), ("ghost", g)))
                 for norm in config.norms
                 for g in sorted(config.ghost_sizes if norm == "batchnorm" else config.control_ghost_sizes)]
        plain = [Cell(norm, seeds, (("design", "plain"), ("batch_size", b), ("ghost", b)))
                 for norm in config.plain_norms for b in sorted(config.batch_sizes)]
        return ghost + plain

    def run_cell(self, config: Config, ctx: CellContext) -> CellResult:
        p = ctx.cell.param_dict
        return train_cell(config, ctx.cell.arm, ctx.cell.seeds, p["design"], p["batch_size"], p["ghost"])

    def claims(self, run: StoredRun) -> list[Claim]:
        return claims.claims(run)

    def figures(self, run: StoredRun) -> list[Figure]:
        return figures.figures(run)

    def notes(self, run: StoredRun) -> str:
        return claims.notes(run)

    def key_numbers(self, run: StoredRun) -> list[KeyNumber]:
        return claims.key_numbers(run)
