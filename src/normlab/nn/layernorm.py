r"""LayerNorm and RMSNorm (torch.nn drop-ins), and their channels-first twins for NCHW maps.

``LayerNorm`` runs torch's native kernel after normlab's checks. ``RMSNorm`` runs normlab's own fused
autograd function (:func:`normlab.nn.functional.rms_norm`): torch's CPU ``rms_norm`` is a composite of
``pow``, ``mean``, ``rsqrt`` and two ``mul`` whose autograd saves every intermediate; normlab's saves only
the input and one ``rstd`` per row and writes the backward by hand (derivation in
:mod:`normlab.nn.reference`).
"""

from __future__ import annotations

import numbers

import torch
import torch.nn as tnn
import torch.nn.functional as F

from normlab.nn import _script
from normlab.nn import functional as NF
from normlab.nn._fx import is_fx_proxy, traced_as_leaf
from normlab.nn._validate import NormValueError, check_channels, check_eps, check_positive_int


def _as_shape(normalized_shape, where: str) -> tuple[int, ...]:
    shape = (normalized_shape,) if isinstance(normalized_shape, numbers.Integral) else tuple(normalized_shape)
    if len(shape) == 0:
        raise NormValueError(f"{where}: normalized_shape must name at least one dim, got {normalized_shape!r}")
    for size in shape:
        check_positive_int(int(size) if isinstance(size, numbers.Integral) else size, "normalized_shape", where)
    return tuple(int(s) for s in shape)


def _check_channels_first(input: torch.Tensor, num_channels: int, where: str) -> None:
    if isinstance(input, torch.Tensor) and input.dim() >= 2:
        check_channels(input, num_channels, "num_channels", where)


class LayerNorm(_script.Scriptable, tnn.LayerNorm):
    r"""Layer Normalization over the last ``len(normalized_shape)`` dims (drop-in for ``torch.nn.LayerNorm``).

    .. math::
        y = \frac{x - \mathrm{E}[x]}{\sqrt{\mathrm{Var}[x] + \epsilon}} \cdot \gamma + \beta

    Mean and *biased* variance (divide by ``n``) per sample over the normalized dims; the same in train
    and eval (no running statistics). Half-precision inputs accumulate in float32.

    Args:
        normalized_shape: int or sequence, the trailing shape to normalize over, e.g. ``C`` for (B, T, C).
        eps: added to the variance; must be > 0. Default: 1e-5.
        elementwise_affine: learnable ``weight`` (init 1) and ``bias`` (init 0). Default: True.
        bias: learn ``bias`` too (``bias=False``: weight only). Default: True.

    Shape:
        - Input: ``(*, *normalized_shape)``
        - Output: same as input.

    Differences from torch:
        - Large means are recentered: where a row's ``|mean| / std`` exceeds
          ``normlab.nn.functional.RECENTER_RATIO`` (128), torch's float32 mean costs about
          ``|mean| / std * 2**-24`` in every output and gradient (0.04 to 0.26 at mean 1e4, std 1e-2);
          normlab normalizes the input shifted by its detached mean, which gives the float64 result to
          float32 precision (compiled or scripted: shifted by each row's first value, no branch).
        - Bad input raises ``NormValueError``/``NormTypeError`` naming the argument; they derive from
          ``RuntimeError`` too, so code catching torch's error type still catches them. ``eps <= 0`` is
          refused (torch computes with it).

    Example::

        >>> ln = LayerNorm(768)
        >>> y = ln(torch.randn(8, 512, 768))  # (B, T, C)
    """

    def __init__(self, normalized_shape, eps: float = 1e-5, elementwise_affine: bool = True, bias: bool = True,
                 device=None, dtype=None) -> None:
        where = type(self).__name__
        shape = _as_shape(normalized_shape, where)
        check_eps(eps, where)
        super().__init__(shape, eps, elementwise_affine, bias, device, dtype)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_scripting():  # only this branch is compiled (normlab.nn._script)
            return _script.layer_norm(input, list(self.normalized_shape), self.weight, self.bias, self.eps,
                                      self._script_recenter_ratio)
        else:
            return self._eager_forward(input)

    @torch.jit.unused
    def _eager_forward(self, input: torch.Tensor) -> torch.Tensor:
        if is_fx_proxy(input):
            return traced_as_leaf(self, input, super().forward)
        return NF.layer_norm(input, self.normalized_shape, self.weight, self.bias, self.eps)


