r"""bn-running-stats (seeds 002, 004): how BatchNorm's running statistics are updated, and what they cost.

In training BatchNorm normalizes with the batch's mean and *biased* variance; in evaluation with the
running estimates, updated once per training step (torch's convention, ``m`` = ``momentum``)

.. math::  \hat\mu \leftarrow (1-m)\,\hat\mu + m\,\mu_B, \qquad
           \hat\sigma^2 \leftarrow (1-m)\,\hat\sigma^2 + m\,\tfrac{B}{B-1}\sigma_B^2

from ``(0, 1)``. Keras writes the same update with the weight of the *old* value (0.99 = 1 - 0.01);
``momentum=None`` is the cumulative average ``m_t = 1/t``.

Arms:

* ``walkthrough``: seed 004's ``BatchNorm1d(5, momentum=0.3)`` on a batch of 3 where feature ``i`` is the
  constant ``i + 1``, for several iterations (the seed prints two).
* ``layer-facts``: torch's default momentum and update rule measured by running the layer (seed 002 says
  "PyTorch's momentum is 0.9"); unbiased running variance vs biased normalizing variance.
* ``conventions``: ``torch.nn.BatchNorm1d(momentum=m)``, ``normlab.nn.BatchNorm1d(momentum=m)`` and
  ``normlab.nn.BatchNorm1d(momentum=1-m, momentum_convention="keras")`` on the same random batches.
* ``converge/m=...`` x ``batch_size``: running statistics of a fixed, skewed population (the "training
  set", exact mean and variance known) against steps, per momentum and batch size; all seeds at once
  (one layer with ``seeds x features`` channels: each seed owns a block of channels and its own batches).
* ``gap/m=...`` x ``steps``: a small CNN with BatchNorm trained briefly or longer on real images; test
  accuracy with batch statistics (train mode), running statistics (eval) and recalibrated running
  statistics (exact population statistics of the training data).

The claims and figures, computed from the stored tables only, are in ``_bn_running_stats_report.py``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pandas as pd
import torch

from normlab.data.images import DATASETS, SPLIT_SIZES, check_subset_sizes, load_images
from normlab.engine.config import (
    Check,
    ConfigError,
    because,
    integer,
    items,
    number,
    one_of,
    optional,
    seeds_check,
)
from normlab.engine.spec import Cell, CellContext, CellResult, Claim, Figure, StoredRun, Study
from normlab.models.cnn import build_members, member_accuracy, recalibrate, train_members
from normlab.nn import BatchNorm1d
from normlab.studies._bn_running_stats_report import draw, judge, momentum_label

# a BatchNorm momentum (torch's convention: the weight of the new batch); None: cumulative average
_MOMENTUM = number(0, 1, lo_open=True)


@dataclass
class Config:
    seeds: int = 40  # convergence and conventions arms: seeds 0..seeds-1
    # seed 004's walk-through: BatchNorm1d(5, momentum=0.3), batch of 3, feature i == i + 1
    walk_batch: int = 3
    walk_features: int = 5
    walk_momentum: float = 0.3
    walk_iterations: int = 5
    # conventions: torch momenta compared with keras 1 - m
    convention_momenta: tuple[float, ...] = (0.1, 0.01, 0.3)
    convention_steps: int = 100
    # convergence to a fixed population's statistics
    momenta: tuple[float | None, ...] = (0.3, 0.1, 0.01, None)
    batch_sizes: tuple[int, ...] = (4, 16, 64)
    population: int = 8192
    features: int = 32
    steps: int = 1000
    early_step: int = 10  # "short training" for the speed claim
    # train/eval gap on real images
    dataset: str = "fashion-mnist"
    train_size: int | None = 5000
    test_size: int | None = 2000
    downsample: int = 2  # 28x28 -> 14x14 (Fashion-MNIST only): a quarter of the compute
    gap_momenta: tuple[float | None, ...] = (0.1, 0.01, None)
    gap_steps: tuple[int, int] = (20, 600)  # short, long
    gap_batch_size: int = 32
    gap_seeds: int = 5
    lr: float = 0.05
    widths: tuple[int, int, int] = (8, 16, 16)

    checks: ClassVar[dict[str, Check]] = {
        "seeds": seeds_check(),
        "walk_batch": because(integer(2), "BatchNorm needs two samples per batch"),
        "walk_features": because(integer(2), "the walk-through claims read features 1 and 2"),
        "walk_momentum": _MOMENTUM,
        "walk_iterations": integer(1),
        "convention_momenta": items(_MOMENTUM, unique=True),
        "convention_steps": integer(1),
        "momenta": items(optional(_MOMENTUM), unique=True),
        "batch_sizes": items(because(integer(2), "BatchNorm needs two samples per batch"), unique=True),
        "population": integer(2),
        "features": integer(1),
        "steps": integer(1),
        "early_step": integer(1),
        "dataset": one_of(DATASETS),
        "train_size": optional(integer(1, max(n for n, _ in SPLIT_SIZES.values()))),
        "test_size": optional(integer(1, max(n for _, n in SPLIT_SIZES.values()))),
        "downsample": because(integer(1, 7), "28 / 7 = 4 pixels still survive the CNN's two 2x2 max-pools"),
        "gap_momenta": items(optional(_MOMENTUM), unique=True),
        "gap_steps": items(integer(1), min_len=2, max_len=2, unique=True),
        "gap_batch_size": because(integer(2), "BatchNorm needs two samples per batch"),
        "gap_seeds": seeds_check(),
        "lr": number(0, lo_open=True),
        "widths": items(integer(1), min_len=3, max_len=3),
    }


def _long(rows: list[tuple[int, int, str, float]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["seed", "step", "metric", "value"])


def _log_steps(total: int, extra: int) -> list[int]:
    grid = np.unique(np.round(np.geomspace(1, total, 30)).astype(int))
    return sorted({*grid.tolist(), extra, total})


def _population(config: Config) -> torch.Tensor:
    """A fixed skewed "training set" (like post-ReLU features): per-feature scale and shift differ."""
    g = torch.Generator().manual_seed(12345)
    z = torch.randn(config.population, config.features, generator=g, dtype=torch.float64)
    scale = torch.linspace(0.5, 3.0, config.features, dtype=torch.float64)
    shift = torch.linspace(-2.0, 2.0, config.features, dtype=torch.float64)
    return ((0.5 * z).exp() * scale + shift).float()  # (P, F)


class BnRunningStats(Study):
    name = "bn-running-stats"
    description = "BatchNorm's running mean/var: update rule, momentum conventions, convergence, eval gap"
    seeds_from = ("002", "004")
    Config = Config
    threads = 1  # small kernels: a second intra-op thread only spin-waits on a busy machine
    quick_overrides: ClassVar[dict] = {
        "seeds": 10, "walk_iterations": 3, "convention_steps": 20, "momenta": (0.3, 0.05, None),
        "batch_sizes": (4, 64), "population": 2048, "features": 8, "steps": 150, "dataset": "digits",
        "train_size": None, "test_size": None, "gap_momenta": (0.1, 0.01), "gap_steps": (10, 80),
        "gap_seeds": 3, "widths": (8, 8, 8),
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
        if config.gap_batch_size > images:
            raise ConfigError(f"gap_batch_size: expected at most the {images} training images, "
                              f"got {config.gap_batch_size}")

    def cells(self, config: Config) -> list[Cell]:
        seeds, gap_seeds = tuple(range(config.seeds)), tuple(range(config.gap_seeds))
        cells = [Cell("walkthrough", (0,)), Cell("layer-facts", (0,)), Cell("conventions", seeds)]
        cells += [Cell(f"converge/m={momentum_label(m)}", seeds, (("batch_size", b),))
                  for m in config.momenta for b in config.batch_sizes]
        cells += [Cell(f"gap/m={momentum_label(m)}", gap_seeds, (("steps", s),))
                  for m in config.gap_momenta for s in config.gap_steps]
        return cells

    def run_cell(self, config: Config, ctx: CellContext) -> CellResult:
        arm = ctx.cell.arm
        if arm == "walkthrough":
            return CellResult(_walkthrough(config))
        if arm == "layer-facts":
            return CellResult(_layer_facts())
        if arm == "conventions":
            return CellResult(_conventions(config, ctx.cell.seeds))
        momentum = {momentum_label(m): m for m in (*config.momenta, *config.gap_momenta)}[arm.split("=", 1)[1]]
        if arm.startswith("converge/"):
            return CellResult(_converge(config, momentum, ctx.cell.param_dict["batch_size"], ctx.cell.seeds))
        return CellResult(_gap(config, momentum, ctx.cell.param_dict["steps"], ctx))

    def claims(self, run: StoredRun) -> list[Claim]:
        return judge(run)

    def figures(self, run: StoredRun) -> list[Figure]:
        return draw(run)

    def notes(self, run: StoredRun) -> str:
        return NOTES


# ----------------------------------------------------------------------------------------- measurements


def _walkthrough(config: Config) -> pd.DataFrame:
    """Seed 004's loop: the same constant batch fed repeatedly; running stats recorded after each step."""
    feature = torch.arange(1, config.walk_features + 1, dtype=torch.float32).view(1, -1, 1)  # (1, F, 1)
    batch = feature.expand(config.walk_batch, -1, -1).contiguous()  # (B, F, 1): feature i is i + 1
    bn = BatchNorm1d(config.walk_features, momentum=config.walk_momentum)
    rows = []
    for step in range(config.walk_iterations):
        bn(batch)
        for j in range(config.walk_features):
            rows += [(0, step, f"running_mean/f{j}", float(bn.running_mean[j])),
                     (0, step, f"running_var/f{j}", float(bn.running_var[j]))]
    return _long(rows)


