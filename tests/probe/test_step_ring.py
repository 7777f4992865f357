"""The deferred path (a ring of raw step vectors reduced every K steps) records the same tables as the
per-step path, whatever the schedule, the flush points and the layout changes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from probe_oracle import bn_relu_model, seed000_data, seed000_ln_model
from torch import nn

from normlab.probe import Probe, ReductionPolicy
from normlab.probe.step_ring import GroupedSegments

SCALAR_KEYS = ["step", "member", "name", "kind", "stat"]
HISTOGRAM_KEYS = ["step", "member", "name", "kind", "bin_lo"]


def _bn_data(rows):
    torch.manual_seed(rows)
    return torch.randn(rows, 3, dtype=torch.float64), torch.randn(rows, dtype=torch.float64)


def _train(make_model, batches, defer, manual=False, read_midway=None, **kwargs):
    """Train on ``batches`` (a list of (x, y)); ``defer=False`` chooses the per-step path."""
    model = make_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01, weight_decay=0.01)
    policy = None if defer else ReductionPolicy(ring_elements=0)
    probe = Probe(model, None if manual else optimizer, policy=policy, **kwargs)
    with probe:
        for index, (x, y) in enumerate(batches):
            optimizer.zero_grad()
            nn.functional.mse_loss(model(x).squeeze(-1), y).backward()
            optimizer.step()
            if manual:
                probe.step()
            if read_midway == index:
                probe.scalars(), probe.histograms()  # reduces a partly filled ring
        if defer:
            assert any(ring is not None for ring in probe._rings.values())  # the deferred path ran
        else:
            assert all(ring is None for ring in probe._rings.values())
    return probe


def _assert_same_tables(deferred_probe, per_step_probe):
    a, b = (p.scalars().astype({"name": str, "kind": str, "stat": str}) for p in (deferred_probe, per_step_probe))
    assert len(a) == len(b) > 0
    merged = pd.merge(a, b, on=SCALAR_KEYS, how="outer", suffixes=("_deferred", "_step"))
    assert len(merged) == len(a)  # the same rows: nothing added, nothing left out
    np.testing.assert_allclose(merged.value_deferred, merged.value_step, rtol=1e-9, atol=1e-12)
    ha, hb = (p.histograms().astype({"name": str, "kind": str}) for p in (deferred_probe, per_step_probe))
    assert len(ha) == len(hb)
    merged = pd.merge(ha, hb, on=HISTOGRAM_KEYS, how="outer", suffixes=("_deferred", "_step"))
    assert len(merged) == len(ha)
    np.testing.assert_array_equal(merged.count_deferred, merged.count_step)


@pytest.mark.parametrize(("every", "histograms", "flush_every", "steps"),
                         [(1, True, 4, 10), (3, 2, 4, 11), (2, 5, 3, 13), (1, False, 64, 7)])
def test_deferred_tables_equal_per_step_tables(every, histograms, flush_every, steps):
    batches = [_bn_data(16)] * steps
    kwargs = {"every": every, "histograms": histograms, "flush_every": flush_every, "bins": 16}
    runs = [_train(bn_relu_model, batches, defer, **kwargs) for defer in (True, False)]
    _assert_same_tables(*runs)
    recorded = sorted(runs[0].scalars().step.unique())
    assert recorded == [s for s in range(steps) if s % every == 0 or (histograms is not False and
                                                                      s % (every if histograms is True
                                                                           else histograms) == 0)]


def test_manual_steps_and_reads_midway_give_the_same_tables():
    x, y = seed000_data()
    batches = [(x, y)] * 9
    kwargs = {"histograms": 2, "flush_every": 4, "manual": True, "read_midway": 5}
    runs = [_train(seed000_ln_model, batches, defer, **kwargs) for defer in (True, False)]
    _assert_same_tables(*runs)


def test_layout_change_reduces_the_ring_and_keeps_step_order():
    # A smaller batch changes the kept outputs' shapes, hence the ring, in the middle of a ring.
    batches = [_bn_data(16)] * 3 + [_bn_data(10)] * 2 + [_bn_data(16)] * 4
    runs = [_train(bn_relu_model, batches, defer, histograms=True, flush_every=4, bins=16)
            for defer in (True, False)]
    _assert_same_tables(*runs)
    assert len(runs[0]._rings) == 2


def test_outputs_changed_in_place_fall_back_to_the_per_step_path():
    # ReLU(inplace=True) overwrites the Linear output after its hook: that module is then reduced in its
    # hook, and steps with in-hook reductions take the per-step path after the ring is reduced.
    def make_model():
        torch.manual_seed(3)
        return nn.Sequential(nn.Linear(3, 8), nn.ReLU(inplace=True), nn.Linear(8, 1)).double()

    batches = [_bn_data(16)] * 6
    runs = [_train(make_model, batches, defer, histograms=True, flush_every=4, bins=16)
            for defer in (True, False)]
    _assert_same_tables(*runs)


def test_ring_rows_follow_the_memory_budget():
    assert ReductionPolicy().ring_rows(1000, 64) == 64
    policy = ReductionPolicy(ring_elements=10_000)
    assert policy.ring_rows(1000, 64) == 10
    assert not policy.defers(20_000, 64)  # too large: the per-step path
    assert not policy.is_lean(20_000, 64)  # reduced at its step, with its update region
    assert ReductionPolicy(ring_elements=10_000, split_above_elements=10_000).is_lean(20_000, 64)


def test_policy_rejects_what_is_not_a_threshold():
    with pytest.raises(ValueError, match="ring_elements must be an int >= 0"):
        ReductionPolicy(ring_elements=-1)
    with pytest.raises(ValueError, match="split_above_elements must be an int >= 0"):
        ReductionPolicy(split_above_elements=1.5)
    with pytest.raises(TypeError, match="reduce_in_hooks must be True or False"):
        ReductionPolicy(reduce_in_hooks=1)
    with pytest.raises(TypeError, match="policy must be a ReductionPolicy"):
        Probe(nn.Linear(2, 2), policy={"ring_elements": 0})


@settings(max_examples=25, deadline=None)
@given(lengths=st.lists(st.integers(1, 7), min_size=1, max_size=8), rows=st.integers(1, 4),
       seed=st.integers(0, 2**16))
def test_grouped_segment_moments_equal_naive_per_segment(lengths, rows, seed):
    _check_grouped_moments(lengths, rows, seed)


@settings(max_examples=25, deadline=None)
@given(lengths=st.lists(st.sampled_from([1, 3, 5, 12, 13]), min_size=1, max_size=8), rows=st.integers(1, 3),
       seed=st.integers(0, 2**16))
def test_long_segments_read_in_place_equal_naive_per_segment(lengths, rows, seed):
    # 5, 12 and 13 are "long": blocks, no gather; and so are runs such as 3, 3, 3
    _check_grouped_moments(lengths, rows, seed, ReductionPolicy(gather_max_elements=4, in_place_min_elements=9))


def _check_grouped_moments(lengths, rows, seed, policy=None):
    generator = torch.Generator().manual_seed(seed)
    values = torch.randn(rows, sum(lengths), generator=generator, dtype=torch.float64)
    values[values.abs() < 0.3] = 0.0  # exact zeros for the zero fraction
    needs = np.arange(len(lengths)) % 3  # 0: mean/var, 1: + absmax, 2: + zero fraction
    moments = GroupedSegments(np.array(lengths), needs, torch.device("cpu"), policy or ReductionPolicy()).moments(values)
    assert moments.shape == (rows, 4, len(lengths))
    start = 0
    for index, n in enumerate(lengths):
        for row in range(rows):
            x = values[row, start : start + n]
            expected = [x.mean(), x.var(correction=0), x.abs().max() if needs[index] >= 1 else float("nan"),
                        (x == 0).double().mean() if needs[index] == 2 else 0]
            np.testing.assert_allclose(moments[row, :, index].numpy(), [float(e) for e in expected],
                                       rtol=1e-12, atol=1e-15)
        start += n



def test_parameter_data_replaced_mid_run_is_followed():
    # `p.data = ...` gives the parameter new storage: the probe's cached flat views must follow it.
    model = seed000_ln_model()
    x, y = seed000_data()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    with Probe(model, optimizer, flush_every=4) as probe:
        for step in range(3):
            if step == 2:
                model[0].weight.data = torch.full_like(model[0].weight, 0.5)
            nn.functional.mse_loss(model(x).squeeze(-1), y).backward()
            optimizer.step()
            optimizer.zero_grad()
    table = probe.scalars()
    row = table[(table.step == 2) & (table.name == "0.weight") & (table.kind == "weight") & (table.stat == "mean")]
    assert row.value.item() == pytest.approx(0.5)
    after = table[(table.step == 2) & (table.name == "0.weight") & (table.kind == "update") & (table.stat == "norm")]
    assert after.value.item() > 0  # the update is measured on the new storage, not the stale one


def test_varying_shapes_keep_a_bounded_number_of_rings():
    batches = [_bn_data(rows) for rows in range(8, 17)]  # a new layout every step
    runs = [_train(bn_relu_model, batches, defer, histograms=2, flush_every=4, bins=16)
            for defer in (True, False)]
    _assert_same_tables(*runs)
    assert len(runs[0]._rings) <= 4


@pytest.mark.parametrize("lean", [False, True])
def test_large_vector_paths_record_the_deferred_tables(lean):
    """The per-step path of large step vectors (a ReductionPlan; binned segment by segment), with the
    update region (a fallback step of a ring-sized model) and without it (models too large for a ring)."""
    batches = [_bn_data(16)] * 6
    kwargs = {"histograms": True, "flush_every": 4, "bins": 16}
    reference = _train(bn_relu_model, batches, True, **kwargs)
    # tensors reduced as blocks (small_tensor_elements) and binned with one offset (long_segment_elements);
    # lean: no ring; else outputs reduced in their hooks: every step takes the per-step path, the ring
    # stays possible (the update region is kept)
    policy = ReductionPolicy(split_above_elements=0, small_tensor_elements=4, long_segment_elements=8,
                             ring_elements=0 if lean else ReductionPolicy.ring_elements, reduce_in_hooks=not lean)
    model = bn_relu_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01, weight_decay=0.01)
    with Probe(model, optimizer, policy=policy, **kwargs) as probe:
        assert probe._vector.lean is lean
        for x, y in batches:
            optimizer.zero_grad()
            nn.functional.mse_loss(model(x).squeeze(-1), y).backward()
            optimizer.step()
    _assert_same_tables(reference, probe)
