"""What a batch-size cell trains: one norm, every seed at once, on a fixed image subset, in one of two designs.

* ``design="ghost"``: a fixed optimiser batch (``Config.optimiser_batch``), fixed lr, fixed steps and data
  order; only BatchNorm's statistics batch (the ghost size ``g``) changes (:mod:`.ghost`). Test accuracy
  is measured at evenly spaced checkpoints, so the curve shows whether training reached a plateau.
* ``design="plain"``: the batch itself changes (equal examples, linear lr scaling): more steps at a smaller
  lr for small batches, the confounded sweep of the study's first version.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence

import torch

from normlab.data.images import load_images
from normlab.engine.spec import CellResult
from normlab.kit.tables import metric_rows
from normlab.models.cnn import (
    SmallCNN,
    build_members,
    finite_members,
    member_accuracy,
    member_input,
    recalibrated_copy,
    train_members,
)
from normlab.studies.batch_size.config import Config
from normlab.studies.batch_size.ghost import GhostBatchNorm2d, use_ghost_batches


def train_checkpointed(
    model: SmallCNN,
    x: torch.Tensor,
    y: torch.Tensor,
    seeds: Sequence[int],
    *,
    batch_size: int,
    steps: int,
    lr: float,
    checkpoints: Sequence[int] = (),
    on_checkpoint: Callable[[int], None] = lambda step: None,
    momentum: float = 0.9,
) -> int:
    """:func:`normlab.models.cnn.train_members` counted in ``steps`` (the ghost design fixes the optimiser
    batch and the number of steps), with ``on_checkpoint(step)`` after each step in ``checkpoints``."""
    return train_members(model, x, y, seeds, batch_size=batch_size, examples=steps * batch_size, lr=lr,
                         momentum=momentum, checkpoints=checkpoints, on_checkpoint=on_checkpoint)


@torch.no_grad()
def batch_dependence(model: SmallCNN, x: torch.Tensor, small: int = 2) -> torch.Tensor:
    """Per member: the largest change of any logit of ``x`` when the *training-mode* forward sees the images
    ``small`` at a time instead of all together, ``(S,)``. Zero for a norm whose statistics are per sample;
    BatchNorm's output depends on the other images of the batch. Runs on a copy (BN's running statistics of
    ``model`` are not touched). Ghost batches are measured as plain BatchNorm (one statistics batch for all
    of ``x``), so every BatchNorm model shows its dependence whatever its ghost size."""
    probe = copy.deepcopy(model).train()
    for module in probe.modules():
        if isinstance(module, GhostBatchNorm2d):
            module.ghost = len(x)
    n = len(x) - len(x) % small
    whole = probe(member_input(x[:n], model.members)).view(n, model.members, -1)
    parts = torch.cat([probe(member_input(x[i:i + small], model.members)).view(small, model.members, -1)
                       for i in range(0, n, small)])
    return (whole - parts).abs().amax(dim=(0, 2))


def schedule(config: Config, design: str, batch: int, train_images: int) -> tuple[int, float, list[int]]:
    """Steps, learning rate and checkpoint steps of a cell (plain: equal examples, linear lr scaling;
    ghost: ``epochs`` passes at the fixed optimiser batch and lr, ``checkpoints`` evenly spaced plus one after
    ``early_epochs``)."""
    if design == "plain":
        return round(config.plain_epochs * train_images) // batch, config.lr * batch / config.optimiser_batch, []
    steps = round(config.epochs * train_images) // batch
    marks = {max(1, round(steps * (i + 1) / config.checkpoints)) for i in range(config.checkpoints)}
    marks.add(max(1, min(steps, round(config.early_epochs * train_images) // batch)))  # early: training speed
    return steps, config.lr, sorted(marks)


def train_cell(config: Config, norm: str, seeds: tuple[int, ...], design: str, batch: int, ghost: int) -> CellResult:
    """Train ``norm`` for every seed with optimiser batch ``batch`` and BatchNorm statistics over ``ghost``
    images, and measure test accuracy (at the checkpoints and at the end), training accuracy, BatchNorm's
    accuracy after recalibrating its running statistics, and how much an output depends on its batch."""
    data = load_images(config.dataset, train_size=config.train_size, test_size=config.test_size,
                       downsample=config.downsample)
    model = build_members(seeds, num_classes=data.num_classes, widths=config.widths, norm=norm,
                          num_groups=config.num_groups)
    if ghost != batch:
        use_ghost_batches(model, ghost)
    steps, lr, marks = schedule(config, design, batch, len(data.x_train))
    rows: list[tuple[int, int, str, float]] = []

    def checkpoint(step: int) -> None:
        acc = member_accuracy(model.eval(), data.x_test, data.y_test)
        rows.extend((seed, step, "test_acc_curve", float(acc[s])) for s, seed in enumerate(seeds))

    train_checkpointed(model, data.x_train, data.y_train, seeds, batch_size=batch, steps=steps, lr=lr,
                       checkpoints=marks, on_checkpoint=checkpoint)
    acc = member_accuracy(model.eval(), data.x_test, data.y_test)
    train_acc = member_accuracy(model, data.x_train, data.y_train)
    dependence = batch_dependence(model, data.x_test[:config.dependence_images])
    for s, seed in enumerate(seeds):
        rows += [(seed, steps, "test_acc", float(acc[s])), (seed, steps, "train_acc", float(train_acc[s])),
                 (seed, steps, "lr", lr), (seed, steps, "batch_dependence", float(dependence[s]))]
    if norm == "batchnorm":
        acc_recal = member_accuracy(recalibrated_copy(model, data.x_train), data.x_test, data.y_test)
        rows += [(seed, steps, "test_acc_recalibrated", float(acc_recal[s])) for s, seed in enumerate(seeds)]
    metrics = metric_rows(rows)
    finite = finite_members(model)  # a diverged member's accuracies are missing, not chance
    for s, seed in enumerate(seeds):
        if not bool(finite[s]):
            metrics.loc[(metrics["seed"] == seed) & (metrics["metric"] != "lr"), "value"] = math.nan
    return CellResult(metrics, extra={"data": data.record()})
