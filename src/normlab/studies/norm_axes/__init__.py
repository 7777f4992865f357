r"""norm-axes (posts 002, 003, 004): which elements each norm averages over, and what it stores.

Every norm computes ``y = (x - mean) / sqrt(var + eps)`` (biased var) and differs only in the *set* of
elements that share one mean and variance:

=========== ======================= ==========================================================
norm        (N, C, H, W) image      [batch, seq, hidden] sequence (post 002's BERT tensor)
=========== ======================= ==========================================================
BatchNorm   per C: over N, H, W     post 002's loop: per (seq, hidden) over batch;
                                    BatchNorm1d(hidden) on (B, hidden, seq): per hidden over batch, seq
LayerNorm   per N: over C, H, W     per (batch, seq) over hidden
InstanceNorm per (N, C): over H, W  per (batch, hidden) over seq
GroupNorm   per (N, group): over    per (batch, group of hidden): over seq and the group's hidden
            the group's C, H, W
=========== ======================= ==========================================================

Arms:

* ``nchw``: random ``(N, C, H, W)`` tensors (float64); for each norm the statistics computed with
  explicit Python loops over the elements that share them, compared with normlab's and torch's layers.
* ``sequence``: random ``[batch, seq, hidden]`` tensors; post 002's two loops written as the seed writes
  them, compared with the layers that compute them (and with the usual ``BatchNorm1d(hidden)``, which
  does not).
* ``state``: the parameters and buffers of post 004's example layers, with their shapes.
"""

from normlab.studies.norm_axes.config import Config
from normlab.studies.norm_axes.model import (
    loop_normalize,
    nchw_keys,
    seed002_bn_loop,
    seed002_ln_loop,
    sequence_keys,
)
from normlab.studies.norm_axes.study import NormAxes

__all__ = ["Config", "NormAxes", "loop_normalize", "nchw_keys", "seed002_bn_loop", "seed002_ln_loop",
           "sequence_keys"]
