"""ln-distribution's settings: the post's sample and model sizes, the unequal-scale design, and the margins the
claims judge with."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from normlab.engine.config import Check, integer, items, number, seeds_check

SOURCE = "post 001"
# The batch arms; "single-sample" runs once. Every arm of a seed starts from torch.manual_seed(seed).
#   layernorm, batchnorm            the post's Linear(100, 50) on randn(100, 100), then LN or BN
#   layernorm/equal, batchnorm/equal        z = randn(batch, F): features of truly equal variance (the null)
#   layernorm/unequal, batchnorm/unequal    the same z times fixed per-feature scales (unequal variances)
#   layernorm/lognormal, batchnorm/lognormal  exp(randn): skewed rows and columns (the shape controls)
ARMS = ("layernorm", "batchnorm", "layernorm/equal", "batchnorm/equal", "layernorm/unequal", "batchnorm/unequal",
        "layernorm/lognormal", "batchnorm/lognormal")


@dataclass
class Config:
    sample: tuple[float, ...] = (2.0, 3.0, 5.0, 1.0, 4.0)  # the post's single sample
    in_features: int = 100  # Linear(100, 50) on randn(100, 100), as in the seed
    out_features: int = 50
    batch: int = 100
    eps: float = 1e-5  # torch's LayerNorm/BatchNorm default
    seeds: int = 100  # seeds 0..seeds-1; seed 0 is the post's torch.manual_seed(0)
    # The unequal-scale arms multiply feature j of z by a scale log-spaced from scale_range[0] to [1]: feature
    # variances from 1/16 to 16 (a 256x range), so a norm that equalizes per-feature variance cannot hide.
    scale_range: tuple[float, float] = (0.25, 4.0)
    # "keeps the spread": the fraction of the per-feature variance spread *beyond sampling noise* that survives
    # the norm; 0 = fully equalized (what BN does), 1 = kept as it was. 0.5 is the midpoint between the two.
    keep_threshold: float = 0.5
    var_margin: float = 1e-3  # |biased variance - 1| counted as "variance 1"
    mean_tol: float = 1e-5  # |mean| counted as "mean 0"
    normal_skew_margin: float = 0.5  # |skewness| a "normal" row may show
    exact_tol: float = 1e-6  # float32 rounding: two outputs "the same" (batch independence)
    corr_tol: float = 1e-6  # 1 - Pearson correlation counted as "relation kept"

    checks: ClassVar[dict[str, Check]] = {
        "sample": items(number(), min_len=2),  # a variance needs two values
        "in_features": integer(2),
        "out_features": integer(3),  # a rank order of features needs three to be interesting
        "batch": integer(4),  # the batch-dependence check normalizes the first half (>= 2 rows) on its own
        "eps": number(0, lo_open=True),
        "seeds": seeds_check(),
        "scale_range": items(number(0, lo_open=True), min_len=2, max_len=2),
        "keep_threshold": number(0, 1, lo_open=True, hi_open=True),
        "var_margin": number(0, lo_open=True),
        "mean_tol": number(0, lo_open=True),
        "normal_skew_margin": number(0, lo_open=True),
        "exact_tol": number(0, lo_open=True),
        "corr_tol": number(0, lo_open=True),
    }
