"""``convert_norms``: swap every matching norm layer of a model for another kind, carrying its state.

What carries over, and why:

- ``weight``/``bias`` (the affine gamma/beta) whenever both layers have them with the same shape: every
  norm here ends in the same per-channel (or per-element) ``y = x_hat * weight + bias``.
- ``running_mean``/``running_var``/``num_batches_tracked`` only between two BatchNorms or two InstanceNorms:
  those are estimates of one specific statistic; a GroupNorm has none, and an InstanceNorm's running mean
  averages per-sample means, which is not the quantity a BatchNorm tracks.
- ``eps``, affine/bias flags, ``momentum``/``track_running_stats`` (same-family only), device, dtype and
  train/eval mode; ``**kwargs`` override any constructor argument.

Conversions that would silently change *which axis* is normalized are refused, before the model is
touched: a channels-first norm (BatchNorm, InstanceNorm, GroupNorm, normlab's LayerNorm2d) cannot become a
channels-last one (LayerNorm, RMSNorm over trailing dims) or the reverse, a BatchNorm2d cannot become an
InstanceNorm1d, GroupNorm's groups must divide the channels. A factory ``to=callable`` is the escape hatch
for models that permute around their norms.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
import torch.nn as nn
from torch.nn.parameter import is_lazy

from normlab.nn.surgery._families import FAMILIES, Family, family_of, foreign_norm, normlab_class
from normlab.nn.surgery._tree import Match, class_label, find_modules, replace_module, short_repr

_WHERE = "convert_norms"
_AFFINE = ("weight", "bias")
_STATS = ("running_mean", "running_var", "num_batches_tracked")
_TARGET_NAMES = (*FAMILIES, "none")


class ConversionError(ValueError):
    """A conversion that cannot keep the layer's meaning; raised before anything is replaced."""


@dataclass(frozen=True)
class Replacement:
    """One replaced module: every name it had, its repr before and after, and what state went across."""

    names: tuple[str, ...]
    before: str
    after: str
    carried: tuple[str, ...]
    dropped: tuple[str, ...]


@dataclass
class ConversionReport:
    """What ``convert_norms`` replaced; iterate it, ``len()`` it, or ``print()`` it."""

    replaced: list[Replacement] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.replaced)

    def __iter__(self) -> Iterator[Replacement]:
        return iter(self.replaced)

    def __str__(self) -> str:
        lines = [f"convert_norms: {len(self.replaced)} module(s) replaced"]
        for r in self.replaced:
            lines.append(f"  {', '.join(r.names)}: {r.before} -> {r.after}")
            state = []
            if r.carried:
                state.append(f"carried {', '.join(r.carried)}")
            if r.dropped:
                state.append(f"dropped {', '.join(r.dropped)}")
            if state:
                lines.append(f"      {'; '.join(state)}")
        return "\n".join(lines)


# ----------------------------------------------------------------------------------------------- matching


def _source_predicate(from_) -> Callable[[nn.Module], bool]:
    """``from_`` as a class, a registry name, or a tuple of those -> ``module -> bool``."""
    items = from_ if isinstance(from_, tuple) else (from_,)
    if not items:
        raise TypeError(f"{_WHERE}: from_ must be a class, a norm name or a non-empty tuple of those, got ()")
    classes, kinds = [], set()
    for item in items:
        if isinstance(item, type) and issubclass(item, nn.Module):
            classes.append(item)
        elif isinstance(item, str) and item in FAMILIES:
            kinds.add(item)
        else:
            raise TypeError(
                f"{_WHERE}: from_ must be an nn.Module subclass or one of {FAMILIES} (or a tuple of those), "
                f"got {item!r}"
            )
    class_tuple = tuple(classes)

    def matches(module: nn.Module) -> bool:
        if class_tuple and isinstance(module, class_tuple):
            return True
        fam = family_of(type(module))
        return fam is not None and fam.kind in kinds

    return matches


# ------------------------------------------------------------------------------------------- the target


