"""batch-size's settings, the norms' labels and the GroupNorm paper's cited reference numbers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from normlab.data.images import DATASETS, SPLIT_SIZES
from normlab.engine.config import (
    Check,
    because,
    integer,
    items,
    number,
    one_of,
    optional,
    seeds_check,
)
from normlab.models.cnn import CNN_NORMS

SOURCE = "post 003; Wu & He 2018"
# Cited: Wu & He, "Group Normalization", ECCV 2018: ResNet-50 top-1 validation error (%) on ImageNet by
# images per GPU. Reference data for the figure, not a measurement of this study.
GN_PAPER_IMAGES_PER_GPU = (32, 16, 8, 4, 2)
GN_PAPER_ERROR = {"batchnorm": (23.6, 23.7, 24.8, 27.3, 34.7), "groupnorm": (24.1, 24.2, 24.0, 24.2, 24.1)}

NORM_LABELS = {"batchnorm": "BN", "groupnorm": "GN", "layernorm": "LN", "instancenorm": "IN", "none": "no norm"}
DESIGNS = ("ghost", "plain")


@dataclass
class Config:
    dataset: str = "fashion-mnist"  # falls back to "digits" (with a notice) when Fashion-MNIST is absent
    train_size: int | None = 3000  # a fixed random subset of the 60,000 training images
    test_size: int | None = 5000  # ... and of the 10,000 test images
    downsample: int = 2  # average-pool the images by this factor (28x28 -> 14x14): 4x less compute
    norms: tuple[str, ...] = CNN_NORMS
    seeds: int = 8
    widths: tuple[int, int, int] = (8, 16, 16)
    num_groups: int = 4  # GroupNorm groups (2 or 4 channels per group at these widths)
    # The ghost design: one optimiser batch, lr, step count and data order for every ghost size.
    optimiser_batch: int = 32
    ghost_sizes: tuple[int, ...] = (2, 4, 8, 16, 32)  # BatchNorm's statistics batch (images per "GPU")
    control_ghost_sizes: tuple[int, ...] = (2, 32)  # ghost sizes at which the other norms run (controls)
    lr: float = 0.05  # SGD, momentum 0.9, constant (the plain sweep scales it: lr * batch / optimiser_batch)
    epochs: float = 20.0  # passes over train_size in the ghost design
    checkpoints: int = 4  # test accuracy measured at this many evenly spaced steps (the plateau curve) ...
    early_epochs: float = 1.0  # ... and once after this many epochs (how fast each norm trains)
    plateau_from: float = 0.5  # the plateau check compares the last checkpoint with the one at this fraction
    plateau_margin: float = 0.01  # ... and counts a gain below 1 point as "stopped improving"
    # The plain sweep (confounded: small batches take more steps at a smaller lr).
    batch_sizes: tuple[int, ...] = (2, 8, 32)
    plain_norms: tuple[str, ...] = ("batchnorm", "groupnorm", "none")
    plain_epochs: float = 3.0  # examples per run = plain_epochs * train_size, equal for every batch size
    # Verdict thresholds, fixed before the runs.
    equivalence_margin: float = 0.015  # |accuracy change| counted as "does not degrade" (1.5 points)
    degrade_min_effect: float = 0.01  # relative accuracy drop counted as "degrades" (1%)
    dependence_images: int = 64  # test images for the batch-dependence check (a multiple of every ghost size)
    dependence_tolerance: float = 1e-4  # a logit change below this counts as "does not depend on the batch"

    @property
    def reference_ghost(self) -> int:
        """The largest ghost size: the whole optimiser batch, i.e. plain BatchNorm (Wu & He's 32 per GPU)."""
        return max(self.ghost_sizes)

    @property
    def reference_batch(self) -> int:
        return max(self.batch_sizes)

    checks: ClassVar[dict[str, Check]] = {
        "dataset": one_of(DATASETS),
        "train_size": optional(integer(1, max(n for n, _ in SPLIT_SIZES.values()))),
        "test_size": optional(integer(1, max(n for _, n in SPLIT_SIZES.values()))),
        "downsample": because(integer(1, 7), "28 / 7 = 4 pixels still survive the CNN's two 2x2 max-pools"),
        "norms": items(one_of(CNN_NORMS), unique=True),
        "seeds": seeds_check(),
        "widths": items(integer(1), min_len=3, max_len=3),
        "num_groups": integer(1),
        "optimiser_batch": because(integer(2), "BatchNorm needs two samples per batch"),
        "ghost_sizes": items(because(integer(2), "BatchNorm needs two samples per batch"), unique=True),
        "control_ghost_sizes": items(integer(2), unique=True),
        "lr": number(0, lo_open=True),
        "epochs": number(0, lo_open=True),
        "checkpoints": because(integer(2), "the plateau check compares two checkpoints"),
        "early_epochs": number(0, lo_open=True),
        "plateau_from": number(0, 1, lo_open=True),
        "plateau_margin": number(0, 1),
        "batch_sizes": items(because(integer(2), "BatchNorm needs two samples per batch"), unique=True),
        "plain_norms": items(one_of(CNN_NORMS), unique=True, min_len=0),
        "plain_epochs": number(0, lo_open=True),
        "equivalence_margin": number(0, 1),
        "degrade_min_effect": number(0, 1),
        "dependence_images": integer(2),
        "dependence_tolerance": number(0, lo_open=True),
    }
