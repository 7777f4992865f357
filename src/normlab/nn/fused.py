r"""Dropout + residual add + norm as one function: the tail of every Post-LN transformer sublayer.

.. math::
    y = \mathrm{N}\big(r + \mathrm{dropout}_p(x)\big),\qquad
    \mathrm{dropout}_p(x) = x \odot m / (1-p),\quad m_i \sim \mathrm{Bernoulli}(1-p)

The eager composition makes three passes for the dropout and add (draw the mask, ``x*m``, ``*scale``,
``+r``) before the norm. Here the mask multiply, the scale and the add are one ``addcmul`` pass.

Two mask sources (``mask=``):

``"bernoulli"`` (default)
    ``empty_like(x).bernoulli_(1-p)``: the same draw ``torch.nn.functional.dropout`` makes on CPU, so
    under the same RNG state the result equals ``norm(residual + F.dropout(x, p))`` exactly.
``"counter"``
    A counter-based hash of (seed, element index): the mask is a pure function of ``seed``, costs a few
    integer passes instead of a pseudo-random stream, and can be recomputed instead of stored. It is a
    different (but still i.i.d.-looking) mask, so it matches the composition only when the same counter
    mask is used there too (:func:`counter_dropout_mask`). ``p`` is rounded to a multiple of 2^-16 and
    the scale uses the rounded keep rate, so the output stays unbiased.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["counter_drop_probability", "counter_dropout_mask", "dropout_add_norm"]

_NORMS = ("layernorm", "rmsnorm")
_MASKS = ("bernoulli", "counter")

# Constants of a 32-bit integer finalizer (the "lowbias32" hash): multiply-xorshift rounds that spread
# every input bit over the output, so consecutive counters give unrelated masks.
_M1 = 0x7FEB352D
_M2 = 0x846CA68B
_GOLDEN = 0x9E3779B9
_RESOLUTION = 1 << 16  # each 32-bit hash gives two 16-bit draws, so p is rounded to a multiple of 2^-16


def _int32(value: int) -> int:
    """``value`` mod 2^32 as a signed int32 (torch has no uint32 shifts on CPU; int32 arithmetic wraps)."""
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value >= 1 << 31 else value


def counter_drop_probability(p: float) -> float:
    """The drop probability the counter mask actually uses: ``p`` rounded to a multiple of 2^-16."""
    return round(p * _RESOLUTION) / _RESOLUTION


def counter_dropout_mask(shape: torch.Size | tuple[int, ...], p: float, seed: int,
                         device: torch.device | str | None = None) -> Tensor:
    r"""A keep-mask (``bool``, True = keep) that is a pure function of ``(seed, element index)``.

    Hash :math:`j` is the 32-bit lowbias32 finalizer of :math:`j + \mathrm{seed}\cdot\phi` (int32
    arithmetic, logical shifts by masking); its two 16-bit halves decide elements :math:`2j` and
    :math:`2j+1`: keep iff the half, read as an unsigned number, is at least :math:`p \cdot 2^{16}`
    (rounded; see :func:`counter_drop_probability`).
    """
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"counter_dropout_mask: seed must be an int, got {type(seed).__name__}")
    n = math.prod(shape)
    h = torch.arange((n + 1) // 2, dtype=torch.int32, device=device)
    h.add_(_int32(seed * _GOLDEN))
    h.bitwise_xor_((h >> 16) & 0xFFFF).mul_(_int32(_M1))
    h.bitwise_xor_((h >> 15) & 0x1FFFF).mul_(_int32(_M2))
    h.bitwise_xor_((h >> 16) & 0xFFFF)
    halves = h.view(torch.int16)[:n]  # signed view of each 16-bit half: unsigned u = v + 2^15
    threshold = round(p * _RESOLUTION) - (1 << 15)
    return (halves >= threshold).view(shape)


def _check(x: Tensor, residual: Tensor, weight: Tensor | None, bias: Tensor | None, p: float,
           norm: str, mask: str) -> None:
    if not isinstance(x, Tensor) or not isinstance(residual, Tensor):
        raise TypeError("dropout_add_norm: x and residual must be tensors")
    if x.shape != residual.shape:
        raise ValueError(f"dropout_add_norm: x and residual must have the same shape, "
                         f"got {tuple(x.shape)} and {tuple(residual.shape)}")
    if x.dim() == 0:
        raise ValueError("dropout_add_norm: x must have at least one dimension (the normalized one)")
    if not (isinstance(p, (int, float)) and 0.0 <= p <= 1.0):
        raise ValueError(f"dropout_add_norm: p must be a probability in [0, 1], got {p!r}")
    if norm not in _NORMS:
        raise ValueError(f"dropout_add_norm: norm must be one of {_NORMS}, got {norm!r}")
    if mask not in _MASKS:
        raise ValueError(f"dropout_add_norm: mask must be one of {_MASKS}, got {mask!r}")
    features = x.shape[-1]
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None and tuple(t.shape) != (features,):
            raise ValueError(f"dropout_add_norm: {name} must have shape ({features},) to match x's last "
                             f"dimension, got {tuple(t.shape)}")
    if norm == "rmsnorm" and bias is not None:
        raise ValueError("dropout_add_norm: norm='rmsnorm' has no bias (as torch.nn.RMSNorm); pass bias=None")


def dropout_add_norm(
    x: Tensor,
    residual: Tensor,
    weight: Tensor | None,
    bias: Tensor | None,
    *,
    p: float,
    training: bool,
    eps: float = 1e-5,
    norm: Literal["layernorm", "rmsnorm"] = "layernorm",
    generator: torch.Generator | None = None,
    mask: Literal["bernoulli", "counter"] = "bernoulli",
    seed: int | None = None,
) -> Tensor:
    r"""``norm(residual + dropout(x))`` over the last dimension, with one pass for dropout and add.

    Args:
        x: the sublayer's output, :math:`(*, C)`; dropout applies to it.
        residual: the skip path, same shape as ``x``.
        weight, bias: the norm's affine parameters, :math:`(C,)` or ``None`` (``rmsnorm`` has no bias).
        p: drop probability in :math:`[0, 1]`. ``p=1`` drops everything (output ``norm(residual)``).
        training: dropout is applied only when True (as ``F.dropout``).
        eps: the norm's epsilon (added to the biased variance, or to the mean square for ``rmsnorm``).
        norm: ``"layernorm"`` or ``"rmsnorm"``.
        generator: RNG for the ``"bernoulli"`` mask; ``None`` uses the global one (as ``F.dropout``).
        mask: ``"bernoulli"`` (same draw as ``F.dropout``) or ``"counter"`` (hash of ``seed``).
        seed: required for ``mask="counter"``.

    Shape:
        ``x``, ``residual`` and the output: :math:`(*, C)`.

    Example::

        >>> x, r = torch.randn(4, 8), torch.randn(4, 8)
        >>> w, b = torch.ones(8), torch.zeros(8)
        >>> torch.manual_seed(0); fused = dropout_add_norm(x, r, w, b, p=0.1, training=True)
        >>> torch.manual_seed(0); eager = F.layer_norm(r + F.dropout(x, 0.1), (8,), w, b)
        >>> torch.equal(fused, eager)
        True
    """
    _check(x, residual, weight, bias, p, norm, mask)
    if mask == "counter" and training and p > 0 and seed is None:
        raise ValueError("dropout_add_norm: mask='counter' needs seed= (the mask is a function of it)")
    drops_all = p == 1 or (mask == "counter" and counter_drop_probability(p) == 1)
    if not training or p == 0:
        summed = residual + x
    elif drops_all:
        summed = residual + x * 0  # keeps x in the graph (zero gradient), like F.dropout(p=1)
    else:
        keep = 1.0 - p
        if mask == "bernoulli":
            # The draw F.dropout makes on CPU: a float tensor like x filled by bernoulli_(1-p).
            m = torch.empty_like(x).bernoulli_(keep, generator=generator)
        else:
            keep = 1.0 - counter_drop_probability(p)  # the mask's exact keep rate, so E[output] = x
            m = counter_dropout_mask(x.shape, p, seed, device=x.device).to(x.dtype)
        summed = torch.addcmul(residual, x, m, value=1.0 / keep)  # residual + x*m/(1-p) in one pass
    shape = (x.shape[-1],)
    if norm == "layernorm":
        return F.layer_norm(summed, shape, weight, bias, eps)
    return F.rms_norm(summed, shape, weight, eps)