class _TorchStyle:
    """A norm of another library (see ``_families.ForeignNorm``) seen under torch's attribute names: its
    facts from ``ForeignNorm.read``, everything else (parameters, buffers, mode) from the module itself."""

    def __init__(self, module: nn.Module, facts: dict):
        self._module, self._facts = module, facts

    def __getattr__(self, name: str):
        facts = self.__dict__["_facts"]
        return facts[name] if name in facts else getattr(self.__dict__["_module"], name)


def _torch_style(module: nn.Module):
    foreign = foreign_norm(type(module))
    return module if foreign is None else _TorchStyle(module, foreign.read(module))


# the torch class whose constructor arguments a foreign target's ForeignNorm.make receives
_TORCH_SIGNATURE = {"layernorm": nn.LayerNorm, "rmsnorm": nn.RMSNorm, "groupnorm": nn.GroupNorm}


def _first_tensor(module: nn.Module) -> torch.Tensor | None:
    """A floating tensor of the module (for its device and dtype), or None."""
    tensors = [*module.parameters(recurse=False), *module.buffers(recurse=False)]
    return next((t for t in tensors if t.is_floating_point()), None)


def _channels(module: nn.Module, fam: Family) -> int:
    if fam.kind == "groupnorm":
        return module.num_channels
    if fam.kind in ("batchnorm", "instancenorm"):
        return module.num_features
    return module.normalized_shape[0]  # normlab's LayerNorm2d/RMSNorm2d: normalized_shape == (C,)


def _size(module: nn.Module, fam: Family) -> str:
    """What the layer's input must match: its channel count, or its trailing shape."""
    if fam.channels_first:
        return f"C={_channels(module, fam)} channels"
    return f"trailing shape {tuple(module.normalized_shape)}"


def _class_for_name(name: str, module: nn.Module, fam: Family | None) -> type:
    """A registry name -> the concrete class that fits ``module`` (normlab's when it exists, else torch's)."""
    if name not in _TARGET_NAMES:
        raise TypeError(f"{_WHERE}: to must be a class, a factory or one of {_TARGET_NAMES}, got {name!r}")
    if name == "none":
        return nn.Identity
    if fam is None:
        raise ConversionError(f"{type(module).__name__} is not a norm layer normlab knows; pass to= as a class")
    if name in ("batchnorm", "instancenorm"):
        if fam.rank is None:
            raise ConversionError(
                f"{short_repr(module)} accepts inputs of any rank, so to={name!r} cannot choose between the "
                f"1d/2d/3d classes; pass the class, e.g. to=nn.{'BatchNorm' if name == 'batchnorm' else 'InstanceNorm'}2d"
            )
        stem = "BatchNorm" if name == "batchnorm" else "InstanceNorm"
        file = "batchnorm" if name == "batchnorm" else "groupnorm"
        return normlab_class(file, stem + fam.rank) or getattr(nn, stem + fam.rank)
    if name == "groupnorm":
        return normlab_class("groupnorm", "GroupNorm") or nn.GroupNorm
    stem = "LayerNorm" if name == "layernorm" else "RMSNorm"
    if fam.channels_first:
        cls = normlab_class("layernorm", stem + "2d")
        if cls is None:
            raise ConversionError(f"to={name!r} for channels-first {short_repr(module)} needs normlab's {stem}2d")
        return cls
    return normlab_class("layernorm", stem) or getattr(nn, stem)


def _check_compatible(module: nn.Module, fam: Family | None, cls: type, target: Family | None) -> None:
    if fam is None or target is None:
        return
    if fam.channels_first != target.channels_first:
        axis = {True: "dim 1 of (N, C, *)", False: "the trailing dims"}
        raise ConversionError(
            f"{short_repr(module)} normalizes {axis[fam.channels_first]} but {class_label(cls)} normalizes "
            f"{axis[target.channels_first]}; converting would change which axis is normalized. "
            "Pass to= a factory if the model permutes around this layer"
        )
    if fam.rank and target.rank and fam.rank != target.rank:
        raise ConversionError(
            f"{short_repr(module)} takes {fam.rank} inputs but {class_label(cls)} takes {target.rank} inputs"
        )