class RMSNorm(_script.Scriptable, tnn.RMSNorm):
    r"""Root-mean-square normalization (drop-in for ``torch.nn.RMSNorm``).

    .. math::
        y = \frac{x}{\sqrt{\frac{1}{n}\sum_i x_i^2 + \epsilon}} \cdot \gamma

    No mean is subtracted and there is no bias. ``eps=None`` uses ``torch.finfo(x.dtype).eps``, as torch.

    Args:
        normalized_shape: int or sequence, the trailing shape to normalize over.
        eps: added to the mean square; must be > 0 or None. Default: None.
        elementwise_affine: learnable ``weight`` (init 1). Default: True.

    Shape:
        - Input: ``(*, *normalized_shape)``
        - Output: same as input.

    Example::

        >>> rms = RMSNorm(768)
        >>> y = rms(torch.randn(8, 512, 768))
    """

    def __init__(self, normalized_shape, eps: float | None = None, elementwise_affine: bool = True,
                 device=None, dtype=None) -> None:
        where = type(self).__name__
        shape = _as_shape(normalized_shape, where)
        check_eps(eps, where, allow_none=True)
        super().__init__(shape, eps, elementwise_affine, device, dtype)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_scripting():  # torch's composite (normlab's fused autograd Function is Python)
            return F.rms_norm(input, list(self.normalized_shape), self.weight, self.eps)
        else:
            return self._eager_forward(input)

    @torch.jit.unused
    def _eager_forward(self, input: torch.Tensor) -> torch.Tensor:
        if is_fx_proxy(input):
            return traced_as_leaf(self, input, super().forward)
        return NF.rms_norm(input, list(self.normalized_shape), self.weight, self.eps)


class LayerNorm2d(LayerNorm):
    r"""LayerNorm over the channel dim of a channels-first map (N, C, *): each pixel normalized over C.

    The ConvNeXt/timm ``LayerNorm2d``: the same math as :class:`LayerNorm` with ``normalized_shape=C``
    applied at every spatial position. State_dict keys are ``weight`` and ``bias`` of shape (C,).
    A channels_last input is already laid out as (N, H, W, C) in memory, so it costs no copy.

    Args:
        num_channels: C.
        eps, elementwise_affine, bias: as :class:`LayerNorm`.

    Shape:
        - Input: (N, C, *) with at least 2 dims.
        - Output: same as input.

    Differences from torch: as :class:`LayerNorm` (large means recentered; checked input).

    Example::

        >>> ln = LayerNorm2d(64)
        >>> y = ln(torch.randn(2, 64, 56, 56))
    """

    def __init__(self, num_channels: int, eps: float = 1e-5, elementwise_affine: bool = True, bias: bool = True,
                 device=None, dtype=None) -> None:
        check_positive_int(num_channels, "num_channels", type(self).__name__)
        super().__init__(num_channels, eps, elementwise_affine, bias, device, dtype)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_scripting():
            return _script.channels_first_layer_norm(input, self.weight, self.bias, self.eps,
                                                     self._script_recenter_ratio)
        else:
            return self._eager_forward(input)

    @torch.jit.unused
    def _eager_forward(self, input: torch.Tensor) -> torch.Tensor:
        if is_fx_proxy(input):  # movedim: the rank of a Proxy is unknown
            return traced_as_leaf(self, input, lambda x: F.layer_norm(
                x.movedim(1, -1), self.normalized_shape, self.weight, self.bias, self.eps).movedim(-1, 1))
        _check_channels_first(input, self.normalized_shape[0], type(self).__name__)
        return NF.layer_norm_channels_first(input, self.weight, self.bias, self.eps, where=type(self).__name__)


class RMSNorm2d(RMSNorm):
    r"""RMSNorm over the channel dim of a channels-first map (N, C, *): each pixel scaled by its RMS over C.

    .. math::
        y_{n,c,h,w} = \frac{x_{n,c,h,w}}{\sqrt{\frac{1}{C}\sum_{c'} x_{n,c',h,w}^2 + \epsilon}} \cdot \gamma_c

    Args:
        num_channels: C.
        eps, elementwise_affine: as :class:`RMSNorm`.

    Shape:
        - Input: (N, C, *) with at least 2 dims.
        - Output: same as input.

    Example::

        >>> rms = RMSNorm2d(64)
        >>> y = rms(torch.randn(2, 64, 56, 56))
    """

    def __init__(self, num_channels: int, eps: float | None = None, elementwise_affine: bool = True,
                 device=None, dtype=None) -> None:
        check_positive_int(num_channels, "num_channels", type(self).__name__)
        super().__init__(num_channels, eps, elementwise_affine, device, dtype)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_scripting():
            return _script.channels_first_rms_norm(input, self.weight, self.eps)
        else:
            return self._eager_forward(input)

    @torch.jit.unused
    def _eager_forward(self, input: torch.Tensor) -> torch.Tensor:
        if is_fx_proxy(input):
            return traced_as_leaf(self, input, lambda x: F.rms_norm(
                x.movedim(1, -1), self.normalized_shape, self.weight, self.eps).movedim(-1, 1))
        _check_channels_first(input, self.normalized_shape[0], type(self).__name__)
        return NF.rms_norm_channels_first(input, self.weight, self.eps, where=type(self).__name__)
