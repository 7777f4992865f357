"""What a ``bn-running-stats`` cell measures: BatchNorm layers fed known batches, and a small CNN trained on images."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import torch

from normlab.data.images import load_images
from normlab.engine.spec import CellContext
from normlab.kit.tables import metric_rows
from normlab.models.cnn import build_members, member_accuracy, recalibrate, train_members
from normlab.nn import BatchNorm1d
from normlab.studies.bn_running_stats.config import Config


def _log_steps(total: int, extra: int) -> list[int]:
    """About 30 log-spaced steps in ``1..total``, plus ``extra`` and ``total``: where ``converge`` records."""
    grid = np.unique(np.round(np.geomspace(1, total, 30)).astype(int))
    return sorted({*grid.tolist(), extra, total})


def population(config: Config) -> torch.Tensor:
    """A fixed skewed "training set" (like post-ReLU features): per-feature scale and shift differ."""
    g = torch.Generator().manual_seed(12345)
    z = torch.randn(config.population, config.features, generator=g, dtype=torch.float64)
    scale = torch.linspace(0.5, 3.0, config.features, dtype=torch.float64)
    shift = torch.linspace(-2.0, 2.0, config.features, dtype=torch.float64)
    return ((0.5 * z).exp() * scale + shift).float()  # (P, F)


def walkthrough(config: Config) -> pd.DataFrame:
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
    return metric_rows(rows)


def layer_facts() -> pd.DataFrame:
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
    return metric_rows([(0, 0, k, v) for k, v in rows.items()])


def conventions(config: Config, seeds: tuple[int, ...]) -> pd.DataFrame:
    """Largest running-stat difference of normlab's BatchNorm1d (torch m, keras 1-m) from torch.nn's, per seed."""
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
    return metric_rows(rows)


@torch.no_grad()
def converge(config: Config, momentum: float | None, batch_size: int, seeds: tuple[int, ...]) -> pd.DataFrame:
    """Errors of the running mean and variance against the population's exact statistics, over steps."""
    pop = population(config)  # (P, F)
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
    return metric_rows(rows)


def gap_accuracy(config: Config, momentum: float | None, steps: int, ctx: CellContext) -> pd.DataFrame:
    """Test accuracy of a BatchNorm CNN after ``steps``: batch statistics, running statistics, recalibrated."""
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
    return metric_rows(rows)
