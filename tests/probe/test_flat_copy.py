"""Flattener equals torch.cat of reshaped tensors for every layout, and follows in-place updates."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from normlab.probe import flat_copy
from normlab.probe.flat_copy import Flattener


def _layouts(members, widths, seed):
    """The same values as contiguous tensors, as strided views of one (members, P) matrix, and as
    transposed tensors of separate storages."""
    generator = torch.Generator().manual_seed(seed)
    matrix = torch.randn(members, sum(widths), generator=generator)
    views, start = [], 0
    for width in widths:
        views.append(matrix[:, start : start + width])
        start += width
    contiguous = [v.clone() for v in views]
    transposed = [torch.empty(v.shape[1], v.shape[0]).t().copy_(v) for v in views]  # column-major storage
    return matrix, {"contiguous": contiguous, "views": views, "transposed": transposed}


@settings(max_examples=25, deadline=None)
@given(members=st.integers(1, 4), widths=st.lists(st.integers(1, 6), min_size=1, max_size=5),
       seed=st.integers(0, 2**16))
def test_every_layout_gives_the_concatenation(members, widths, seed):
    _, layouts = _layouts(members, widths, seed)
    expected = torch.cat([t.reshape(-1) for t in layouts["contiguous"]])
    for name, tensors in layouts.items():
        out = torch.full_like(expected, float("nan"))
        Flattener()(tensors, out)
        assert torch.equal(out, expected), name


@pytest.mark.parametrize(("layout", "plan"), [("contiguous", "_views_plan"), ("views", "_gather_plan"),
                                              ("transposed", "_copies_plan")])
def test_the_plan_fits_the_layout_and_sees_in_place_updates(layout, plan, monkeypatch):
    _, layouts = _layouts(3, [2, 5, 4], 0)
    tensors = layouts[layout]
    used = []
    original = getattr(flat_copy, plan)
    monkeypatch.setattr(flat_copy, plan, lambda ts: used.append(plan) or original(ts))
    flattener = Flattener()
    out = torch.empty(3 * 11)
    flattener(tensors, out)
    for t in tensors:
        t.mul_(2)  # an optimizer step: in place, same layout
    flattener(tensors, out)
    assert used == [plan]  # the plan was kept
    assert torch.equal(out, torch.cat([t.reshape(-1) for t in tensors]))


@pytest.mark.parametrize("per_tensor", [1, 1 << 14])
@settings(max_examples=25, deadline=None)
@given(members=st.integers(1, 4), widths=st.lists(st.integers(1, 6), min_size=1, max_size=5),
       seed=st.integers(0, 2**16))
def test_difference_equals_the_concatenation_minus_the_other(members, widths, seed, per_tensor):
    # per_tensor=1: every layout large enough for the tensor-by-tensor subtraction; 1 << 14: none is
    _, layouts = _layouts(members, widths, seed)
    expected = torch.cat([t.reshape(-1) for t in layouts["contiguous"]])
    minus = torch.randn(expected.shape, generator=torch.Generator().manual_seed(seed + 1))
    for name, tensors in layouts.items():
        out = torch.full_like(expected, float("nan"))
        Flattener(difference_per_tensor_elements=per_tensor).difference(tensors, minus, out)
        assert torch.equal(out, expected - minus), name
