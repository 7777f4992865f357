"""Ghost batches: BatchNorm statistics over sub-batches of ``g`` images of a larger optimiser batch.

Wu & He's (2018) small-batch BatchNorm is *per-GPU* BatchNorm: every GPU normalizes its own ``g`` images
("images per GPU") while the optimiser step averages the gradient over all GPUs. :class:`GhostBatchNorm2d`
does that on one device (Hoffer, Hubara & Soudry 2017 call the sub-batches "ghost batches"): in training
mode a batch of ``N`` images is cut into ``N / g`` consecutive sub-batches of ``g``, each normalized by its
own per-channel mean and variance over ``(g, H, W)``; the running statistics take the average of the
sub-batches' means and (unbiased) variances, as a per-GPU BatchNorm's running statistics average over its
own batches. In eval mode it is an ordinary ``BatchNorm2d``. With ``g >= N`` it *is* ``BatchNorm2d``
(it calls the same forward), so the reference ghost size reproduces plain BatchNorm at that batch.

Only the statistics change with ``g``: the images, their order, the optimiser's batch, its steps and learning
rate stay the same, which is what lets a ghost-size sweep isolate BN's statistics batch.
"""

from __future__ import annotations

import torch
import torch.nn as tnn
import torch.nn.functional as F

from normlab.models.cnn import SmallCNN
from normlab.nn.batchnorm import BatchNorm2d


class GhostBatchNorm2d(BatchNorm2d):
    """normlab's ``BatchNorm2d`` (the CNN's) whose training statistics are computed over consecutive sub-batches of ``ghost`` images.

    Shape: input and output ``(N, C, H, W)``; in training mode ``N`` must be a multiple of ``ghost`` or at most
    ``ghost`` (a batch of at most ``ghost`` images is one sub-batch: plain BatchNorm).
    """

    def __init__(self, num_features: int, ghost: int, **kwargs) -> None:
        super().__init__(num_features, **kwargs)
        if not isinstance(ghost, int) or ghost < 2:
            raise ValueError(f"GhostBatchNorm2d: ghost must be an int >= 2 (a variance needs two images), got {ghost!r}")
        self.ghost = ghost

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, ghost={self.ghost}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        if not self.training or n <= self.ghost:
            return super().forward(x)
        if x.ndim != 4 or n % self.ghost:
            raise ValueError(f"GhostBatchNorm2d: expected (N, C, H, W) with N a multiple of ghost={self.ghost}, "
                             f"got shape {tuple(x.shape)}")
        k, c = n // self.ghost, x.shape[1]
        # (N, C, H, W) -> (g, k*C, H, W): sub-batch j's channel c becomes channel j*C + c, so one batch_norm
        # call normalizes each (sub-batch, channel) over its own g x H x W values.
        xg = x.reshape(k, self.ghost, c, *x.shape[2:]).transpose(0, 1).reshape(self.ghost, k * c, *x.shape[2:])
        weight = self.weight.repeat(k) if self.weight is not None else None
        bias = self.bias.repeat(k) if self.bias is not None else None
        y = F.batch_norm(xg, None, None, weight, bias, training=True, eps=self.eps)
        if self.track_running_stats:
            with torch.no_grad():
                values = xg.detach().transpose(0, 1).reshape(k, c, -1)  # (k, C, g*H*W)
                mean = values.mean(-1).mean(0)
                var = values.var(-1, unbiased=True).mean(0)
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked + 1)
                self.running_mean.mul_(1 - m).add_(mean, alpha=m)
                self.running_var.mul_(1 - m).add_(var, alpha=m)
                self.num_batches_tracked.add_(1)
        return y.reshape(self.ghost, k, c, *x.shape[2:]).transpose(0, 1).reshape(x.shape)


def use_ghost_batches(model: SmallCNN, ghost: int) -> SmallCNN:
    """Replace every ``BatchNorm2d`` in ``model.norms`` by a :class:`GhostBatchNorm2d` of ``ghost`` images that
    keeps its parameters and buffers (in place; returns ``model``). Other norms are left alone: their
    statistics are per sample, so a ghost size means nothing to them."""
    for i, norm in enumerate(model.norms):
        if isinstance(norm, tnn.BatchNorm2d) and not isinstance(norm, GhostBatchNorm2d):
            new = GhostBatchNorm2d(norm.num_features, ghost, eps=norm.eps, momentum=norm.momentum,
                                   affine=norm.affine, track_running_stats=norm.track_running_stats)
            new.load_state_dict(norm.state_dict())
            new.train(norm.training)
            model.norms[i] = new
    return model
