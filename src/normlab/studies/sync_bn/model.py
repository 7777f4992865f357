"""What a sync-bn cell trains: one arm at one per-rank batch ``b``, every seed at once, data-parallel on
``ranks`` gloo processes of this machine (:func:`normlab.engine.ranks.run_ranks`).

Every rank builds the same members (seed s's initial weights), draws the same global batches of
``ranks x b`` images (seed s's data order, :func:`normlab.models.cnn.batch_order`) and trains on its own
block of ``b`` of them through ``DistributedDataParallel``, which averages the gradients over the ranks.
So the optimiser takes the step of the mean loss over the global batch in every arm; what differs is the
set BatchNorm's statistics average over: rank's ``b`` images (BN), all ``ranks x b`` (SyncBN: normlab's
:class:`~normlab.nn.SyncBatchNorm`, CPU/gloo), or each image alone (GN).

The ranks return the trained weights (rank 0's) and, measured before training, the first step's
per-member loss and gradients. The cell's own process then evaluates the model (one process, eval mode:
the running statistics) and recomputes that first step without any process group, on the one-process
twin of the arm: BatchNorm over the whole global batch for SyncBN, ghost batches of ``b`` images
(:mod:`normlab.studies.batch_size.ghost`) for per-rank BN, GroupNorm as it is for GN.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from normlab.data.images import load_images
from normlab.engine.ranks import run_ranks
from normlab.engine.spec import CellResult
from normlab.kit.tables import metric_rows
from normlab.models.cnn import (
    SmallCNN,
    batch_order,
    build_members,
    finite_members,
    member_accuracy,
    recalibrated_copy,
    train_members,
)
from normlab.nn import SyncBatchNorm
from normlab.studies.batch_size.ghost import use_ghost_batches
from normlab.studies.sync_bn.config import ARM_NORMS, Config


def global_batch(config: Config, b: int) -> int:
    return config.ranks * b


def learning_rate(config: Config, b: int) -> float:
    """Wu & He's linear rule: ``lr`` at a global batch of ``lr_batch``, in proportion to the global batch."""
    return config.lr * global_batch(config, b) / config.lr_batch


def _data(config: Config):
    return load_images(config.dataset, train_size=config.train_size, test_size=config.test_size,
                       downsample=config.downsample)


def _build(config: Config, arm: str, seeds: tuple[int, ...], num_classes: int) -> SmallCNN:
    return build_members(seeds, num_classes=num_classes, widths=config.widths, norm=ARM_NORMS[arm],
                         num_groups=config.num_groups)


