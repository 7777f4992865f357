"""ln-distribution's settings: the seed's sample and model sizes, and the margins the claims judge with."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from normlab.engine.config import Check, integer, items, number, seeds_check

SOURCE = "seed 001"
ARMS = ("layernorm", "batchnorm", "layernorm/lognormal")  # the batch arms; "single-sample" runs once


@dataclass
class Config:
    sample: tuple[float, ...] = (2.0, 3.0, 5.0, 1.0, 4.0)  # the seed's single sample
    in_features: int = 100  # Linear(100, 50) on randn(100, 100), as in the seed
    out_features: int = 50
    batch: int = 100
    eps: float = 1e-5  # torch's LayerNorm/BatchNorm default
    seeds: int = 100  # seeds 0..seeds-1; seed 0 is the seed's torch.manual_seed(0)
    equal_cv_tol: float = 0.01  # "equalized": per-feature variances within 1% of each other (cv < tol)
    var_margin: float = 1e-3  # |biased variance - 1| counted as "variance 1"
    mean_tol: float = 1e-5  # |mean| counted as "mean 0"
    normal_skew_margin: float = 0.5  # |skewness| a "normal" row may show

    checks: ClassVar[dict[str, Check]] = {
        "sample": items(number(), min_len=2),  # a variance needs two values
        "in_features": integer(2),
        "out_features": integer(2),
        "batch": integer(2),
        "eps": number(0, lo_open=True),
        "seeds": seeds_check(),
        "equal_cv_tol": number(0, lo_open=True),
        "var_margin": number(0, lo_open=True),
        "mean_tol": number(0, lo_open=True),
        "normal_skew_margin": number(0, lo_open=True),
    }
