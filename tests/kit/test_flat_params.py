"""One (N, P) matrix for all parameters and gradients: training is bit-identical to separate tensors."""

import pytest
import torch
from torch import nn

from normlab.kit.ensemble import make_ensemble, member_losses
from normlab.kit.flat_params import flatten_parameters
from normlab.probe import Probe

MEMBERS = 5


def _model():
    builder = lambda: nn.Sequential(nn.Linear(2, 6), nn.LayerNorm(6), nn.ReLU(), nn.Linear(6, 1))  # noqa: E731
    return make_ensemble(builder, range(MEMBERS))


def _data():
    generator = torch.Generator().manual_seed(0)
    return torch.randn(12, 2, generator=generator), torch.randn(12, generator=generator)


OPTIMIZERS = {
    "adam": lambda params: torch.optim.Adam(params, lr=0.01, weight_decay=0.01),
    "adam-fused": lambda params: torch.optim.Adam(params, lr=0.01, weight_decay=0.01, fused=True),
    "adamw": lambda params: torch.optim.AdamW(params, lr=0.01, weight_decay=0.1),
    "sgd": lambda params: torch.optim.SGD(params, lr=0.05, momentum=0.9, weight_decay=0.01),
}


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_training_on_the_flat_matrix_is_bit_identical(name):
    # fused Adam's vectorized body and scalar tail round differently, so where a tensor's elements fall
    # (one matrix vs separate tensors) moves some updates by an ulp: equal to float rounding only.
    exact = name != "adam-fused"
    x, y = _data()
    separate, flat_model = _model(), _model()
    flat = flatten_parameters(flat_model, MEMBERS)
    opt_a, opt_b = OPTIMIZERS[name](separate.parameters()), OPTIMIZERS[name]([flat.param])
    for _ in range(15):
        member_losses(separate(x).squeeze(-1), y).sum().backward()
        member_losses(flat_model(x).squeeze(-1), y).sum().backward()
        grads = torch.cat([p.grad.reshape(MEMBERS, -1) for p in separate.parameters()], dim=1)
        _assert_same(flat.grad, grads, exact)  # the views hold every gradient, in parameters() order
        opt_a.step()
        opt_b.step()
        opt_a.zero_grad()
        flat.zero_grad()
    for (name_a, a), (name_b, b) in zip(separate.named_parameters(), flat_model.named_parameters(), strict=True):
        assert name_a == name_b and a.shape == b.shape
        _assert_same(a, b, exact)


def _assert_same(a, b, exact):
    if exact:
        assert torch.equal(a, b)
    else:
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_flattening_keeps_outputs_names_and_state_dict():
    x, _ = _data()
    model = _model()
    before = model(x).detach()
    keys = {k: v.shape for k, v in model.state_dict().items()}
    flat = flatten_parameters(model, MEMBERS)
    assert torch.equal(model(x), before)
    assert {k: v.shape for k, v in model.state_dict().items()} == keys
    assert flat.param.shape == (MEMBERS, sum(p[0].numel() for p in model.parameters()))
    fresh = _model()
    fresh.load_state_dict(model.state_dict())
    assert torch.equal(fresh(x), before)


def test_probe_reads_a_flattened_ensemble():
    # The parameters are strided views: the probe must read their current values at every step (a flat
    # copy made once would freeze the weight statistics and zero the update).
    x, y = _data()
    model = _model()
    flat = flatten_parameters(model, MEMBERS)
    optimizer = torch.optim.Adam([flat.param], lr=0.01)
    expected = []  # (step, name, member, kind, naive norm)
    with Probe(model, optimizer) as probe:
        for step in range(3):
            member_losses(model(x).squeeze(-1), y).sum().backward()
            before = {name: p.detach().clone() for name, p in model.named_parameters()}
            for name, p in model.named_parameters():
                for m in range(MEMBERS):
                    expected.append((step, name, m, "grad", p.grad[m].norm().item()))
                    expected.append((step, name, m, "weight", p[m].norm().item()))
            optimizer.step()
            flat.zero_grad()
            for name, p in model.named_parameters():
                for m in range(MEMBERS):
                    expected.append((step, name, m, "update", (p[m] - before[name][m]).norm().item()))
    table = probe.scalars()
    norms = table[table.stat == "norm"].set_index(["step", "name", "member", "kind"])["value"]
    for step, name, member, kind, value in expected:
        assert norms[(step, name, member, kind)] == pytest.approx(value, rel=1e-5, abs=1e-7), (step, name, kind)


def test_bad_input_is_rejected():
    with pytest.raises(ValueError, match="no trainable parameters"):
        flatten_parameters(nn.ReLU(), 3)
    with pytest.raises(ValueError, match=r"shape \(4, \.\.\.\)"):
        flatten_parameters(_model(), 4)
    model = _model()
    x, y = _data()
    member_losses(model(x).squeeze(-1), y).sum().backward()
    with pytest.raises(ValueError, match="before the first backward"):
        flatten_parameters(model, MEMBERS)
