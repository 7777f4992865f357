"""Typed study configs: dataclass <-> JSON, ``key=value`` overrides parsed by each field's type, and the
range of every field checked before anything runs.

A study's ``Config`` declares one :class:`Check` per field in its ``checks`` class attribute::

    @dataclass
    class Config:
        seeds: int = 8
        lr: float = 0.05
        checks: ClassVar[dict[str, Check]] = {"seeds": seeds_check(), "lr": number(0, lo_open=True)}

:func:`check_fields` runs them (the CLI before it creates the run directory; a study's ``cells()`` first
thing), so ``lr=nan`` or ``seeds=<20 digits>`` is one clear error, not a NaN loss or a traceback mid-run.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
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


# -- field checks ---------------------------------------------------------------------------------------

MAX_SEEDS = 10_000  # seeds per arm: each is a model trained (and held in memory) in the cell


@dataclass(frozen=True)
class Check:
    """The allowed values of one config field: ``test(value)`` says whether ``value`` is allowed and
    ``expected`` says in words what is (it goes into the error). ``items`` checks each element after
    ``test`` passed (so the error names ``field[i]``)."""

    expected: str
    test: Callable[[Any], bool]
    items: Check | None = None

    def __call__(self, name: str, value: Any) -> None:
        if not self.test(value):
            raise ConfigError(f"{name}: expected {self.expected}, got {value!r}")
        if self.items is not None and isinstance(value, (list, tuple)):  # (an optional list may be None)
            for i, item in enumerate(value):
                self.items(f"{name}[{i}]", item)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    if not isinstance(v, (int, float)) or isinstance(v, bool):
        return False
    try:
        return math.isfinite(v)
    except OverflowError:  # an int too large for a float (a hand-edited config.json)
        return False


def integer(lo: int = 1, hi: int | None = None) -> Check:
    """An int in ``[lo, hi]`` (``hi=None``: no upper bound)."""
    words = f"an integer >= {lo}" if hi is None else f"an integer in [{lo}, {hi}]"
    return Check(words, lambda v: _is_int(v) and lo <= v and (hi is None or v <= hi))


def seeds_check(lo: int = 2) -> Check:
    """A number of seeds: at least ``lo`` (two for a confidence interval), at most :data:`MAX_SEEDS`."""
    return integer(lo, MAX_SEEDS)


def number(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False,
           hi_open: bool = False) -> Check:
    """A finite number between ``lo`` and ``hi`` (either may be None: unbounded; ``*_open``: excluded)."""
    left, right = ("(" if lo_open else "["), (")" if hi_open else "]")
    if lo is not None and hi is not None:
        words = f"a number in {left}{lo:g}, {hi:g}{right}"
    elif lo is not None:
        words = f"a finite number {'>' if lo_open else '>='} {lo:g}"
    elif hi is not None:
        words = f"a finite number {'<' if hi_open else '<='} {hi:g}"
    else:
        words = "a finite number"

    def test(v: Any) -> bool:
        if not _is_number(v):
            return False
        above = lo is None or (v > lo if lo_open else v >= lo)
        below = hi is None or (v < hi if hi_open else v <= hi)
        return above and below

    return Check(words, test)


def because(check: Check, reason: str) -> Check:
    """``check`` with the reason for its range added to the error."""
    return Check(f"{check.expected} ({reason})", check.test, check.items)


def one_of(choices: Sequence[Any]) -> Check:
    return Check(f"one of {list(choices)}", lambda v: v in choices)


def optional(check: Check) -> Check:
    """``None`` or a value ``check`` allows."""
    return Check(f"None or {check.expected}", lambda v: v is None or check.test(v), check.items)


def flag() -> Check:
    return Check("true or false", lambda v: isinstance(v, bool))


def items(each: Check, *, min_len: int = 1, max_len: int | None = None, unique: bool = False) -> Check:
    """A list of ``min_len`` to ``max_len`` values, each allowed by ``each`` (``unique``: no repeats,
    for lists that become cells: a repeat would be the same cell twice)."""
    if max_len == min_len:
        size = f"{min_len} value{'s' if min_len != 1 else ''}"
    elif max_len is None:
        size = f"{min_len} or more values" if min_len else "a list of values"
    else:
        size = f"{min_len} to {max_len} values"
    words = f"{size}{', no repeats' if unique else ''} (each {each.expected})"

    def test(v: Any) -> bool:
        if not isinstance(v, (list, tuple)) or len(v) < min_len or (max_len is not None and len(v) > max_len):
            return False
        if unique:
            try:
                return len(set(v)) == len(v)
            except TypeError:  # unhashable items are caught by ``each``
                return True
        return True

    return Check(words, test, each)


def check_fields(config: Any) -> None:
    """Raise :class:`ConfigError` for the first field of ``config`` outside its declared range.

    The checks are ``type(config).checks`` (field name -> :class:`Check`); a config class without them
    is not checked. A check naming no field is a programming error (``TypeError``).
    """
    checks: dict[str, Check] | None = getattr(type(config), "checks", None)
    if checks is None:
        return
    names = [f.name for f in dataclasses.fields(config)]
    stray = sorted(set(checks) - set(names))
    if stray:
        raise TypeError(f"{type(config).__qualname__}.checks names no field: {stray}")
    for name in names:
        if name in checks:
            checks[name](name, getattr(config, name))
