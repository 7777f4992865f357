"""A small CNN whose normalization is data (``norm="batchnorm"``), and the loop that trains it.

Three ``conv3x3 → norm → ReLU`` stages (max-pool after the first two), average pooling to a 3x3 grid, one
linear classifier (a grouped 3x3 conv on that grid): a few thousand parameters, fast enough on two CPU cores to train
dozens of seeds.

How each ``norm`` is built for a ``(N, C, H, W)`` feature map, following Wu & He's *Group
Normalization* (2018), Figure 2, where the four differ only in the set they average over:

================ ================================ ====================== ===========================
``norm``         module                           statistics over        affine (gamma, beta)
================ ================================ ====================== ===========================
``batchnorm``    BatchNorm2d(C)                   N, H, W (per channel)  per channel; running stats
``layernorm``    GroupNorm(1, C)                  C, H, W (per sample)   per channel
``instancenorm`` InstanceNorm2d(C, affine=True)   H, W (per sample, ch.) per channel
``groupnorm``    GroupNorm(G, C)                  C/G, H, W              per channel
``none``         Identity (conv gets a bias)      --                     --
================ ================================ ====================== ===========================

LayerNorm here is the GN paper's: GroupNorm with one group, the numbers of ``LayerNorm((C, H, W))`` up
to its affine (per channel rather than per element), without tying the model to one input size. (It is
not ConvNeXt's ``LayerNorm2d``, which normalizes each pixel over C only.) Each arm is a name of the
norm registry (``ARM_NORMS``): this one is ``layernorm-chw``. ``G`` is ``num_groups``
(default 8, clipped to C; it must divide C).

**Seeds as one model.** ``SmallCNN(..., members=S)`` is S independent CNNs in one: every conv is grouped
(``groups=S``), every norm spans ``S x C`` channels with ``S x G`` groups, so member ``s`` owns channel
block ``s`` and never sees another member's activations; BatchNorm's statistics stay per channel, hence
per member. :func:`build_members` makes it from S ordinary ``SmallCNN`` s (``torch.manual_seed(seed);
SmallCNN(...)``) and :func:`train_members` feeds member ``s`` its own shuffled batches; with the loss summed
over members each member gets exactly its own gradient and SGD updates each element from its own state, so
an S-member run equals S separate runs (up to float summation order) at a fraction of the per-step
overhead, which dominates at batch size 2.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Mapping, Sequence
from copy import deepcopy
from typing import Any

import torch
import torch.nn as tnn
import torch.nn.functional as F

from normlab.nn.registry import create_norm, get_norm_layer
from normlab.nn.surgery import recalibrate_batchnorm

CNN_NORMS = ("batchnorm", "groupnorm", "layernorm", "instancenorm", "none")
HEAD_GRID = 3  # the classifier sees the last feature map average-pooled to HEAD_GRID x HEAD_GRID


# The CNN's arm names and the registry names they build (normlab.nn.registry): "layernorm" is the GN
# paper's LayerNorm over (C, H, W), the registry's "layernorm-chw" = GroupNorm(1, C), not "layernorm"
# (over the last dim) nor "layernorm2d" (over C per pixel).
ARM_NORMS = {"batchnorm": "batchnorm2d", "groupnorm": "groupnorm", "layernorm": "layernorm-chw",
             "instancenorm": "instancenorm2d", "none": "none"}


def norm2d(name: str, channels: int, *, num_groups: int = 8, **kwargs: Any) -> tnn.Module:
    """The ``name`` normalization for a ``(N, channels, H, W)`` feature map (see the module table)."""
    if name not in CNN_NORMS:
        raise ValueError(f"norm2d: norm must be one of {CNN_NORMS}, got {name!r}")
    layer = get_norm_layer(ARM_NORMS[name])
    if name == "batchnorm":
        return layer(channels, **kwargs)
    if kwargs:
        raise ValueError(f"norm2d: norm {name!r} takes no extra arguments, got {sorted(kwargs)}")
    if name == "instancenorm":
        return layer(channels, affine=True)  # GN paper's IN: per-channel affine
    if name != "groupnorm":
        return layer(channels)
    groups = min(num_groups, channels)
    if channels % groups:
        raise ValueError(f"norm2d: num_groups={groups} must divide channels={channels}")
    return layer(channels, num_groups=groups)


class SmallCNN(tnn.Module):
    """``[conv3x3 → norm → ReLU → (maxpool)] x 3 → average pool to 3x3 → linear``, optionally S members.

    Args:
        in_channels: image channels (1 for grey images).
        num_classes: outputs of the classifier.
        widths: channels of the three conv stages.
        norm: one of ``CNN_NORMS``.
        num_groups: groups for ``norm="groupnorm"`` (per member).
        norm_kwargs: passed to the norm (e.g. ``{"momentum": None}`` for BatchNorm).
        members: independent networks computed together (see the module docstring).

    Shape:
        ``members=1``: input ``(N, in_channels, H, W)``, output ``(N, num_classes)`` logits.
        ``members=S``: input ``(N, S * in_channels, H, W)`` (member s reads channel block s), output
        ``(N, S, num_classes)``. H, W >= 4.

    Example::

        >>> model = SmallCNN(1, 10, norm="groupnorm", num_groups=4)
        >>> model(torch.randn(2, 1, 28, 28)).shape
        torch.Size([2, 10])
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        widths: tuple[int, int, int] = (16, 32, 32),
        norm: str = "batchnorm",
        num_groups: int = 8,
        norm_kwargs: Mapping[str, Any] | None = None,
        members: int = 1,
    ) -> None:
        super().__init__()
        if len(widths) != 3 or any(not isinstance(w, int) or w < 1 for w in widths):
            raise ValueError(f"SmallCNN: widths must be three positive ints, got {widths!r}")
        if not isinstance(members, int) or members < 1:
            raise ValueError(f"SmallCNN: members must be a positive int, got {members!r}")
        self.norm, self.members, self.in_channels, self.num_classes = norm, members, in_channels, num_classes
        self.config = {"in_channels": in_channels, "num_classes": num_classes, "widths": tuple(widths),
                       "norm": norm, "num_groups": num_groups, "norm_kwargs": dict(norm_kwargs or {})}
        chans = (in_channels, *widths)
        self.convs = tnn.ModuleList()
        self.norms = tnn.ModuleList()
        for c_in, c_out in itertools.pairwise(chans):
            # A norm's beta already provides a per-channel offset, so the conv bias would be redundant.
            self.convs.append(tnn.Conv2d(members * c_in, members * c_out, 3, padding=1, bias=norm == "none",
                                         groups=members))
            groups = min(num_groups, c_out)
            if norm == "groupnorm" and c_out % groups:
                raise ValueError(f"SmallCNN: num_groups={groups} must divide width {c_out}")
            if norm == "layernorm" and members > 1:  # layernorm-chw per member: one group per member
                self.norms.append(create_norm("groupnorm", members * c_out, num_groups=members))
            else:
                self.norms.append(norm2d(norm, members * c_out, num_groups=members * groups,
                                         **dict(norm_kwargs or {})))
        # The classifier reads a 3x3 average-pooled map (global average pooling alone throws away where
        # things are, which left the model underfit); a 3x3 conv on it is a linear layer on the flattened
        # map, and grouped it keeps the members apart.
        self.head = tnn.Conv2d(members * widths[-1], members * num_classes, HEAD_GRID, groups=members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        expected = self.members * self.in_channels
        if x.ndim != 4 or x.shape[1] != expected:
            raise ValueError(f"SmallCNN: expected input (N, {expected}, H, W), got shape {tuple(x.shape)}")
        for i, (conv, norm) in enumerate(zip(self.convs, self.norms, strict=True)):
            x = F.relu(norm(conv(x)))  # (N, S*C_i, H_i, W_i)
            if i < 2:
                x = F.max_pool2d(x, 2)  # halve H, W
        x = F.adaptive_avg_pool2d(x, HEAD_GRID)  # (N, S*C_3, 3, 3)
        logits = self.head(x).flatten(1)  # (N, S*classes)
        return logits if self.members == 1 else logits.view(len(x), self.members, self.num_classes)


def stack_members(members: Sequence[SmallCNN]) -> SmallCNN:
    """One ``SmallCNN(members=len(members))`` whose member s has the weights and buffers of ``members[s]``."""
    if not members or any(m.members != 1 for m in members):
        raise ValueError("stack_members: expected a non-empty list of single-member SmallCNNs")
    if any(m.config != members[0].config for m in members):
        raise ValueError("stack_members: members must share one configuration")
    stacked = SmallCNN(**members[0].config, members=len(members))
    states = [m.state_dict() for m in members]
    merged = {}
    for key, value in states[0].items():
        # Every tensor is laid out member-major along dim 0 (grouped convs, per-channel norm state);
        # num_batches_tracked is a shared scalar counter.
        merged[key] = value.clone() if value.ndim == 0 else torch.cat([s[key] for s in states])
    stacked.load_state_dict(merged)
    return stacked


def build_members(seeds: Sequence[int], **config: Any) -> SmallCNN:
    """S members initialized as ``torch.manual_seed(seed); SmallCNN(**config)`` for each seed, stacked.

    The global RNG state is restored afterwards, so building a model does not shift the caller's draws.
    """
    members = []
    with torch.random.fork_rng(devices=[]):
        for seed in seeds:
            torch.manual_seed(seed)
            members.append(SmallCNN(**config))
    return stack_members(members)


def member_input(x: torch.Tensor, members: int) -> torch.Tensor:
    """The same images for every member: ``(N, C, H, W) -> (N, S*C, H, W)``."""
    return x.repeat(1, members, 1, 1)


def batch_order(seeds: Sequence[int], n: int, batch_size: int) -> Iterator[torch.Tensor]:
    """The training batches of :func:`train_members`, step after step: ``(S, batch_size)`` image indices, row s
    member s's. Member s shuffles the ``n`` images with its own generator (seeded by ``seeds[s]``) each pass
    and takes consecutive batches, dropping the pass's last partial batch."""
    if not 1 <= batch_size <= n:
        raise ValueError(f"batch_order: batch_size must be in [1, {n}] (the images), got {batch_size}")
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    per_pass = n // batch_size
    while True:
        orders = torch.stack([torch.randperm(n, generator=g) for g in gens])  # (S, n)
        for k in range(per_pass):
            yield orders[:, k * batch_size:(k + 1) * batch_size]


def train_members(
    model: SmallCNN,
    x: torch.Tensor,
    y: torch.Tensor,
    seeds: Sequence[int],
    *,
    batch_size: int,
    examples: int,
    lr: float,
    momentum: float = 0.9,
    checkpoints: Sequence[int] = (),
    on_checkpoint: Callable[[int], None] = lambda step: None,
    shard: tuple[int, int] = (0, 1),
    forward: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> int:
    """SGD with momentum on ``examples`` training examples per member; returns the number of steps.

    Member s shuffles ``(x, y)`` with its own generator (seeded by ``seeds[s]``) each pass, so members see
    different batches (:func:`batch_order`). Each pass drops its last partial batch (a batch of one has no
    BatchNorm variance). The loss is the sum over members of each member's mean cross-entropy: member s's
    gradient is its own. ``on_checkpoint(step)`` is called after each step in ``checkpoints`` (to evaluate
    mid-training); the model is put back in training mode afterwards, so checkpoints do not change the training.

    Data-parallel training: ``shard=(rank, ranks)`` makes ``batch_size`` the global batch (a multiple of
    ``ranks``); every rank draws the same batches and trains on block ``rank`` of each (``batch_size //
    ranks`` consecutive images), calling ``forward`` (e.g. the ``DistributedDataParallel`` wrapper of
    ``model``, which averages the gradients over ranks, so the ranks take the step of the mean loss over the
    global batch). ``forward`` defaults to ``model``.
    """
    rank, ranks = shard
    if len(seeds) != model.members:
        raise ValueError(f"train_members: {model.members} members but {len(seeds)} seeds")
    if not 2 <= batch_size <= len(x):
        raise ValueError(f"train_members: batch_size must be in [2, {len(x)}], got {batch_size}")
    if not (0 <= rank < ranks and batch_size % ranks == 0):
        raise ValueError(f"train_members: shard must be (rank, ranks) with 0 <= rank < ranks dividing batch_size "
                         f"{batch_size}, got {shard}")
    local = batch_size // ranks
    forward = forward or model
    steps = examples // batch_size
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    marks = set(checkpoints)
    model.train()
    for step, idx in zip(range(steps), batch_order(seeds, len(x), batch_size), strict=False):  # endless order
        idx = idx[:, rank * local:(rank + 1) * local]  # (S, local): this rank's block of the global batch
        xb = x[idx].transpose(0, 1).flatten(1, 2)  # (local, S*C, H, W): member s reads its own images
        logits = forward(xb)  # (local, S, classes) or (local, classes)
        logits = logits.view(local, model.members, -1)
        loss = F.cross_entropy(logits.permute(0, 2, 1), y[idx].T, reduction="none").mean(0).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step + 1 in marks:
            on_checkpoint(step + 1)
            model.train()
    return steps


@torch.no_grad()
def member_accuracy(model: SmallCNN, x: torch.Tensor, y: torch.Tensor, *, batch_size: int = 1000) -> torch.Tensor:
    """Per-member fraction of ``x`` classified as ``y`` in the model's *current* mode: ``(S,)``.

    In train mode BatchNorm normalizes each chunk of ``batch_size`` test images by its own statistics.
    """
    correct = torch.zeros(model.members)
    for start in range(0, len(x), batch_size):
        xb, yb = x[start:start + batch_size], y[start:start + batch_size]
        logits = model(member_input(xb, model.members)).view(len(xb), model.members, -1)  # (N, S, classes)
        correct += (logits.argmax(-1) == yb[:, None]).sum(0).float()
    return correct / len(x)


def recalibrate(model: SmallCNN, x: torch.Tensor, *, chunk: int = 1000) -> None:
    """Set every BatchNorm's running statistics to the exact statistics of images ``x`` (N, C, H, W).

    Every member sees all of ``x``; :func:`normlab.nn.surgery.recalibrate_batchnorm` does the work
    (population statistics, layer by layer, in eval mode).
    """
    recalibrate_batchnorm(model, [member_input(b, model.members) for b in torch.split(x, chunk)])


def recalibrated_copy(model: SmallCNN, x: torch.Tensor) -> SmallCNN:
    """A copy of ``model`` in eval mode whose BatchNorms hold the exact statistics of images ``x``
    (:func:`recalibrate`): the reference a running estimate is judged against. ``model`` is unchanged."""
    twin = deepcopy(model)
    recalibrate(twin, x)
    return twin.eval()


def finite_members(model: SmallCNN) -> torch.Tensor:
    """``(members,)`` bool: whether every parameter of each member is finite. A diverged member predicts from
    NaN logits; its accuracy is missing, not chance."""
    return torch.stack([p.detach().reshape(model.members, -1).isfinite().all(1)
                        for p in model.parameters()]).all(0)
