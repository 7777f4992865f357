"""What a ``bn-running-stats`` cell measures: BatchNorm layers fed known batches, and a small CNN trained on images."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import torch

from normlab.data.images import load_images
from normlab.engine.spec import CellContext, CellResult
from normlab.kit.tables import metric_rows
from normlab.models.cnn import build_members, member_accuracy, recalibrated_copy, train_members
from normlab.nn import BatchNorm1d
from normlab.studies.bn_running_stats.config import Config, momentum_label


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
    """Post 004's loop: the same constant batch fed repeatedly; running stats recorded after each step."""
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


@torch.no_grad()
def layer_facts() -> pd.DataFrame:
    """Torch's default momentum and update rule, measured on one random batch (float64, exact)."""
    x = torch.randn(8, 6, dtype=torch.float64) * 3 + 1  # (B, F)
    mean_b = x.mean(0)
    var_biased, var_unbiased = x.var(0, correction=0), x.var(0, correction=1)
    default = torch.nn.BatchNorm1d(6, dtype=torch.float64)
    out = default(x).detach()
    # Post 002's formula: running = momentum * running + (1 - momentum) * batch, from running_mean = 0,
    # so after one step running_mean = (1 - momentum) * batch_mean: solve for its "momentum".
    decay = float((1 - default.running_mean / mean_b).mean())
    as_seed = torch.nn.BatchNorm1d(6, momentum=0.9, dtype=torch.float64)  # what a reader of post 002 types
    as_seed(x)
    full = torch.nn.BatchNorm1d(6, momentum=1.0, dtype=torch.float64)  # running = this batch's estimate
    full(x)
    eps = default.eps
    # Post 002: the initial running statistics are (0, 1), "a standard normal".
    fresh = torch.nn.BatchNorm1d(6, dtype=torch.float64)
    # Post 002: eval normalizes with the running statistics (kept in the state dict with the weights);
    # training uses the batch's, whatever the running statistics hold. Two layers whose running
    # statistics differ (different momenta, one extra step on another batch) give the same training
    # output and different eval outputs.
    a = torch.nn.BatchNorm1d(6, momentum=0.3, dtype=torch.float64)
    b = torch.nn.BatchNorm1d(6, momentum=0.05, dtype=torch.float64)
    a(x), b(x), b(x * 2 - 1)
    train_diff = float((a(x) - b(x)).detach().abs().max())  # both still in train mode
    a.eval(), b.eval()
    eval_a = a(x).detach()
    eval_diff = float((eval_a - b(x)).abs().max())
    eval_vs_running = float((eval_a - (x - a.running_mean) / (a.running_var + eps).sqrt()).abs().max())
    saved = a.state_dict()
    in_state = float(torch.equal(saved["running_mean"], a.running_mean)
                     and torch.equal(saved["running_var"], a.running_var))
    # Post 004: "track_running_stats: training or test state". With the flag fixed, train()/eval() still
    # switches the statistics (when it is True); with it False the layer uses batch statistics in both.
    tracked = torch.nn.BatchNorm1d(6, dtype=torch.float64)
    tracked(x)
    modes_true = float((tracked(x) - tracked.eval()(x)).abs().max())
    untracked = torch.nn.BatchNorm1d(6, track_running_stats=False, dtype=torch.float64)
    modes_false = float((untracked(x) - untracked.eval()(x)).abs().max())
    rows = {
        "initial_mean_maxabs": float(fresh.running_mean.abs().max()),
        "initial_var_maxdev": float((fresh.running_var - 1).abs().max()),
        "train_output_diff_other_running": train_diff,
        "eval_output_diff_other_running": eval_diff,
        "eval_vs_running_maxdiff": eval_vs_running,
        "running_in_state_dict": in_state,
        "mode_switch_diff_track_true": modes_true,
        "mode_switch_diff_track_false": modes_false,
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


class ShadowStats:
    """Running estimates of every BatchNorm's input statistics under several momenta at once.

    Training does not read the running statistics (BatchNorm normalizes with the batch's), so one training
    run serves every momentum: a forward pre-hook on each BatchNorm takes the batch's per-channel mean and
    unbiased variance (what the layer's own update uses) and updates one running pair per momentum by
    torch's rule, ``m = 1/t`` for ``None``. The layer's own buffers follow its own momentum as usual.
    """

    def __init__(self, model: torch.nn.Module, momenta: tuple[float | None, ...]) -> None:
        self.layers = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
        self.momenta = momenta
        # state[k][i]: (running mean, running var) of layer i under momenta[k], float64
        self.state = [[(torch.zeros(layer.num_features, dtype=torch.float64),
                        torch.ones(layer.num_features, dtype=torch.float64)) for layer in self.layers]
                      for _ in momenta]
        self.updates = [0] * len(self.layers)
        self.handles = [layer.register_forward_pre_hook(self._hook(i)) for i, layer in enumerate(self.layers)]

    def _hook(self, i: int):
        def hook(module: torch.nn.Module, args: tuple) -> None:
            if not module.training:
                return
            x = args[0].detach().double()
            dims = [0, *range(2, x.ndim)]
            var, mean = torch.var_mean(x, dim=dims, correction=1)
            self.updates[i] += 1
            for k, m in enumerate(self.momenta):
                f = 1.0 / self.updates[i] if m is None else m
                rm, rv = self.state[k][i]
                rm.mul_(1 - f).add_(mean, alpha=f)
                rv.mul_(1 - f).add_(var, alpha=f)
        return hook

    def remove(self) -> None:
        """Detach the hooks (a copy of the model would otherwise carry them and update these estimates)."""
        for h in self.handles:
            h.remove()

    def load(self, model: torch.nn.Module, k: int) -> None:
        """Write momenta[k]'s estimates into ``model``'s BatchNorm buffers (a copy of the tracked model)."""
        layers = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
        for layer, (rm, rv) in zip(layers, self.state[k], strict=True):
            layer.running_mean.copy_(rm)
            layer.running_var.copy_(rv)


def stat_error(model: torch.nn.Module, reference: torch.nn.Module, members: int) -> torch.Tensor:
    """Per member: RMS over every BatchNorm channel of ``(mean - mean_ref)/sd_ref`` and ``log(var/var_ref)``.

    ``reference`` is the recalibrated copy (exact training-set statistics under the same weights); the
    channels of a grouped model are member-major, so each layer's ``S * C`` channels view as ``(S, C)``.
    """
    sq, count = torch.zeros(members, dtype=torch.float64), 0
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    refs = [m for m in reference.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for layer, ref in zip(bns, refs, strict=True):
        eps = layer.eps
        rm, rv = layer.running_mean.double().view(members, -1), layer.running_var.double().view(members, -1)
        mu, var = ref.running_mean.double().view(members, -1), ref.running_var.double().view(members, -1)
        z = (rm - mu) / (var + eps).sqrt()
        lv = ((rv + eps) / (var + eps)).log()
        sq += (z ** 2 + lv ** 2).sum(1)
        count += rm.shape[1]
    return (sq / count).sqrt()


def gap_accuracy(config: Config, batch_size: int, ctx: CellContext) -> CellResult:
    """A BatchNorm CNN trained ``gap_steps`` steps at ``batch_size``; test accuracy with batch statistics,
    recalibrated statistics and the running statistics of every momentum in ``gap_momenta``, and each
    momentum's running-statistics error against the recalibrated (exact) statistics.

    Each length is its own run from the same start (constant learning rate, the same batch order): the
    short run is the long run's first steps. Rows: ``step`` = training steps; metrics ``acc_batch_stats``,
    ``acc_recalibrated``, ``acc_running/m=<label>``, ``stat_err/m=<label>``.
    """
    data = load_images(config.dataset, train_size=config.train_size, test_size=config.test_size,
                       downsample=config.downsample)
    seeds = ctx.cell.seeds
    rows = []
    for n, steps in enumerate(config.gap_steps):
        # Member s starts from torch.manual_seed(s) and shuffles with seed s whatever the batch size or
        # length: comparisons within a seed are paired.
        model = build_members(seeds, num_classes=data.num_classes, widths=config.widths, norm="batchnorm")
        shadows = ShadowStats(model, config.gap_momenta)
        train_members(model, data.x_train, data.y_train, seeds, batch_size=batch_size,
                      examples=steps * batch_size, lr=config.lr)
        shadows.remove()
        # Train mode: each test batch of batch_size normalized by its own statistics (this copy's running
        # stats change, which does not matter: it is thrown away).
        acc_batch = member_accuracy(copy.deepcopy(model).train(), data.x_test, data.y_test, batch_size=batch_size)
        recal = recalibrated_copy(model, data.x_train)
        acc_recal = member_accuracy(recal, data.x_test, data.y_test)
        for s, seed in enumerate(seeds):
            rows += [(seed, steps, "acc_batch_stats", float(acc_batch[s])),
                     (seed, steps, "acc_recalibrated", float(acc_recal[s]))]
        for k, m in enumerate(config.gap_momenta):
            tracked = copy.deepcopy(model)
            shadows.load(tracked, k)
            acc = member_accuracy(tracked.eval(), data.x_test, data.y_test)
            err = stat_error(tracked, recal, len(seeds))
            label = momentum_label(m)
            for s, seed in enumerate(seeds):
                rows += [(seed, steps, f"acc_running/m={label}", float(acc[s])),
                         (seed, steps, f"stat_err/m={label}", float(err[s]))]
        ctx.progress(n + 1, len(config.gap_steps))
    # The images actually used: without Fashion-MNIST the loader fell back to digits (data.notice says so).
    return CellResult(metric_rows(rows), extra={"data": data.record()})
