r"""GroupNorm and InstanceNorm1d/2d/3d: torch.nn's classes with checked inputs.

InstanceNorm is GroupNorm with one channel per group, plus optional running statistics (as torch's).
Both run torch's native kernels after normlab's checks; the float64 math, forward and backward, is in
:mod:`normlab.nn.reference`.
"""

from __future__ import annotations

import torch
import torch.nn as tnn
import torch.nn.functional as F

from normlab.nn import _script
from normlab.nn import functional as NF
from normlab.nn._fx import is_fx_proxy, traced_as_leaf
from normlab.nn._validate import (
    NormValueError,
    check_eps,
    check_floating,
    check_momentum,
    check_ndim,
    check_positive_int,
)


class GroupNorm(_script.Scriptable, tnn.GroupNorm):
    r"""Group Normalization (drop-in for ``torch.nn.GroupNorm``).

    .. math::
        y = \frac{x - \mathrm{E}[x]}{\sqrt{\mathrm{Var}[x] + \epsilon}} \cdot \gamma + \beta

    The C channels are split into ``num_groups`` groups of ``C / num_groups`` consecutive channels; mean and
    *biased* variance are taken per sample and group, over the group's channels and all spatial positions.
    ``gamma``/``beta`` are per channel. Same in train and eval. ``num_groups=1`` is LayerNorm over (C, *)
    with per-channel affine; ``num_groups=C`` is InstanceNorm.

    Args:
        num_groups: number of groups; must divide ``num_channels``.
        num_channels: C.
        eps: added to the variance; must be > 0. Default: 1e-5.
        affine: learnable per-channel ``weight`` (init 1) and ``bias`` (init 0). Default: True.

    Shape:
        - Input: (N, C, *)
        - Output: same as input.

    Differences from torch:
        - Large means are recentered: where a row's ``|mean| / std`` exceeds
          ``normlab.nn.functional.RECENTER_RATIO`` (128), torch's float32 mean costs about
          ``|mean| / std * 2**-24`` in every output and gradient (0.04 to 0.26 at mean 1e4, std 1e-2);
          normlab normalizes the input shifted by its detached mean, which gives the float64 result to
          float32 precision (compiled or scripted: shifted by each row's first value, no branch).
          torch's own float64 kernel for channels_last inputs loses digits there too (3e-4 at mean 1e6,
          std 1); normlab's recentered float64 result is torch's contiguous one.
        - Bad input raises ``NormValueError``/``NormTypeError`` naming the argument; they derive from
          ``RuntimeError`` too, so code catching torch's error type still catches them. ``eps <= 0`` is
          refused (torch computes with it). A layer built for
          another channel count always raises, also where torch has nothing to notice it with (an
          empty batch; no affine parameters and no running statistics).
        - A single value per group with nothing else to average over (input (1, G), G = num_groups)
          raises ``ValueError`` as torch does (the kernel alone would return beta).

    Example::

        >>> gn = GroupNorm(8, 64)
        >>> y = gn(torch.randn(2, 64, 56, 56))
    """

    def __init__(self, num_groups: int, num_channels: int, eps: float = 1e-5, affine: bool = True,
                 device=None, dtype=None, *, bias: bool = True) -> None:
        where = type(self).__name__
        check_positive_int(num_groups, "num_groups", where)
        check_positive_int(num_channels, "num_channels", where)
        if num_channels % num_groups != 0:
            raise NormValueError(
                f"{where}: num_channels must be divisible by num_groups, got num_channels={num_channels} "
                f"and num_groups={num_groups} (remainder {num_channels % num_groups})"
            )
        check_eps(eps, where)
        super().__init__(num_groups, num_channels, eps, affine, device, dtype, bias=bias)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_scripting():  # only this branch is compiled (normlab.nn._script)
            return _script.group_norm(input, self.num_groups, self.weight, self.bias, self.eps,
                                      self._script_recenter_ratio)
        else:
            return self._eager_forward(input)

    @torch.jit.unused
    def _eager_forward(self, input: torch.Tensor) -> torch.Tensor:
        if is_fx_proxy(input):
            return traced_as_leaf(self, input, super().forward)
        return NF.group_norm(input, self.num_groups, self.weight, self.bias, self.eps,
                             num_channels=self.num_channels, where=type(self).__name__)


