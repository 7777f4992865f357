r"""Reference norms in float64: a few obvious lines forward, and the backward derived by hand (no autograd).

For reading and for tests (the layers must agree with these and with torch). Slow on purpose: every
function casts to float64 and spells out the math. All of them share one idea: each norm reshapes its
input into *rows*, the sets of values that share one mean and variance, then applies per-channel affine.

=================  ============================================  ===========================
norm               one row (one mean/variance)                   weight/bias
=================  ============================================  ===========================
batch_norm         a channel, over N and all spatial positions   per channel (dim 1)
layer_norm         a sample, over the trailing normalized dims   per normalized element
group_norm         a sample and a group of C/G channels + space   per channel (dim 1)
instance_norm      a sample and a channel, over space            per channel (dim 1)
rms_norm           like layer_norm, but no mean is subtracted    per normalized element
=================  ============================================  ===========================

**Standardization, forward.** For a row ``x`` of ``n`` values:

.. math::
    \mu = \tfrac1n \sum_i x_i, \quad \sigma^2 = \tfrac1n \sum_i (x_i-\mu)^2 \ (\text{biased}), \quad
    r = (\sigma^2+\epsilon)^{-1/2}, \quad \hat x_i = (x_i-\mu)\,r, \quad y_i = \gamma_i \hat x_i + \beta_i

**Standardization, backward.** With ``g = dL/dy``: :math:`d\beta = \sum g`, :math:`d\gamma = \sum g\,\hat x`
(sums over everything that shares the parameter), and :math:`h = g\gamma = dL/d\hat x`. Since
:math:`\partial \mu/\partial x_j = 1/n` and :math:`\partial r/\partial x_j = -r^3 (x_j-\mu)/n`,

.. math::
    \frac{\partial \hat x_i}{\partial x_j} = r\,(\delta_{ij} - \tfrac1n) - \tfrac{r}{n}\,\hat x_i \hat x_j
    \quad\Longrightarrow\quad
    dx_j = \sum_i h_i \frac{\partial \hat x_i}{\partial x_j}
         = r\,\Big(h_j - \overline{h} - \hat x_j\,\overline{h\,\hat x}\Big)

where the bars are means over the row. (The ``-1/n`` term is the mean's path; the ``x̂ x̂`` term the
variance's.) RMSNorm drops the mean: :math:`r = (\tfrac1n\sum x^2+\epsilon)^{-1/2}`, :math:`\hat x = x r`,
:math:`\partial \hat x_i/\partial x_j = r\,\delta_{ij} - \tfrac{r^3}{n} x_i x_j`, so
:math:`dx_j = r\,(h_j - \hat x_j\,\overline{h\,\hat x})`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

Tensor = torch.Tensor
F64 = torch.float64


def _f64(t: Tensor | None) -> Tensor | None:
    return None if t is None else t.detach().to(F64)


# --- the shared core: standardize rows of a (R, n) matrix ----------------------------------------------

def standardize(rows: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """Return ``(x_hat, rstd)`` for each row of ``rows`` (R, n): biased variance, eps inside the sqrt."""
    mean = rows.mean(dim=1, keepdim=True)  # (R, 1)
    var = ((rows - mean) ** 2).mean(dim=1, keepdim=True)  # (R, 1), two-pass: no cancellation
    rstd = 1.0 / torch.sqrt(var + eps)
    return (rows - mean) * rstd, rstd


def standardize_backward(h: Tensor, x_hat: Tensor, rstd: Tensor) -> Tensor:
    """``dx = rstd * (h - mean(h) - x_hat * mean(h * x_hat))`` per row, with ``h = dL/dx_hat`` (R, n)."""
    return rstd * (h - h.mean(dim=1, keepdim=True) - x_hat * (h * x_hat).mean(dim=1, keepdim=True))


def _channel_shape(x: Tensor) -> list[int]:
    return [1, x.shape[1]] + [1] * (x.dim() - 2)  # broadcast a (C,) parameter over (N, C, *)


def _affine(x_hat: Tensor, weight: Tensor | None, bias: Tensor | None, shape: Sequence[int]) -> Tensor:
    y = x_hat
    if weight is not None:
        y = y * _f64(weight).reshape(shape)
    if bias is not None:
        y = y + _f64(bias).reshape(shape)
    return y


def _affine_backward(grad: Tensor, x_hat: Tensor, weight: Tensor | None, bias: Tensor | None,
                     shape: Sequence[int]) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """Return ``(h = dL/dx_hat, dweight, dbias)``, summing over every dim the parameter is broadcast on."""
    sum_dims = [d for d in range(grad.dim()) if shape[d] == 1]
    h = grad if weight is None else grad * _f64(weight).reshape(shape)
    dweight = None if weight is None else (grad * x_hat).sum(dim=sum_dims).reshape(weight.shape)
    dbias = None if bias is None else grad.sum(dim=sum_dims).reshape(bias.shape)
    return h, dweight, dbias


# --- BatchNorm (training mode: batch statistics) ------------------------------------------------------

def _bn_rows(x: Tensor) -> Tensor:
    return x.transpose(0, 1).reshape(x.shape[1], -1)  # (C, N * spatial): one row per channel


def _bn_unrows(rows: Tensor, x: Tensor) -> Tensor:
    moved = list(x.transpose(0, 1).shape)
    return rows.reshape(moved).transpose(0, 1)


def batch_norm(x: Tensor, weight: Tensor | None = None, bias: Tensor | None = None, eps: float = 1e-5) -> Tensor:
    """Training-mode BatchNorm of (N, C, *) with the batch's mean and biased variance, in float64."""
    x = _f64(x)
    x_hat, _ = standardize(_bn_rows(x), eps)
    return _affine(_bn_unrows(x_hat, x), weight, bias, _channel_shape(x))


