"""The probe under DistributedDataParallel: which rows are pooled over ranks, and how.

Under DDP every rank trains the same model on its own slice of the batch. What the probe records then
has one of two meanings:

* **identical on every rank**: gradients (DDP all-reduces them in ``backward()``, before the optimizer
  step the probe captures them at), weights, updates, the global gradient norm. They are reported once:
  each rank's table holds them, and only rank 0 writes. Running statistics of a plain BatchNorm are
  *not* synchronized by DDP (its ``broadcast_buffers`` copies rank 0's at the next forward): rank 0's are
  reported, which are the ones a checkpoint saved by rank 0 holds (a SyncBatchNorm's are identical).
* **one part of a whole**: module outputs (and norm-layer inputs). Their moments are pooled over ranks,
  so the table shows the statistics of the concatenated batch: counts, means and variances combined
  with Chan et al.'s parallel formula (:func:`pool_moments`), absmax the maximum, zero fraction the
  count-weighted mean; activation histogram counts are summed. The loss given to ``record_loss`` is the
  mean over ranks (the loss whose gradient DDP's averaged gradients are).

The pooling runs on the host on the rows already copied from the device, at the probe's flush points (every
``flush_every`` recorded steps, and every read: ``scalars()``, ``histograms()``, ``alerts()``, ``save()``,
``close()``): one ``all_gather`` of ``(rows, output segments, 5)`` float64 per flush, one ``all_reduce`` of
the activation histogram counts and one of the losses, never one per hook or per step.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

AUTO = "auto"


def resolve(model: nn.Module, process_group: object) -> tuple[nn.Module, object | None]:
    """The module whose names and parameters the probe reads, and the group to pool over (None: none).

    ``"auto"``: a ``DistributedDataParallel`` model is unwrapped (names as in a single process, without
    ``module.``) and pooled over its process group; any other model is not pooled. ``None``: no pooling
    (each rank records its own batch, and every rank writes). A process group (or ``dist.group.WORLD``):
    pooled over it. A group of one rank pools nothing and is treated as None.
    """
    inner = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
    if isinstance(process_group, str):
        if process_group != AUTO:
            raise ValueError(f"Probe: process_group must be 'auto', None or a process group, got {process_group!r}")
        if inner is model:
            return inner, None
        process_group = model.process_group
    if process_group is None:
        return inner, None
    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError("Probe: process_group was given but torch.distributed is not initialized")
    if dist.get_world_size(process_group) <= 1:
        return inner, None
    return inner, process_group


def rank(group) -> int:
    return dist.get_rank(group)


def pool_moments(gathered: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pool per-rank moments ``(ranks, ..., 5)``: count, mean, population variance, absmax, zero fraction.

    Returns ``(moments (..., 4), count (...))`` of the union: with ``n = sum n_r``,
    ``mean = sum n_r mean_r / n``, ``var = sum n_r (var_r + (mean_r - mean)^2) / n`` (Chan et al.'s
    parallel formula, in one step; exact in float64), ``absmax = max absmax_r`` and
    ``zero_frac = sum n_r zero_frac_r / n`` over the ranks with ``n_r > 0``. NaN where ``n == 0``.
    """
    count, mean_r, var_r, absmax_r, zero_r = np.moveaxis(gathered.astype(np.float64), -1, 0)
    n = count.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = (count * mean_r).sum(axis=0) / n
        var = (count * (var_r + (mean_r - mean) ** 2)).sum(axis=0) / n
        absmax = np.where(count > 0, absmax_r, -np.inf).max(axis=0)
        zero_frac = (count * zero_r).sum(axis=0) / n
    moments = np.stack([mean, var, absmax, zero_frac], axis=-1)
    moments[n == 0] = np.nan
    return moments, n


def gather(array: np.ndarray, group, device: torch.device) -> np.ndarray:
    """``array`` of every rank of ``group``, stacked: ``(ranks, *array.shape)`` (one all_gather)."""
    tensor = torch.from_numpy(np.ascontiguousarray(array)).to(device)
    parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size(group))]
    dist.all_gather(parts, tensor, group=group)
    return torch.stack(parts).cpu().numpy()


def all_sum(array: np.ndarray, group, device: torch.device) -> np.ndarray:
    """The sum of ``array`` over the ranks of ``group`` (one all_reduce)."""
    tensor = torch.from_numpy(np.ascontiguousarray(array)).to(device)
    dist.all_reduce(tensor, group=group)
    return tensor.cpu().numpy()


def world_size(group) -> int:
    return dist.get_world_size(group)
