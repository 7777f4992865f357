"""The ``overfitting`` study: its cells, and the wiring of model, claims and figures."""

from __future__ import annotations

from typing import ClassVar

from normlab.engine.spec import Cell, CellContext, CellResult, Claim, Figure, StoredRun, Study
from normlab.studies.overfitting.claims import claims as judge
from normlab.studies.overfitting.claims import notes as write_notes
from normlab.studies.overfitting.config import ARMS, Config
from normlab.studies.overfitting.figures import figures as draw
from normlab.studies.overfitting.model import dropout_demo, train_arm


class Overfitting(Study):
    name = "overfitting"
    description = "Weight decay and dropout on the seed's 10-point regression, held-out data; inverted dropout"
    seeds_from = ("004",)
    Config = Config
    quick_overrides: ClassVar[dict] = {"seeds": 4, "steps": 200, "eval_every": 100, "n_hidden": 32,
                                       "size_sweep": (20,), "demo_draws": 200, "n_heldout": 200}
    threads = 1  # tiny kernels: more threads only spin-wait on a busy machine

    def cells(self, c: Config) -> list[Cell]:
        seeds = tuple(range(c.seeds))
        cells = [Cell(arm, seeds, (("n_train", c.n_train),)) for arm in ARMS]
        cells += [Cell(arm, seeds, (("n_train", n),)) for n in c.size_sweep if n != c.n_train
                  for arm in ("none", "dropout")]
        return [*cells, Cell("dropout-demo", tuple(range(c.demo_draws)), (("n_train", 0),))]

    def run_cell(self, c: Config, ctx: CellContext) -> CellResult:
        if ctx.cell.arm == "dropout-demo":
            return CellResult(metrics=dropout_demo(c, ctx.cell.seeds))
        n_train = ctx.cell.param_dict["n_train"]
        out = train_arm(c, ctx.cell.arm, ctx.cell.seeds, n_train, ctx.progress, ctx.device, probe=n_train == c.n_train)
        return CellResult(metrics=out["metrics"], probe_scalars=out.get("probe_scalars"),
                          probe_histograms=out.get("probe_histograms"),
                          extra={"predictions": out["predictions"], "points": out["points"]})

    def claims(self, run: StoredRun) -> list[Claim]:
        return judge(run)

    def figures(self, run: StoredRun) -> list[Figure]:
        return draw(run)

    def notes(self, run: StoredRun) -> str:
        return write_notes(run)