def _layer_facts() -> pd.DataFrame:
    """Torch's default momentum and update rule, measured on one random batch (float64, exact)."""
    x = torch.randn(8, 6, dtype=torch.float64) * 3 + 1  # (B, F)
    mean_b = x.mean(0)
    var_biased, var_unbiased = x.var(0, correction=0), x.var(0, correction=1)
    default = torch.nn.BatchNorm1d(6, dtype=torch.float64)
    out = default(x).detach()
    # Seed 002's formula: running = momentum * running + (1 - momentum) * batch, from running_mean = 0,
    # so after one step running_mean = (1 - momentum) * batch_mean: solve for its "momentum".
    decay = float((1 - default.running_mean / mean_b).mean())
    as_seed = torch.nn.BatchNorm1d(6, momentum=0.9, dtype=torch.float64)  # what a reader of seed 002 types
    as_seed(x)
    full = torch.nn.BatchNorm1d(6, momentum=1.0, dtype=torch.float64)  # running = this batch's estimate
    full(x)
    eps = default.eps
    rows = {
        "default_momentum": float(default.momentum),
        "normlab_default_momentum": float(BatchNorm1d(6).momentum),
        "seed002_formula_momentum": decay,
        "momentum0.9_mean_ratio": float((as_seed.running_mean / mean_b).mean()),
        "running_var_over_unbiased": float((full.running_var / var_unbiased).mean()),
        "running_var_over_biased": float((full.running_var / var_biased).mean()),
        "output_vs_biased_maxdiff": float((out - (x - mean_b) / (var_biased + eps).sqrt()).abs().max()),
        "output_vs_unbiased_maxdiff": float((out - (x - mean_b) / (var_unbiased + eps).sqrt()).abs().max()),
        "batch_size": float(x.shape[0]),
    }
    return _long([(0, 0, k, v) for k, v in rows.items()])


