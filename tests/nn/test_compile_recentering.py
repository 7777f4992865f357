"""Under torch.compile the layers keep eager's precision on large-mean inputs (|mean| / std >> 128).

Eager normlab measures the risk after torch's kernel and recenters only then; a compiled graph has no
data-dependent branch, so there every row is shifted by its first value (normlab.nn.functional). Before,
the branch was simply skipped and the compiled layers gave torch's float32 numbers (LayerNorm: 0.085 off
the float64 result, against 2.7e-7 eager). ``aot_eager`` traces what inductor would compile, without a
C++ toolchain; one inductor run is marked slow.
"""

from __future__ import annotations

import pytest
import torch

import normlab.nn as N
from normlab.nn import reference as R

SHAPE = (6, 4, 5)


def _layers():
    return {
        "LayerNorm": (N.LayerNorm(5), lambda x, m: R.layer_norm(x, [5], m.weight, m.bias, m.eps)),
        "LayerNorm2d": (N.LayerNorm2d(4), lambda x, m: R.layer_norm(x.movedim(1, -1), [4], m.weight, m.bias,
                                                                     m.eps).movedim(-1, 1)),
        "GroupNorm": (N.GroupNorm(2, 4), lambda x, m: R.group_norm(x, 2, m.weight, m.bias, m.eps)),
        "BatchNorm1d": (N.BatchNorm1d(4), lambda x, m: R.batch_norm(x, m.weight, m.bias, m.eps)),
        "BatchNorm1d-untracked": (N.BatchNorm1d(4, track_running_stats=False),
                                  lambda x, m: R.batch_norm(x, m.weight, m.bias, m.eps)),
        "InstanceNorm1d": (N.InstanceNorm1d(4, affine=True, track_running_stats=True),
                           lambda x, m: R.instance_norm(x, m.weight, m.bias, m.eps)),
    }


def _large_mean_input(seed=0):
    gen = torch.Generator().manual_seed(seed)
    return 1e4 + 1e-2 * torch.randn(SHAPE, generator=gen)


@pytest.mark.parametrize("name", list(_layers()))
def test_compiled_layer_is_as_precise_as_eager(name):
    module, ref = _layers()[name]
    eager, _ = _layers()[name]
    compiled = torch.compile(module, backend="aot_eager", fullgraph=True)
    x = _large_mean_input()
    g = torch.randn(SHAPE, generator=torch.Generator().manual_seed(1))
    xc, xe = x.clone().requires_grad_(), x.clone().requires_grad_()
    yc, ye = compiled(xc), eager(xe)
    exact = ref(x.double(), eager)
    assert (ye.double() - exact).abs().max() < 1e-3  # eager recenters
    torch.testing.assert_close(yc.double(), exact, rtol=0, atol=1e-3)  # was 0.05 off: no recentering
    yc.backward(g)
    ye.backward(g)
    # the float32 gradient here is rstd (~100) times float32 rounding of the normalized values
    torch.testing.assert_close(xc.grad, xe.grad, rtol=1e-3, atol=1e-2)
    for (key, a), b in zip(module.named_buffers(), eager.buffers(), strict=True):
        if a.is_floating_point():  # one batch: the running statistics agree with eager's
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6, msg=key)


def test_compiled_recentering_follows_recenter_ratio(monkeypatch):
    """RECENTER_RATIO = inf gives torch's numbers compiled too (it is read while tracing)."""
    monkeypatch.setattr(N.functional, "RECENTER_RATIO", float("inf"))
    x = _large_mean_input()
    torch._dynamo.reset()
    compiled = torch.compile(N.LayerNorm(5), backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(compiled(x), torch.nn.LayerNorm(5)(x))


@pytest.mark.slow
def test_inductor_compiled_layernorm_is_as_precise_as_eager():
    x = _large_mean_input()
    y = torch.compile(N.LayerNorm(5))(x)
    torch.testing.assert_close(y.double(), R.layer_norm(x.double(), [5]), rtol=0, atol=1e-3)
