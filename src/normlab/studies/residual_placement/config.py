"""residual-placement: the config, its checks, and the arm tables the other modules share."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from normlab.engine.config import (
    Check,
    ConfigError,
    because,
    check_fields,
    integer,
    items,
    number,
    one_of,
    seeds_check,
)
from normlab.nn.residual import Placement

SOURCE = "seed 003"
XIONG = "Xiong et al. 2020"
DEEPNET = "Wang et al. 2022 (DeepNet)"
COGVIEW = "Ding et al. 2021 (CogView)"
PLACEMENTS = ("post", "pre", "sandwich", "deepnorm")
NORMS = ("layernorm", "rmsnorm")
COLORS = {"post": "tab:red", "pre": "tab:blue", "sandwich": "tab:green", "deepnorm": "tab:purple",
          "none": "tab:gray"}
NORM_COST_ARM = "norm-cost"


@dataclass
class Config:
    depths: tuple[int, ...] = (2, 4, 6)
    placements: tuple[str, ...] = PLACEMENTS
    norms: tuple[str, ...] = NORMS
    warmups: tuple[int, ...] = (0, 60)  # linear warmup steps; 0 = the full learning rate from step 1
    seeds: int = 3
    steps: int = 120
    lr: float = 3e-3  # high enough that Post-LN fails at depth without warmup (see docs/studies)
    batch_size: int = 16
    block_size: int = 32
    width: int = 64
    heads: int = 4
    corpus_chars: int = 400_000  # training characters kept (validation: a tenth, from held-out plays)
    eval_batches: int = 4
    eval_batch_size: int = 64
    log_every: int = 10
    track_updates: int = 20  # K: first updates whose effect on the output is measured
    learned_margin: float = 0.1  # nats below the unigram loss a run must reach to count as trained
    match_margin: float = 0.03  # nats: |RMSNorm - LN| validation loss inside this counts as "matches"
    flat_factor: float = 1.5  # Pre-LN's last/first-layer gradient ratio within [1/f, f] counts as flat
    timing_reps: int = 30  # norm-cost repetitions (each: LN and RMS, interleaved)

    checks: ClassVar[dict[str, Check]] = {
        "depths": items(integer(1), unique=True),
        "placements": items(one_of([p.value for p in Placement]), unique=True),
        "norms": items(one_of(NORMS), unique=True),
        "warmups": items(integer(0), unique=True),
        "seeds": seeds_check(),
        "steps": integer(1),
        "lr": number(0, lo_open=True),
        "batch_size": integer(1),
        "block_size": because(integer(1, 999), "validation keeps at least 1000 characters"),
        "width": integer(1),
        "heads": integer(1),
        "corpus_chars": integer(1000),
        "eval_batches": integer(1),
        "eval_batch_size": integer(1),
        "log_every": integer(1),
        "track_updates": integer(1),
        "learned_margin": number(0),
        "match_margin": number(0, lo_open=True),
        "flat_factor": number(1),
        "timing_reps": seeds_check(1),
    }


def check_config(config: Config) -> None:
    """The field checks, then the ones that relate fields to each other."""
    check_fields(config)
    if config.width % config.heads:
        raise ConfigError(f"heads: expected a divisor of width={config.width}, got {config.heads}")
    if any(w < 0 or w > config.steps for w in config.warmups):
        raise ValueError(f"warmups: expected steps in [0, steps={config.steps}], got {config.warmups!r}")
    if config.track_updates > config.steps:
        raise ValueError(f"track_updates ({config.track_updates}) must not exceed steps ({config.steps})")


def arm_name(placement: str, norm: str, warmup: int) -> str:
    return f"{placement}/{norm}/" + (f"warmup{warmup}" if warmup else "no-warmup")
