"""Table construction helpers equal their plain pandas definitions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from normlab.probe.tables import _Columns, _tiled_categorical


@pytest.mark.parametrize("repeat", [1, 3])
def test_tiled_categorical_equals_categorical_of_the_tiled_strings(repeat):
    label = np.array(["grad", "activation", "weight", "activation", "0.bias"], dtype=object)
    rng = np.random.default_rng(repeat)
    n_rows = 4
    valid = rng.random(len(label) * repeat * n_rows) < 0.7
    valid[: len(label) * repeat] = False  # the first row entirely absent
    expected = pd.Categorical(np.tile(np.repeat(label, repeat), n_rows)[valid])
    actual = _tiled_categorical(label, n_rows, valid, repeat=repeat)
    assert list(actual) == list(expected)
    assert list(actual.categories) == list(expected.categories)  # no unused categories


@given(
    n_rows=st.integers(1, 6), widths=st.lists(st.integers(1, 5), min_size=1, max_size=3),
    absent=st.floats(0, 0.5), seed=st.integers(0, 2**31 - 1),
)
@settings(max_examples=60, deadline=None)
def test_long_table_equals_the_naive_tile_and_mask(n_rows, widths, absent, seed):
    """_Columns.frame (runs of full rows broadcast, partial rows masked, all-absent columns dropped) equals
    the plain construction: tile the labels, repeat the steps, keep the valid cells."""
    rng = np.random.default_rng(seed)
    out = _Columns(n_rows)
    blocks = []
    for b, width in enumerate(widths):
        values = rng.normal(size=(n_rows, width))
        valid = rng.random((n_rows, width)) >= absent
        valid[:, rng.random(width) < absent] = False  # some columns absent from every row
        names = np.array([f"t{b}.{i}" for i in range(width)], dtype=object)
        members = rng.integers(0, 3, width)
        out.add(values, valid, name=names, member=members, kind=f"k{b}", stat=np.array(["mean"], dtype=object))
        blocks.append((values, valid, names, members, np.full(width, f"k{b}", dtype=object)))
    steps = np.sort(rng.choice(1000, n_rows, replace=False)).astype(np.int64)
    table = out.frame(steps)

    values = np.concatenate([b[0] for b in blocks], axis=1)
    valid = np.concatenate([b[1] for b in blocks], axis=1)
    width = values.shape[1]
    expected = pd.DataFrame({
        "step": np.repeat(steps, width)[valid.reshape(-1)],
        "member": np.tile(np.concatenate([b[3] for b in blocks]), n_rows)[valid.reshape(-1)],
        "name": np.tile(np.concatenate([b[2] for b in blocks]), n_rows)[valid.reshape(-1)],
        "kind": np.tile(np.concatenate([b[4] for b in blocks]), n_rows)[valid.reshape(-1)],
        "value": values.reshape(-1)[valid.reshape(-1)],
    })
    assert list(table.columns) == ["step", "member", "name", "kind", "stat", "value"]
    assert len(table) == len(expected)
    np.testing.assert_array_equal(table["step"].to_numpy(), expected["step"].to_numpy())
    np.testing.assert_array_equal(table["member"].to_numpy(), expected["member"].to_numpy())
    assert table["name"].astype(str).tolist() == expected["name"].tolist()
    assert table["kind"].astype(str).tolist() == expected["kind"].tolist()
    assert set(table["stat"].cat.categories) <= {"mean"}
    assert set(table["name"].cat.categories) == set(expected["name"])  # no unused categories
    np.testing.assert_array_equal(table["value"].to_numpy(), expected["value"].to_numpy())
