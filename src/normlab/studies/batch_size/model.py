"""What a batch-size cell trains: one norm at one batch size, every seed at once, on a fixed image subset."""

from __future__ import annotations

import copy
import math

import pandas as pd
import torch

from normlab.data.images import load_images
from normlab.engine.spec import CellResult
from normlab.kit.tables import metric_rows
from normlab.models.cnn import build_members, member_accuracy, recalibrate, train_members
from normlab.studies.batch_size.config import Config


def train_cell(config: Config, norm: str, seeds: tuple[int, ...], batch: int) -> CellResult:
    """Train ``norm`` at ``batch`` for every seed (equal examples, linear lr scaling) and measure accuracy;
    BatchNorm is also measured after recalibrating its running statistics on the training set."""
    data = load_images(config.dataset, train_size=config.train_size, test_size=config.test_size,
                       downsample=config.downsample)
    model = build_members(seeds, num_classes=data.num_classes, widths=config.widths, norm=norm,
                          num_groups=config.num_groups)
    examples = round(config.epochs * len(data.x_train))
    lr = config.lr_per_32 * batch / 32
    steps = train_members(model, data.x_train, data.y_train, seeds, batch_size=batch, examples=examples, lr=lr)
    acc = member_accuracy(model.eval(), data.x_test, data.y_test)
    train_acc = member_accuracy(model, data.x_train, data.y_train)
    rows = []
    for s, seed in enumerate(seeds):
        rows += [(seed, steps, "test_acc", float(acc[s])), (seed, steps, "train_acc", float(train_acc[s])),
                 (seed, steps, "lr", lr)]
    if norm == "batchnorm":
        recal = copy.deepcopy(model)
        recalibrate(recal, data.x_train)
        acc_recal = member_accuracy(recal.eval(), data.x_test, data.y_test)
        rows += [(seed, steps, "test_acc_recalibrated", float(acc_recal[s])) for s, seed in enumerate(seeds)]
    metrics = metric_rows(rows)
    # A diverged member predicts from NaN logits: record its accuracy as missing, not as chance.
    finite = torch.stack([p.detach().reshape(model.members, -1).isfinite().all(1) for p in model.parameters()])
    for s, seed in enumerate(seeds):
        if not bool(finite[:, s].all()):
            metrics.loc[metrics["seed"] == seed, "value"] = math.nan
    info = pd.DataFrame({"dataset": [data.name], "notice": [data.notice], "train_size": [len(data.x_train)],
                         "test_size": [len(data.x_test)], "image_size": [data.x_train.shape[-1]]})
    return CellResult(metrics, extra={"data": info})