def member_losses(forward, model: SmallCNN, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``(S,)``: member s's mean cross-entropy over its images ``idx[s]`` (``idx``: ``(S, B)`` indices)."""
    logits = forward(x[idx].transpose(0, 1).flatten(1, 2)).view(idx.shape[1], model.members, -1)
    return F.cross_entropy(logits.permute(0, 2, 1), y[idx].T, reduction="none").mean(0)


def train_rank(rank: int, ranks: int, config: Config, arm: str, b: int, seeds: tuple[int, ...]) -> dict | None:
    """One rank of a cell (runs in a spawned process inside the gloo group): the first step measured, then
    the training; rank 0 returns what the cell stores."""
    data = _data(config)
    model = _build(config, arm, seeds, data.num_classes)
    if arm == "syncbn":
        model = SyncBatchNorm.convert_sync_batchnorm(model)
    ddp = DistributedDataParallel(model)
    batch = global_batch(config, b)
    # The first step, measured without taking it: each rank's loss on its block, then the gradient
    # DistributedDataParallel averages over the ranks; the model is put back as it was (running statistics).
    before = copy.deepcopy(model.state_dict())
    idx = next(batch_order(seeds, len(data.x_train), batch))
    losses = member_losses(ddp, model, data.x_train, data.y_train, idx[:, rank * b:(rank + 1) * b])
    losses.sum().backward()
    mean_losses = losses.detach().clone()
    dist.all_reduce(mean_losses)
    mean_losses /= ranks
    grads = {name: p.grad.detach().clone() for name, p in model.named_parameters()}
    model.load_state_dict(before)
    model.zero_grad(set_to_none=True)
    steps = train_members(model, data.x_train, data.y_train, seeds, batch_size=batch,
                          examples=round(config.epochs * len(data.x_train)), lr=learning_rate(config, b),
                          shard=(rank, ranks), forward=ddp)
    if rank:
        return None
    return {"state": {k: v.detach().clone() for k, v in model.state_dict().items()}, "steps": steps,
            "first_losses": mean_losses, "first_grads": grads}


def one_process_first_step(config: Config, arm: str, b: int, seeds: tuple[int, ...], data) -> tuple:
    """The first step of the cell without a process group: the arm's one-process twin on the whole global
    batch (BN over it for SyncBN; ghost batches of ``b`` for per-rank BN); per-member losses and gradients."""
    model = _build(config, arm, seeds, data.num_classes).train()
    if arm == "batchnorm":
        use_ghost_batches(model, b)
    idx = next(batch_order(seeds, len(data.x_train), global_batch(config, b)))
    losses = member_losses(model, model, data.x_train, data.y_train, idx)
    losses.sum().backward()
    return losses.detach(), {name: p.grad.detach() for name, p in model.named_parameters()}


def relative_differences(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor], members: int) -> torch.Tensor:
    """``(S,)``: per member, the largest ``|got - want|`` over every gradient element, relative to the
    largest ``|want|`` (parameters are stacked member-major along dim 0)."""
    diff = torch.stack([(got[k] - want[k]).reshape(members, -1).abs().amax(1) for k in want]).amax(0)
    scale = torch.stack([want[k].reshape(members, -1).abs().amax(1) for k in want]).amax(0)
    return diff / scale


def train_cell(config: Config, arm: str, b: int, seeds: tuple[int, ...]) -> CellResult:
    """Train ``arm`` at ``b`` images per rank on ``config.ranks`` ranks; measure test and training accuracy
    (running statistics), BN's after recalibrating them on the training set, and the first step's distance
    to the one-process twin."""
    data = _data(config)
    done = run_ranks(train_rank, config.ranks, (config, arm, b, seeds), timeout=config.cell_timeout,
                     collective_timeout=config.collective_timeout)[0]
    model = _build(config, arm, seeds, data.num_classes)
    model.load_state_dict(done["state"])
    steps = done["steps"]
    acc = member_accuracy(model.eval(), data.x_test, data.y_test)
    train_acc = member_accuracy(model, data.x_train, data.y_train)
    ref_losses, ref_grads = one_process_first_step(config, arm, b, seeds, data)
    grad_diff = relative_differences(done["first_grads"], ref_grads, len(seeds))
    loss_diff = (done["first_losses"] - ref_losses).abs() / ref_losses.abs()
    rows = []
    for s, seed in enumerate(seeds):
        rows += [(seed, steps, "test_acc", float(acc[s])), (seed, steps, "train_acc", float(train_acc[s])),
                 (seed, steps, "lr", learning_rate(config, b)), (seed, 0, "first_step_grad_rel_diff",
                                                                 float(grad_diff[s])),
                 (seed, 0, "first_step_loss_rel_diff", float(loss_diff[s]))]
    if ARM_NORMS[arm] == "batchnorm":
        acc_recal = member_accuracy(recalibrated_copy(model, data.x_train), data.x_test, data.y_test)
        rows += [(seed, steps, "test_acc_recalibrated", float(acc_recal[s])) for s, seed in enumerate(seeds)]
    metrics = metric_rows(rows)
    finite = finite_members(model)  # a diverged member's accuracies are missing, not chance
    for s, seed in enumerate(seeds):
        if not bool(finite[s]):
            metrics.loc[(metrics["seed"] == seed) & metrics["metric"].str.startswith(("test_acc", "train_acc")),
                        "value"] = math.nan
    return CellResult(metrics, extra={"data": data.record()})
