"""ln-gradients: the settings, the arms, and the post's data (which the model, claims and figures all use)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from normlab.engine.config import (
    Check,
    flag,
    integer,
    items,
    number,
    one_of,
    seeds_check,
)

SEED_ARMS: tuple[str, ...] = ("dropout", "dropout+ln", "ln", "none")
CONTROL_ARMS: tuple[str, ...] = ("relu", "relu+ln", "relu+dropout", "relu+dropout+ln", "none/std", "ln/std",
                                 "none/adamw", "ln/adamw")

SRC = "post 000"  # the source of the post's claims
CTRL = "control (normlab)"  # the source of normlab's control claims


@dataclass(frozen=True)
class ArmSpec:
    """An arm as data: which layers the network has, how data is scaled, which optimizer."""

    dropout: bool = False
    ln: bool = False
    relu: bool = False
    standardize: bool = False
    optimizer: str = "adam"  # "adam": L2 term added to the gradient (the seed); "adamw": decoupled decay


ARMS: dict[str, ArmSpec] = {
    "dropout": ArmSpec(dropout=True),
    "dropout+ln": ArmSpec(dropout=True, ln=True),
    "ln": ArmSpec(ln=True),
    "none": ArmSpec(),
    "relu": ArmSpec(relu=True),
    "relu+ln": ArmSpec(ln=True, relu=True),
    "relu+dropout": ArmSpec(dropout=True, relu=True),
    "relu+dropout+ln": ArmSpec(dropout=True, ln=True, relu=True),
    "none/std": ArmSpec(standardize=True),
    "ln/std": ArmSpec(ln=True, standardize=True),
    "none/adamw": ArmSpec(optimizer="adamw"),
    "ln/adamw": ArmSpec(ln=True, optimizer="adamw"),
}


def layout(arm: ArmSpec) -> list[str]:
    """The post's network for ``arm``, layer by layer (``"linear"``, ``"relu"``, ``"dropout"``, ``"ln"``): the
    order ``model.SeedModel`` builds and the figures name its layers by. Seed: ``Linear(2,20) → Linear(20,20) →
    [Dropout] → Linear(20,20) → [LN] → Linear(20,20) → [LN] → Linear(20,1)``; ReLU (controls only) follows each
    hidden Linear, after its LN."""
    act = ["relu"] if arm.relu else []
    out = ["linear", *act, "linear", *act, *(["dropout"] if arm.dropout else []), "linear"]
    out += [*(["ln"] if arm.ln else []), *act, "linear", *(["ln"] if arm.ln else []), *act, "linear"]
    return out


def layer_labels(arm: ArmSpec) -> dict[str, str]:
    """``{"linears.3.weight": "Linear 3", "linears.4.weight": "LN gain 1", ...}``: the parameter names of
    ``arm``'s weights, by what the layer is (the same index is a different layer in another arm)."""
    out, counts = {}, {"linear": 0, "ln": 0}
    for i, kind in enumerate(layout(arm)):
        if kind in counts:
            counts[kind] += 1
            out[f"linears.{i}.weight"] = f"Linear {counts[kind]}" if kind == "linear" else f"LN gain {counts[kind]}"
    return out


@dataclass
class Config:
    seeds: int = 32
    steps: int = 1000  # the post's `iteration`
    lr: float = 0.01
    weight_decay: float = 0.01
    dropout_p: float = 0.1
    arms: tuple[str, ...] = SEED_ARMS + CONTROL_ARMS
    eval_every: int = 10  # held-out loss, eval-mode train loss, gradient spread/kurtosis: every this many steps
    probe_every: int = 10  # normlab.probe scalars (per-parameter gradient/weight/update stats)
    hist_every: int = 50  # normlab.probe histograms of every parameter's gradient and value
    probe: bool = True

    checks: ClassVar[dict[str, Check]] = {
        "seeds": seeds_check(1),
        "steps": integer(2),
        "lr": number(0, lo_open=True),
        "weight_decay": number(0),
        "dropout_p": number(0, 1, hi_open=True),
        "arms": items(one_of(ARMS), unique=True),
        "eval_every": integer(1),
        "probe_every": integer(1),
        "hist_every": integer(1),
        "probe": flag(),
    }


def target(t: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """The post's function on its line ``x1 = t - 10, x2 = t``: ``y = 2*x1 - x2**2 + 1``."""
    return 2 * (t - 10) - t**2 + 1


def inputs(t: torch.Tensor) -> torch.Tensor:
    """``(B,) -> (B, 2)``: ``[x1, x2] = [t - 10, t]`` as in the seed (``arange(-10,10)``, ``arange(0,20)``)."""
    return torch.stack([t - 10, t], dim=1)


def datasets() -> dict[str, torch.Tensor]:
    """Train: the post's 20 points ``t = 0..19``. Held-out (same function, same line ``x1 = x2 - 10``):
    ``interp`` = the 19 midpoints ``t = 0.5..18.5`` (can the fit be trusted *between* training points? the
    honest test of overfitting 20 points), ``extrap`` = ``t = -3..-1`` and ``20..22`` (outside the range)."""
    return {
        "train": torch.arange(0, 20).float(),
        "interp": torch.arange(0, 19).float() + 0.5,
        "extrap": torch.tensor([-3.0, -2.0, -1.0, 20.0, 21.0, 22.0]),
    }


def linear_floor() -> float:
    """The lowest train MSE any affine model of ``(x1, x2)`` can reach (least squares on the line)."""
    t = datasets()["train"].double().numpy()
    a = np.stack([t, np.ones_like(t)], axis=1)
    y = target(t)
    coef, *_ = np.linalg.lstsq(a, y, rcond=None)
    return float(np.mean((a @ coef - y) ** 2))
