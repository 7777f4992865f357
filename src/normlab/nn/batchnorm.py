r"""BatchNorm1d/2d/3d: torch.nn's classes with checked inputs and a Keras momentum convention.

The classes subclass ``torch.nn.BatchNorm{1,2,3}d`` so that ``isinstance`` checks, state_dict keys
(``weight, bias, running_mean, running_var, num_batches_tracked``), ``SyncBatchNorm.convert_sync_batchnorm``
and every torch tool that looks for ``_BatchNorm`` keep working. The forward pass runs torch's native kernel
(Welford statistics, float32 accumulation for half inputs) after normlab's own validation; the readable
float64 math, forward and backward, is in :mod:`normlab.nn.reference`.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

import torch
import torch.nn as tnn

from normlab.nn import _script
from normlab.nn import functional as NF
from normlab.nn._fx import is_fx_proxy, traced_as_leaf
from normlab.nn._validate import (
    NormValueError,
    check_channels,
    check_eps,
    check_floating,
    check_momentum,
    check_ndim,
    check_positive_int,
    check_values_per_channel,
)

MomentumConvention = Literal["torch", "keras"]
_CONVENTIONS = ("torch", "keras")


def to_torch_momentum(momentum: float | None, convention: str, where: str = "momentum") -> float | None:
    """Translate a momentum to torch's convention.

    torch:  ``running = (1 - momentum) * running + momentum * batch``  (default 0.1)
    keras:  ``running = momentum * running + (1 - momentum) * batch``  (default 0.99)

    so keras ``m`` equals torch ``1 - m``. ``None`` (cumulative average) means the same in both.
    """
    if convention not in _CONVENTIONS:
        raise NormValueError(f"{where}: momentum_convention must be one of {_CONVENTIONS}, got {convention!r}")
    check_momentum(momentum, where)
    if momentum is None or convention == "torch":
        return momentum
    # Complement in decimal, so keras 0.99 gives torch's 0.01 exactly rather than 0.010000000000000009
    # (an ulp that would make running statistics differ from a torch model built with 0.01).
    return float(Decimal(1) - Decimal(repr(float(momentum))))


class _CheckedBatchNorm(_script.Scriptable):
    """Validation and the Keras convention, shared by the three BatchNorm classes (a mixin before torch's)."""

    _allowed_ndim: tuple[int, ...] = ()
    _layout: str = ""
    __jit_unused_properties__ = ["keras_momentum"]  # noqa: RUF012 (torch.jit.script reads this name)

    def _init_checks(self, num_features, eps, momentum, momentum_convention):
        where = type(self).__name__
        check_positive_int(num_features, "num_features", where)
        check_eps(eps, where)
        return to_torch_momentum(momentum, momentum_convention, where)

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if is_fx_proxy(input):  # torch's forward, traced for a root BatchNorm (see normlab.nn._fx)
            return
        where = type(self).__name__
        check_floating(input, where)
        check_ndim(input, self._allowed_ndim, where, self._layout)
        check_channels(input, self.num_features, "num_features", where)
        uses_batch_stats = self.training or self.running_mean is None
        if uses_batch_stats:
            check_values_per_channel(input, where)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_scripting():  # only this branch is compiled (normlab.nn._script)
            return _script.batch_norm_module(input, self.running_mean, self.running_var, self.weight, self.bias,
                                             self.num_batches_tracked, self.training, self.track_running_stats,
                                             self.momentum, self.eps, self._script_recenter_ratio)
        else:
            return self._eager_forward(input)

    @torch.jit.unused
    def _eager_forward(self, input: torch.Tensor) -> torch.Tensor:
        if is_fx_proxy(input):
            return traced_as_leaf(self, input, super().forward)
        self._check_input_dim(input)
        # torch's semantics (the same steps as torch.nn.modules.batchnorm._BatchNorm.forward), with the
        # normalization done by normlab.nn.functional.batch_norm, which recenters large-mean inputs.
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:  # cumulative moving average
                factor = 1.0 / float(self.num_batches_tracked)
        use_batch_stats = self.training or (self.running_mean is None and self.running_var is None)
        update = not self.training or self.track_running_stats  # buffers passed only to be used or updated
        return NF.batch_norm(
            input,
            self.running_mean if update else None,
            self.running_var if update else None,
            self.weight,
            self.bias,
            use_batch_stats,
            factor,
            self.eps,
        )

    @property
    def keras_momentum(self) -> float | None:
        """The momentum in Keras' convention (``1 - momentum``); None for a cumulative average."""
        return None if self.momentum is None else float(Decimal(1) - Decimal(repr(float(self.momentum))))

    def extra_repr(self) -> str:
        text = super().extra_repr()
        if self.momentum_convention != "torch":
            text += f", momentum_convention={self.momentum_convention!r} (keras momentum={self.keras_momentum})"
        return text


_DOC_TEMPLATE = r"""Batch Normalization over a {shape_words} input (drop-in for ``torch.nn.{name}``).

    .. math::
        y = \frac{{x - \mathrm{{E}}[x]}}{{\sqrt{{\mathrm{{Var}}[x] + \epsilon}}}} \cdot \gamma + \beta

    Mean and variance are per channel (dim 1), over {reduce_words}. In training the batch statistics
    normalize with the *biased* variance (divide by ``n``); the running variance is updated with the
    *unbiased* one (divide by ``n - 1``), as in torch. Running statistics (when ``track_running_stats``):

    .. math::
        \hat{{x}}_{{\text{{new}}}} = (1 - m)\,\hat{{x}} + m\,x_t \quad(\text{{torch convention}})

    and with ``momentum=None`` a cumulative average, ``m = 1 / num_batches_tracked``.
    In eval mode the running statistics normalize (the batch's are used if they are not tracked).

    Args:
        num_features: C, the number of channels.
        eps: added to the variance for numerical stability; must be > 0. Default: 1e-5.
        momentum: weight of the newest batch in the running statistics (torch convention), or the
            weight of the old running value (``momentum_convention="keras"``); None = cumulative
            average. Default: 0.1.
        affine: learnable ``weight`` (gamma, init 1) and ``bias`` (beta, init 0). Default: True.
        track_running_stats: keep ``running_mean``/``running_var``/``num_batches_tracked``. Default: True.
        momentum_convention: ``"torch"`` (default) or ``"keras"``; ``momentum=0.99,
            momentum_convention="keras"`` is torch's ``momentum=0.01``. The stored ``momentum``
            attribute is always in torch's convention, so checkpoints and torch code see torch's value.

    Shape:
        - Input: {shape}
        - Output: same shape as the input (any memory format, e.g. channels_last, is kept).

    Differences from torch:
        - Large means are recentered: where a row's ``|mean| / std`` exceeds
          ``normlab.nn.functional.RECENTER_RATIO`` (128), torch's float32 mean costs about
          ``|mean| / std * 2**-24`` in every output and gradient (0.04 to 0.26 at mean 1e4, std 1e-2);
          normlab normalizes the input shifted by its detached mean, which gives the float64 result to
          float32 precision (compiled or scripted: shifted by each row's first value, no branch).
          The running mean is then updated in float64 from the exact batch mean (torch rounds a float32
          batch mean, a few ulps of |mean| off; momentum 0 leaves it bit-for-bit unchanged).
        - Bad input raises ``NormValueError``/``NormTypeError`` naming the argument; they derive from
          ``RuntimeError`` too, so code catching torch's error type still catches them. ``eps <= 0`` and a
          momentum outside [0, 1] are refused (torch computes with them). A layer built for
          another channel count always raises, also where torch has nothing to notice it with (an
          empty batch; no affine parameters and no running statistics).

    Raises:
        ValueError: eps <= 0, momentum outside [0, 1], wrong number of dims, wrong channel count, or
            training with a single value per channel.
        TypeError: a non-floating input.

    Example::

        >>> bn = {name}(16, momentum=0.99, momentum_convention="keras")
        >>> y = bn(torch.randn({example}))
    """


def _make_init(torch_cls):
    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        device=None,
        dtype=None,
        *,
        bias: bool = True,
        momentum_convention: MomentumConvention = "torch",
    ) -> None:
        torch_momentum = self._init_checks(num_features, eps, momentum, momentum_convention)
        torch_cls.__init__(
            self, num_features, eps, torch_momentum, affine, track_running_stats, device, dtype, bias=bias
        )
        self.momentum_convention = momentum_convention

    return __init__


