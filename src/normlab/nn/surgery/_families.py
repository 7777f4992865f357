"""What kind of norm a class is: its family, whether it normalizes a channels-first tensor, its rank.

Surgery needs these three facts to know which conversions keep the meaning of a layer. They are read
from torch's base classes, so torch's and normlab's layers (which subclass torch's) are classified alike;
normlab's channels-first LayerNorm2d/RMSNorm2d subclass the channels-last torch classes, so which classes
are channels-first is read from the norm registry (:mod:`normlab.nn.registry`). Other libraries' norms
(:class:`ForeignNorm`) are added here, and :func:`is_norm_class` answers for all of them.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn as nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.instancenorm import _InstanceNorm

from normlab.nn.frozen import FrozenBatchNorm2d
from normlab.nn.registry import channels_first_trailing_classes
from normlab.nn.surgery.freeze import FrozenBatchNorm

FAMILIES = ("batchnorm", "instancenorm", "groupnorm", "layernorm", "rmsnorm")


@dataclass(frozen=True)
class Family:
    """``kind`` is one of FAMILIES; ``channels_first``: normalizes around dim 1 of (N, C, *) rather than
    the trailing dims; ``rank``: "1d"/"2d"/"3d" when the class accepts only that input rank, else None."""

    kind: str
    channels_first: bool
    rank: str | None


def normlab_class(module_path: str, name: str) -> type | None:
    """``normlab.nn.<module_path>.<name>`` if that layer exists (yet), else None."""
    try:
        return getattr(importlib.import_module(f"normlab.nn.{module_path}"), name, None)
    except ImportError:
        return None


def _rank(cls: type) -> str | None:
    for rank, classes in (
        ("1d", (nn.BatchNorm1d, nn.InstanceNorm1d)),
        ("2d", (nn.BatchNorm2d, nn.InstanceNorm2d)),
        ("3d", (nn.BatchNorm3d, nn.InstanceNorm3d)),
    ):
        if issubclass(cls, classes):
            return rank
    return None


def family_of(cls: type) -> Family | None:
    """The Family of a norm class, or None for anything that is not a known norm."""
    if not isinstance(cls, type):
        return None
    if issubclass(cls, _BatchNorm):
        return Family("batchnorm", True, _rank(cls))
    if issubclass(cls, _InstanceNorm):
        return Family("instancenorm", True, _rank(cls))
    if issubclass(cls, nn.GroupNorm):
        return Family("groupnorm", True, None)
    channels_first_trailing = channels_first_trailing_classes()
    is_channels_first = bool(channels_first_trailing) and issubclass(cls, channels_first_trailing)
    if issubclass(cls, nn.LayerNorm):
        return Family("layernorm", is_channels_first, None)
    if issubclass(cls, nn.RMSNorm):
        return Family("rmsnorm", is_channels_first, None)
    foreign = foreign_norm(cls)
    return foreign.family if foreign is not None else None


# ------------------------------------------------------------------------ norms defined outside torch

@dataclass(frozen=True)
class ForeignNorm:
    """How surgery reads and builds a norm class that does not subclass torch's (e.g. Hugging Face's).

    ``read(module)`` gives the layer's facts under torch's attribute names (``normalized_shape``, ``eps``,
    ``elementwise_affine``...); ``make(cls, kwargs)`` builds one from torch-style constructor arguments
    (None: the class cannot be a conversion target).
    """

    family: Family
    read: Callable[[nn.Module], dict]
    make: Callable[[type, dict], nn.Module] | None = None


def _hf_rms_norm(module: nn.Module) -> dict:
    return {"normalized_shape": tuple(module.weight.shape), "eps": module.variance_epsilon,
            "elementwise_affine": True}


def _make_hf_rms_norm(cls: type, kw: dict) -> nn.Module:
    (hidden,) = kw["normalized_shape"]
    if kw.get("elementwise_affine") is False:
        raise ValueError(f"{cls.__name__} always has a weight; the source RMSNorm has none (elementwise_affine=False)")
    eps = kw.get("eps")
    if eps is None:  # torch's and normlab's RMSNorm: eps=None means finfo(dtype).eps at run time
        eps = torch.finfo(kw.get("dtype") or torch.get_default_dtype()).eps
    return cls(hidden, eps=eps).to(device=kw.get("device"), dtype=kw.get("dtype"))


# Classes known by their full import path, so that surgery understands them without importing their
# package. Only classes whose math is checked to be the family's: Llama's RMSNorm is
# w * x / sqrt(mean(x^2) + eps) over the last dim (Gemma's, w scaled as 1 + w, is *not* and is not here).
_KNOWN_BY_PATH = {
    "transformers.models.llama.modeling_llama.LlamaRMSNorm":
        ForeignNorm(Family("rmsnorm", False, None), _hf_rms_norm, _make_hf_rms_norm),
}
_REGISTERED: dict[type, ForeignNorm] = {}


def register_norm_class(cls: type, kind: str, *, read: Callable[[nn.Module], dict],
                        make: Callable[[type, dict], nn.Module] | None = None,
                        channels_first: bool = False) -> None:
    """Teach surgery a norm class of another library: its family and how to read/build it (see ForeignNorm).

    ``make`` receives torch-style constructor arguments of ``nn.LayerNorm``, ``nn.RMSNorm`` or
    ``nn.GroupNorm`` (by ``kind``); classes of the other kinds can be converted from, not to.
    """
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise TypeError(f"register_norm_class: cls must be an nn.Module subclass, got {cls!r}")
    if kind not in FAMILIES:
        raise ValueError(f"register_norm_class: kind must be one of {FAMILIES}, got {kind!r}")
    _REGISTERED[cls] = ForeignNorm(Family(kind, channels_first, None), read, make)


def foreign_norm(cls: type) -> ForeignNorm | None:
    """The ForeignNorm of a registered or known class (matched exactly, not by subclass), else None."""
    if cls in _REGISTERED:
        return _REGISTERED[cls]
    return _KNOWN_BY_PATH.get(f"{cls.__module__}.{cls.__qualname__}")


def is_norm_class(cls: type) -> bool:
    """Whether ``cls`` is a normalization layer, never decided by its name: by inheritance from torch's
    norm bases (normlab's layers subclass them), the frozen BatchNorms, and other libraries' classes
    known here (``register_norm_class`` and the known-by-path ones such as Hugging Face's LlamaRMSNorm)."""
    if not isinstance(cls, type):
        return False
    return family_of(cls) is not None or issubclass(cls, (FrozenBatchNorm2d, FrozenBatchNorm))
