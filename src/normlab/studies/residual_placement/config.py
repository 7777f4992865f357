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

SOURCE = "post 003"
XIONG = "Xiong et al. 2020"
DEEPNET = "Wang et al. 2022 (DeepNet)"
COGVIEW = "Ding et al. 2021 (CogView)"
PLACEMENTS = ("post", "pre", "sandwich", "deepnorm")
NORMS = ("layernorm", "rmsnorm")  # the library norms; "batchnorm" is the BN arm (ensemble.py)
COLORS = {"post": "tab:red", "pre": "tab:blue", "sandwich": "tab:green", "deepnorm": "tab:purple",
          "none": "tab:gray"}
NORM_COST_ARM = "norm-cost"


@dataclass
class Config:
    # The stability map: every placement x depth x learning rate, LayerNorm, no warmup.
    depths: tuple[int, ...] = (2, 4, 8)
    lrs: tuple[float, ...] = (1e-3, 3e-3)
    placements: tuple[str, ...] = PLACEMENTS
    # Beside the map: the warmup arms (these placements in the stress cell: deepest depth, highest lr,
    # LayerNorm), the RMSNorm arms
    # (every placement at the shallowest depth and the lowest lr, no warmup) and the BatchNorm arm (bn_placement at
    # bn_depth, lowest lr, no warmup; bn_depth=0 leaves it out).
    warmup: int = 100  # linear warmup steps of the warmup arms
    warmup_placements: tuple[str, ...] = ("post", "pre")
    norms: tuple[str, ...] = NORMS  # "rmsnorm" in here: run the RMSNorm arms
    bn_depth: int = 4
    bn_placement: str = "pre"
    seeds: int = 10  # members of each cell's ensemble; seed s = the same init and data order in every cell
    steps: int = 1000
    batch_size: int = 8
    block_size: int = 32
    width: int = 32
    heads: int = 2
    corpus_chars: int = 400_000  # training characters kept (validation: a tenth, from held-out plays)
    eval_batches: int = 4
    eval_batch_size: int = 64
    log_every: int = 20
    track_updates: int = 20  # K: first updates whose size is measured
    learned_margin: float = 0.1  # nats below the unigram loss a run must reach to count as trained
    blowup_margin: float = 1.0  # nats above the first logged training loss that count as blown up
    rate_margin: float = 0.2  # a divergence-rate gap whose 95% CI lies below this refutes "more unstable"
    match_margin: float = 0.03  # nats: |RMSNorm - LN| validation loss inside this counts as "matches"
    flat_factor: float = 1.5  # Pre-LN's last/first-layer gradient ratio within [1/f, f] counts as flat
    timing_reps: int = 30  # norm-cost repetitions (each: LN and RMS, interleaved)

    checks: ClassVar[dict[str, Check]] = {
        "depths": items(integer(1), unique=True),
        "lrs": items(number(0, lo_open=True), unique=True),
        "placements": items(one_of(list(PLACEMENTS)), unique=True),
        "warmup": integer(1),
        "warmup_placements": items(one_of(list(PLACEMENTS)), unique=True),
        "norms": items(one_of(NORMS), unique=True),
        "bn_depth": integer(0),
        "bn_placement": one_of(list(PLACEMENTS)),
        "seeds": seeds_check(),
        "steps": integer(1),
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
        "blowup_margin": number(0, lo_open=True),
        "rate_margin": number(0, 1),
        "match_margin": number(0, lo_open=True),
        "flat_factor": number(1),
        "timing_reps": seeds_check(1),
    }

    @property
    def low_lr(self) -> float:
        return min(self.lrs)

    @property
    def high_lr(self) -> float:
        return max(self.lrs)


def check_config(config: Config) -> None:
    """The field checks, then the ones that relate fields to each other."""
    check_fields(config)
    if config.width % config.heads:
        raise ConfigError(f"heads: expected a divisor of width={config.width}, got {config.heads}")
    if config.warmup > config.steps:
        raise ValueError(f"warmup: expected at most steps={config.steps}, got {config.warmup!r}")
    if config.track_updates > config.steps:
        raise ValueError(f"track_updates ({config.track_updates}) must not exceed steps ({config.steps})")
    if "layernorm" not in config.norms:
        raise ConfigError(f"norms: the map runs LayerNorm, so it must include 'layernorm', got {config.norms!r}")


@dataclass(frozen=True)
class Arm:
    """One training cell: an architecture and a schedule, trained for every seed."""

    placement: str
    norm: str
    depth: int
    lr: float
    warmup: int  # 0: the full learning rate from step 1

    @property
    def name(self) -> str:
        return f"{self.placement}/{self.norm}/lr{self.lr:g}/" + (f"warmup{self.warmup}" if self.warmup else "no-warmup")


def arms(c: Config) -> list[Arm]:
    """The map (LN, no warmup), the warmup arms (stress cell), the RMSNorm arms and the BatchNorm arm, no repeats.

    Ordered so that a run stopped early has what most claims need: the stress cell (deepest depth, highest
    lr) and its warmup arms, the shallowest depth at every lr, the RMSNorm and BatchNorm arms; then the rest of
    the map.
    """
    deep, shallow = max(c.depths), min(c.depths)
    lrs = sorted(c.lrs, reverse=True)
    out = [Arm(p, "layernorm", deep, c.high_lr, 0) for p in c.placements]
    out += [Arm(p, "layernorm", deep, c.high_lr, c.warmup) for p in c.warmup_placements]
    out += [Arm(p, "layernorm", shallow, lr, 0) for lr in lrs for p in c.placements]
    if "rmsnorm" in c.norms:
        out += [Arm(p, "rmsnorm", shallow, c.low_lr, 0) for p in c.placements]
    if c.bn_depth:  # the BatchNorm arm and its LayerNorm twin (a map cell when bn_depth is a map depth)
        out += [Arm(c.bn_placement, "batchnorm", c.bn_depth, c.low_lr, 0),
                Arm(c.bn_placement, "layernorm", c.bn_depth, c.low_lr, 0)]
    out += [Arm(p, "layernorm", d, lr, 0) for lr in lrs for d in sorted(c.depths) for p in c.placements]
    return list(dict.fromkeys(out))


def first_map_arm(c: Config) -> int:
    """Index in :func:`arms` of the arm after the BatchNorm arm and its twin (where the timing cell goes)."""
    a = arms(c)
    extra = [i for i, x in enumerate(a) if x.norm != "layernorm"]
    if not extra:
        return len(a)
    return max(extra) + (2 if a[max(extra)].norm == "batchnorm" else 1)