class BatchNorm1d(_CheckedBatchNorm, tnn.BatchNorm1d):
    _allowed_ndim = (2, 3)
    _layout = "(N, C) or (N, C, L)"
    __init__ = _make_init(tnn.BatchNorm1d)


class BatchNorm2d(_CheckedBatchNorm, tnn.BatchNorm2d):
    _allowed_ndim = (4,)
    _layout = "(N, C, H, W)"
    __init__ = _make_init(tnn.BatchNorm2d)


class BatchNorm3d(_CheckedBatchNorm, tnn.BatchNorm3d):
    _allowed_ndim = (5,)
    _layout = "(N, C, D, H, W)"
    __init__ = _make_init(tnn.BatchNorm3d)


BatchNorm1d.__doc__ = _DOC_TEMPLATE.format(
    name="BatchNorm1d", shape_words="2D or 3D", reduce_words="N (and L)", shape="(N, C) or (N, C, L)",
    example="8, 16",
)
BatchNorm2d.__doc__ = _DOC_TEMPLATE.format(
    name="BatchNorm2d", shape_words="4D", reduce_words="N, H and W", shape="(N, C, H, W)",
    example="8, 16, 5, 5",
)
BatchNorm3d.__doc__ = _DOC_TEMPLATE.format(
    name="BatchNorm3d", shape_words="5D", reduce_words="N, D, H and W", shape="(N, C, D, H, W)",
    example="8, 16, 3, 5, 5",
)
