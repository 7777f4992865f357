"""The ``bn-running-stats`` study: its cells, the checks that span fields, and the wiring of the rest."""

from __future__ import annotations

from typing import ClassVar

from normlab.data.images import INSTALL_HINT, SPLIT_SIZES, check_subset_sizes, fashion_mnist_dir
from normlab.engine.config import ConfigError
from normlab.engine.spec import Cell, CellContext, CellResult, Claim, Figure, KeyNumber, StoredRun, Study
from normlab.studies.bn_running_stats.claims import claims as judge
from normlab.studies.bn_running_stats.claims import key_numbers as numbers_of
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
from normlab.studies.bn_running_stats.sentences import POST_TITLES, SENTENCES

# the four files normlab.data.images reads (what its loader checks on first use)
_FASHION_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
                  "t10k-labels-idx1-ubyte.gz")


class BnRunningStats(Study):
    name = "bn-running-stats"
    description = "BatchNorm's running mean/var: update rule, momentum conventions, convergence, eval gap"
    seeds_from = ("002", "004")
    Config = Config
    post_titles: ClassVar[dict[str, str]] = POST_TITLES
    seed_sentences = SENTENCES
    threads = 1  # small kernels: a second intra-op thread only spin-waits on a busy machine
    quick_overrides: ClassVar[dict] = {
        "seeds": 10, "walk_iterations": 3, "convention_steps": 20, "momenta": (0.3, 0.05, None),
        "batch_sizes": (4, 64), "population": 2048, "features": 8, "steps": 150, "dataset": "digits",
        "train_size": None, "test_size": None, "gap_momenta": (0.3, 0.1, None), "gap_steps": (10, 80),
        "gap_batch_sizes": (8, 32), "gap_seeds": 3, "widths": (8, 8, 8),
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
        if max(config.gap_batch_sizes) > images:
            raise ConfigError(f"gap_batch_sizes: expected at most the {images} training images, "
                              f"got {max(config.gap_batch_sizes)}")

    def check_available(self, config: Config) -> None:
        # Without Fashion-MNIST the loader falls back to scikit-learn's digits (with a notice), and every
        # cell still runs unless a batch exceeds the digits' training split: only that case fails.
        digits = SPLIT_SIZES["digits"][0]
        if config.dataset != "fashion-mnist" or max(config.gap_batch_sizes) <= digits:
            return
        missing = [name for name in _FASHION_FILES if not (fashion_mnist_dir() / name).is_file()]
        if missing:
            raise OSError(f"Fashion-MNIST is missing ({', '.join(missing)} not in {fashion_mnist_dir()}) and the "
                          f"digits fallback has {digits} training images, fewer than gap_batch_sizes "
                          f"{max(config.gap_batch_sizes)}; {INSTALL_HINT}")

    def cells(self, config: Config) -> list[Cell]:
        seeds, gap_seeds = tuple(range(config.seeds)), tuple(range(config.gap_seeds))
        cells = [Cell("walkthrough", (0,)), Cell("layer-facts", (0,)), Cell("conventions", seeds)]
        cells += [Cell(f"converge/m={momentum_label(m)}", seeds, (("batch_size", b),))
                  for m in config.momenta for b in config.batch_sizes]
        cells += [Cell("gap", gap_seeds, (("batch_size", b),)) for b in config.gap_batch_sizes]
        return cells

    def run_cell(self, config: Config, ctx: CellContext) -> CellResult:
        arm = ctx.cell.arm
        if arm == "walkthrough":
            return CellResult(walkthrough(config))
        if arm == "layer-facts":
            return CellResult(layer_facts())
        if arm == "conventions":
            return CellResult(conventions(config, ctx.cell.seeds))
        if arm == "gap":
            return gap_accuracy(config, ctx.cell.param_dict["batch_size"], ctx)
        momentum = {momentum_label(m): m for m in config.momenta}[arm.split("=", 1)[1]]
        return CellResult(converge(config, momentum, ctx.cell.param_dict["batch_size"], ctx.cell.seeds))

    def claims(self, run: StoredRun) -> list[Claim]:
        return judge(run)

    def figures(self, run: StoredRun) -> list[Figure]:
        return draw(run)

    def notes(self, run: StoredRun) -> str:
        return write_notes(run)

    def key_numbers(self, run: StoredRun) -> list[KeyNumber]:
        return numbers_of(run)
