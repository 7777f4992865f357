"""torch.compile smoke: the layers trace (no data-dependent branch in the graph) and give eager normlab's numbers."""

from __future__ import annotations

import pytest
import torch

import normlab.nn as N


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(8, 8), N.LayerNorm(8), N.RMSNorm(8), N.BatchNorm1d(8))


def test_compile_aot_eager_matches_eager_forward_and_backward():
    model = _model()
    x = torch.randn(6, 8, requires_grad=True)
    compiled = torch.compile(_model(), backend="aot_eager", fullgraph=True)
    y, yc = model(x), compiled(x)
    torch.testing.assert_close(yc, y)
    (dx,) = torch.autograd.grad(y.sum(), x)
    (dxc,) = torch.autograd.grad(yc.sum(), x)
    torch.testing.assert_close(dxc, dx)


@pytest.mark.slow
def test_compile_inductor_matches_eager():
    model = _model()
    x = torch.randn(6, 8)
    torch.testing.assert_close(torch.compile(_model())(x), model(x), rtol=1e-5, atol=1e-5)
