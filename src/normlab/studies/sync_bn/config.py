"""sync-bn's settings, its arms and their labels."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from normlab.data.images import DATASETS, SPLIT_SIZES
from normlab.engine.config import Check, because, integer, items, number, one_of, optional, seeds_check

SOURCE = "Wu & He 2018 (STUDIES.md, batch-size)"
# What each arm normalizes with, on every rank: its own b images (BatchNorm), all ranks' images together
# (SyncBatchNorm), or each image alone (GroupNorm).
ARMS = ("batchnorm", "syncbn", "groupnorm")
ARM_LABELS = {"batchnorm": "BN", "syncbn": "SyncBN", "groupnorm": "GN"}
# The CNN norm each arm is built with (models.cnn); SyncBN is BatchNorm converted to SyncBatchNorm.
ARM_NORMS = {"batchnorm": "batchnorm", "syncbn": "batchnorm", "groupnorm": "groupnorm"}


@dataclass
class Config:
    dataset: str = "fashion-mnist"  # falls back to "digits" (with a notice) when Fashion-MNIST is absent
    train_size: int | None = 3000  # a fixed random subset of the training images (batch-size's)
    test_size: int | None = 5000  # ... and of the test images
    downsample: int = 2  # average-pool the images by this factor (28x28 -> 14x14)
    arms: tuple[str, ...] = ARMS
    seeds: int = 8
    widths: tuple[int, int, int] = (8, 16, 16)  # batch-size's CNN
    num_groups: int = 4
    ranks: int = 2  # data-parallel processes per cell (gloo, loopback)
    per_rank_batches: tuple[int, ...] = (2, 4, 8, 16, 32)  # b: images per rank ("images per GPU"); global batch ranks*b
    lr: float = 0.05  # SGD, momentum 0.9, constant, at a global batch of lr_batch ...
    lr_batch: int = 32  # ... scaled linearly with the global batch (Wu & He's rule: lr 0.1 x N/32)
    epochs: float = 8.0  # passes over train_size, the same for every b (small b takes more, smaller steps)
    # Verdict thresholds, fixed before the runs (batch-size's).
    degrade_min_effect: float = 0.01  # relative accuracy change counted as "degrades" / "is better" (1%)
    equivalence_margin: float = 0.015  # |accuracy change| counted as "does not degrade" (1.5 points)
    exact_tolerance: float = 1e-4  # largest relative difference of a first-step gradient counted as equal
    # The launcher's bounds: a rank that hangs fails its cell instead of the run.
    cell_timeout: float = 3600.0  # seconds for one cell's ranks to finish
    collective_timeout: float = 300.0  # seconds any one collective may wait for the other ranks

    @property
    def smallest(self) -> int:
        return min(self.per_rank_batches)

    @property
    def largest(self) -> int:
        return max(self.per_rank_batches)

    checks: ClassVar[dict[str, Check]] = {
        "dataset": one_of(DATASETS),
        "train_size": optional(integer(1, max(n for n, _ in SPLIT_SIZES.values()))),
        "test_size": optional(integer(1, max(n for _, n in SPLIT_SIZES.values()))),
        "downsample": because(integer(1, 7), "28 / 7 = 4 pixels still survive the CNN's two 2x2 max-pools"),
        "arms": items(one_of(ARMS), unique=True),
        "seeds": seeds_check(),
        "widths": items(integer(1), min_len=3, max_len=3),
        "num_groups": integer(1),
        "ranks": because(integer(2, 8), "SyncBatchNorm needs more than one rank; every rank is a process here"),
        "per_rank_batches": items(because(integer(2), "per-rank BatchNorm needs two images per rank"), unique=True),
        "lr": number(0, lo_open=True),
        "lr_batch": integer(1),
        "epochs": number(0, lo_open=True),
        "degrade_min_effect": number(0, 1),
        "equivalence_margin": number(0, 1),
        "exact_tolerance": number(0, lo_open=True),
        "cell_timeout": number(0, lo_open=True),
        "collective_timeout": number(0, lo_open=True),
    }
