"""Table construction helpers equal their plain pandas definitions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from normlab.probe.tables import _tiled_categorical


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