class _CheckedInstanceNorm(_script.Scriptable):
    """Checks shared by InstanceNorm1d/2d/3d (a mixin before torch's class, whose forward calls them)."""

    _batched_ndim: int = 0
    _layout: str = ""

    def _init_checks(self, num_features, eps, momentum):
        where = type(self).__name__
        check_positive_int(num_features, "num_features", where)
        check_eps(eps, where)
        check_momentum(momentum, where)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_scripting():  # only this branch is compiled (normlab.nn._script)
            return _script.instance_norm_module(
                input, self._get_no_batch_dim() + 1, self.running_mean, self.running_var, self.weight, self.bias,
                self.training or not self.track_running_stats, self.momentum if self.momentum is not None else 0.0,
                self.eps, self._script_recenter_ratio)
        else:
            return self._eager_forward(input)

    @torch.jit.unused
    def _eager_forward(self, input: torch.Tensor) -> torch.Tensor:
        if is_fx_proxy(input):  # torch's forward reads the input's rank, which a Proxy lacks: batched input
            return traced_as_leaf(self, input, lambda x: F.instance_norm(
                x, self.running_mean, self.running_var, self.weight, self.bias,
                self.training or not self.track_running_stats, self.momentum if self.momentum is not None else 0.0,
                self.eps))
        return super().forward(input)

    def _apply_instance_norm(self, input: torch.Tensor) -> torch.Tensor:
        # torch's forward calls this after _check_input_dim; normlab's functional recenters large means
        return NF.instance_norm(
            input, self.running_mean, self.running_var, self.weight, self.bias,
            self.training or not self.track_running_stats,
            self.momentum if self.momentum is not None else 0.0, self.eps,
        )

    def _check_input_dim(self, input: torch.Tensor) -> None:
        where = type(self).__name__
        check_floating(input, where)
        check_ndim(input, (self._batched_ndim - 1, self._batched_ndim), where, self._layout)
        channel_dim = input.dim() - self._batched_ndim + 1
        # num_features only matters with affine parameters or running statistics; otherwise torch merely
        # warns on a mismatch, and a drop-in keeps that.
        if (self.affine or self.track_running_stats) and input.shape[channel_dim] != self.num_features:
            raise NormValueError(
                f"{where}: input has {input.shape[channel_dim]} channels in dim {channel_dim} "
                f"(shape {tuple(input.shape)}), but the layer was built with num_features={self.num_features}"
            )
        uses_input_stats = self.training or not self.track_running_stats
        spatial = 1
        for size in input.shape[channel_dim + 1:]:
            spatial *= size
        if uses_input_stats and spatial == 1 and input.numel() > 0:
            raise NormValueError(
                f"{where}: needs more than 1 spatial element per channel to estimate the instance variance, "
                f"got input of shape {tuple(input.shape)}"
            )


_IN_DOC = r"""Instance Normalization over a {words} input (drop-in for ``torch.nn.{name}``).

    .. math::
        y = \frac{{x - \mathrm{{E}}[x]}}{{\sqrt{{\mathrm{{Var}}[x] + \epsilon}}}} \cdot \gamma + \beta

    Mean and *biased* variance per sample and channel, over the spatial dims. Defaults as torch:
    ``affine=False``, ``track_running_stats=False``. With ``track_running_stats=True`` the running
    mean/variance (unbiased, averaged over the batch) are updated with ``momentum`` in training and
    used in eval, exactly as torch's.

    Args:
        num_features: C.
        eps: added to the variance; must be > 0. Default: 1e-5.
        momentum: weight of the newest batch in the running statistics. Default: 0.1.
        affine: learnable per-channel ``weight`` and ``bias``. Default: False.
        track_running_stats: keep running statistics. Default: False.

    Shape:
        - Input: {shape}
        - Output: same as input.

    Differences from torch:
        - Large means are recentered: where a row's ``|mean| / std`` exceeds
          ``normlab.nn.functional.RECENTER_RATIO`` (128), torch's float32 mean costs about
          ``|mean| / std * 2**-24`` in every output and gradient (0.04 to 0.26 at mean 1e4, std 1e-2);
          normlab normalizes the input shifted by its detached mean, which gives the float64 result to
          float32 precision (compiled or scripted: shifted by each row's first value, no branch).
          The running statistics are updated from the exact batch statistics too.
        - Bad input raises ``NormValueError``/``NormTypeError`` naming the argument; they derive from
          ``RuntimeError`` too, so code catching torch's error type still catches them. ``eps <= 0`` and a
          momentum outside [0, 1] are refused (torch computes with them). ``num_features`` is checked
          only with affine parameters or running statistics (without them torch merely warns on a
          mismatch, and so does normlab); with them a mismatch raises, even on an empty batch.

    Example::

        >>> norm = {name}(16, affine=True)
        >>> y = norm(torch.randn({example}))
    """


def _make_in_init(torch_cls):
    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1, affine: bool = False,
                 track_running_stats: bool = False, device=None, dtype=None, *, bias: bool = True) -> None:
        self._init_checks(num_features, eps, momentum)
        torch_cls.__init__(self, num_features, eps, momentum, affine, track_running_stats, device, dtype,
                           bias=bias)

    return __init__


class InstanceNorm1d(_CheckedInstanceNorm, tnn.InstanceNorm1d):
    _batched_ndim = 3
    _layout = "(N, C, L) or (C, L)"
    __init__ = _make_in_init(tnn.InstanceNorm1d)


class InstanceNorm2d(_CheckedInstanceNorm, tnn.InstanceNorm2d):
    _batched_ndim = 4
    _layout = "(N, C, H, W) or (C, H, W)"
    __init__ = _make_in_init(tnn.InstanceNorm2d)


class InstanceNorm3d(_CheckedInstanceNorm, tnn.InstanceNorm3d):
    _batched_ndim = 5
    _layout = "(N, C, D, H, W) or (C, D, H, W)"
    __init__ = _make_in_init(tnn.InstanceNorm3d)


InstanceNorm1d.__doc__ = _IN_DOC.format(name="InstanceNorm1d", words="2D or 3D",
                                        shape="(N, C, L) or (C, L)", example="4, 16, 32")
InstanceNorm2d.__doc__ = _IN_DOC.format(name="InstanceNorm2d", words="3D or 4D",
                                        shape="(N, C, H, W) or (C, H, W)", example="4, 16, 8, 8")
InstanceNorm3d.__doc__ = _IN_DOC.format(name="InstanceNorm3d", words="4D or 5D",
                                        shape="(N, C, D, H, W) or (C, D, H, W)", example="2, 16, 4, 8, 8")
