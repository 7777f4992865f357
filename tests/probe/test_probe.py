"""Step counting, schedules, skipped forwards, records on disk, and clear errors for bad arguments."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from probe_oracle import bn_relu_model, seed000_data, seed000_ln_model
from torch import nn

from normlab.probe import Probe, ReductionPolicy


def _loss(model, x, y):
    return nn.functional.mse_loss(model(x).squeeze(-1), y)


def _run_with_optimizer_hooks(steps, **kwargs):
    model = seed000_ln_model()
    x, y = seed000_data()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01, weight_decay=0.01)
    with Probe(model, optimizer, **kwargs) as probe:
        for _ in range(steps):
            _loss(model, x, y).backward()
            optimizer.step()
            optimizer.zero_grad()
    return probe


def _run_with_manual_steps(steps, **kwargs):
    model = seed000_ln_model()
    x, y = seed000_data()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01, weight_decay=0.01)
    with Probe(model, **kwargs) as probe:
        for _ in range(steps):
            optimizer.zero_grad()
            _loss(model, x, y).backward()
            optimizer.step()
            probe.step()
    return probe


@pytest.mark.parametrize(("every", "lean"), [(1, False), (3, False), (2, True)])
def test_manual_step_records_the_same_as_optimizer_hooks(every, lean):
    # lean: the large models' path: no ring, no update region (update reduced tensor by tensor)
    policy = ReductionPolicy(ring_elements=0, split_above_elements=0) if lean else None
    if lean:
        assert Probe(seed000_ln_model(), policy=policy)._vector.lean
    hooked = _run_with_optimizer_hooks(7, every=every, histograms=2, policy=policy)
    manual = _run_with_manual_steps(7, every=every, histograms=2, policy=policy)
    assert hooked.steps == manual.steps == 7
    pd.testing.assert_frame_equal(hooked.scalars(), manual.scalars())
    pd.testing.assert_frame_equal(hooked.histograms(), manual.histograms())


def test_steps_are_optimizer_steps_not_hook_calls():
    model = seed000_ln_model()
    x, y = seed000_data()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4)
    with Probe(model, optimizer, every=2) as probe:
        for _ in range(3):
            for _ in range(2):  # gradient accumulation: two forwards per optimizer step
                _loss(model, x, y).backward()
            optimizer.step()
            optimizer.zero_grad()
        assert probe.steps == 3
    assert sorted(probe.scalars().step.unique()) == [0, 2]


def test_no_grad_and_eval_forwards_are_ignored_unless_asked():
    model = bn_relu_model()
    x, y = torch.randn(8, 3, dtype=torch.float64), torch.randn(8, dtype=torch.float64)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)

    def run(record_eval):
        with Probe(model, optimizer, record_eval=record_eval) as probe:
            train_out = model[0](x)
            _loss(model, x, y).backward()
            with torch.no_grad():
                model(x * 100)  # an evaluation pass between backward and step
            model.eval()
            with torch.no_grad():
                model(x * 100)
            model.train()
            optimizer.step()
            optimizer.zero_grad()
        return probe.scalars(), train_out.detach()

    table, train_out = run(record_eval=False)
    mean = table[(table.name == "0") & (table.kind == "activation") & (table.stat == "mean")].value
    assert mean.iloc[0] == pytest.approx(train_out.mean().item())
    table, train_out = run(record_eval=True)
    mean = table[(table.name == "0") & (table.kind == "activation") & (table.stat == "mean")].value
    assert mean.iloc[0] != pytest.approx(train_out.mean().item())  # the last (eval) forward was recorded


def test_modules_selects_by_name_class_or_predicate():
    model = seed000_ln_model()

    def slots(**kwargs):
        return Probe(model, **kwargs).catalog.activation_slots

    assert slots(modules=["1"]) == (("1", "activation"),)
    assert slots(modules=[nn.LayerNorm]) == (("3", "norm_in"), ("3", "norm_out"), ("5", "norm_in"), ("5", "norm_out"))
    assert slots(modules=lambda name, m: name == "6") == (("6", "activation"),)
    assert len(slots()) == 5 + 2 * 2  # every leaf; norm layers report input and output


def test_save_writes_both_tables_atomically_and_they_read_back(tmp_path):
    probe = _run_with_optimizer_hooks(3, histograms=True, bins=8)
    out = probe.save(tmp_path / "run")
    assert sorted(p.name for p in out.iterdir()) == ["histograms.parquet", "scalars.parquet"]  # no temp files
    for name, frame in (("scalars", probe.scalars()), ("histograms", probe.histograms())):
        back = pd.read_parquet(out / f"{name}.parquet")
        pd.testing.assert_frame_equal(back, frame, check_categorical=False)
    # overwriting an existing file goes through a temp file too
    probe.save(tmp_path / "run")
    assert len(list(out.iterdir())) == 2


def test_changing_a_returned_table_does_not_change_the_records():
    probe = _run_with_optimizer_hooks(3, histograms=True, bins=8)
    for read in (probe.scalars, probe.histograms):
        first = read()
        expected = first.copy(deep=True)
        column = "value" if "value" in first else "count"
        first.loc[:, column] = -1
        first["extra"] = 0
        pd.testing.assert_frame_equal(read(), expected)


def test_close_removes_hooks_and_keeps_records():
    model = seed000_ln_model()
    x, y = seed000_data()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4)
    probe = Probe(model, optimizer)
    _loss(model, x, y).backward()
    optimizer.step()
    probe.close()
    probe.close()  # idempotent
    _loss(model, x, y).backward()
    optimizer.step()
    assert probe.steps == 1
    assert set(probe.scalars().step) == {0}
    assert not model[0]._forward_hooks
    with pytest.raises(RuntimeError, match="closed"):
        probe.step()


def test_step_with_an_optimizer_given_is_refused():
    model = seed000_ln_model()
    probe = Probe(model, torch.optim.SGD(model.parameters(), lr=0.1))
    with pytest.raises(RuntimeError, match="counts its steps through hooks"):
        probe.step()
    probe.close()


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"every": 0}, ValueError, "every must be a positive int"),
        ({"every": 1.5}, ValueError, "every must be a positive int"),
        ({"histograms": -2}, ValueError, "histograms must be a positive int"),
        ({"members": -1}, ValueError, "members must be a positive int"),
        ({"flush_every": 0}, ValueError, "flush_every must be a positive int"),
        ({"modules": ["nope"]}, ValueError, "modules names 'nope'.*valid: root, 0, 1"),
        ({"modules": "0"}, TypeError, "modules must be None, a callable"),
        ({"modules": [3]}, TypeError, "modules entries must be module names or nn.Module classes"),
        ({"logdir": 5}, TypeError, "logdir must be a path"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, error, match):
    with pytest.raises(error, match=match):
        Probe(seed000_ln_model(), **kwargs)


def test_bad_model_or_optimizer_type():
    with pytest.raises(TypeError, match=r"model must be a torch\.nn\.Module, got list"):
        Probe([nn.Linear(1, 1)])
    with pytest.raises(TypeError, match=r"optimizer must be a torch\.optim\.Optimizer, a non-empty list of them, "
                                        r"or None, got dict"):
        Probe(nn.Linear(1, 1), {})
    with pytest.raises(TypeError, match=r"got list of Linear, SGD"):
        Probe(nn.Linear(1, 1), [torch.optim.SGD(nn.Linear(1, 1).parameters()), nn.Linear(1, 1)])
    with pytest.raises(TypeError, match=r"got list$"):
        Probe(nn.Linear(1, 1), [])


def test_statistics_stay_finite_and_nan_gradients_show_up():
    model = nn.Sequential(nn.Linear(2, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with Probe(model, optimizer, histograms=True) as probe:
        model(torch.tensor([[float("nan"), 1.0]])).sum().backward()
        optimizer.step()
    table = probe.scalars()
    assert np.isnan(table[(table.kind == "grad") & (table.name == "0.weight") & (table.stat == "mean")].value).all()
    hist = probe.histograms()
    assert hist[(hist.kind == "grad") & (hist.name == "0.weight")]["count"].sum() < 4  # NaNs are not binned


class _DoubleInPlace(nn.Module):
    def forward(self, x):
        return x.mul_(2)


def test_a_tensor_seen_by_two_hooks_is_sampled_once_unless_changed_in_between():
    """A norm layer's input is the previous module's output: one sample serves both slots. An in-place
    change between the two hooks (a new version of the same tensor) takes a new sample."""
    torch.manual_seed(0)
    conv = nn.Conv2d(2, 8, 3, padding=1)
    model = nn.Sequential(conv, nn.BatchNorm2d(8), _DoubleInPlace(), nn.BatchNorm2d(8))
    x = torch.randn(4, 2, 32, 32)  # 32768 values per output: above the sampling threshold
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    with Probe(model, optimizer) as probe:
        model(x).sum().backward()
        slots = {slot: i for i, slot in enumerate(probe._activations.slots)}
        kept = {slot: probe._activations._kept[i][0] for slot, i in slots.items()}
        assert kept[("0", "activation")] is kept[("1", "norm_in")]  # the conv's output, sampled once
        assert kept[("2", "activation")] is kept[("3", "norm_in")]  # the doubled tensor, sampled once
        assert kept[("2", "activation")] is not kept[("1", "norm_out")]  # changed in place: sampled again
        optimizer.step()
    table = probe.scalars().set_index(["name", "kind", "stat"])["value"]
    torch.testing.assert_close(table[("2", "activation", "mean")], 2 * table[("1", "norm_out", "mean")])
    assert table[("0", "activation", "std")] == table[("1", "norm_in", "std")]
