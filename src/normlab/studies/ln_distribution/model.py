"""What an ln-distribution cell computes: pre- and post-norm activations of one seed, and their statistics."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
import torch

from normlab.engine.spec import CellResult
from normlab.kit.tables import metric_rows
from normlab.nn.registry import create_norm
from normlab.studies.ln_distribution.config import Config


def row_stats(t: torch.Tensor, dim: int) -> dict[str, torch.Tensor]:
    """Mean, biased/unbiased variance and skewness along ``dim`` (float64)."""
    t = t.double()
    mean = t.mean(dim)
    var_b = t.var(dim, correction=0)
    centered = t - t.mean(dim, keepdim=True)
    skew = (centered**3).mean(dim) / var_b.clamp_min(1e-300) ** 1.5
    return {"mean": mean, "var_b": var_b, "var_u": t.var(dim, correction=1), "skew": skew}


def cv(v: torch.Tensor) -> float:
    """Coefficient of variation: how unequal a set of variances is (0 = all equal)."""
    return float(v.std(correction=1) / v.mean())


def feature_scales(config: Config) -> torch.Tensor:
    """Per-feature scales of the unequal-scale arms: log-spaced over ``scale_range``, fixed (not random)."""
    lo, hi = config.scale_range
    return torch.logspace(float(np.log10(lo)), float(np.log10(hi)), config.out_features)


def pre_and_post(config: Config, arm: str, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For one seed: the pre-norm activations ``h``, the normalized ``y``, and ``norm(h[:half])`` (the first
    half of the batch normalized on its own, for the batch-dependence check), built in the post's order."""
    kind = "batchnorm" if arm.startswith("batchnorm") else "layernorm"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if arm.endswith("/lognormal"):
            norm = create_norm(kind, config.out_features, eps=config.eps)
            h = torch.randn(config.batch, config.out_features).exp()
        elif arm.endswith("/equal") or arm.endswith("/unequal"):
            norm = create_norm(kind, config.out_features, eps=config.eps)
            h = torch.randn(config.batch, config.out_features)  # the same z in both arms of a seed
            if arm.endswith("/unequal"):
                h = h * feature_scales(config)
        else:
            linear = torch.nn.Linear(config.in_features, config.out_features)
            norm = create_norm(kind, config.out_features, eps=config.eps)
            x = torch.randn(config.batch, config.in_features)
            h = linear(x)
    half = max(2, config.batch // 2)
    with torch.no_grad():  # BN in train mode: batch statistics, as a fresh model uses
        return h.detach(), norm(h).detach(), norm(h[:half]).detach()


def order_flip_frac(h: torch.Tensor, y: torch.Tensor) -> float:
    """The fraction of a sample's feature pairs (j < k) whose order the norm reverses, mean over samples."""
    h, y = h.double(), y.double()
    j, k = torch.triu_indices(h.shape[1], h.shape[1], offset=1)
    flipped = (h[:, j] - h[:, k]) * (y[:, j] - y[:, k]) < 0  # strictly opposite order (ties are not flips)
    return float(flipped.double().mean())


def row_corr(h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per sample: Pearson correlation of its features before and after the norm."""
    hc = h.double() - h.double().mean(1, keepdim=True)
    yc = y.double() - y.double().mean(1, keepdim=True)
    return (hc * yc).sum(1) / (hc.norm(dim=1) * yc.norm(dim=1)).clamp_min(1e-300)


def batch_metrics(h: torch.Tensor, y: torch.Tensor, y_half: torch.Tensor | None = None) -> dict[str, float]:
    rows_h, rows_y = row_stats(h, 1), row_stats(y, 1)  # per sample, over features
    cols_h, cols_y = row_stats(h, 0), row_stats(y, 0)  # per feature, over the batch
    corr = row_corr(h, y)
    out = {
        "sample_mean_absmax_after": float(rows_y["mean"].abs().max()),
        "sample_var_mean_after": float(rows_y["var_b"].mean()),
        "sample_var_maxdev_after": float((rows_y["var_b"] - 1).abs().max()),
        "sample_var_unbiased_mean_after": float(rows_y["var_u"].mean()),
        "sample_var_cv_before": cv(rows_h["var_b"]),
        "sample_var_cv_after": cv(rows_y["var_b"]),
        "feature_var_cv_before": cv(cols_h["var_b"]),
        "feature_var_cv_after": cv(cols_y["var_b"]),
        "feature_mean_absmax_after": float(cols_y["mean"].abs().max()),
        "feature_var_mean_after": float(cols_y["var_b"].mean()),
        "sample_skew_before": float(rows_h["skew"].mean()),
        "sample_skew_after": float(rows_y["skew"].mean()),
        "sample_skew_absdiff_max": float((rows_y["skew"] - rows_h["skew"]).abs().max()),
        "feature_skew_before": float(cols_h["skew"].mean()),
        "feature_skew_after": float(cols_y["skew"].mean()),
        "order_flip_frac": order_flip_frac(h, y),
        "sample_corr_mean": float(corr.mean()),
        "sample_corr_min": float(corr.min()),
    }
    if y_half is not None:  # how much a sample's output moves when the rest of its batch changes
        out["batch_dependence_maxdiff"] = float((y[: len(y_half)] - y_half).abs().max())
    return out


def tensor_table(seed: int, stage: str, t: torch.Tensor) -> pd.DataFrame:
    """A 2-d tensor as long rows ``seed, stage, row, col, value`` (the figures rebuild the grid)."""
    rows, cols = np.indices(t.shape)
    return pd.DataFrame({"seed": seed, "stage": stage, "row": rows.ravel(), "col": cols.ravel(),
                         "value": t.numpy().ravel()})


def batch_cell(config: Config, arm: str, seeds: Sequence[int], progress: Callable[[int, int], None]
               ) -> CellResult:
    """One batch arm over its seeds: per-seed statistics, and the first seed's tensors for the figures."""
    rows, extra = [], {}
    for i, seed in enumerate(seeds):
        h, y, y_half = pre_and_post(config, arm, seed)
        rows += [(seed, 0, m, v) for m, v in batch_metrics(h, y, y_half).items()]
        if i == 0:  # the first seed (seed 0: the post's own run) keeps its tensors for the 2x3 figure
            extra["first_seed_batch"] = pd.concat(
                [tensor_table(seed, "before", h), tensor_table(seed, "after", y)], ignore_index=True
            )
        progress(i + 1, len(seeds))
    return CellResult(metrics=metric_rows(rows), extra=extra)


def single_sample_cell(config: Config) -> CellResult:
    """The post's one sample through ``LayerNorm(F)``: its mean and both variances."""
    sample = torch.tensor(config.sample, dtype=torch.float32)
    norm = create_norm("layernorm", sample.numel(), eps=config.eps)
    with torch.no_grad():
        out = norm(sample)
    params = dict(norm.named_parameters())
    affine_ok = all(name in params and params[name].requires_grad and tuple(params[name].shape) == (sample.numel(),)
                    for name in ("weight", "bias"))
    rows = [
        (0, 0, "learnable_affine", float(affine_ok)),  # LN's scale and shift: learnable, one per feature
        (0, 0, "mean", float(out.mean())),
        (0, 0, "var_biased", float(out.var(correction=0))),
        (0, 0, "var_unbiased", float(out.var())),  # what the seed printed: Tensor.var() is unbiased
    ]
    table = pd.DataFrame({"seed": 0, "index": range(sample.numel()), "before": sample.numpy(),
                          "after": out.numpy()})
    return CellResult(metrics=metric_rows(rows), extra={"single_sample": table})
