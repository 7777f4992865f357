"""deep-bn's settings, its arm table and Yang et al.'s large-batch gradient growth rate."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

from normlab.engine.config import (
    Check,
    because,
    integer,
    items,
    number,
    one_of,
    seeds_check,
)

SOURCE = "seed 004"
YANG = "Yang et al. 2019"
YANG_RELU_RATE = math.sqrt(math.pi / (math.pi - 1))  # gradient-norm growth per layer, ReLU + BN, batch -> inf
INITS = ("default", "normal", "kaiming")


@dataclass
class Config:
    depth: int = 100
    width: int = 256
    batch: int = 16
    inits: tuple[str, ...] = INITS
    seeds: int = 32
    control_batches: tuple[int, ...] = (128,)  # BN + Kaiming at a larger batch (Yang's rate is for batch -> inf)
    fit_skip: int = 10  # layers left out at each end when fitting a per-layer growth factor
    stable_tol: float = 0.01  # a per-layer std factor within 1 ± tol counts as "stable"
    yang_margin: float = 0.02  # relative margin around Yang's 1.21 for "matches"

    checks: ClassVar[dict[str, Check]] = {
        "depth": integer(1),
        "width": integer(1),
        "batch": because(integer(2), "BatchNorm needs two samples per batch"),
        "inits": items(one_of(INITS), unique=True),
        "seeds": seeds_check(),
        "control_batches": items(because(integer(2), "BatchNorm needs two samples per batch"), min_len=0,
                                 unique=True),
        "fit_skip": integer(0),
        "stable_tol": number(0, 1, lo_open=True, hi_open=True),
        "yang_margin": number(0, 1, lo_open=True, hi_open=True),
    }


def arms(config: Config) -> list[tuple[str, str, bool, int]]:
    """``(arm, init, bn, batch)`` for every arm: ``{plain, bn}/{init}`` at ``batch``, then the
    ``bn/kaiming/batch=B`` controls."""
    out = [(f"{'bn' if bn else 'plain'}/{init}", init, bn, config.batch) for bn in (False, True) for init in config.inits]
    out += [(f"bn/kaiming/batch={b}", "kaiming", True, b) for b in config.control_batches]
    return out
