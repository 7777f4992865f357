"""Norms by name, so models take ``norm=`` as data (timm's ``create_norm`` idea).

TEMPORARY: maps to torch.nn until normlab's own layers land (owned by the nn work).
"""

from __future__ import annotations

import torch.nn as tnn

_NAMES = ("batchnorm", "layernorm", "rmsnorm", "groupnorm", "instancenorm", "none")


def create_norm(name: str, num_features: int, **kwargs) -> tnn.Module:
    if name == "batchnorm":
        return tnn.BatchNorm1d(num_features, **kwargs)
    if name == "layernorm":
        return tnn.LayerNorm(num_features, **kwargs)
    if name == "rmsnorm":
        return tnn.RMSNorm(num_features, **kwargs)
    if name == "groupnorm":
        return tnn.GroupNorm(kwargs.pop("num_groups", 32), num_features, **kwargs)
    if name == "instancenorm":
        return tnn.InstanceNorm1d(num_features, **kwargs)
    if name == "none":
        return tnn.Identity()
    raise ValueError(f"create_norm: unknown norm {name!r}; expected one of {', '.join(_NAMES)}")
