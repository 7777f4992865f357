"""Input checks shared by the layers: each error names the argument, what was expected and what was given.

torch's own messages for these cases are often a shape mismatch deep inside a kernel
("running_mean should contain 3 elements not 4"); here the check runs first and says which
argument of which layer is wrong.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


class NormValueError(ValueError, RuntimeError):
    """A bad argument or input of a normlab layer, named in the message.

    Both a ``ValueError`` (what it is) and a ``RuntimeError``: torch's kernels raise RuntimeError for most
    of these inputs (a wrong channel count: "running_mean should contain 3 elements not 4") and
    ``ValueError`` for some, so code written against torch.nn catches normlab's error with either.
    """


class NormTypeError(TypeError, RuntimeError):
    """A non-tensor or non-floating input (torch's kernels raise RuntimeError: "not implemented for 'Long'")."""


def check_eps(eps: float | None, where: str, allow_none: bool = False) -> None:
    """``eps`` must be a finite positive number (it keeps ``1/sqrt(var + eps)`` finite for constant input)."""
    if eps is None and allow_none:
        return
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps > 0 or eps == float("inf"):
        raise NormValueError(f"{where}: eps must be a finite number > 0, got {eps!r}")


def check_positive_int(value: int, name: str, where: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise NormValueError(f"{where}: {name} must be a positive int, got {value!r}")


def check_momentum(momentum: float | None, where: str) -> None:
    if momentum is None:
        return
    if isinstance(momentum, bool) or not isinstance(momentum, (int, float)) or not 0.0 <= momentum <= 1.0:
        raise NormValueError(f"{where}: momentum must be a number in [0, 1] or None, got {momentum!r}")


def check_floating(x: torch.Tensor, where: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise NormTypeError(f"{where}: input must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise NormTypeError(
            f"{where}: input must have a floating dtype (float16, bfloat16, float32, float64), got {x.dtype}"
        )


def check_ndim(x: torch.Tensor, allowed: Sequence[int], where: str, layout: str) -> None:
    if x.dim() not in allowed:
        expected = " or ".join(f"{d}D" for d in allowed)
        raise NormValueError(f"{where}: expected {expected} input {layout}, got {x.dim()}D input of shape {tuple(x.shape)}")


def check_channels(x: torch.Tensor, expected: int, name: str, where: str) -> None:
    """Dimension 1 is the channel dimension (N, C, ...) for BatchNorm, GroupNorm and InstanceNorm."""
    if x.shape[1] != expected:
        raise NormValueError(
            f"{where}: input has {x.shape[1]} channels in dim 1 (shape {tuple(x.shape)}), "
            f"but the layer was built with {name}={expected}"
        )


def check_trailing_shape(x: torch.Tensor, normalized_shape: Sequence[int], where: str) -> None:
    """The last ``len(normalized_shape)`` dims of ``x`` must equal ``normalized_shape`` (LayerNorm, RMSNorm)."""
    k = len(normalized_shape)
    if k == 0:
        raise NormValueError(f"{where}: normalized_shape must name at least one dim, got {tuple(normalized_shape)}")
    if x.dim() < k or tuple(x.shape[x.dim() - k :]) != tuple(normalized_shape):
        raise NormValueError(
            f"{where}: normalized_shape={tuple(normalized_shape)} must match the last {k} dim(s) of the input, "
            f"got input of shape {tuple(x.shape)}"
        )


def check_values_per_channel(x: torch.Tensor, where: str) -> None:
    """Training BatchNorm needs more than one value per channel, or the batch variance is 0/0 by design."""
    if x.numel() == 0:
        return  # empty batches follow torch (an empty output); nothing is estimated
    per_channel = x.numel() // x.shape[1]
    if per_channel <= 1:
        raise NormValueError(
            f"{where}: training mode needs more than 1 value per channel to estimate the batch variance, "
            f"got input of shape {tuple(x.shape)} ({per_channel} value per channel); "
            "use a larger batch or call .eval()"
        )
