"""TensorBoard event files written with logdir= read back with TensorBoard's own EventAccumulator."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from probe_oracle import seed000_data, seed000_ln_model
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn

from normlab.probe import Probe


def test_scalars_and_histograms_read_back_with_tensorboard(tmp_path):
    model = seed000_ln_model(torch.float32)
    x, y = seed000_data(torch.float32)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    with Probe(model, optimizer, histograms=2, bins=16, logdir=tmp_path, flush_every=3) as probe:
        for _ in range(5):
            nn.functional.mse_loss(model(x).squeeze(-1), y).backward()
            optimizer.step()
            optimizer.zero_grad()
    accumulator = EventAccumulator(str(tmp_path), size_guidance={"scalars": 0, "histograms": 0})
    accumulator.Reload()
    tags = accumulator.Tags()
    scalars = probe.scalars()
    assert len(tags["scalars"]) == len(scalars.groupby(["kind", "name", "stat"], observed=True))
    for tag, (kind, name, stat) in [("grad/0.weight/norm", ("grad", "0.weight", "norm")),
                                    ("norm_out/3/std", ("norm_out", "3", "std")),
                                    ("global/model/grad_norm", ("global", "model", "grad_norm"))]:
        events = accumulator.Scalars(tag)
        expected = scalars[(scalars.kind == kind) & (scalars.name == name) & (scalars.stat == stat)]
        assert [e.step for e in events] == expected.step.tolist() == [0, 1, 2, 3, 4]
        np.testing.assert_allclose([e.value for e in events], expected.value, rtol=1e-6)  # float32 on disk

    histograms = probe.histograms()
    assert "grad/0.weight" in tags["histograms"] and "activation/0" in tags["histograms"]
    events = accumulator.Histograms("weight/6.weight")
    assert [e.step for e in events] == [0, 2, 4]
    for event in events:
        expected = histograms[(histograms.step == event.step) & (histograms.kind == "weight")
                              & (histograms.name == "6.weight")]
        value = event.histogram_value
        assert list(value.bucket) == expected["count"].tolist()
        assert value.num == expected["count"].sum() == 20
        np.testing.assert_allclose(value.bucket_limit[:-1], expected.bin_hi.to_numpy()[:-1])
        assert value.min <= value.max


def test_ensemble_members_get_their_own_tags(tmp_path):
    torch.manual_seed(0)
    model = nn.Linear(3, 2)  # read as an ensemble of 2: weight (2, 3), bias (2,), output (2, batch, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with Probe(model, optimizer, members=2, histograms=True, bins=8, logdir=tmp_path) as probe:
        model(torch.randn(2, 4, 3)).pow(2).sum().backward()
        optimizer.step()
    accumulator = EventAccumulator(str(tmp_path))
    accumulator.Reload()
    scalars = probe.scalars()
    for member in (0, 1):
        [event] = accumulator.Scalars(f"grad/weight/norm/member_{member}")
        expected = scalars[(scalars.kind == "grad") & (scalars.name == "weight") & (scalars.stat == "norm")
                           & (scalars.member == member)].value.item()
        assert event.value == pytest.approx(expected, rel=1e-6)
        assert f"activation/root/member_{member}" in accumulator.Tags()["histograms"]
