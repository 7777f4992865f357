"""The ln-distribution study: one single-sample cell, then the batch arms over every seed."""

from __future__ import annotations

from typing import ClassVar

from normlab.engine.spec import Cell, CellContext, CellResult, Claim, Figure, KeyNumber, StoredRun, Study
from normlab.studies.ln_distribution.claims import claims as run_claims
from normlab.studies.ln_distribution.claims import key_numbers as numbers_of
from normlab.studies.ln_distribution.claims import notes as run_notes
from normlab.studies.ln_distribution.config import ARMS, Config
from normlab.studies.ln_distribution.figures import figures as run_figures
from normlab.studies.ln_distribution.model import batch_cell, single_sample_cell
from normlab.studies.ln_distribution.sentences import POST_TITLES, SEED_SENTENCES


class LnDistribution(Study):
    name = "ln-distribution"
    description = ("LayerNorm on one sample and on Linear(100,50) outputs: per-sample vs per-feature statistics, "
                   "unequal-scale features against an equal-scale null, BN controls")
    seeds_from = ("001",)
    Config = Config
    quick_overrides: ClassVar[dict] = {"seeds": 8}
    threads = 1  # tiny kernels: more threads only spin-wait on a busy machine
    post_titles: ClassVar[dict[str, str]] = POST_TITLES
    seed_sentences = SEED_SENTENCES

    def check_config(self, config: Config) -> None:
        super().check_config(config)
        lo, hi = config.scale_range
        if not lo < hi:
            raise ValueError(f"scale_range: expected two scales lo < hi (unequal features), got {config.scale_range}")

    def cells(self, config: Config) -> list[Cell]:
        seeds = tuple(range(config.seeds))
        return [Cell("single-sample", (0,))] + [Cell(arm, seeds) for arm in ARMS]

    def run_cell(self, config: Config, ctx: CellContext) -> CellResult:
        if ctx.cell.arm == "single-sample":
            return single_sample_cell(config)
        return batch_cell(config, ctx.cell.arm, ctx.cell.seeds, ctx.progress)

    def claims(self, run: StoredRun) -> list[Claim]:
        return run_claims(run)

    def figures(self, run: StoredRun) -> list[Figure]:
        return run_figures(run)

    def notes(self, run: StoredRun) -> str:
        return run_notes(run)

    def key_numbers(self, run: StoredRun) -> list[KeyNumber]:
        return numbers_of(run)
