r"""Functional twins of the normlab layers, with torch.nn.functional's signatures.

Each function checks its inputs (clear errors naming the argument) and then runs torch's native kernel,
except :func:`rms_norm`, which runs normlab's fused autograd function (:class:`_RMSNormFunction`):
one reduction pass and two scaling passes forward, a hand-written backward that saves only ``x`` and one
``rstd`` per row. The derivations are in :mod:`normlab.nn.reference`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch._prims_common import suggest_memory_format  # Tensor.suggest_memory_format(), not bound in Python

from normlab.nn._validate import (
    NormValueError,
    check_eps,
    check_floating,
    check_momentum,
    check_ndim,
    check_positive_int,
    check_trailing_shape,
    check_values_per_channel,
)

__all__ = [
    "batch_norm",
    "dropout_add_norm",
    "group_norm",
    "instance_norm",
    "layer_norm",
    "layer_norm_channels_first",
    "rms_norm",
    "rms_norm_channels_first",
]

_HALF = (torch.float16, torch.bfloat16)


# Recentering. torch's kernels keep the mean in float32 (in the input's dtype for float64). When |mean| is
# large against the spread, that float32 mean is off by a few ulps of |mean|, and the output
# (x - mean) * rstd inherits an error of about ulp(|mean|) * rstd: with mean 1e4 and std 1e-2 that is 0.05,
# and a constant input comes out as +-4e-5 instead of 0. The kernels return their mean and rstd, so the
# risk is measured for free after the fast call; only then is the input shifted by the (detached) mean
# and normalized again. x - mean is exact there (Sterbenz: both are close), the norm is invariant to a
# per-row shift, so the result is the float64 one to float32 precision and gradients are unchanged.
# Cost on ordinary data: one reduction over the per-row statistics, and reading one bool (a host sync on
# a GPU). Setting RECENTER_RATIO = float("inf") turns it off and gives torch's numbers exactly.
#
# Under torch.compile a graph has no data-dependent branch, so there every row is *always* shifted, by its
# first value (detached) rather than its mean: no second pass, and inductor fuses the subtraction into the
# norm's kernel. x - x_0 is exact where it matters (Sterbenz again: in a row with |mean| >> std all values
# are within a factor 2 of each other), and the shifted row's |mean| / std is then a few units, so the
# kernel's float32 mean costs nothing. RECENTER_RATIO = inf turns this off too (torch's numbers).
RECENTER_RATIO = 128.0


def _shift_every_row() -> bool:
    """True under torch.compile (tracing), where the measured branch is replaced by an unconditional shift."""
    return torch.compiler.is_compiling() and not math.isinf(RECENTER_RATIO)


def _first_value(input: torch.Tensor, dims: int) -> torch.Tensor:
    """The first value of ``input`` over its last ``dims`` dims, kept as size-1 dims (detached)."""
    return input[(..., *[slice(0, 1)] * dims)].detach()


def _needs_recentering(mean: torch.Tensor, rstd: torch.Tensor) -> bool:
    if mean.numel() == 0 or math.isinf(RECENTER_RATIO) or torch.compiler.is_compiling():
        return False
    if mean.device.type == "cpu" and mean.dtype in (torch.float32, torch.float64):
        # numpy runs this small reduction on one thread: as torch ops over >32k rows it would be parallel
        # regions, each able to wait a scheduler slice for a descheduled worker on a busy machine
        # fmax skips NaN: a row of NaN (which stays NaN either way) must not turn recentering off for the rest
        ratios = np.abs(mean.detach().numpy() * rstd.detach().numpy())
        return bool(np.fmax.reduce(ratios, axis=None, initial=0.0) > RECENTER_RATIO)
    ratios = (mean.detach() * rstd.detach()).abs()
    return bool(torch.where(ratios.isnan(), 0.0, ratios).amax() > RECENTER_RATIO)


def _batch_norm_batch_stats(input, running_mean, running_var, weight, bias, momentum, eps):
    """Training-mode batch norm (batch statistics), recentered when the batch's mean calls for it.

    The fast call is torch's own (it updates the running statistics in place, as ``F.batch_norm`` does).
    When the batch needs recentering, the running statistics are restored from a copy and the second,
    shifted call updates *fresh* tensors: autograd saves the running buffers it is given, so the buffers
    handed to a call whose output is returned must never change afterwards (changing them made backward
    raise "modified by an inplace operation").
    """
    if _shift_every_row():  # torch.compile: shift by each channel's first value (see RECENTER_RATIO)
        first = input[(slice(0, 1), slice(None), *[slice(0, 1)] * (input.dim() - 2))].detach().reshape(-1)
        saved = None if running_mean is None else (running_mean, running_var)
        return _shifted_batch_norm(input, first, saved, running_mean, running_var, weight, bias, momentum, eps)
    saved = None if running_mean is None else (running_mean.clone(), running_var.clone())
    y, mean, invstd = torch.native_batch_norm(input, weight, bias, running_mean, running_var, True, momentum, eps)
    if not _needs_recentering(mean, invstd):
        return y
    # (C,), float32 (the input's dtype for float64)
    return _shifted_batch_norm(input, mean.detach(), saved, running_mean, running_var, weight, bias, momentum,
                               eps)


def _shifted_batch_norm(input, shift, saved, running_mean, running_var, weight, bias, momentum, eps):
    """Batch norm of ``input - shift`` (per channel); the running statistics become ``saved`` (their values
    before this batch) updated with the batch, without touching any tensor autograd saves."""
    shift = shift.to(input.dtype)  # the shift actually subtracted (rounded to half for half inputs)
    shifted = input - shift.view(1, -1, *[1] * (input.dim() - 2))
    if saved is None:
        return torch.native_batch_norm(shifted, weight, bias, None, None, True, momentum, eps)[0]
    # The kernel's running variance update, (1 - m) * old + m * unbiased var, is shift-invariant, so it
    # runs on the shifted batch; the mean's update is done here in float64 from the exact batch mean
    # shift + mean(shifted), rounded once (momentum 0 then leaves running_mean bit-for-bit unchanged).
    scratch_mean, scratch_var = torch.zeros_like(saved[0]), saved[1].clone()
    y, shifted_mean, _ = torch.native_batch_norm(shifted, weight, bias, scratch_mean, scratch_var, True, momentum,
                                                 eps)
    with torch.no_grad():
        batch_mean = shift.double() + shifted_mean.detach().double()
        running_mean.copy_(saved[0].double() * (1.0 - momentum) + batch_mean * momentum)
        running_var.copy_(scratch_var)
    return y


def _memory_format(x: torch.Tensor) -> torch.memory_format:
    """The layout torch's native kernels expect ``x`` to be dense in: ``Tensor.suggest_memory_format()``.

    That rule reads the strides, not ``is_contiguous(memory_format=...)``: a tensor such as shape
    (1, 4, 1, 5) with strides (1, 1, 4, 4) is channels_last-contiguous, yet the kernel wants it
    contiguous (the rule falls back to NCHW for ambiguous size-1 dims), so asking the first question
    made the kernel raise where ``torch.nn.GroupNorm`` works.
    """
    if x.is_contiguous():  # the common case, without the Python stride walk below
        return torch.contiguous_format
    return suggest_memory_format(x)


def _check_param(t: torch.Tensor | None, name: str, size: int, where: str) -> None:
    if t is not None and t.numel() != size:
        raise NormValueError(f"{where}: {name} must have {size} elements (one per channel), got shape {tuple(t.shape)}")


def _check_per_channel_args(input, ndims, running_mean, running_var, weight, bias, momentum, eps, where) -> None:
    """Shared checks of batch_norm and instance_norm: an (N, C, *) float input, sane eps/momentum, and
    every per-channel tensor of length C."""
    check_floating(input, where)
    check_ndim(input, ndims, where, "(N, C, *)")
    check_eps(eps, where)
    check_momentum(momentum, where)
    channels = input.shape[1]
    for name, t in (("running_mean", running_mean), ("running_var", running_var), ("weight", weight),
                    ("bias", bias)):
        _check_param(t, name, channels, where)


def batch_norm(input: torch.Tensor, running_mean: torch.Tensor | None, running_var: torch.Tensor | None,
               weight: torch.Tensor | None = None, bias: torch.Tensor | None = None, training: bool = False,
               momentum: float = 0.1, eps: float = 1e-5) -> torch.Tensor:
    """Batch normalization over dim 1 of (N, C, *); see :class:`normlab.nn.BatchNorm2d`.

    Differences from torch: a 1D input is refused (``NormValueError``; torch returns an empty 1D input
    unchanged and raises IndexError on any other), and so are ``eps <= 0`` and a momentum outside
    [0, 1], which torch computes with (its own OpInfo samples use ``momentum=-1.2``).
    """
    where = "batch_norm"
    _check_per_channel_args(input, (2, 3, 4, 5), running_mean, running_var, weight, bias, momentum, eps, where)
    if not training and (running_mean is None or running_var is None) and input.numel() > 0:
        # torch's rule: eval needs the running statistics (a module with track_running_stats=False passes
        # training=True); normalizing with the batch's statistics instead would hide the mistake. An empty
        # batch follows torch (an empty output).
        raise NormValueError(
            f"{where}: training=False normalizes with running_mean and running_var, got "
            f"running_mean={'None' if running_mean is None else 'a tensor'} and "
            f"running_var={'None' if running_var is None else 'a tensor'}; pass both, or training=True to "
            "use the batch's statistics"
        )
    if training:
        check_values_per_channel(input, where)
    if not training or input.numel() == 0:
        return F.batch_norm(input, running_mean, running_var, weight, bias, training, momentum, eps)
    return _batch_norm_batch_stats(input, running_mean, running_var, weight, bias, momentum, eps)


def instance_norm(input: torch.Tensor, running_mean: torch.Tensor | None = None,
                  running_var: torch.Tensor | None = None, weight: torch.Tensor | None = None,
                  bias: torch.Tensor | None = None, use_input_stats: bool = True, momentum: float = 0.1,
                  eps: float = 1e-5) -> torch.Tensor:
    """Instance normalization of (N, C, *): per sample and channel; see :class:`normlab.nn.InstanceNorm2d`.

    Differences from torch: ``eps <= 0`` and a momentum outside [0, 1] are refused (``NormValueError``).
    """
    where = "instance_norm"
    _check_per_channel_args(input, (3, 4, 5), running_mean, running_var, weight, bias, momentum, eps, where)
    if use_input_stats and math.prod(input.shape[2:]) == 1:  # torch's rule, empty batches included
        raise NormValueError(
            f"{where}: use_input_stats=True needs more than 1 spatial element per channel to estimate the "
            f"instance variance, got input of shape {tuple(input.shape)}"
        )
    if not use_input_stats or input.numel() == 0:
        return F.instance_norm(input, running_mean, running_var, weight, bias, use_input_stats, momentum, eps)
    # torch's own recipe: instance norm is batch norm of the (1, N*C, *) view, with the per-channel
    # tensors repeated N times and the running statistics averaged back over N.
    n, c = input.shape[:2]
    stats = [None if t is None else t.repeat(n) for t in (running_mean, running_var)]
    y = _batch_norm_batch_stats(
        input.contiguous().view(1, n * c, *input.shape[2:]), *stats,
        None if weight is None else weight.repeat(n), None if bias is None else bias.repeat(n), momentum, eps,
    )
    with torch.no_grad():
        for running, repeated in zip((running_mean, running_var), stats, strict=True):
            if running is not None:
                running.copy_(repeated.view(n, c).mean(0))
    return y.view(input.shape)


def group_norm(input: torch.Tensor, num_groups: int, weight: torch.Tensor | None = None,
               bias: torch.Tensor | None = None, eps: float = 1e-5, *, num_channels: int | None = None,
               where: str = "group_norm") -> torch.Tensor:
    """Group normalization of (N, C, *); see :class:`normlab.nn.GroupNorm`.

    ``num_channels`` (keyword-only, normlab's addition) states the expected C, for a clearer error.
    """
    check_floating(input, where)
    if input.dim() < 2:
        raise NormValueError(f"{where}: expected input (N, C, *) with at least 2 dims, got shape {tuple(input.shape)}")
    check_positive_int(num_groups, "num_groups", where)
    check_eps(eps, where)
    channels = input.shape[1]
    if num_channels is not None and channels != num_channels:
        raise NormValueError(
            f"{where}: input has {channels} channels in dim 1 (shape {tuple(input.shape)}), "
            f"but the layer was built with num_channels={num_channels}"
        )
    if channels % num_groups != 0:
        raise NormValueError(
            f"{where}: the input's channel count must be divisible by num_groups, got {channels} channels "
            f"and num_groups={num_groups}"
        )
    _check_param(weight, "weight", channels, where)
    _check_param(bias, "bias", channels, where)
    n = input.shape[0]
    if input.numel() == num_groups:
        # torch's rule (F.group_norm): one value per group and nothing else to average over (N=1,
        # C=num_groups, no spatial extent) is 0/0 by design; the kernel alone would return beta
        raise NormValueError(
            f"{where}: expected more than 1 value per group, got input of shape {tuple(input.shape)} with "
            f"num_groups={num_groups} (one value in each group)"
        )
    if input.numel() == 0:
        return F.group_norm(input, num_groups, weight, bias, eps)
    if _shift_every_row():
        return _group_norm_compiled(input, num_groups, weight, bias, eps)
    # the native kernel wants the input dense in its own memory format (channels_last stays channels_last)
    dense = input.contiguous(memory_format=_memory_format(input))
    y, mean, rstd = torch.native_group_norm(dense, weight, bias, n, channels, input.numel() // (n * channels),
                                            num_groups, eps)
    if _needs_recentering(mean, rstd):
        shift = mean.detach().to(input.dtype).repeat_interleave(channels // num_groups, dim=1)  # (N, C)
        y = F.group_norm(input - shift.view(n, channels, *[1] * (input.dim() - 2)), num_groups, weight, bias, eps)
    return y


def _group_norm_compiled(input, num_groups, weight, bias, eps):
    """torch.compile's path: every group shifted by its first value (see RECENTER_RATIO)."""
    grouped = input.reshape(input.shape[0], num_groups, -1)
    shifted = (grouped - _first_value(grouped, 1)).reshape(input.shape)
    return F.group_norm(shifted, num_groups, weight, bias, eps)


def layer_norm(input: torch.Tensor, normalized_shape: Sequence[int], weight: torch.Tensor | None = None,
               bias: torch.Tensor | None = None, eps: float = 1e-5) -> torch.Tensor:
    """Layer normalization over the trailing ``normalized_shape``; see :class:`normlab.nn.LayerNorm`.

    Differences from torch: ``eps <= 0`` is refused (``NormValueError``; torch takes a square root of
    ``var + eps``, nan once negative).
    """
    where = "layer_norm"
    check_floating(input, where)
    check_trailing_shape(input, normalized_shape, where)
    check_eps(eps, where)
    return _layer_norm(input, list(normalized_shape), weight, bias, eps)


def _layer_norm(input, normalized_shape, weight, bias, eps):
    if input.numel() == 0:
        return F.layer_norm(input, normalized_shape, weight, bias, eps)
    if _shift_every_row():  # torch.compile: shift every row by its first value (see RECENTER_RATIO)
        return F.layer_norm(input - _first_value(input, len(normalized_shape)), normalized_shape, weight, bias, eps)
    y, mean, rstd = torch.native_layer_norm(input, normalized_shape, weight, bias, eps)
    if _needs_recentering(mean, rstd):
        y = F.layer_norm(input - mean.detach().to(input.dtype), normalized_shape, weight, bias, eps)
    return y


class _RMSNormFunction(torch.autograd.Function):
    r"""RMSNorm over the last dim of a (M, n) matrix, forward and backward written out.

    Forward: ``rstd = 1 / sqrt(sum(x**2) / n + eps)`` per row (one pass, ``vector_norm``),
    ``y = x * rstd * w`` (one pass writing y, then an in-place scale).

    Backward, with ``g = dL/dy`` and ``gw = g * w`` (derived in :func:`normlab.nn.reference.rms_norm_backward`):

    .. math::
        dx = rstd \cdot \Big(gw - x \cdot \frac{rstd^2}{n} \sum_j gw_j x_j\Big), \qquad
        dw = \sum_{rows} g \cdot x \cdot rstd

    Only ``x`` and ``rstd`` are saved (torch's composite saves ``x**2``, the normalized ``x`` and more).
    The backward is itself differentiable when the graph is kept (``create_graph=True``), so double
    backward (gradient penalties) still works; it then uses out-of-place ops.
    """

    @staticmethod
    def forward(ctx, x2d: torch.Tensor, weight: torch.Tensor | None, eps: float) -> torch.Tensor:
        n = x2d.shape[-1]
        # vector_norm accumulates in float32 for half inputs (we pass float32 here anyway) and makes no
        # squared copy of x.
        norm = torch.linalg.vector_norm(x2d, dim=-1, keepdim=True)  # (M, 1)
        rstd = torch.addcmul(norm.new_full((), eps), norm, norm, value=1.0 / n).rsqrt_()  # (eps + |x|^2/n)^-1/2
        y = torch.mul(x2d, rstd)  # (M, n)
        if weight is not None:
            y.mul_(weight)
        ctx.save_for_backward(x2d, weight, rstd)
        ctx.eps = eps
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x2d, weight, rstd = ctx.saved_tensors
        return _rms_norm_backward(grad, x2d, weight, rstd, ctx.eps, ctx.needs_input_grad[0],
                                  ctx.needs_input_grad[1])


def _rms_norm_backward(grad, x2d, weight, rstd, eps: float, need_dx: bool, need_dw: bool):
    n = x2d.shape[-1]
    differentiable = torch.is_grad_enabled()  # True only under create_graph=True
    if differentiable:
        # For double backward rstd must depend on x in the graph: recompute it with differentiable ops.
        rstd = (x2d.square().mean(-1, keepdim=True) + eps).rsqrt()
    dx = dw = None
    if differentiable:
        if need_dw and weight is not None:
            dw = (grad * x2d * rstd).sum(0)
        if need_dx:
            gw = grad * weight if weight is not None else grad
            dot = (gw * x2d).sum(-1, keepdim=True)
            dx = (gw - x2d * (dot * rstd.square() / n)) * rstd
        return dx, dw, None
    # One elementwise product g*x serves both sums, each a matrix-vector product (BLAS):
    #   dw_j = sum_i rstd_i g_ij x_ij = (rstd^T (g*x))_j,   dot_i = sum_j g_ij w_j x_ij = ((g*x) w)_i
    gx = grad * x2d  # (M, n)
    if need_dw and weight is not None:
        dw = torch.mv(gx.t(), rstd.view(-1))  # (n,)
    if need_dx:
        dot = torch.mv(gx, weight) if weight is not None else gx.sum(-1)  # (M,)
        coef = dot.unsqueeze(-1).mul_(rstd.square()).div_(-n)  # (M, 1)
        dx = torch.mul(grad, weight) if weight is not None else grad.clone()  # gw, (M, n)
        dx.addcmul_(x2d, coef).mul_(rstd)  # (gw + x * coef) * rstd, in place: no further temporaries
    return dx, dw, None


def rms_norm(input: torch.Tensor, normalized_shape: Sequence[int], weight: torch.Tensor | None = None,
             eps: float | None = None) -> torch.Tensor:
    """RMS normalization over the trailing ``normalized_shape``; see :class:`normlab.nn.RMSNorm`.

    Half-precision inputs are computed in float32 and returned in their own dtype. Differences from
    torch: ``eps <= 0`` is refused (``NormValueError``).
    """
    where = "rms_norm"
    check_floating(input, where)
    check_trailing_shape(input, normalized_shape, where)
    check_eps(eps, where, allow_none=True)
    if eps is None:
        eps = torch.finfo(input.dtype).eps  # torch's rule
    n = math.prod(normalized_shape)
    if weight is not None and weight.numel() != n:
        raise NormValueError(f"{where}: weight must have shape {tuple(normalized_shape)}, got {tuple(weight.shape)}")
    compute_dtype = torch.float32 if input.dtype in _HALF else input.dtype
    x2d = input.reshape(-1, n).to(compute_dtype)
    w = None if weight is None else weight.reshape(n).to(compute_dtype)
    if x2d.shape[0] == 0:
        y = x2d * (w if w is not None else 1.0)  # empty, but keeps the graph connected to weight
    else:
        y = _RMSNormFunction.apply(x2d, w, eps)
    return y.to(input.dtype).view(input.shape)


def _channels_last_view(input: torch.Tensor, where: str) -> tuple[torch.Tensor, list[int]]:
    if input.dim() < 2:
        raise NormValueError(f"{where}: expected input (N, C, *) with at least 2 dims, got shape {tuple(input.shape)}")
    order = [0, *range(2, input.dim()), 1]  # (N, *, C): channels last, so C is the normalized dim
    inverse = [0, input.dim() - 1, *range(1, input.dim() - 1)]
    return input.permute(order), inverse


def layer_norm_channels_first(input: torch.Tensor, weight: torch.Tensor | None = None,
                              bias: torch.Tensor | None = None, eps: float = 1e-5, *,
                              where: str = "layer_norm_channels_first") -> torch.Tensor:
    """LayerNorm over dim 1 of (N, C, *) at every position (ConvNeXt's LayerNorm2d)."""
    check_floating(input, where)
    moved, inverse = _channels_last_view(input, where)
    c = moved.shape[-1]
    _check_param(weight, "weight", c, where)
    check_eps(eps, where)
    return _layer_norm(moved, [c], weight, bias, eps).permute(inverse)


def rms_norm_channels_first(input: torch.Tensor, weight: torch.Tensor | None = None, eps: float | None = None,
                            *, where: str = "rms_norm_channels_first") -> torch.Tensor:
    """RMSNorm over dim 1 of (N, C, *) at every position."""
    check_floating(input, where)
    moved, inverse = _channels_last_view(input, where)
    c = moved.shape[-1]
    _check_param(weight, "weight", c, where)
    return rms_norm(moved, [c], weight, eps).permute(inverse)


# The fused "dropout + residual add + norm" lives in its own file (one concept per file); it is part of
# the functional API, so it is re-exported here. Imported last: fused.py only needs torch.
from normlab.nn.fused import dropout_add_norm  # noqa: E402
