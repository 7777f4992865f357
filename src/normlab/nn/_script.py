"""The layers' math in TorchScript, for ``torch.jit.script``: torch's kernels plus normlab's recentering.

``torch.jit.script`` compiles a module's ``forward``. normlab's eager forward cannot be compiled (its input
checks build messages from Python objects, the recentering test reads a numpy array, torch.fx and
torch.compile hooks), so each layer's forward starts with ``if torch.jit.is_scripting():`` and calls the
function here; TorchScript compiles only that branch.

Under script the layers recenter as under torch.compile: every row is shifted by its first value
(detached) before torch's kernel, with no data-dependent branch (TorchScript's autodiff fails on a branch
that reads the batch-norm kernel's saved statistics: "Schema not found for node ... prim::IfThenElse").
That costs one elementwise pass more than eager. Running statistics are updated as eagerly (the shift
added back in float64). What the scripted layers leave out is normlab's input checks: a bad input gets
the error of torch's kernel. ``ratio`` is ``normlab.nn.functional.RECENTER_RATIO`` as read when the module
was scripted (TorchScript cannot read a module-level float); ``inf`` gives torch's numbers.
"""

# TorchScript's type resolver wants typing.List/Optional and no star-unpacking in list displays:
# ruff: noqa: UP006, UP035, UP045, RUF005

from __future__ import annotations

from typing import List, Optional

import torch
import torch.nn.functional as F

Tensor = torch.Tensor


def _shifted_rows(rows: Tensor, ratio: float) -> Tensor:
    """``rows`` (R, n) minus each row's first value, detached (nothing when recentering is off)."""
    if ratio == float("inf") or rows.numel() == 0:
        return rows
    return rows - rows[:, :1].detach()


def layer_norm(x: Tensor, shape: List[int], weight: Optional[Tensor], bias: Optional[Tensor], eps: float,
               ratio: float) -> Tensor:
    n = 1
    for size in shape:
        n *= size
    return F.layer_norm(_shifted_rows(x.reshape(-1, n), ratio).reshape(x.shape), shape, weight, bias, eps)


def group_norm(x: Tensor, groups: int, weight: Optional[Tensor], bias: Optional[Tensor], eps: float,
               ratio: float) -> Tensor:
    if x.numel() == 0:
        return F.group_norm(x, groups, weight, bias, eps)
    shifted = _shifted_rows(x.reshape(x.shape[0] * groups, -1), ratio).reshape(x.shape)
    return F.group_norm(shifted, groups, weight, bias, eps)


def _batch_stats(x: Tensor, running_mean: Optional[Tensor], running_var: Optional[Tensor], weight: Optional[Tensor],
                 bias: Optional[Tensor], momentum: float, eps: float, ratio: float) -> Tensor:
    """Training batch norm of ``x`` shifted per channel by its first value; the running mean gets the
    shift back (in float64), and the buffers autograd saves are scratch tensors, never changed after."""
    if ratio == float("inf") or x.numel() == 0:
        return F.batch_norm(x, running_mean, running_var, weight, bias, True, momentum, eps)
    c = x.shape[1]
    shift = x[0].reshape(c, -1)[:, 0].detach()  # (C,)
    shifted = x - shift.view([1, c] + [1] * (x.dim() - 2))
    if running_mean is None or running_var is None:
        return F.batch_norm(shifted, None, None, weight, bias, True, momentum, eps)
    # the kernel leaves (1 - m) * 0 + m * mean(shifted) in scratch_mean, and the (shift-invariant)
    # variance update in scratch_var
    scratch_mean, scratch_var = torch.zeros_like(running_mean), running_var.clone()
    y = F.batch_norm(shifted, scratch_mean, scratch_var, weight, bias, True, momentum, eps)
    with torch.no_grad():
        running_mean.copy_(running_mean.double() * (1.0 - momentum) + shift.double() * momentum
                           + scratch_mean.double())
        running_var.copy_(scratch_var)
    return y