def batch_norm_backward(grad: Tensor, x: Tensor, weight: Tensor | None = None, bias: Tensor | None = None,
                        eps: float = 1e-5) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """``(dx, dweight, dbias)`` of :func:`batch_norm` (the module docstring derives ``dx``)."""
    x, grad = _f64(x), _f64(grad)
    x_hat_rows, rstd = standardize(_bn_rows(x), eps)
    h, dweight, dbias = _affine_backward(grad, _bn_unrows(x_hat_rows, x), weight, bias, _channel_shape(x))
    dx = _bn_unrows(standardize_backward(_bn_rows(h), x_hat_rows, rstd), x)
    return dx, dweight, dbias


def batch_norm_eval(x: Tensor, running_mean: Tensor, running_var: Tensor, weight: Tensor | None = None,
                    bias: Tensor | None = None, eps: float = 1e-5) -> Tensor:
    """Eval-mode BatchNorm: ``(x - running_mean) / sqrt(running_var + eps) * weight + bias``."""
    x = _f64(x)
    shape = _channel_shape(x)
    x_hat = (x - _f64(running_mean).reshape(shape)) / torch.sqrt(_f64(running_var).reshape(shape) + eps)
    return _affine(x_hat, weight, bias, shape)


def running_stats_update(running_mean: Tensor, running_var: Tensor, x: Tensor, momentum: float | None,
                         num_batches_tracked: int) -> tuple[Tensor, Tensor]:
    """One BatchNorm running-statistics step (torch convention), given the count *after* this batch.

    ``running = (1 - m) * running + m * batch``, with ``m = 1 / num_batches_tracked`` when
    ``momentum is None`` (a cumulative average). The variance is the batch's *unbiased* one
    (divide by ``n - 1``), though the batch was normalized with the biased one.
    """
    rows = _bn_rows(_f64(x))
    m = 1.0 / num_batches_tracked if momentum is None else momentum
    batch_mean = rows.mean(dim=1)
    batch_var = rows.var(dim=1, unbiased=True)
    return (1 - m) * _f64(running_mean) + m * batch_mean, (1 - m) * _f64(running_var) + m * batch_var


# --- LayerNorm and RMSNorm ----------------------------------------------------------------------------

def _ln_rows(x: Tensor, normalized_shape: Sequence[int]) -> Tensor:
    return x.reshape(-1, math.prod(normalized_shape))  # (rows, n): one row per sample/position


def layer_norm(x: Tensor, normalized_shape: Sequence[int], weight: Tensor | None = None,
               bias: Tensor | None = None, eps: float = 1e-5) -> Tensor:
    """LayerNorm over the trailing ``normalized_shape`` in float64."""
    x = _f64(x)
    x_hat, _ = standardize(_ln_rows(x, normalized_shape), eps)
    return _affine(x_hat.reshape(x.shape), weight, bias, _trailing_shape(x, normalized_shape))


def _trailing_shape(x: Tensor, normalized_shape: Sequence[int]) -> list[int]:
    return [1] * (x.dim() - len(normalized_shape)) + list(normalized_shape)


def layer_norm_backward(grad: Tensor, x: Tensor, normalized_shape: Sequence[int], weight: Tensor | None = None,
                        bias: Tensor | None = None, eps: float = 1e-5):
    """``(dx, dweight, dbias)`` of :func:`layer_norm`."""
    x, grad = _f64(x), _f64(grad)
    x_hat_rows, rstd = standardize(_ln_rows(x, normalized_shape), eps)
    shape = _trailing_shape(x, normalized_shape)
    h, dweight, dbias = _affine_backward(grad, x_hat_rows.reshape(x.shape), weight, bias, shape)
    dx = standardize_backward(_ln_rows(h, normalized_shape), x_hat_rows, rstd).reshape(x.shape)
    return dx, dweight, dbias


