"""norm-axes' settings: tensor shapes, groups, the float64 tolerance, and the names of the norms."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from normlab.engine.config import Check, integer, items, number, seeds_check

SEED_002, SEED_003, SEED_004 = "post 002", "post 003", "post 004"
NORMS = ("batchnorm", "layernorm", "instancenorm", "groupnorm")
LABELS = {"batchnorm": "BatchNorm", "layernorm": "LayerNorm", "instancenorm": "InstanceNorm",
          "groupnorm": "GroupNorm", "bn-seed002": "BatchNorm (post 002's loop)",
          "bn-hidden": "BatchNorm1d(hidden)"}


@dataclass
class Config:
    seeds: int = 20
    nchw: tuple[int, int, int, int] = (3, 6, 2, 2)  # (N, C, H, W); small enough for loops and 3D cubes
    sequence: tuple[int, int, int] = (3, 4, 6)  # [batch, seq, hidden]
    num_groups: int = 2  # GroupNorm groups (C and hidden must be divisible)
    eps: float = 1e-5
    tolerance: float = 1e-9  # float64 loops vs layers: "the same numbers"

    checks: ClassVar[dict[str, Check]] = {
        "seeds": seeds_check(1),
        "nchw": items(integer(1), min_len=4, max_len=4),
        "sequence": items(integer(1), min_len=3, max_len=3),
        "num_groups": integer(1),
        "eps": number(0, lo_open=True),
        "tolerance": number(0, lo_open=True),
    }
