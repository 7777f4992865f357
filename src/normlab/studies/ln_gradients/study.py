"""ln-gradients: the Study that wires the settings, the training, the claims and the figures."""

from __future__ import annotations

from normlab.engine.spec import Cell, CellContext, CellResult, Claim, Figure, KeyNumber, StoredRun, Study
from normlab.studies.ln_gradients import claims as _claims
from normlab.studies.ln_gradients import figures as _figures
from normlab.studies.ln_gradients.config import Config
from normlab.studies.ln_gradients.model import train_arm
from normlab.studies.ln_gradients.sentences import POST_TITLES, SEED_SENTENCES


class LnGradients(Study):
    name = "ln-gradients"
    description = "Post 000: LayerNorm vs dropout on a 5-Linear net; loss, fluctuation, gradient distributions."
    seeds_from = ("000",)
    Config = Config
    quick_overrides = {"seeds": 4, "steps": 100, "eval_every": 10, "probe_every": 10, "hist_every": 25}  # noqa: RUF012
    threads = 1
    post_titles = POST_TITLES
    seed_sentences = SEED_SENTENCES

    def cells(self, config: Config) -> list[Cell]:
        return [Cell(arm=a, seeds=tuple(range(config.seeds))) for a in config.arms]

    def run_cell(self, config: Config, ctx: CellContext) -> CellResult:
        return train_arm(config, ctx)

    def claims(self, run: StoredRun) -> list[Claim]:
        return _claims.claims(run)

    def figures(self, run: StoredRun) -> list[Figure]:
        return _figures.figures(run)

    def notes(self, run: StoredRun) -> str:
        return _claims.notes(run)

    def key_numbers(self, run: StoredRun) -> list[KeyNumber]:
        return _claims.key_numbers(run)