def rms_norm(x: Tensor, normalized_shape: Sequence[int], weight: Tensor | None = None,
             eps: float | None = None) -> Tensor:
    """RMSNorm ``x / sqrt(mean(x**2) + eps) * weight`` in float64; ``eps=None`` is finfo(x.dtype).eps."""
    eps = torch.finfo(x.dtype).eps if eps is None else eps
    x = _f64(x)
    rows = _ln_rows(x, normalized_shape)
    rstd = 1.0 / torch.sqrt((rows**2).mean(dim=1, keepdim=True) + eps)
    return _affine((rows * rstd).reshape(x.shape), weight, None, _trailing_shape(x, normalized_shape))


def rms_norm_backward(grad: Tensor, x: Tensor, normalized_shape: Sequence[int], weight: Tensor | None = None,
                      eps: float | None = None):
    """``(dx, dweight)`` of :func:`rms_norm`: ``dx = rstd * (h - x_hat * mean(h * x_hat))``, ``h = g * w``."""
    eps = torch.finfo(x.dtype).eps if eps is None else eps
    x, grad = _f64(x), _f64(grad)
    rows = _ln_rows(x, normalized_shape)
    rstd = 1.0 / torch.sqrt((rows**2).mean(dim=1, keepdim=True) + eps)
    x_hat_rows = rows * rstd
    shape = _trailing_shape(x, normalized_shape)
    h, dweight, _ = _affine_backward(grad, x_hat_rows.reshape(x.shape), weight, None, shape)
    h_rows = _ln_rows(h, normalized_shape)
    dx = rstd * (h_rows - x_hat_rows * (h_rows * x_hat_rows).mean(dim=1, keepdim=True))
    return dx.reshape(x.shape), dweight


# --- GroupNorm and InstanceNorm -------------------------------------------------------------------------

def group_norm(x: Tensor, num_groups: int, weight: Tensor | None = None, bias: Tensor | None = None,
               eps: float = 1e-5) -> Tensor:
    """GroupNorm of (N, C, *) in float64: rows are (sample, group of C/G consecutive channels + space)."""
    x = _f64(x)
    x_hat, _ = standardize(x.reshape(x.shape[0] * num_groups, -1), eps)
    return _affine(x_hat.reshape(x.shape), weight, bias, _channel_shape(x))


def group_norm_backward(grad: Tensor, x: Tensor, num_groups: int, weight: Tensor | None = None,
                        bias: Tensor | None = None, eps: float = 1e-5):
    """``(dx, dweight, dbias)`` of :func:`group_norm`."""
    x, grad = _f64(x), _f64(grad)
    rows_shape = (x.shape[0] * num_groups, -1)
    x_hat_rows, rstd = standardize(x.reshape(rows_shape), eps)
    h, dweight, dbias = _affine_backward(grad, x_hat_rows.reshape(x.shape), weight, bias, _channel_shape(x))
    dx = standardize_backward(h.reshape(rows_shape), x_hat_rows, rstd).reshape(x.shape)
    return dx, dweight, dbias


def instance_norm(x: Tensor, weight: Tensor | None = None, bias: Tensor | None = None, eps: float = 1e-5) -> Tensor:
    """InstanceNorm of (N, C, *) with input statistics: GroupNorm with one channel per group."""
    return group_norm(x, x.shape[1], weight, bias, eps)


def instance_norm_backward(grad: Tensor, x: Tensor, weight: Tensor | None = None, bias: Tensor | None = None,
                           eps: float = 1e-5):
    """``(dx, dweight, dbias)`` of :func:`instance_norm`."""
    return group_norm_backward(grad, x, x.shape[1], weight, bias, eps)


def instance_running_stats_update(running_mean: Tensor, running_var: Tensor, x: Tensor,
                                  momentum: float) -> tuple[Tensor, Tensor]:
    """InstanceNorm's running statistics step: per-(sample, channel) mean and unbiased variance over space,
    averaged over the batch, then ``(1 - m) * running + m * batch``."""
    x = _f64(x)
    rows = x.reshape(x.shape[0], x.shape[1], -1)
    batch_mean = rows.mean(dim=2).mean(dim=0)
    batch_var = rows.var(dim=2, unbiased=True).mean(dim=0)
    return (1 - momentum) * _f64(running_mean) + momentum * batch_mean, (
        (1 - momentum) * _f64(running_var) + momentum * batch_var
    )
