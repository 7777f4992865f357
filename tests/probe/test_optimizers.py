"""Several optimizers: each parameter's update is measured across the step of the optimizer that owns it;
parameters that no optimizer given to the probe steps are named in a warning and get no update records."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from probe_oracle import Lookup, naive_summary, seed000_data, seed000_ln_model
from torch import nn

from normlab.probe import Probe

FIRST = ("0.", "1.", "2.")  # layers stepped by the first optimizer; the rest by the second


def _two_optimizers(model):
    first = [p for n, p in model.named_parameters() if n.startswith(FIRST)]
    second = [p for n, p in model.named_parameters() if not n.startswith(FIRST)]
    return torch.optim.Adam(first, lr=0.01), torch.optim.SGD(second, lr=0.05, momentum=0.9)


def _train(model, optimizers, attached, steps=4, order=(0, 1)):
    """Train with ``optimizers``, the probe seeing ``attached``; returns the probe and naive snapshots."""
    x, y = seed000_data()
    snapshots = []
    with Probe(model, attached) as probe:
        for _ in range(steps):
            nn.functional.mse_loss(model(x).squeeze(-1), y).backward()
            grads = {n: p.grad.clone() for n, p in model.named_parameters()}
            before = {n: p.detach().clone() for n, p in model.named_parameters()}
            for index in order:
                optimizers[index].step()
            updates = {n: p.detach() - before[n] for n, p in model.named_parameters()}
            snapshots.append((grads, before, updates))
            for optimizer in optimizers:
                optimizer.zero_grad()
    return probe, snapshots


@pytest.mark.parametrize("order", [(0, 1), (1, 0)])
def test_updates_of_both_optimizers_equal_naive_per_tensor_computation(order):
    model = seed000_ln_model()
    optimizers = _two_optimizers(model)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every parameter is owned: no warning
        probe, snapshots = _train(model, optimizers, list(optimizers), order=order)
    assert probe.steps == len(snapshots) == 4  # one probe step per training step, not per optimizer step
    find = Lookup(probe.scalars())
    for step, (grads, before, updates) in enumerate(snapshots):
        for name in grads:
            for kind, tensor in (("grad", grads[name]), ("weight", before[name])):
                assert find(step=step, name=name, kind=kind, stat="norm") == pytest.approx(
                    naive_summary(tensor)["norm"], rel=1e-9, abs=1e-12)
            update = naive_summary(updates[name])
            assert update["norm"] > 0  # both optimizers moved their parameters
            assert find(step=step, name=name, kind="update", stat="std") == pytest.approx(update["std"], rel=1e-9)
            weight_std = before[name].std(unbiased=False).item()
            ratio = {"step": step, "name": name, "kind": "update", "stat": "ratio"}
            if weight_std > 0:
                assert find(**ratio) == pytest.approx(math.log10(update["std"] / weight_std), rel=1e-8)


def test_parameters_of_an_optimizer_the_probe_was_not_given_are_named_and_get_no_update_records():
    model = seed000_ln_model()
    optimizers = _two_optimizers(model)
    unseen = [n for n, _ in model.named_parameters() if not n.startswith(FIRST)]
    with pytest.warns(UserWarning, match=rf"{len(unseen)} trainable parameter\(s\) are in no optimizer given to the probe: "
                                         + ", ".join(unseen).replace(".", r"\.")):
        probe, _ = _train(model, optimizers, optimizers[0])
    table = probe.scalars()
    updates = table[table.kind == "update"]
    assert set(updates.name.astype(str)) == {n for n, _ in model.named_parameters() if n.startswith(FIRST)}
    assert updates.value.notna().all() and (updates.value > -math.inf).all()  # never std 0 / ratio -inf
    assert set(table[table.kind == "grad"].name.astype(str)) >= set(unseen)  # still their gradients and weights


def test_a_skipped_optimizer_closes_the_step_without_its_update_and_a_shared_parameter_is_an_error():
    model = seed000_ln_model()
    first, second = _two_optimizers(model)
    x, y = seed000_data()
    with Probe(model, [first, second]) as probe:
        nn.functional.mse_loss(model(x).squeeze(-1), y).backward()
        first.step()
        # the second optimizer skipped this step (as GradScaler does on inf/NaN gradients)
        with pytest.warns(UserWarning, match=r"optimizer 0 stepped again before optimizer\(s\) \[1\] stepped"):
            first.step()
        assert probe.steps == 1
        second.step()
    find = Lookup(probe.scalars())
    assert find(step=0, name="0.weight", kind="update", stat="norm") > 0
    assert find(step=0, name="4.weight", kind="update", stat="norm") == 0  # skipped: it did not move
    assert probe.steps == 2
    with pytest.raises(ValueError, match=r"parameter '3.weight' is in optimizer 0 and optimizer 1"):
        Probe(model, [torch.optim.SGD(model.parameters(), lr=0.1), second])
    with pytest.raises(ValueError, match="same optimizer twice"):
        Probe(model, [first, first])