def batch_norm_module(x: Tensor, running_mean: Optional[Tensor], running_var: Optional[Tensor],
                      weight: Optional[Tensor], bias: Optional[Tensor], num_batches_tracked: Optional[Tensor],
                      training: bool, track_running_stats: bool, momentum: Optional[float], eps: float,
                      ratio: float) -> Tensor:
    """BatchNorm's forward (torch's steps, as normlab.nn.batchnorm._CheckedBatchNorm.forward)."""
    factor = 0.0 if momentum is None else momentum
    if training and track_running_stats and num_batches_tracked is not None:
        num_batches_tracked.add_(1)
        if momentum is None:
            factor = 1.0 / float(num_batches_tracked)
    use_batch_stats = training or (running_mean is None and running_var is None)
    update = not training or track_running_stats
    mean = running_mean if update else None
    var = running_var if update else None
    if not use_batch_stats or x.numel() == 0:
        return F.batch_norm(x, mean, var, weight, bias, use_batch_stats, factor, eps)
    return _batch_stats(x, mean, var, weight, bias, factor, eps, ratio)


def instance_norm_module(x: Tensor, batched_ndim: int, running_mean: Optional[Tensor],
                         running_var: Optional[Tensor], weight: Optional[Tensor], bias: Optional[Tensor],
                         use_input_stats: bool, momentum: float, eps: float, ratio: float) -> Tensor:
    """InstanceNorm's forward: batch norm of the (1, N*C, *) view, as normlab.nn.functional.instance_norm."""
    unbatched = x.dim() == batched_ndim - 1
    if unbatched:
        x = x.unsqueeze(0)
    n, c = x.shape[0], x.shape[1]
    if not use_input_stats or x.numel() == 0:
        y = F.instance_norm(x, running_mean, running_var, weight, bias, use_input_stats, momentum, eps)
    else:
        mean = None if running_mean is None else running_mean.repeat(n)
        var = None if running_var is None else running_var.repeat(n)
        w = None if weight is None else weight.repeat(n)
        b = None if bias is None else bias.repeat(n)
        y = _batch_stats(x.contiguous().view([1, n * c] + x.shape[2:]), mean, var, w, b, momentum, eps, ratio)
        y = y.view(x.shape)
        with torch.no_grad():
            if running_mean is not None and mean is not None:
                running_mean.copy_(mean.view(n, c).mean(0))
            if running_var is not None and var is not None:
                running_var.copy_(var.view(n, c).mean(0))
    return y.squeeze(0) if unbatched else y


def channels_first_layer_norm(x: Tensor, weight: Optional[Tensor], bias: Optional[Tensor], eps: float,
                              ratio: float) -> Tensor:
    return layer_norm(x.movedim(1, -1), [x.shape[1]], weight, bias, eps, ratio).movedim(-1, 1)


def channels_first_rms_norm(x: Tensor, weight: Optional[Tensor], eps: Optional[float]) -> Tensor:
    return F.rms_norm(x.movedim(1, -1), [x.shape[1]], weight, eps).movedim(-1, 1)


def frozen_batch_norm(x: Tensor, weight: Tensor, bias: Tensor, running_mean: Tensor, running_var: Tensor,
                      eps: float) -> Tensor:
    scale = weight * torch.rsqrt(running_var + eps)
    shift = bias - running_mean * scale
    return x * scale.to(x.dtype).view(1, -1, 1, 1) + shift.to(x.dtype).view(1, -1, 1, 1)


class Scriptable:
    """Mixin of every normlab layer: ``torch.jit.script`` calls ``__prepare_scriptable__`` on each module
    first; here it records the recentering threshold for the scripted forward (see the module docstring)."""

    def __prepare_scriptable__(self):
        from normlab.nn import functional  # the layers import this module; functional does not

        self._script_recenter_ratio = float(functional.RECENTER_RATIO)
        return self