def _conventions(config: Config, seeds: tuple[int, ...]) -> pd.DataFrame:
    rows = []
    for seed in seeds:
        g = torch.Generator().manual_seed(seed)
        for m in config.convention_momenta:
            layers = [torch.nn.BatchNorm1d(8, momentum=m), BatchNorm1d(8, momentum=m),
                      BatchNorm1d(8, momentum=1 - m, momentum_convention="keras")]
            worst_torch, worst_keras = 0.0, 0.0
            for _ in range(config.convention_steps):
                x = torch.randn(16, 8, generator=g) * 2 + torch.randn(1, 8, generator=g)  # drifting batches
                for layer in layers:
                    layer(x)
                ref = torch.cat([layers[0].running_mean, layers[0].running_var])
                worst_torch = max(worst_torch, float((torch.cat([layers[1].running_mean, layers[1].running_var])
                                                      - ref).abs().max()))
                worst_keras = max(worst_keras, float((torch.cat([layers[2].running_mean, layers[2].running_var])
                                                      - ref).abs().max()))
            rows += [(seed, config.convention_steps, f"maxdiff/torch/m={m:g}", worst_torch),
                     (seed, config.convention_steps, f"maxdiff/keras/m={m:g}", worst_keras)]
    return _long(rows)


@torch.no_grad()
def _converge(config: Config, momentum: float | None, batch_size: int, seeds: tuple[int, ...]) -> pd.DataFrame:
    pop = _population(config)  # (P, F)
    mu, var = pop.double().mean(0), pop.double().var(0, correction=0)  # the true population statistics
    n_seeds, n_feat = len(seeds), config.features
    # One layer, n_seeds * F channels: seed s owns channels [s*F, (s+1)*F) and draws its own batches.
    bn = BatchNorm1d(n_seeds * n_feat, momentum=momentum, affine=False)
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    log_at = set(_log_steps(config.steps, config.early_step))
    rows = []
    for step in range(1, config.steps + 1):
        idx = torch.stack([torch.randint(len(pop), (batch_size,), generator=g) for g in gens])  # (S, B)
        bn(pop[idx].transpose(0, 1).reshape(batch_size, n_seeds * n_feat))  # (B, S*F)
        if step in log_at:
            rm = bn.running_mean.double().view(n_seeds, n_feat)
            rv = bn.running_var.double().view(n_seeds, n_feat)
            mean_err = (((rm - mu) / var.sqrt()) ** 2).mean(1).sqrt()  # RMS over features, in units of σ
            log_ratio = (rv / var).log()
            for s, seed in enumerate(seeds):
                rows += [(seed, step, "mean_err", float(mean_err[s])),
                         (seed, step, "var_err", float(log_ratio[s].pow(2).mean().sqrt())),
                         (seed, step, "var_bias", float(log_ratio[s].mean()))]
    return _long(rows)


