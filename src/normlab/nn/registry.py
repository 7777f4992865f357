"""Norms by name, so models take ``norm=`` as data (timm's ``create_norm`` idea).

``create_norm(name, num_features, **kwargs)`` builds a normlab layer over ``num_features`` channels:

=============  ===========================================================================================
name           layer (extra keyword arguments are passed to its constructor)
=============  ===========================================================================================
batchnorm      :class:`BatchNorm1d` for (N, C) / (N, C, L) inputs; ``dim=2`` gives BatchNorm2d (N, C, H, W),
               ``dim=3`` BatchNorm3d. Default ``dim=1``: the MLP case, and the only BatchNorm that takes
               2D input. (BatchNorm normalizes dim 1; a (B, T, C) sequence must be transposed first.)
layernorm      :class:`LayerNorm` over the last dim (``normalized_shape=num_features``)
layernorm2d    :class:`LayerNorm2d`, channels-first LayerNorm for (N, C, *) maps
rmsnorm        :class:`RMSNorm` over the last dim
rmsnorm2d      :class:`RMSNorm2d`, channels-first RMSNorm for (N, C, *) maps
groupnorm      :class:`GroupNorm` with ``num_groups`` (default 32, lowered to the largest divisor of
               ``num_features`` not above it, so ``groupnorm`` works for any width; pass ``num_groups``
               to get an error instead when it does not divide)
instancenorm   :class:`InstanceNorm1d` for (N, C, L); ``dim=2`` / ``dim=3`` for 2D / 3D maps
none           ``torch.nn.Identity`` (accepts and ignores the keyword arguments)
=============  ===========================================================================================
"""

from __future__ import annotations

import torch.nn as tnn

from normlab.nn.batchnorm import BatchNorm1d, BatchNorm2d, BatchNorm3d
from normlab.nn.groupnorm import GroupNorm, InstanceNorm1d, InstanceNorm2d, InstanceNorm3d
from normlab.nn.layernorm import LayerNorm, LayerNorm2d, RMSNorm, RMSNorm2d

NORM_NAMES = ("batchnorm", "layernorm", "layernorm2d", "rmsnorm", "rmsnorm2d", "groupnorm", "instancenorm",
              "none")
_BATCHNORMS = {1: BatchNorm1d, 2: BatchNorm2d, 3: BatchNorm3d}
_INSTANCENORMS = {1: InstanceNorm1d, 2: InstanceNorm2d, 3: InstanceNorm3d}
DEFAULT_GROUPS = 32


def _by_dim(table: dict, name: str, dim) -> type:
    if dim not in table:
        raise ValueError(f"create_norm({name!r}): dim must be one of {sorted(table)}, got {dim!r}")
    return table[dim]


def _default_groups(num_features: int) -> int:
    return max(g for g in range(1, min(DEFAULT_GROUPS, num_features) + 1) if num_features % g == 0)


def create_norm(name: str, num_features: int, **kwargs) -> tnn.Module:
    """Build the norm layer called ``name`` over ``num_features`` channels; see the module docstring.

    Example::

        >>> create_norm("batchnorm", 64, dim=2, momentum=0.99, momentum_convention="keras")
        >>> create_norm("groupnorm", 64, num_groups=8)
    """
    if not isinstance(name, str) or name.lower() not in NORM_NAMES:
        raise ValueError(f"create_norm: unknown norm {name!r}; expected one of {', '.join(NORM_NAMES)}")
    name = name.lower()
    if name == "none":
        return tnn.Identity()
    if name == "batchnorm":
        return _by_dim(_BATCHNORMS, name, kwargs.pop("dim", 1))(num_features, **kwargs)
    if name == "instancenorm":
        return _by_dim(_INSTANCENORMS, name, kwargs.pop("dim", 1))(num_features, **kwargs)
    if name == "groupnorm":
        num_groups = kwargs.pop("num_groups", None)
        if num_groups is None and isinstance(num_features, int) and num_features > 0:
            num_groups = _default_groups(num_features)
        return GroupNorm(num_groups, num_features, **kwargs)
    cls = {"layernorm": LayerNorm, "layernorm2d": LayerNorm2d, "rmsnorm": RMSNorm, "rmsnorm2d": RMSNorm2d}[name]
    return cls(num_features, **kwargs)
