import dataclasses
import math
import re
from dataclasses import dataclass
from typing import ClassVar, Literal, get_args, get_origin

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from normlab.engine.config import (
    MAX_SEEDS,
    Check,
    ConfigError,
    apply_overrides,
    because,
    check_fields,
    config_from_dict,
    config_to_dict,
    field_types,
    flag,
    integer,
    items,
    number,
    one_of,
    optional,
    parse_set_options,
    seeds_check,
)
from normlab.studies import registry


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


# -- field checks ---------------------------------------------------------------------------------------

FINITE_OR_NOT = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10, 10))


@settings(max_examples=200, deadline=None)
@given(v=FINITE_OR_NOT, lo=st.one_of(st.none(), st.integers(-3, 3)), width=st.integers(0, 4),
       lo_open=st.booleans(), hi_open=st.booleans(), has_hi=st.booleans())
def test_number_allows_exactly_the_finite_values_in_its_interval(v, lo, width, lo_open, hi_open, has_hi):
    hi = (lo or 0) + width if has_hi else None
    check = number(lo, hi, lo_open=lo_open, hi_open=hi_open)
    oracle = (math.isfinite(v) and (lo is None or (v > lo if lo_open else v >= lo))
              and (hi is None or (v < hi if hi_open else v <= hi)))
    if oracle:
        check("x", v)
    else:
        with pytest.raises(ConfigError, match=rf"^x: expected {re.escape(check.expected)}, got "):
            check("x", v)


def test_an_integer_too_large_for_a_float_is_refused_not_a_traceback():
    with pytest.raises(ConfigError, match=r"^x: expected a finite number"):
        number(0)("x", 10**400)


@pytest.mark.parametrize(("check", "value", "message"), [
    (integer(1), 0, "x: expected an integer >= 1, got 0"),
    (integer(1), True, "x: expected an integer >= 1, got True"),  # a bool is not a count
    (integer(1), 2.0, "x: expected an integer >= 1, got 2.0"),
    (seeds_check(), 10**19, f"x: expected an integer in [2, {MAX_SEEDS}], got 10000000000000000000"),
    (number(0, lo_open=True), float("inf"), "x: expected a finite number > 0, got inf"),
    (number(0, 1, hi_open=True), 1.0, "x: expected a number in [0, 1), got 1.0"),
    (one_of(("a", "b")), "c", "x: expected one of ['a', 'b'], got 'c'"),
    (optional(integer(1, 3)), 4, "x: expected None or an integer in [1, 3], got 4"),
    (flag(), "yes", "x: expected true or false, got 'yes'"),
    (items(integer(2)), (), "x: expected 1 or more values (each an integer >= 2), got ()"),
    (items(integer(2)), (2, 1), "x[1]: expected an integer >= 2, got 1"),
    (items(integer(1), min_len=3, max_len=3), (1, 2), "x: expected 3 values (each an integer >= 1), got (1, 2)"),
    (items(one_of("ab"), unique=True), ("a", "a"), "x: expected 1 or more values, no repeats"),
    (items(optional(number(0, 1))), (None, float("nan")), "x[1]: expected None or a number in [0, 1], got nan"),
    (because(integer(2), "BatchNorm needs two"), 1, "x: expected an integer >= 2 (BatchNorm needs two), got 1"),
])
def test_a_value_out_of_range_names_field_range_and_value(check, value, message):
    with pytest.raises(ConfigError) as err:
        check("x", value)
    assert str(err.value).startswith(message)


@pytest.mark.parametrize(("check", "value"), [
    (integer(0), 0), (seeds_check(), MAX_SEEDS), (number(0), 0.0), (number(0, 1, hi_open=True), 0),
    (optional(integer(1)), None), (items(integer(2), min_len=0), ()), (items(optional(number(0, 1))), (None, 1.0)),
])
def test_values_on_the_boundary_are_allowed(check, value):
    check("x", value)


@dataclass
class Checked:
    steps: int = 10
    lr: float = 0.1
    checks: ClassVar[dict[str, Check]] = {"steps": integer(1), "lr": number(0, lo_open=True)}


def test_check_fields_checks_every_declared_field_and_rejects_stray_checks():
    check_fields(Checked())
    check_fields(C())  # no checks declared: nothing to check
    with pytest.raises(ConfigError, match=r"lr: expected a finite number > 0, got nan"):
        check_fields(apply_overrides(Checked(), {"lr": "nan"}))

    @dataclass
    class Stray:
        steps: int = 1
        checks: ClassVar[dict[str, Check]] = {"stpes": integer(1)}

    with pytest.raises(TypeError, match=r"names no field: \['stpes'\]"):
        check_fields(Stray())


STUDIES = registry()


@pytest.mark.parametrize("name", sorted(STUDIES))
def test_every_study_field_has_a_check_its_presets_pass(name):
    study = STUDIES[name]
    fields = [f.name for f in dataclasses.fields(study.Config)]
    assert sorted(study.Config.checks) == sorted(fields)
    for config in (study.Config(), apply_overrides(study.Config(), dict(study.quick_overrides))):
        study.check_config(config)
        assert study.cells(config)


def _is_floaty(tp) -> bool:
    return tp is float or any(_is_floaty(a) for a in get_args(tp))


@pytest.mark.parametrize("name", sorted(STUDIES))
def test_every_study_float_field_rejects_nan_and_inf(name):
    study = STUDIES[name]
    for field, tp in field_types(study.Config).items():
        if not _is_floaty(tp):
            continue
        for bad in ("nan", "inf", "-inf"):
            value = bad if get_origin(tp) is not tuple else f"{bad},{bad}"
            config = apply_overrides(study.Config(), {field: value})
            with pytest.raises(ConfigError, match=rf"^{field}(\[0\])?: expected .*, got .*{bad.lstrip('-')}"):
                check_fields(config)


@pytest.mark.parametrize(("name", "sets"), [
    ("overfitting", {"momentum": "0", "weight_decay": "0", "size_sweep": "", "seeds": str(MAX_SEEDS)}),
    ("ln-gradients", {"weight_decay": "0", "dropout_p": "0", "seeds": "1", "steps": "2"}),
    ("batch-size", {"dataset": "digits", "train_size": "1348", "test_size": "449", "batch_sizes": "2,16",
                    "ghost_sizes": "2,32", "control_ghost_sizes": "2"}),
    ("bn-running-stats", {"momenta": "1,none", "gap_momenta": "none"}),
    ("deep-bn", {"control_batches": "", "fit_skip": "0"}),
    ("residual-placement", {"warmup_placements": "pre", "placements": "pre", "bn_depth": "0", "depths": "1"}),
])
def test_values_at_the_edge_of_the_range_still_run(name, sets):
    study = STUDIES[name]
    config = apply_overrides(study.Config(), sets)
    study.check_config(config)
    assert study.cells(config)
