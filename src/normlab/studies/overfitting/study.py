"""The ``overfitting`` study: its cells, and the wiring of model, claims and figures."""

from __future__ import annotations

from typing import ClassVar

from normlab.engine.spec import Cell, CellContext, CellResult, Claim, Figure, KeyNumber, StoredRun, Study
from normlab.studies.overfitting.claims import claims as judge
from normlab.studies.overfitting.claims import key_numbers as numbers_of
from normlab.studies.overfitting.claims import notes as write_notes
from normlab.studies.overfitting.config import ARMS, Config
from normlab.studies.overfitting.figures import figures as draw
from normlab.studies.overfitting.model import dropout_demo, train_arm, weight_decay_step
from normlab.studies.overfitting.sentences import POST_TITLES, SEED_SENTENCES


class Overfitting(Study):
    name = "overfitting"
    description = ("Weight decay and dropout on the post's 10-point regression, held-out data; dropout by "
                   "training-set size; inverted dropout; one SGD weight-decay step")
    seeds_from = ("004",)
    post_titles: ClassVar[dict[str, str]] = POST_TITLES
    seed_sentences = SEED_SENTENCES
    Config = Config
    quick_overrides: ClassVar[dict] = {"seeds": 4, "steps": 200, "eval_every": 100, "n_hidden": 32,
                                       "size_sweep": (10, 20), "sweep_steps": 200, "sweep_eval_every": 100,
                                       "sweep_seeds": 4, "demo_draws": 200, "n_heldout": 200}
    threads = 1  # tiny kernels: more threads only spin-wait on a busy machine

    def cells(self, c: Config) -> list[Cell]:
        seeds = tuple(range(c.seeds))
        # The size sweep in its own regime (every size, the smallest included, trained the same way; the
        # largest first: they take most of the time, so parallel workers finish together), then the post's
        # setting (its optimizer and step count), the demo draws and the one-step weight-decay check.
        sweep = tuple(range(c.sweep_seeds))
        cells = [Cell(arm, sweep, (("n_train", n), ("regime", "sweep"))) for n in sorted(c.size_sweep, reverse=True)
                 for arm in ("dropout", "none")]
        cells += [Cell(arm, seeds, (("n_train", c.n_train), ("regime", "seed"))) for arm in ARMS]
        return [*cells, Cell("dropout-demo", tuple(range(c.demo_draws)), (("n_train", 0), ("regime", "demo"))),
                Cell("wd-step", (0,), (("n_train", 0), ("regime", "exact")))]

    def run_cell(self, c: Config, ctx: CellContext) -> CellResult:
        if ctx.cell.arm == "dropout-demo":
            return CellResult(metrics=dropout_demo(c, ctx.cell.seeds))
        if ctx.cell.arm == "wd-step":
            return CellResult(metrics=weight_decay_step(c))
        n_train, regime = ctx.cell.param_dict["n_train"], ctx.cell.param_dict["regime"]
        out = train_arm(c, ctx.cell.arm, ctx.cell.seeds, n_train, ctx.progress, ctx.device,
                        probe=regime == "seed", regime=regime)
        return CellResult(metrics=out["metrics"], probe_scalars=out.get("probe_scalars"),
                          probe_histograms=out.get("probe_histograms"),
                          extra={"predictions": out["predictions"], "points": out["points"]})

    def claims(self, run: StoredRun) -> list[Claim]:
        return judge(run)

    def figures(self, run: StoredRun) -> list[Figure]:
        return draw(run)

    def notes(self, run: StoredRun) -> str:
        return write_notes(run)

    def key_numbers(self, run: StoredRun) -> list[KeyNumber]:
        return numbers_of(run)
