"""Training forward+backward of every normlab layer against torch.nn, on every path and flag.

For each layer configuration (all momenta, ``track_running_stats``, ``affine`` for BatchNorm and
InstanceNorm), each dtype (float16, bfloat16, float32, float64), each layout (contiguous, a strided view,
channels_last for 4D/5D) and two value regimes (ordinary, and a large mean with a tiny spread, where
normlab recenters), three training steps run forward and backward on normlab, on torch in the same
dtype, and on torch in float64 (the oracle; same parameters, the same input values). Then eval.

Tolerances (tests/nn/oracle.py): float64 is torch's float64 to 1e-6 relative. Other dtypes must be
within a bound of the float64 result or no worse than torch's own result in that dtype:

- forward: ``16 eps`` of the output's magnitude (a recentered forward is a few roundings of each value);
- dx = rstd (h - mean(h) - x_hat mean(h x_hat)), h = g w: a forward accurate to ``16 eps`` in x_hat
  implies ``dx`` to about ``16 eps * rstd * max|h| * (1 + max|x_hat|)``; rstd is taken from float64;
- dweight, dbias sum ``count`` products of g and x_hat: ``16 eps * count * max|g| * (1 + max|x_hat|)``;
- running statistics: ``16 eps`` of their magnitude per step.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn as tnn
from nn_cases import TorchLayerNorm2d, TorchRMSNorm2d, randomize_
from oracle import F64, amax, assert_no_worse_than_torch, finfo_eps

import normlab.nn as N


def _flag_grid(cls, tcls, shape, momenta):
    for momentum, track, affine in itertools.product(momenta, [True, False], [True, False]):
        kw = {"momentum": momentum, "track_running_stats": track, "affine": affine}
        name = f"{cls.__name__}-m{momentum}-track{track}-affine{affine}"
        yield name, (lambda c=cls, kw=kw: c(3, **kw)), (lambda c=tcls, kw=kw: c(3, **kw)), shape


def _default_flags():
    for cls, shape in [(N.BatchNorm1d, (6, 3)), (N.BatchNorm1d, (4, 3, 5)), (N.BatchNorm2d, (3, 3, 4, 4)),
                       (N.BatchNorm3d, (2, 3, 2, 3, 3)), (N.InstanceNorm1d, (3, 3, 7)), (N.InstanceNorm1d, (3, 7)),
                       (N.InstanceNorm2d, (2, 3, 4, 4)), (N.InstanceNorm3d, (2, 3, 2, 3, 3))]:
        tcls = getattr(tnn, cls.__name__)
        kw = {"affine": True, "track_running_stats": True} if "Instance" in cls.__name__ else {}
        yield (f"{cls.__name__}-{len(shape)}d", (lambda c=cls, kw=kw: c(3, **kw)), (lambda c=tcls, kw=kw: c(3, **kw)),
               shape)


def _other_configs():
    pairs = [
        ("LayerNorm", lambda lib: lib.LayerNorm(5), (3, 4, 5)),
        ("LayerNorm-2dims", lambda lib: lib.LayerNorm((4, 5), eps=1e-3), (3, 4, 5)),
        ("LayerNorm-nobias", lambda lib: lib.LayerNorm(5, bias=False), (2, 3, 4, 5)),
        ("LayerNorm-noaffine", lambda lib: lib.LayerNorm(5, elementwise_affine=False), (6, 5)),
        ("RMSNorm", lambda lib: lib.RMSNorm(5), (3, 4, 5)),
        ("RMSNorm-eps", lambda lib: lib.RMSNorm((4, 5), eps=1e-6), (3, 4, 5)),
        ("RMSNorm-noaffine", lambda lib: lib.RMSNorm(5, elementwise_affine=False), (2, 3, 4, 5)),
        ("GroupNorm", lambda lib: lib.GroupNorm(2, 4), (3, 4, 3, 3)),
        ("GroupNorm-1d", lambda lib: lib.GroupNorm(4, 4, eps=1e-3), (3, 4, 5)),
        ("GroupNorm-noaffine", lambda lib: lib.GroupNorm(1, 4, affine=False), (2, 4, 2, 2, 3)),
    ]
    for name, make, shape in pairs:
        yield name, (lambda m=make: m(N)), (lambda m=make: m(tnn)), shape
    yield "LayerNorm2d", lambda: N.LayerNorm2d(4), lambda: TorchLayerNorm2d(4), (2, 4, 3, 3)
    yield ("LayerNorm2d-noaffine", lambda: N.LayerNorm2d(4, elementwise_affine=False),
           lambda: TorchLayerNorm2d(4, elementwise_affine=False), (2, 4, 3))
    yield "RMSNorm2d", lambda: N.RMSNorm2d(4, eps=1e-6), lambda: TorchRMSNorm2d(4, eps=1e-6), (2, 4, 3, 3)
    yield "FrozenBatchNorm2d", lambda: N.FrozenBatchNorm2d(3), lambda: tnn.BatchNorm2d(3).eval(), (2, 3, 3, 4)


# every momentum (torch's InstanceNorm takes no momentum=None), track_running_stats and affine
FLAG_GRID = [*_flag_grid(N.BatchNorm2d, tnn.BatchNorm2d, (3, 3, 2, 3), [0.1, None, 0.0, 1.0]),
             *_flag_grid(N.InstanceNorm2d, tnn.InstanceNorm2d, (2, 3, 2, 3), [0.1, 0.0, 1.0])]
LAYERS = [*_default_flags(), *_other_configs()]
DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16]


def _rstd(module: tnn.Module, x: torch.Tensor) -> float:
    """The largest 1/std over the layer's rows, in float64: the gradient's sensitivity to rounding."""
    eps = module.eps if module.eps is not None else torch.finfo(x.dtype).eps
    if isinstance(module, N.FrozenBatchNorm2d):
        return amax(torch.rsqrt(module.running_var.double() + eps))
    if isinstance(module, tnn.modules.instancenorm._InstanceNorm):
        rows = x.reshape(-1, math.prod(x.shape[-module._get_no_batch_dim():]))  # (N*C, spatial)
    elif isinstance(module, tnn.modules.batchnorm._BatchNorm):
        rows = x.transpose(0, 1).reshape(x.shape[1], -1)
    elif isinstance(module, tnn.GroupNorm):
        rows = x.reshape(x.shape[0] * module.num_groups, -1)
    elif isinstance(module, (N.LayerNorm2d, N.RMSNorm2d)):
        rows = x.movedim(1, -1).reshape(-1, x.shape[1])
    else:
        rows = x.reshape(-1, math.prod(module.normalized_shape))
    if isinstance(module, tnn.RMSNorm):
        return amax(torch.rsqrt(rows.square().mean(1) + eps))
    return amax(torch.rsqrt(rows.var(1, unbiased=False) + eps))


def _layouts(x: torch.Tensor):
    yield "contiguous", x
    wide = torch.zeros(*x.shape[:-1], 2 * x.shape[-1], dtype=x.dtype)
    wide[..., ::2] = x
    yield "strided", wide[..., ::2]
    if x.dim() in (4, 5):
        yield "channels_last", x.contiguous(memory_format=torch.channels_last if x.dim() == 4
                                            else torch.channels_last_3d)


def _inputs(shape, regime: str, dtype, step: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(100 * step + len(shape))
    noise = torch.randn(shape, generator=gen, dtype=F64)
    if regime == "ordinary":
        return (noise * (step + 1) + 0.5 * step).to(dtype)
    # |mean| / std of 1e4 (1e6 for float64), above RECENTER_RATIO; half types hold ~3 digits, so there a
    # mean of 64 against a spread of 1/4 is already far beyond what torch's float32 mean can keep
    if dtype == F64:
        return (1e6 + noise).to(dtype)
    if dtype in (torch.float16, torch.bfloat16):
        return (64 + 0.25 * noise).to(dtype)
    return (1e4 + 1e-2 * noise * (step + 1)).to(dtype)


def _step(module, x, grad):
    x = x.detach().clone().requires_grad_() if x.is_contiguous() else x.detach().requires_grad_()
    module.zero_grad()
    y = module(x)
    y.backward(grad)
    params = {n: p.grad for n, p in module.named_parameters() if p.requires_grad}
    return y.detach(), x.grad, params


def _trio(config, dtype):
    _, make, make_torch, _ = config
    oracle = randomize_(make_torch().to(F64))
    theirs = make_torch().to(dtype)
    ours = make().to(dtype)
    theirs.load_state_dict(oracle.state_dict())
    ours.load_state_dict(oracle.state_dict(), strict=not isinstance(ours, N.FrozenBatchNorm2d))
    if isinstance(ours, N.FrozenBatchNorm2d):  # its weight/bias are buffers: the anchors' parameters too
        for m in (oracle, theirs):
            m.requires_grad_(False)
    return ours, theirs, oracle


def _check_step(ours_out, torch_out, exact_out, module, x64, g64, dtype, what, strict):
    y, dx, dp = ours_out
    ty, tdx, tdp = torch_out
    ey, edx, edp = exact_out
    if dtype == F64:
        for name, a, b in [("y", y, ey), ("dx", dx, edx), *[(k, dp[k], edp[k]) for k in edp]]:
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6 * max(1.0, amax(b)), msg=f"{what} {name}")
        return
    eps = finfo_eps(dtype)
    weight = getattr(module, "weight", None)
    x_hat = 4.0  # |x_hat| of the Gaussian inputs here (it is at most sqrt(row length) in general)
    h = amax(g64) * max(1.0, amax(weight))
    assert_no_worse_than_torch(y, ty, ey, 16 * eps * max(1.0, amax(ey)), f"{what} y", strict)
    assert_no_worse_than_torch(dx, tdx, edx, 16 * eps * _rstd(module, x64) * h * (1 + x_hat), f"{what} dx", strict)
    count = x64.numel()
    for name in edp:
        assert_no_worse_than_torch(dp[name], tdp[name], edp[name], 16 * eps * count * amax(g64) * (1 + x_hat),
                                   f"{what} d{name}", strict)


def _run(config, dtype, layouts):
    name, _, _, shape = config
    for regime in ("ordinary", "large-mean"):
        strict = regime == "large-mean"  # where torch's kernels lose digits: the bound, not torch's error
        for layout in layouts:
            if layout == "channels_last" and len(shape) not in (4, 5):
                continue
            ours, theirs, oracle = _trio(config, dtype)
            for step in range(3):
                x = dict(_layouts(_inputs(shape, regime, dtype, step)))[layout]
                g = torch.randn(shape, generator=torch.Generator().manual_seed(step), dtype=F64)
                # the oracle sees the values contiguous: torch's float64 channels_last GroupNorm is itself
                # off by 3e-4 on a mean of 1e6 (see GroupNorm's docstring)
                x64 = x.detach().to(F64).contiguous()
                what = f"{name} {dtype} {regime} {layout} step {step}"
                outs = [_step(m, xx, g.to(xx.dtype)) for m, xx in ((ours, x), (theirs, x), (oracle, x64))]
                _check_step(*outs, oracle, x64, g, dtype, what, strict)
            _check_buffers(ours, theirs, oracle, dtype, f"{name} {dtype} {regime} {layout}", strict)
            for m in (ours, theirs, oracle):
                m.eval()
            x = dict(_layouts(_inputs(shape, "ordinary", dtype, 7)))[layout]
            with torch.no_grad():
                y, ty, ey = ours(x), theirs(x), oracle(x.to(F64).contiguous())
            tol = 1e-6 * max(1.0, amax(ey)) if dtype == F64 else 16 * finfo_eps(dtype) * max(1.0, amax(ey))
            assert_no_worse_than_torch(y, ty, ey, tol, f"{name} {dtype} {regime} {layout} eval")


def _check_buffers(ours, theirs, oracle, dtype, what, strict):
    """The running statistics after the steps: torch's float64 ones to 1e-10 in float64; else within
    16 eps per step of them, or no further than torch's own."""
    their_state, exact_state = theirs.state_dict(), oracle.state_dict()
    assert set(dict(ours.named_buffers())) <= set(their_state)
    for key, a in ours.named_buffers():
        b, e = their_state[key], exact_state[key]
        if not a.is_floating_point() or key in ("weight", "bias"):
            assert torch.equal(a.to(b.dtype), b), f"{what} {key}"
        elif dtype == F64:
            torch.testing.assert_close(a, e, rtol=1e-10, atol=1e-10, msg=f"{what} {key}")
        else:
            assert_no_worse_than_torch(a, b, e, 16 * finfo_eps(dtype) * 3 * max(1.0, amax(e)), f"{what} {key}",
                                       strict)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("config", LAYERS, ids=[c[0] for c in LAYERS])
def test_every_layer_dtype_and_layout(config, dtype):
    _run(config, dtype, ("contiguous", "strided", "channels_last"))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("config", FLAG_GRID, ids=[c[0] for c in FLAG_GRID])
def test_every_flag(config, dtype):
    _run(config, dtype, ("contiguous",))