def _constructor_kwargs(module: nn.Module, fam: Family | None, cls: type, target: Family | None,
                        user: dict) -> dict:
    """Fill the target's constructor from the source, by the argument names torch's norms use."""
    params = inspect.signature(cls).parameters
    kw: dict = {}
    if fam is not None and fam.channels_first:
        for size_name in ("num_features", "num_channels"):
            if size_name in params:
                kw[size_name] = _channels(module, fam)
    elif fam is not None and "normalized_shape" in params:
        kw["normalized_shape"] = tuple(module.normalized_shape)
    if "num_groups" in params and fam is not None and fam.kind == "groupnorm":
        kw["num_groups"] = module.num_groups
    if "num_groups" in params and "num_groups" not in user and "num_groups" not in kw:
        raise ConversionError(f"{class_label(cls)} needs num_groups=...; pass it as a keyword to convert_norms")
    eps = getattr(module, "eps", None)
    if "eps" in params:
        if eps is None and target is not None and target.kind != "rmsnorm":
            # RMSNorm's eps=None means finfo(dtype).eps at run time; a LayerNorm needs the number.
            ref = _first_tensor(module)
            eps = torch.finfo(ref.dtype if ref is not None else torch.get_default_dtype()).eps
        if eps is not None:
            kw["eps"] = eps
    affine = getattr(module, "affine", getattr(module, "elementwise_affine", None))
    for affine_name in ("affine", "elementwise_affine"):
        if affine_name in params and affine is not None:
            kw[affine_name] = affine
    if "bias" in params and affine:
        kw["bias"] = getattr(module, "bias", None) is not None
    if fam is not None and target is not None and fam.kind == target.kind and fam.kind != "groupnorm":
        for stat_name in ("momentum", "track_running_stats"):
            if stat_name in params and hasattr(module, stat_name):
                kw[stat_name] = getattr(module, stat_name)
        if getattr(module, "momentum_convention", "torch") != "torch" and "momentum_convention" in params:
            # normlab's Keras-convention BatchNorm stores torch's momentum; hand it over in its own terms.
            kw["momentum"], kw["momentum_convention"] = module.keras_momentum, module.momentum_convention
    ref = _first_tensor(module)
    if ref is not None:
        kw.update({k: v for k, v in (("device", ref.device), ("dtype", ref.dtype)) if k in params})
    kw.update(user)
    return kw


def _carry_state(src: nn.Module, dst: nn.Module) -> tuple[tuple[str, ...], tuple[str, ...]]:
    fam, target = family_of(type(src)), family_of(type(dst))
    same_stats = fam is not None and target is not None and fam.kind == target.kind and fam.kind in (
        "batchnorm", "instancenorm")
    carried, dropped = [], []
    for name in (*_AFFINE, *_STATS):
        value = getattr(src, name, None)
        if not isinstance(value, torch.Tensor):
            continue
        into = getattr(dst, name, None)
        if (name in _STATS and not same_stats) or not isinstance(into, torch.Tensor) or into.shape != value.shape:
            dropped.append(name)
            continue
        with torch.no_grad():
            into.copy_(value)
        if isinstance(into, nn.Parameter):
            into.requires_grad_(value.requires_grad)
        carried.append(name)
    dst.train(src.training)
    return tuple(carried), tuple(dropped)


