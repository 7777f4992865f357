"""Typed study configs: dataclass <-> JSON, and ``key=value`` overrides parsed by each field's type."""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, get_args, get_origin


class ConfigError(ValueError):
    """A bad config key or value (the message lists what is valid)."""


def field_types(config_cls: type) -> dict[str, Any]:
    """The resolved type of every field of the dataclass ``config_cls``."""
    if not dataclasses.is_dataclass(config_cls):
        raise TypeError(f"Config: expected a dataclass type, got {config_cls!r}")
    hints = typing.get_type_hints(config_cls)
    return {f.name: hints.get(f.name, Any) for f in dataclasses.fields(config_cls)}


def describe_type(tp: Any) -> str:
    """``int``, ``tuple[str, ...]``: a type as a person would write it."""
    return tp.__name__ if isinstance(tp, type) else str(tp).replace("typing.", "")


def _is_optional(tp: Any) -> tuple[bool, Any]:
    origin = get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(get_args(tp)) == 2:
            return True, args[0]
    return False, tp


def coerce(value: Any, tp: Any, name: str) -> Any:
    """Convert ``value`` (a string from the command line, or JSON data) to type ``tp``."""
    optional, inner = _is_optional(tp)
    if optional:
        if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "null", "")):
            return None
        return coerce(value, inner, name)
    origin = get_origin(tp)
    if origin is typing.Literal:
        choices = get_args(tp)
        for c in choices:
            if value == c or (isinstance(value, str) and str(c) == value.strip()):
                return c
        raise ConfigError(f"{name}: expected one of {list(choices)}, got {value!r}")
    if origin in (tuple, list):
        args = get_args(tp)
        item_tp = args[0] if args else str
        if isinstance(value, str):
            items = [v.strip() for v in value.split(",") if v.strip()] if value.strip() else []
        elif isinstance(value, (list, tuple)):
            items = list(value)
        else:
            raise ConfigError(f"{name}: expected a comma-separated list, got {value!r}")
        conv = [coerce(v, item_tp, f"{name}[{i}]") for i, v in enumerate(items)]
        return tuple(conv) if origin is tuple else conv
    if tp is bool:
        if isinstance(value, bool):
            return value
        s = str(value).strip().lower()
        if s in ("1", "true", "yes", "on"):
            return True
        if s in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{name}: expected a boolean (true/false), got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{name}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        try:
            return int(str(value).strip())
        except ValueError:
            raise ConfigError(f"{name}: expected an integer, got {value!r}") from None
    if tp is float:
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{name}: expected a number, got {value!r}") from None
    if tp is str:
        return str(value)
    return value


def config_to_dict(config: Any) -> dict[str, Any]:
    """JSON-ready dict of a config dataclass (tuples become lists)."""
    return {f.name: _jsonable(getattr(config, f.name)) for f in dataclasses.fields(config)}


def _jsonable(v: Any) -> Any:
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    return v


def config_from_dict(config_cls: type, data: dict[str, Any]) -> Any:
    """Rebuild a config from ``config_to_dict`` output (unknown keys are an error)."""
    types_ = field_types(config_cls)
    unknown = set(data) - set(types_)
    if unknown:
        raise ConfigError(f"unknown config keys {sorted(unknown)}; valid keys: {sorted(types_)}")
    return config_cls(**{k: coerce(v, types_[k], k) for k, v in data.items()})


def apply_overrides(config: Any, overrides: dict[str, Any], *, source: str = "--set") -> Any:
    """A copy of ``config`` with ``overrides`` (strings or values) coerced to each field's type."""
    types_ = field_types(type(config))
    changes = {}
    for key, raw in overrides.items():
        if key not in types_:
            valid = ", ".join(f"{k} ({describe_type(t)})" for k, t in types_.items())
            raise ConfigError(f"{source}: unknown key {key!r} for {type(config).__qualname__}; valid keys: {valid}")
        changes[key] = coerce(raw, types_[key], f"{source} {key}")
    return dataclasses.replace(config, **changes)


def parse_set_options(items: list[str]) -> dict[str, str]:
    """``["steps=100", "arms=ln,none"]`` -> ``{"steps": "100", "arms": "ln,none"}``."""
    out: dict[str, str] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set: expected key=value, got {item!r}")
        key, value = item.split("=", 1)
        if not key.strip():
            raise ConfigError(f"--set: expected key=value with a non-empty key, got {item!r}")
        out[key.strip()] = value
    return out
