"""A small CNN whose normalization is data (``norm="batchnorm"``), and the loop that trains it.

Three ``conv3x3 → norm → ReLU`` stages (max-pool after the first two), global average pooling, one
linear classifier: a few thousand parameters, fast enough on two CPU cores to train dozens of seeds.

How each ``norm`` is built for a ``(N, C, H, W)`` feature map, following Wu & He's *Group
Normalization* (2018), Figure 2, where the four differ only in the set they average over:

=============== ============================ ======================= ==========================
``norm``        module                       statistics over         affine (gamma, beta)
=============== ============================ ======================= ==========================
``batchnorm``   BatchNorm2d(C)               N, H, W (per channel)   per channel; running stats
``layernorm``   GroupNorm(1, C)              C, H, W (per sample)    per channel
``instancenorm`` InstanceNorm2d(C, affine=True) H, W (per sample, ch.) per channel
``groupnorm``   GroupNorm(G, C)              C/G, H, W               per channel
``none``        Identity (conv gets a bias)  --                      --
=============== ============================ ======================= ==========================

LayerNorm here is the GN paper's: GroupNorm with one group, the numbers of ``LayerNorm((C, H, W))`` up
to its affine (per channel rather than per element), without tying the model to one input size. (It is
not ConvNeXt's ``LayerNorm2d``, which normalizes each pixel over C only.) ``G`` is ``num_groups`` (default 8, clipped to C; it must
divide C).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn as tnn
import torch.nn.functional as F

from normlab.nn import create_norm

CNN_NORMS = ("batchnorm", "groupnorm", "layernorm", "instancenorm", "none")


def norm2d(name: str, channels: int, *, num_groups: int = 8, **kwargs: Any) -> tnn.Module:
    """The ``name`` normalization for a ``(N, channels, H, W)`` feature map (see the module table)."""
    if name not in CNN_NORMS:
        raise ValueError(f"norm2d: norm must be one of {CNN_NORMS}, got {name!r}")
    if name == "batchnorm":
        return create_norm("batchnorm", channels, dim=2, **kwargs)
    if kwargs:
        raise ValueError(f"norm2d: norm {name!r} takes no extra arguments, got {sorted(kwargs)}")
    if name == "none":
        return tnn.Identity()
    if name == "instancenorm":
        return create_norm("instancenorm", channels, dim=2, affine=True)  # GN paper's IN: per-channel affine
    groups = 1 if name == "layernorm" else min(num_groups, channels)  # GN paper's LN is GN with one group
    if channels % groups:
        raise ValueError(f"norm2d: num_groups={groups} must divide channels={channels}")
    return create_norm("groupnorm", channels, num_groups=groups)


class SmallCNN(tnn.Module):
    """``[conv3x3 → norm → ReLU → (maxpool)] x 3 → global average pool → Linear``.

    Args:
        in_channels: image channels (1 for grey images).
        num_classes: outputs of the classifier.
        widths: channels of the three conv stages.
        norm: one of ``CNN_NORMS``.
        num_groups: groups for ``norm="groupnorm"``.
        norm_kwargs: passed to the norm (e.g. ``{"momentum": None}`` for BatchNorm).

    Shape:
        input ``(N, in_channels, H, W)`` with H, W >= 4; output ``(N, num_classes)`` logits.

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
    ) -> None:
        super().__init__()
        if len(widths) != 3 or any(not isinstance(w, int) or w < 1 for w in widths):
            raise ValueError(f"SmallCNN: widths must be three positive ints, got {widths!r}")
        self.norm = norm
        chans = (in_channels, *widths)
        self.convs = tnn.ModuleList()
        self.norms = tnn.ModuleList()
        for c_in, c_out in itertools.pairwise(chans):
            # A norm's beta already provides a per-channel offset, so the conv bias would be redundant.
            self.convs.append(tnn.Conv2d(c_in, c_out, 3, padding=1, bias=norm == "none"))
            self.norms.append(norm2d(norm, c_out, num_groups=num_groups, **dict(norm_kwargs or {})))
        self.head = tnn.Linear(widths[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4:
            raise ValueError(f"SmallCNN: expected input (N, C, H, W), got shape {tuple(x.shape)}")
        for i, (conv, norm) in enumerate(zip(self.convs, self.norms, strict=True)):
            x = F.relu(norm(conv(x)))  # (N, C_i, H_i, W_i)
            if i < 2:
                x = F.max_pool2d(x, 2)  # halve H, W
        return self.head(x.mean(dim=(2, 3)))  # (N, num_classes)


def train_epochs(
    model: tnn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    batch_size: int,
    epochs: float,
    lr: float,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    generator: torch.Generator | None = None,
) -> int:
    """SGD with momentum over ``epochs`` passes of shuffled ``(x, y)``; returns the number of steps.

    A fractional ``epochs`` trains on ``round(epochs * len(x))`` examples, so runs at different batch
    sizes see the same number of examples. The last partial batch of each pass is dropped: a batch of
    one would make BatchNorm's variance undefined.
    """
    if batch_size < 1 or batch_size > len(x):
        raise ValueError(f"train_epochs: batch_size must be in [1, {len(x)}], got {batch_size}")
    total = round(epochs * len(x))
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    model.train()
    steps, seen = 0, 0
    while seen + batch_size <= total:
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x) - batch_size + 1, batch_size):
            if seen + batch_size > total:
                break
            idx = order[start:start + batch_size]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            steps += 1
            seen += batch_size
    return steps


@torch.no_grad()
def accuracy(model: tnn.Module, x: torch.Tensor, y: torch.Tensor, *, batch_size: int = 1000) -> float:
    """Fraction of ``x`` classified as ``y`` with the model in its *current* mode (train or eval)."""
    correct = 0
    for start in range(0, len(x), batch_size):
        correct += int((model(x[start:start + batch_size]).argmax(1) == y[start:start + batch_size]).sum())
    return correct / len(x)
