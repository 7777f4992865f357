"""The one norm registry: names -> layers, and classes -> what kind of norm they are.

Models take ``norm=`` as data (timm's ``create_norm`` / ``get_norm_layer`` idea). Every reader of "what
norms exist" asks this module: :func:`create_norm` and :func:`get_norm_layer` (by name), the surgery's
families (which classes are channels-first; they add other libraries' classes and answer
:func:`normlab.nn.surgery.is_norm_class`, which the probe asks for its ``norm_in``/``norm_out`` rows), ``lab.cnn`` (its arms are registry names) and ``lab.ensemble`` (which
stacked twin a layer gets).

``get_norm_layer(name)`` returns a class or a ``functools.partial``, always called as
``layer(num_features, **kwargs)`` (the classes themselves where the name is one class; ``layernorm-chw`` is
``partial(GroupNorm, 1)``; ``batchnorm``/``instancenorm`` (``dim=``), ``groupnorm`` (default groups) and
``none`` are partials of small builders); ``create_norm(name, num_features, **kwargs)`` builds one:

=================  ========================================================================================
name               layer (extra keyword arguments are passed to its constructor)
=================  ========================================================================================
batchnorm          :class:`BatchNorm1d` for (N, C) / (N, C, L) inputs; ``dim=2`` gives BatchNorm2d (N, C, H, W),
                   ``dim=3`` BatchNorm3d. Default ``dim=1``: the MLP case, and the only BatchNorm that takes
                   2D input. (BatchNorm normalizes dim 1; a (B, T, C) sequence must be transposed first.)
batchnorm1d/2d/3d  :class:`BatchNorm1d` / :class:`BatchNorm2d` / :class:`BatchNorm3d`
frozenbatchnorm2d  :class:`FrozenBatchNorm2d` (fixed statistics and affine)
syncbatchnorm      :class:`SyncBatchNorm` (N, C, *): statistics of the batch over all ranks of a process group
                   (``process_group=``), on CPU/gloo too; BatchNorm outside one
layernorm          :class:`LayerNorm` over the last dim (``normalized_shape=num_features``)
layernorm2d        :class:`LayerNorm2d`, channels-first LayerNorm for (N, C, *) maps: each pixel over C
                   (ConvNeXt's)
layernorm-chw      LayerNorm of a whole (C, H, W) map per sample, built as ``GroupNorm(1, C)`` (Wu & He's
                   *Group Normalization*, Fig. 2): the numbers of ``LayerNorm((C, H, W))`` with a per-channel
                   affine, for any H, W. ``partial(GroupNorm, 1)``
rmsnorm            :class:`RMSNorm` over the last dim
rmsnorm2d          :class:`RMSNorm2d`, channels-first RMSNorm for (N, C, *) maps
groupnorm          :class:`GroupNorm` with ``num_groups`` (default 32, lowered to the largest divisor of
                   ``num_features`` not above it, so ``groupnorm`` works for any width; pass ``num_groups``
                   to get an error instead when it does not divide)
instancenorm       :class:`InstanceNorm1d` for (N, C, L); ``dim=2`` / ``dim=3`` for 2D / 3D maps
instancenorm1d/2d  :class:`InstanceNorm1d` / :class:`InstanceNorm2d` / :class:`InstanceNorm3d`
/3d
none               ``torch.nn.Identity`` (accepts and ignores the keyword arguments)
=================  ========================================================================================

Classes: :func:`class_facts` gives the :class:`NormClass` (family, channels-first, stacked twin) of a
registered class, matched exactly (a subclass may change ``forward``). Whether any class is a norm is
:func:`normlab.nn.surgery.is_norm_class`: surgery adds the classes of other libraries to this table's.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import torch.nn as tnn

from normlab.nn.batchnorm import BatchNorm1d, BatchNorm2d, BatchNorm3d
from normlab.nn.frozen import FrozenBatchNorm2d
from normlab.nn.groupnorm import GroupNorm, InstanceNorm1d, InstanceNorm2d, InstanceNorm3d
from normlab.nn.layernorm import LayerNorm, LayerNorm2d, RMSNorm, RMSNorm2d
from normlab.nn.sync_batchnorm import SyncBatchNorm

_BATCHNORMS = {1: BatchNorm1d, 2: BatchNorm2d, 3: BatchNorm3d}
_INSTANCENORMS = {1: InstanceNorm1d, 2: InstanceNorm2d, 3: InstanceNorm3d}
DEFAULT_GROUPS = 32


# ------------------------------------------------------------------------------------------ classes

@dataclass(frozen=True)
class NormClass:
    """What a norm class is. ``family``: batchnorm, instancenorm, groupnorm, layernorm or rmsnorm;
    ``channels_first``: normalizes around dim 1 of (N, C, *) rather than over the trailing dims;
    ``stacked``: the kind of stacked twin ``lab.ensemble`` builds for it ("layernorm", "rmsnorm"), None
    when it has none (the ensemble then falls back to vmap)."""

    family: str
    channels_first: bool
    stacked: str | None = None


_CLASSES: dict[type, NormClass] = {
    tnn.LayerNorm: NormClass("layernorm", False, "layernorm"),
    tnn.RMSNorm: NormClass("rmsnorm", False, "rmsnorm"),
    LayerNorm: NormClass("layernorm", False, "layernorm"),
    RMSNorm: NormClass("rmsnorm", False, "rmsnorm"),
    LayerNorm2d: NormClass("layernorm", True),
    RMSNorm2d: NormClass("rmsnorm", True),
    FrozenBatchNorm2d: NormClass("batchnorm", True),
    SyncBatchNorm: NormClass("batchnorm", True),
    **{cls: NormClass("batchnorm", True) for cls in _BATCHNORMS.values()},
    **{cls: NormClass("instancenorm", True) for cls in _INSTANCENORMS.values()},
    GroupNorm: NormClass("groupnorm", True),
}


def class_facts(cls: type) -> NormClass | None:
    """The NormClass of a registered class (exact match, not a subclass), else None."""
    return _CLASSES.get(cls) if isinstance(cls, type) else None


def channels_first_trailing_classes() -> tuple[type, ...]:
    """Registered LayerNorm/RMSNorm subclasses that normalize dim 1 (LayerNorm2d, RMSNorm2d)."""
    return tuple(cls for cls, f in _CLASSES.items() if f.channels_first and f.family in ("layernorm", "rmsnorm"))


# -------------------------------------------------------------------------------------------- names

def _default_groups(num_features: int) -> int:
    return max(g for g in range(1, min(DEFAULT_GROUPS, num_features) + 1) if num_features % g == 0)


def _groupnorm(num_features: int, num_groups: int | None = None, **kwargs) -> GroupNorm:
    if num_groups is None and isinstance(num_features, int) and num_features > 0:
        num_groups = _default_groups(num_features)
    return GroupNorm(num_groups, num_features, **kwargs)


def _by_dim(table: dict, name: str) -> Callable:
    def build(num_features: int, dim: int = 1, **kwargs) -> tnn.Module:
        if dim not in table:
            raise ValueError(f"create_norm({name!r}): dim must be one of {sorted(table)}, got {dim!r}")
        return table[dim](num_features, **kwargs)
    return build


def _identity(num_features: int, **kwargs) -> tnn.Identity:
    return tnn.Identity()


_LAYERS: dict[str, Callable] = {
    "batchnorm": _by_dim(_BATCHNORMS, "batchnorm"),
    "batchnorm1d": BatchNorm1d,
    "batchnorm2d": BatchNorm2d,
    "batchnorm3d": BatchNorm3d,
    "frozenbatchnorm2d": FrozenBatchNorm2d,
    "syncbatchnorm": SyncBatchNorm,
    "layernorm": LayerNorm,
    "layernorm2d": LayerNorm2d,
    "layernorm-chw": functools.partial(GroupNorm, 1),  # GroupNorm(1, C): LN over (C, H, W), per-channel affine
    "rmsnorm": RMSNorm,
    "rmsnorm2d": RMSNorm2d,
    "groupnorm": _groupnorm,
    "instancenorm": _by_dim(_INSTANCENORMS, "instancenorm"),
    "instancenorm1d": InstanceNorm1d,
    "instancenorm2d": InstanceNorm2d,
    "instancenorm3d": InstanceNorm3d,
    "none": _identity,
}
NORM_NAMES = tuple(_LAYERS)  # every name get_norm_layer and create_norm accept


def get_norm_layer(name: str) -> Callable[..., tnn.Module]:
    """The layer registered as ``name``: a class, or a ``functools.partial``, called as
    ``layer(num_features, **kwargs)`` (see the module table). Case-insensitive.

    Example::

        >>> get_norm_layer("batchnorm2d")
        <class 'normlab.nn.batchnorm.BatchNorm2d'>
        >>> get_norm_layer("layernorm-chw")(64)  # GroupNorm(1, 64)
    """
    if not isinstance(name, str) or name.lower() not in _LAYERS:
        raise ValueError(f"get_norm_layer: unknown norm {name!r}; expected one of {', '.join(NORM_NAMES)}")
    layer = _LAYERS[name.lower()]
    if isinstance(layer, type | functools.partial):
        return layer
    return functools.partial(layer)


def create_norm(name: str, num_features: int, **kwargs) -> tnn.Module:
    """Build the norm layer called ``name`` over ``num_features`` channels; see the module docstring.

    Example::

        >>> create_norm("batchnorm", 64, dim=2, momentum=0.99, momentum_convention="keras")
        >>> create_norm("groupnorm", 64, num_groups=8)
    """
    if not isinstance(name, str) or name.lower() not in _LAYERS:
        raise ValueError(f"create_norm: unknown norm {name!r}; expected one of {', '.join(NORM_NAMES)}")
    return _LAYERS[name.lower()](num_features, **kwargs)
