"""Generic checks over the module table: normlab == torch == float64 reference, state_dict, gradcheck."""

from __future__ import annotations

import pytest
import torch
from nn_cases import CASES, randomize_

CASE_IDS = [c.name for c in CASES]


def _pair(case, dtype=torch.float32):
    """A normlab module and its torch anchor with identical random parameters and buffers."""
    ours, theirs = case.make().to(dtype), case.make_torch().to(dtype)
    randomize_(theirs)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    return ours, theirs


def _input(case, seed=1, dtype=torch.float32, requires_grad=True):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(case.shape, generator=gen, dtype=dtype) * 2 + 0.5
    return x.requires_grad_(requires_grad)


def _grads(module, x, grad):
    module.zero_grad()
    x.grad = None
    y = module(x)
    y.backward(grad)
    return y.detach(), x.grad.clone(), {n: p.grad.clone() for n, p in module.named_parameters()}


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_is_the_torch_class(case):
    torch_cls = next(c for c in type(case.make_torch()).__mro__ if c.__module__.startswith("torch.nn"))
    assert isinstance(case.make(), torch_cls)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_forward_and_backward_match_torch(case):
    ours, theirs = _pair(case)
    x = _input(case)
    grad = torch.randn(case.shape, generator=torch.Generator().manual_seed(2))
    y1, dx1, dp1 = _grads(ours, x, grad)
    y2, dx2, dp2 = _grads(theirs, x, grad)
    torch.testing.assert_close(y1, y2)
    torch.testing.assert_close(dx1, dx2)
    assert dp1.keys() == dp2.keys()
    for name in dp1:
        torch.testing.assert_close(dp1[name], dp2[name], msg=name)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_matches_float64_reference(case):
    """The module in float64 agrees with the hand-derived forward and backward of normlab.nn.reference."""
    ours, _ = _pair(case, torch.float64)
    x = _input(case, dtype=torch.float64)
    grad = torch.randn(case.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    y, dx, dparams = _grads(ours, x, grad)
    torch.testing.assert_close(y, case.ref(x.detach(), ours), rtol=1e-10, atol=1e-10)
    rdx, rdw, rdb = case.ref_backward(grad, x.detach(), ours)
    torch.testing.assert_close(dx, rdx, rtol=1e-9, atol=1e-9)
    if "weight" in dparams:
        torch.testing.assert_close(dparams["weight"], rdw, rtol=1e-9, atol=1e-9)
    if "bias" in dparams:
        torch.testing.assert_close(dparams["bias"], rdb, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("case", [c for c in CASES if c.running_stats], ids=lambda c: c.name)
def test_running_stats_after_training_then_eval(case):
    ours, theirs = case.make(), case.make_torch()
    ours.load_state_dict(theirs.state_dict(), strict=True)
    for step in range(4):
        x = _input(case, seed=10 + step, requires_grad=False) * (step + 1)
        torch.testing.assert_close(ours(x), theirs(x))
    for name, buf in theirs.named_buffers():
        torch.testing.assert_close(dict(ours.named_buffers())[name], buf, rtol=0, atol=0, msg=name)
    ours.eval()
    theirs.eval()
    x = _input(case, seed=99, requires_grad=False)
    torch.testing.assert_close(ours(x), theirs(x))


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_state_dict_round_trip_both_ways(case):
    ours, theirs = case.make(), case.make_torch()
    randomize_(theirs, seed=3)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    back = case.make_torch()
    back.load_state_dict(ours.state_dict(), strict=True)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    for key, value in theirs.state_dict().items():
        assert torch.equal(back.state_dict()[key], value), key


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_gradcheck_float64(case):
    ours, _ = _pair(case, torch.float64)
    x = _input(case, dtype=torch.float64)
    params = tuple(ours.parameters())

    def f(x, *ps):
        return torch.func.functional_call(ours, dict(zip([n for n, _ in ours.named_parameters()], ps, strict=True)), (x,))

    assert torch.autograd.gradcheck(f, (x, *params), fast_mode=True)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_repr_and_defaults_match_torch(case):
    ours, theirs = case.make(), case.make_torch()
    assert ours.extra_repr() == theirs.extra_repr()
