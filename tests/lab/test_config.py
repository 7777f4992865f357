from dataclasses import dataclass
from typing import Literal

import pytest

from normlab.lab.config import (
    ConfigError,
    apply_overrides,
    config_from_dict,
    config_to_dict,
    parse_set_options,
)


@dataclass
class C:
    seeds: int = 4
    lr: float = 0.1
    probe: bool = True
    arms: tuple[str, ...] = ("a", "b")
    sizes: tuple[int, ...] = (2, 4)
    mode: Literal["x", "y"] = "x"
    limit: int | None = None


def test_overrides_are_parsed_by_field_type():
    c = apply_overrides(C(), parse_set_options(["seeds=8", "lr=1e-3", "probe=false", "arms=ln, none",
                                                "sizes=8,16", "mode=y", "limit=none"]))
    assert c == C(seeds=8, lr=1e-3, probe=False, arms=("ln", "none"), sizes=(8, 16), mode="y", limit=None)
    assert apply_overrides(C(), {"limit": "3"}).limit == 3


@pytest.mark.parametrize("item, match", [
    ("seeds=abc", "seeds: expected an integer, got 'abc'"),
    ("probe=maybe", "expected a boolean"),
    ("mode=z", r"expected one of \['x', 'y'\]"),
    ("sizes=1,x", r"sizes\[1\]: expected an integer"),
    ("nope=1", r"unknown key 'nope'.*valid keys: seeds \(int\), lr \(float\)"),
])
def test_bad_override_names_key_and_valid_values(item, match):
    with pytest.raises(ConfigError, match=match):
        apply_overrides(C(), parse_set_options([item]))


def test_set_needs_key_value():
    with pytest.raises(ConfigError, match="key=value"):
        parse_set_options(["seeds"])


def test_json_round_trip():
    c = C(arms=("x",), sizes=(1,), limit=2)
    d = config_to_dict(c)
    assert d["arms"] == ["x"]
    assert config_from_dict(C, d) == c
    with pytest.raises(ConfigError, match="unknown config keys"):
        config_from_dict(C, {**d, "zzz": 1})
