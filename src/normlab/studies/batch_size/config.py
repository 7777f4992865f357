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

SOURCE = "seed 003; Wu & He 2018"
# Cited: Wu & He, "Group Normalization", ECCV 2018: ResNet-50 top-1 validation error (%) on ImageNet by
# images per GPU. Reference data for the figure, not a measurement of this study.
GN_PAPER_IMAGES_PER_GPU = (32, 16, 8, 4, 2)
GN_PAPER_ERROR = {"batchnorm": (23.6, 23.7, 24.8, 27.3, 34.7), "groupnorm": (24.1, 24.2, 24.0, 24.2, 24.1)}

NORM_LABELS = {"batchnorm": "BN", "groupnorm": "GN", "layernorm": "LN", "instancenorm": "IN", "none": "no norm"}


@dataclass
class Config:
    dataset: str = "fashion-mnist"  # falls back to "digits" (with a notice) when Fashion-MNIST is absent
    train_size: int | None = 3000  # a fixed random subset of the 60,000 training images
    test_size: int | None = 2000  # ... and of the 10,000 test images
    downsample: int = 2  # average-pool the images by this factor (28x28 -> 14x14): 4x less compute
    epochs: float = 3.0  # examples per run = epochs * train_size, equal for every batch size
    norms: tuple[str, ...] = CNN_NORMS
    batch_sizes: tuple[int, ...] = (2, 4, 8, 16, 32, 64)
    reference_batch: int = 32  # "large batch" for the claims (the GN paper's 32 images per GPU)
    seeds: int = 8
    lr_per_32: float = 0.05  # lr = lr_per_32 * batch_size / 32
    widths: tuple[int, int, int] = (8, 16, 16)
    num_groups: int = 4  # GroupNorm groups (2 or 4 channels per group at these widths)
    equivalence_margin: float = 0.015  # |accuracy change| counted as "does not degrade" (1.5 points)
    degrade_min_effect: float = 0.01  # relative accuracy drop counted as "degrades" (1%)

    checks: ClassVar[dict[str, Check]] = {
        "dataset": one_of(DATASETS),
        "train_size": optional(integer(1, max(n for n, _ in SPLIT_SIZES.values()))),
        "test_size": optional(integer(1, max(n for _, n in SPLIT_SIZES.values()))),
        "downsample": because(integer(1, 7), "28 / 7 = 4 pixels still survive the CNN's two 2x2 max-pools"),
        "epochs": number(0, lo_open=True),
        "norms": items(one_of(CNN_NORMS), unique=True),
        "batch_sizes": items(because(integer(2), "BatchNorm needs two samples per batch"), unique=True),
        "reference_batch": integer(2),
        "seeds": seeds_check(),
        "lr_per_32": number(0, lo_open=True),
        "widths": items(integer(1), min_len=3, max_len=3),
        "num_groups": integer(1),
        "equivalence_margin": number(0, 1),
        "degrade_min_effect": number(0, 1),
    }
