r"""FrozenBatchNorm2d: BatchNorm2d with fixed statistics and affine parameters (detection backbones)."""

from __future__ import annotations

import torch
import torch.nn as tnn
import torch.nn.functional as F

from normlab.nn import _script
from normlab.nn._fx import is_fx_proxy, traced_as_leaf
from normlab.nn._validate import (
    NormValueError,
    check_channels,
    check_eps,
    check_floating,
    check_ndim,
    check_positive_int,
)


class FrozenBatchNorm2d(_script.Scriptable, tnn.Module):
    r"""BatchNorm2d whose running statistics and affine parameters are buffers, never updated.

    .. math::
        y = \frac{x - \hat\mu}{\sqrt{\hat\sigma^2 + \epsilon}} \cdot \gamma + \beta
          = x \cdot s + (\beta - \hat\mu\, s), \quad s = \gamma / \sqrt{\hat\sigma^2 + \epsilon}

    Train and eval behave the same (BatchNorm2d's eval mode), and nothing receives a gradient but the
    input: fine-tuning with small batches keeps the pretrained statistics. State_dict keys are BatchNorm2d's
    ``weight, bias, running_mean, running_var``; a BatchNorm2d checkpoint loads (its ``num_batches_tracked``
    is ignored).

    Args:
        num_features: C.
        eps: added to the running variance; must be > 0. Default: 1e-5 (BatchNorm2d's).

    Shape:
        - Input: (N, C, H, W)
        - Output: same as input.

    Example::

        >>> frozen = FrozenBatchNorm2d.from_batchnorm(torch.nn.BatchNorm2d(64).eval())
        >>> y = frozen(torch.randn(2, 64, 8, 8))
    """

    def __init__(self, num_features: int, eps: float = 1e-5, device=None, dtype=None) -> None:
        super().__init__()
        where = type(self).__name__
        check_positive_int(num_features, "num_features", where)
        check_eps(eps, where)
        self.num_features = num_features
        self.eps = eps
        factory = {"device": device, "dtype": dtype}
        self.register_buffer("weight", torch.ones(num_features, **factory))
        self.register_buffer("bias", torch.zeros(num_features, **factory))
        self.register_buffer("running_mean", torch.zeros(num_features, **factory))
        self.register_buffer("running_var", torch.ones(num_features, **factory))

    @classmethod
    def from_batchnorm(cls, bn: tnn.modules.batchnorm._BatchNorm) -> FrozenBatchNorm2d:
        """A frozen copy of ``bn`` (its eval-mode function); ``bn`` must track running statistics."""
        if bn.running_mean is None:
            raise NormValueError(
                f"FrozenBatchNorm2d.from_batchnorm: bn must track running statistics, got {bn!r} "
                "with track_running_stats=False"
            )
        frozen = cls(bn.num_features, bn.eps, device=bn.running_mean.device, dtype=bn.running_mean.dtype)
        with torch.no_grad():
            if bn.weight is not None:
                frozen.weight.copy_(bn.weight)
            if bn.bias is not None:
                frozen.bias.copy_(bn.bias)
            frozen.running_mean.copy_(bn.running_mean)
            frozen.running_var.copy_(bn.running_var)
        return frozen

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs) -> None:
        # A BatchNorm2d checkpoint carries num_batches_tracked, which has no meaning once frozen.
        state_dict.pop(prefix + "num_batches_tracked", None)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_scripting():
            return _script.frozen_batch_norm(input, self.weight, self.bias, self.running_mean, self.running_var,
                                             self.eps)
        else:
            return self._eager_forward(input)

    @torch.jit.unused
    def _eager_forward(self, input: torch.Tensor) -> torch.Tensor:
        if is_fx_proxy(input):  # as the root: BatchNorm2d's eval map, reading the buffers when called
            return traced_as_leaf(self, input, lambda x: F.batch_norm(
                x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps))
        where = type(self).__name__
        check_floating(input, where)
        check_ndim(input, (4,), where, "(N, C, H, W)")
        check_channels(input, self.num_features, "num_features", where)
        # Fold into one scale and shift per channel, computed in the buffers' precision (float32 for a
        # float32 model even when the input is half), then cast to the input's dtype.
        scale = self.weight * torch.rsqrt(self.running_var + self.eps)
        shift = self.bias - self.running_mean * scale
        return input * scale.to(input.dtype).view(1, -1, 1, 1) + shift.to(input.dtype).view(1, -1, 1, 1)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}"