def _gap(config: Config, momentum: float | None, steps: int, ctx: CellContext) -> pd.DataFrame:
    data = load_images(config.dataset, train_size=config.train_size, test_size=config.test_size,
                       downsample=config.downsample)
    seeds = ctx.cell.seeds
    # Member s starts from torch.manual_seed(s) and shuffles with seed s, whatever the momentum: the arms
    # differ only in momentum, so comparisons across arms are paired by seed.
    model = build_members(seeds, num_classes=data.num_classes, widths=config.widths, norm="batchnorm",
                          norm_kwargs={"momentum": momentum})
    train_members(model, data.x_train, data.y_train, seeds, batch_size=config.gap_batch_size,
                  examples=steps * config.gap_batch_size, lr=config.lr)
    # Train mode: each test batch of gap_batch_size normalized by its own statistics (running stats of
    # this copy change, which does not matter: it is thrown away).
    acc_batch = member_accuracy(copy.deepcopy(model).train(), data.x_test, data.y_test,
                                batch_size=config.gap_batch_size)
    acc_eval = member_accuracy(model.eval(), data.x_test, data.y_test)
    recal = copy.deepcopy(model)
    recalibrate(recal, data.x_train)
    acc_recal = member_accuracy(recal.eval(), data.x_test, data.y_test)
    rows = []
    for s, seed in enumerate(seeds):
        rows += [(seed, steps, "acc_batch_stats", float(acc_batch[s])), (seed, steps, "acc_running", float(acc_eval[s])),
                 (seed, steps, "acc_recalibrated", float(acc_recal[s]))]
    return _long(rows)


NOTES = """\
Seed 002 writes the moving average as `moving = moving*momentum + batch*(1-momentum)` and says PyTorch's
value is 0.9: in that (Keras) form the statement is right, but PyTorch's *argument* means the opposite weight
(default 0.1); the two claims above separate the formula from the argument. Seed 004's walk-through is
reproduced by the layer itself, iteration by iteration. The convergence arms use a fixed population whose
exact statistics are known, so "closer to the truth" is measured, not inferred; the train/eval arms show what
the same effect costs in accuracy on real images, and recalibration (exact statistics of the training data)
is the control that separates a stale running estimate from a worse network.
"""
