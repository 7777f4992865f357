"""deep-bn's settings, its arm tables (the 100-layer net at init; the learning-rate sweep) and Yang et al.'s
large-batch gradient growth rate."""

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

SOURCE = "post 004"
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
    # The learning-rate sweep (post 004: "BN lets you use a larger learning rate, speeds up convergence, and
    # makes a carefully designed init unnecessary"): an MLP trained on scikit-learn's 8x8 digits, with and
    # without BN, from the same weights and the same batches per seed, at every learning rate of ``lrs``.
    train_depth: int = 10  # hidden layers: Linear -> [BN] -> ReLU, then a Linear readout to the 10 classes
    train_width: int = 64
    train_batch: int = 64
    train_steps: int = 200  # SGD steps per run (200 x 64 images = 9.5 passes over the 1,348 training images)
    train_seeds: int = 12
    lrs: tuple[float, ...] = (0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)
    momentum: float = 0.9  # SGD momentum, as in the post's own training code
    train_inits: tuple[str, ...] = ("kaiming", "default")  # of the hidden layers; the readout keeps torch's
    # A run "trains" when its final loss (mean minibatch loss over the last ``tail`` steps) is finite and at
    # most ``trains_below`` x the chance loss ln(10). Fixed before any run was judged.
    trains_below: float = 0.5
    tail: int = 20

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
        "train_depth": integer(1),
        "train_width": integer(1),
        "train_batch": because(integer(2), "BatchNorm needs two samples per batch"),
        "train_steps": integer(1),
        "train_seeds": seeds_check(),
        "lrs": items(number(0, lo_open=True), unique=True),
        "momentum": number(0, 1, hi_open=True),
        "train_inits": items(one_of(INITS), min_len=0, unique=True),
        "trains_below": number(0, 1, lo_open=True, hi_open=True),
        "tail": integer(1),
    }


def arms(config: Config) -> list[tuple[str, str, bool, int]]:
    """``(arm, init, bn, batch)`` for every arm: ``{plain, bn}/{init}`` at ``batch``, then the
    ``bn/kaiming/batch=B`` controls."""
    out = [(f"{'bn' if bn else 'plain'}/{init}", init, bn, config.batch) for bn in (False, True) for init in config.inits]
    out += [(f"bn/kaiming/batch={b}", "kaiming", True, b) for b in config.control_batches]
    return out


def train_arms(config: Config) -> list[tuple[str, str, bool, float]]:
    """``(arm, init, bn, lr)`` for every cell of the learning-rate sweep: ``train/{plain, bn}/{init}`` at each
    learning rate (one cell per learning rate; the seeds of a cell run together, stacked)."""
    return [(f"train/{'bn' if bn else 'plain'}/{init}", init, bn, lr)
            for init in config.train_inits for bn in (False, True) for lr in config.lrs]