def _build(match: Match, to, kwargs: dict) -> nn.Module:
    module = match.module
    if any(is_lazy(t) for t in [*module.parameters(recurse=False), *module.buffers(recurse=False)]):
        raise ConversionError(f"{type(module).__name__} is a lazy module not yet initialized; run one forward first")
    fam = family_of(type(module))
    if isinstance(to, type) or isinstance(to, str):
        cls = _class_for_name(to, module, fam) if isinstance(to, str) else to
        if not issubclass(cls, nn.Module):
            raise TypeError(f"{_WHERE}: to must be an nn.Module subclass, got {cls!r}")
        target = family_of(cls)
        _check_compatible(module, fam, cls, target)
        source, foreign_target = _torch_style(module), foreign_norm(cls)
        signature = _TORCH_SIGNATURE.get(target.kind) if foreign_target is not None else cls
        if signature is None or (foreign_target is not None and foreign_target.make is None):
            raise ConversionError(f"{class_label(cls)} is registered as a {target.kind} that surgery cannot build")
        kw = {} if cls is nn.Identity else _constructor_kwargs(source, fam, signature, target, kwargs)
        if target is not None and target.kind == "groupnorm":
            channels, groups = kw.get("num_channels"), kw.get("num_groups")
            if isinstance(groups, int) and isinstance(channels, int) and (groups <= 0 or channels % groups):
                raise ConversionError(
                    f"GroupNorm num_groups={groups} must be a positive divisor of the {channels} channels of "
                    f"{short_repr(module)}"
                )
        try:
            new = foreign_target.make(cls, kw) if foreign_target is not None else cls(**kw)
        except (TypeError, ValueError) as exc:
            raise ConversionError(f"{class_label(cls)}(**{kw}) failed for {short_repr(module)}: {exc}") from exc
        if fam is not None and target is not None and _size(source, fam) != _size(_torch_style(new), target):
            raise ConversionError(
                f"{short_repr(module)} normalizes {_size(source, fam)} but the new {short_repr(new)} "
                f"normalizes {_size(_torch_style(new), target)}; the layer's input would not fit"
            )
    elif callable(to):
        new = to(module, **kwargs)
        if not isinstance(new, nn.Module):
            raise TypeError(f"{_WHERE}: the to= factory must return an nn.Module, got {type(new).__name__}")
    else:
        raise TypeError(f"{_WHERE}: to must be a class, a factory or one of {_TARGET_NAMES}, got {to!r}")
    return new


def convert_norms(model: nn.Module, from_, to, **kwargs) -> ConversionReport:
    """Replace, in place, every submodule matching ``from_`` by a new ``to`` layer with the old one's state.

    Args:
        model: any module tree; the root itself is never replaced.
        from_: which layers to replace: a class (matched with ``isinstance``, so ``nn.BatchNorm2d`` also
            matches normlab's subclass), a family name (``"batchnorm"``, ``"instancenorm"``,
            ``"groupnorm"``, ``"layernorm"``, ``"rmsnorm"``), or a tuple of those.
        to: a class (constructed from the old layer's size, eps, affine flags, ...), a family name (or
            ``"none"`` for ``nn.Identity``), resolved to normlab's class of the right rank when it exists
            and torch's otherwise; or a factory ``to(old_module, **kwargs) -> nn.Module``.
        **kwargs: constructor arguments for the new layers (``num_groups=32`` for GroupNorm), overriding
            the ones read from the old layer.

    Returns:
        A :class:`ConversionReport` listing each replaced module with its names and carried/dropped state.
        Modules already of exactly the target class are left alone.

    Raises:
        ConversionError (a ValueError): one message listing every layer that cannot be converted; raised
            before any module is replaced, so the model is untouched.
        TypeError: ``from_``/``to`` of the wrong type.

    Example::

        >>> report = convert_norms(model, from_=nn.BatchNorm2d, to=nn.GroupNorm, num_groups=8)
        >>> print(report)
    """
    matches = find_modules(model, _source_predicate(from_), _WHERE)
    built: list[tuple[Match, nn.Module, tuple, tuple]] = []
    errors: list[str] = []
    for match in matches:
        if isinstance(to, type) and type(match.module) is to:
            continue
        try:
            new = _build(match, to, kwargs)
        except ConversionError as exc:
            errors.append(f"  {match.name}: {exc}")
            continue
        carried, dropped = _carry_state(match.module, new)
        built.append((match, new, carried, dropped))
    if errors:
        raise ConversionError(
            f"{_WHERE}: {len(errors)} layer(s) cannot be converted (the model was not changed):\n" + "\n".join(errors)
        )
    report = ConversionReport()
    for match, new, carried, dropped in built:
        for name in match.names:
            replace_module(model, name, new)
        report.replaced.append(
            Replacement(tuple(match.names), short_repr(match.module), short_repr(new), carried, dropped)
        )
    return report
