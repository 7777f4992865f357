"""residual-placement: the study, wiring the config, the cells, the claims and the figures."""

from __future__ import annotations

from typing import Any, ClassVar

from normlab.data.corpus import find_plays
from normlab.engine.spec import Cell, CellContext, CellResult, Claim, Figure, KeyNumber, StoredRun, Study
from normlab.studies.residual_placement import claims, figures
from normlab.studies.residual_placement.config import (
    NORM_COST_ARM,
    Arm,
    Config,
    arms,
    check_config,
    first_map_arm,
)
from normlab.studies.residual_placement.model import norm_cost, train_arm
from normlab.studies.residual_placement.sentences import POST_TITLES, SENTENCES


class ResidualPlacement(Study):
    name = "residual-placement"
    description = ("Post-LN vs Pre-LN vs Sandwich-LN vs DeepNorm in a char-level transformer on Shakespeare: "
                   "depth x learning-rate stability map, warmup, RMSNorm and BatchNorm arms (posts 003, 002)")
    seeds_from = ("003", "002")
    post_titles: ClassVar[dict[str, str]] = POST_TITLES
    seed_sentences = SENTENCES
    Config = Config
    threads = 1  # width-32 matrices gain nothing from a second thread; on a busy machine it only spin-waits
    quick_overrides: ClassVar[dict[str, Any]] = {
        "depths": (1, 2), "seeds": 2, "steps": 12, "warmup": 6, "width": 16, "heads": 2, "bn_depth": 1,
        "block_size": 8, "batch_size": 4, "corpus_chars": 20_000, "eval_batches": 1, "eval_batch_size": 8,
        "track_updates": 3, "log_every": 4, "timing_reps": 3,
    }

    def check_config(self, config: Config) -> None:
        check_config(config)

    def cells(self, config: Config) -> list[Cell]:
        seeds = tuple(range(config.seeds))
        cells = [Cell(a.name, seeds, (("placement", a.placement), ("norm", a.norm), ("depth", a.depth),
                                      ("lr", a.lr), ("warmup", a.warmup)))
                 for a in arms(config)]
        # The timing cell goes before the rest of the map (cells run in this order; see config.arms).
        cells.insert(first_map_arm(config), Cell(NORM_COST_ARM, tuple(range(config.timing_reps))))
        return cells

    def check_available(self, config: Config) -> None:
        find_plays()  # every training cell reads the corpus: CorpusMissingError says how to install it

    def run_cell(self, config: Config, ctx: CellContext) -> CellResult:
        if ctx.cell.arm == NORM_COST_ARM:
            return CellResult(metrics=norm_cost(config, len(ctx.cell.seeds)))
        p = ctx.cell.param_dict
        arm = Arm(p["placement"], p["norm"], p["depth"], p["lr"], p["warmup"])
        return CellResult(metrics=train_arm(config, arm, ctx.cell.seeds, ctx.progress))

    def claims(self, run: StoredRun) -> list[Claim]:
        return claims.claims(run)

    def figures(self, run: StoredRun) -> list[Figure]:
        return figures.figures(run)

    def notes(self, run: StoredRun) -> str:
        return claims.notes(run)

    def key_numbers(self, run: StoredRun) -> list[KeyNumber]:
        return claims.key_numbers(run)
