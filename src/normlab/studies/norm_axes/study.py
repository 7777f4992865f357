"""The norm-axes study: random tensors per layout (loops vs layers) and one cell of layer state."""

from __future__ import annotations

from typing import ClassVar

from normlab.engine.config import ConfigError
from normlab.engine.spec import Cell, CellContext, CellResult, Claim, Figure, KeyNumber, StoredRun, Study
from normlab.studies.norm_axes.claims import claims as run_claims
from normlab.studies.norm_axes.claims import key_numbers as numbers_of
from normlab.studies.norm_axes.claims import notes as run_notes
from normlab.studies.norm_axes.config import Config
from normlab.studies.norm_axes.figures import figures as run_figures
from normlab.studies.norm_axes.model import state_cell, tensors_cell
from normlab.studies.norm_axes.sentences import POST_TITLES, SEED_SENTENCES


class NormAxes(Study):
    name = "norm-axes"
    description = "Which axes BN/LN/IN/GN reduce over (images and [batch, seq, hidden]) and what they store"
    seeds_from = ("002", "003", "004")
    Config = Config
    threads = 1  # small kernels: a second intra-op thread only spin-waits on a busy machine
    quick_overrides: ClassVar[dict] = {"seeds": 3}
    post_titles: ClassVar[dict[str, str]] = POST_TITLES
    seed_sentences = SEED_SENTENCES

    def check_config(self, config: Config) -> None:
        super().check_config(config)
        if config.nchw[1] % config.num_groups or config.sequence[2] % config.num_groups:
            raise ValueError(f"num_groups={config.num_groups} must divide C={config.nchw[1]} and "
                             f"hidden={config.sequence[2]}")
        _n, _c, h, w = config.nchw
        if h * w < 2:  # (N * H * W >= 2 for BatchNorm follows)
            raise ConfigError(f"nchw: expected H * W >= 2 (InstanceNorm's variance needs two values per "
                              f"channel), got {config.nchw}")
        if min(config.sequence[:2]) < 2:
            raise ConfigError(f"sequence: expected batch >= 2 and seq >= 2 (BatchNorm's and InstanceNorm's "
                              f"variances need two values), got {config.sequence}")

    def cells(self, config: Config) -> list[Cell]:
        seeds = tuple(range(config.seeds))
        return [Cell("nchw", seeds), Cell("sequence", seeds), Cell("state", (0,))]

    def run_cell(self, config: Config, ctx: CellContext) -> CellResult:
        if ctx.cell.arm == "state":
            return state_cell()
        return tensors_cell(config, ctx.cell.arm, ctx.cell.seeds, ctx.progress)

    def claims(self, run: StoredRun) -> list[Claim]:
        return run_claims(run)

    def figures(self, run: StoredRun) -> list[Figure]:
        return run_figures(run)

    def notes(self, run: StoredRun) -> str:
        return run_notes(run)

    def key_numbers(self, run: StoredRun) -> list[KeyNumber]:
        return numbers_of(run)
