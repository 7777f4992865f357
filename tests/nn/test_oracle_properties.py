"""Hypothesis with torch.nn as the oracle: every normlab module and functional twin, forward and backward.

Each example draws a layer (or functional twin), its flags (affine, track_running_stats, momentum,
train/eval), a shape (zero-size dims, batch 1 and one channel included), a dtype (float32, float64) and
values (ordinary; constant; a huge mean with a tiny spread; inf/nan mixed in), sometimes a layer built for
the wrong channel count. torch runs first, then normlab, then torch in float64 on the same values:

- torch raises: normlab raises the same type (or a subclass: normlab's input errors are ``ValueError``
  *and* ``RuntimeError``, see ``normlab.nn._validate.NormInputError``);
- torch returns: normlab returns, with the same nan/inf pattern where torch's agrees with float64, and
  no further from float64 than a few roundings (tests/nn/oracle.py) or than torch itself is: the same
  result where torch is right, better where it is not (the "Differences from torch" in each docstring);
- the same for the backward of a random cotangent (input and parameter gradients), and for the
  running statistics.

Cases tried: ``max_examples=150`` for the modules and 150 for the functional twins, derandomized with no
database, so every run tries the same 300 cases (each test asserts its count). Of these 300, torch raises
on 64 (normlab must raise the same type), 38 have a zero-size dim, 47 hold inf/nan and 24 use a layer
built for another channel count (counted when this was written; the draws change only with the code).
"""

from __future__ import annotations

import math

import torch
import torch.nn as tnn
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nn_cases import TorchLayerNorm2d, TorchRMSNorm2d, randomize_
from oracle import F64, amax, assert_no_worse_than_torch, assert_same_exception, finfo_eps, outcome

import normlab.nn as N
from normlab.nn import functional as NF

MAX_EXAMPLES = 150
SETTINGS = settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
TRIED = {"modules": 0, "functional": 0}
SIZES = st.sampled_from([0, 1, 1, 2, 2, 3, 3, 4])  # a zero-size dim in about 1 draw of 8


class TorchFrozenBatchNorm2d(tnn.BatchNorm2d):
    """torchvision's semantics: BatchNorm2d's eval map in train and eval, nothing learned."""

    def __init__(self, c):
        super().__init__(c)
        self.requires_grad_(False)

    def train(self, mode=True):
        return super().train(False)


# --- rows: the sets of values sharing one mean/variance (their 1/std bounds the gradient's rounding) ------

def _channel_rows(x):
    return x.transpose(0, 1).reshape(x.shape[1], -1)


def _instance_rows(batched_rank):
    return lambda x: x.reshape(x.shape[0] * x.shape[1], -1) if x.dim() == batched_rank else _unbatched_rows(x)


def _unbatched_rows(x):
    return x.reshape(x.shape[0], -1)


def _group_rows(groups):
    return lambda x: x.reshape(x.shape[0] * groups, -1)


def _trailing_rows(k):
    return lambda x: x.reshape(-1, math.prod(x.shape[x.dim() - k:]))


def _channels_first_rows(x):
    return x.movedim(1, -1).reshape(-1, x.shape[1])


# --- what is drawn ---------------------------------------------------------------------------------------

# module kind -> (normlab class, torch class, rank of a batched input, channel dim counts for rows)
PER_CHANNEL = {
    "BatchNorm1d": (N.BatchNorm1d, tnn.BatchNorm1d, (2, 3)),
    "BatchNorm2d": (N.BatchNorm2d, tnn.BatchNorm2d, (4,)),
    "BatchNorm3d": (N.BatchNorm3d, tnn.BatchNorm3d, (5,)),
    "InstanceNorm1d": (N.InstanceNorm1d, tnn.InstanceNorm1d, (2, 3)),
    "InstanceNorm2d": (N.InstanceNorm2d, tnn.InstanceNorm2d, (3, 4)),
    "InstanceNorm3d": (N.InstanceNorm3d, tnn.InstanceNorm3d, (4, 5)),
}


@st.composite
def _values(draw, shape, dtype):
    """Input values: returns a float64 tensor, rounded to ``dtype``."""
    regime = draw(st.sampled_from(["ordinary", "ordinary", "constant", "huge-mean", "non-finite"]))
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    noise = torch.randn(shape, generator=gen, dtype=F64)
    if regime == "ordinary":
        x = noise * draw(st.sampled_from([1e-3, 1.0, 30.0])) + draw(st.sampled_from([0.0, -2.0, 7.0]))
    elif regime == "constant":
        x = torch.full(shape, draw(st.sampled_from([0.0, 3.25, -1e3])), dtype=F64)
    elif regime == "huge-mean":
        x = (1e4 + 1e-2 * noise) if dtype == torch.float32 else (1e6 + noise)
    else:
        x = noise.clone()
        flat = x.view(-1)
        for _ in range(draw(st.integers(1, 3))):
            if flat.numel():
                flat[draw(st.integers(0, flat.numel() - 1))] = draw(st.sampled_from([math.inf, -math.inf, math.nan]))
    return x.to(dtype)


@st.composite
def module_cases(draw):
    """(name, make(lib) -> module, input) for one normlab module and its torch twin."""
    kind = draw(st.sampled_from([*PER_CHANNEL, "LayerNorm", "RMSNorm", "GroupNorm", "LayerNorm2d", "RMSNorm2d",
                                 "FrozenBatchNorm2d"]))
    dtype = draw(st.sampled_from([torch.float32, torch.float64]))
    wrong = draw(st.sampled_from([0] * 9 + [1]))  # sometimes the layer is built for another channel count
    c = draw(st.integers(1, 3))
    training = draw(st.booleans())
    if kind in PER_CHANNEL:
        ours, theirs, ranks = PER_CHANNEL[kind]
        rank = draw(st.sampled_from(ranks))
        shape = (draw(SIZES), c, *[draw(SIZES) for _ in range(rank - 2)])
        if kind.startswith("Instance") and rank == ranks[0]:
            shape = shape[1:]  # unbatched (C, *)
        kw = {"affine": draw(st.booleans()), "track_running_stats": draw(st.booleans()),
              "momentum": draw(st.sampled_from([0.1, 0.0, 1.0] + ([None] if kind.startswith("Batch") else [])))}
        make = {N: lambda: ours(c + wrong, **kw), tnn: lambda: theirs(c + wrong, **kw)}
    elif kind in ("LayerNorm", "RMSNorm"):
        normalized = tuple(draw(st.integers(1, 4)) for _ in range(draw(st.integers(1, 2))))
        shape = (*[draw(SIZES) for _ in range(draw(st.integers(0, 2)))], *normalized)
        built = (*normalized[:-1], normalized[-1] + wrong)
        affine = draw(st.booleans())
        if kind == "LayerNorm":
            bias = draw(st.booleans())
            make = {lib: (lambda lib=lib: lib.LayerNorm(built, elementwise_affine=affine, bias=bias)) for lib in (N, tnn)}
        else:
            eps = draw(st.sampled_from([None, 1e-6]))
            make = {lib: (lambda lib=lib: lib.RMSNorm(built, eps=eps, elementwise_affine=affine)) for lib in (N, tnn)}
    elif kind == "GroupNorm":
        groups = draw(st.integers(1, 2))
        shape = (draw(SIZES), groups * c, *[draw(SIZES) for _ in range(draw(st.integers(0, 2)))])
        affine = draw(st.booleans())
        make = {lib: (lambda lib=lib: lib.GroupNorm(groups, groups * (c + wrong), affine=affine)) for lib in (N, tnn)}
    elif kind == "FrozenBatchNorm2d":
        shape = (draw(SIZES), c, draw(SIZES), draw(SIZES))
        make = {N: lambda: N.FrozenBatchNorm2d(c + wrong), tnn: lambda: TorchFrozenBatchNorm2d(c + wrong)}
    else:
        shape = (draw(SIZES), c, *[draw(SIZES) for _ in range(draw(st.integers(0, 2)))])
        affine = draw(st.booleans())
        pair = {"LayerNorm2d": (N.LayerNorm2d, TorchLayerNorm2d), "RMSNorm2d": (N.RMSNorm2d, TorchRMSNorm2d)}[kind]
        make = {N: lambda: pair[0](c + wrong, elementwise_affine=affine),
                tnn: lambda: pair[1](c + wrong, elementwise_affine=affine)}
    x = draw(_values(shape, dtype))
    if kind.startswith("Batch") or kind == "FrozenBatchNorm2d":
        rows = _channel_rows
    elif kind.startswith("Instance"):
        rows = _instance_rows(PER_CHANNEL[kind][2][1]) if len(shape) == PER_CHANNEL[kind][2][1] else _unbatched_rows
    elif kind in ("LayerNorm", "RMSNorm"):
        rows = _trailing_rows(len(normalized))
    elif kind == "GroupNorm":
        rows = _group_rows(groups)
    else:
        rows = _channels_first_rows
    return f"{kind}{' (wrong C)' if wrong else ''} {'train' if training else 'eval'} {tuple(shape)} {dtype}", make, \
        x, training, rows, kind.startswith("RMS")


class FunctionalTwin(tnn.Module):
    """A functional call as a module: its per-channel tensors are parameters/buffers, so the three runs
    (normlab, torch, torch float64) start from one state_dict."""

    def __init__(self, call, weight_size, affine, bias, stats_size):
        super().__init__()
        self.call = call
        self.register_parameter("weight", tnn.Parameter(torch.ones(weight_size)) if affine else None)
        self.register_parameter("bias", tnn.Parameter(torch.zeros(weight_size)) if affine and bias else None)
        self.register_buffer("running_mean", None if stats_size is None else torch.zeros(stats_size))
        self.register_buffer("running_var", None if stats_size is None else torch.ones(stats_size))

    def forward(self, x):
        return self.call(self, x)


@st.composite
def functional_cases(draw):
    name = draw(st.sampled_from(["batch_norm", "instance_norm", "group_norm", "layer_norm", "rms_norm",
                                 "layer_norm_channels_first", "rms_norm_channels_first"]))
    dtype = draw(st.sampled_from([torch.float32, torch.float64]))
    wrong = draw(st.sampled_from([0] * 9 + [1]))
    c = draw(st.integers(1, 3))
    affine, bias = draw(st.booleans()), draw(st.booleans())
    eps = draw(st.sampled_from([1e-5, 1e-3]))
    flag, momentum = draw(st.booleans()), draw(st.sampled_from([0.1, 0.0, 1.0]))
    stats = draw(st.booleans())
    spatial = [draw(SIZES) for _ in range(draw(st.integers(0 if name != "instance_norm" else 1, 2)))]
    shape = (draw(SIZES), c, *spatial)
    if name == "batch_norm":
        calls = {lib: (lambda m, x, f=lib: f.batch_norm(x, m.running_mean, m.running_var, m.weight, m.bias, flag,
                                                        momentum, eps)) for lib in (NF, F)}
        sizes = (c + wrong, c if stats else None)
    elif name == "instance_norm":
        calls = {lib: (lambda m, x, f=lib: f.instance_norm(x, m.running_mean, m.running_var, m.weight, m.bias, flag,
                                                           momentum, eps)) for lib in (NF, F)}
        sizes = (c + wrong, c if stats else None)
    elif name == "group_norm":
        groups = draw(st.integers(1, 2))
        shape = (shape[0], groups * c, *spatial)
        calls = {lib: (lambda m, x, f=lib: f.group_norm(x, groups, m.weight, m.bias, eps)) for lib in (NF, F)}
        sizes = (groups * c + wrong, None)
    elif name in ("layer_norm", "rms_norm"):
        normalized = [draw(st.integers(1, 4)) for _ in range(draw(st.integers(1, 2)))]
        shape = (*shape[: draw(st.integers(0, 2))], *normalized)
        if name == "layer_norm":
            calls = {lib: (lambda m, x, f=lib: f.layer_norm(x, normalized, m.weight, m.bias, eps)) for lib in (NF, F)}
        else:
            rms_eps = draw(st.sampled_from([None, 1e-6]))
            calls = {lib: (lambda m, x, f=lib: f.rms_norm(x, normalized, m.weight, rms_eps)) for lib in (NF, F)}
        sizes = ((math.prod(normalized) + 1,) if wrong else tuple(normalized), None)
    else:
        shape = (shape[0] if shape[0] else 1, c, *spatial)
        if name == "layer_norm_channels_first":
            calls = {NF: lambda m, x: NF.layer_norm_channels_first(x, m.weight, m.bias, eps),
                     F: lambda m, x: F.layer_norm(x.movedim(1, -1), [x.shape[1]], m.weight, m.bias, eps).movedim(-1, 1)}
        else:
            calls = {NF: lambda m, x: NF.rms_norm_channels_first(x, m.weight, 1e-6),
                     F: lambda m, x: F.rms_norm(x.movedim(1, -1), [x.shape[1]], m.weight, 1e-6).movedim(-1, 1)}
        sizes = (c + wrong, None)
    make = {N: lambda: FunctionalTwin(calls[NF], sizes[0], affine, bias, sizes[1]),
            tnn: lambda: FunctionalTwin(calls[F], sizes[0], affine, bias, sizes[1])}
    x = draw(_values(shape, dtype))
    rows = {"batch_norm": _channel_rows, "instance_norm": _instance_rows(len(shape)),
            "group_norm": _group_rows(groups if name == "group_norm" else 1),
            "layer_norm": _trailing_rows(len(sizes[0]) if name == "layer_norm" else 1),
            "rms_norm": _trailing_rows(len(sizes[0]) if name == "rms_norm" else 1),
            "layer_norm_channels_first": _channels_first_rows, "rms_norm_channels_first": _channels_first_rows}[name]
    return f"F.{name}{' (wrong C)' if wrong else ''} flag={flag} {tuple(shape)} {dtype}", make, x, True, rows, name.startswith("rms")


# --- the oracle -------------------------------------------------------------------------------------------

def _forward_backward(module, x, g):
    x = x.detach().clone().requires_grad_()
    y = module(x)
    inputs = [x, *[p for p in module.parameters() if p.requires_grad]]
    grads = torch.autograd.grad(y, inputs, g.to(y.dtype), allow_unused=True)
    return y.detach(), grads, {k: b.clone() for k, b in module.named_buffers()}


def _rstd_bound(rows, rms, x, module, eps):
    """The largest 1/std (1/rms) over the rows, and over the running variance where eval uses it."""
    bound = 1.0
    if x.numel():
        r = rows(x.detach().to(F64))
        if r.numel():
            spread = r.square().mean(1) if rms else r.var(1, unbiased=False)
            bound = max(bound, amax(torch.rsqrt(spread + eps)))
    var = getattr(module, "running_var", None)
    if var is not None:
        bound = max(bound, amax(torch.rsqrt(var.double() + eps)))
    return bound


def _stricter_by_design(name, x, error) -> bool:
    """Where normlab raises and torch does not, on purpose (stated in the layers' docstrings): a layer
    built for another channel count is refused even where torch has nothing to notice it with (an empty
    batch; BatchNorm or GroupNorm without affine parameters or running statistics)."""
    return isinstance(error, N.NormValueError) and "(wrong C)" in name and "the layer was built with" in str(error)


def _check(name, make, x, training, rows, rms):
    dtype = x.dtype
    theirs = randomize_(make[tnn]()).to(dtype).train(training)
    ours = make[N]().to(dtype).train(training)
    ours.load_state_dict(theirs.state_dict(), strict=not isinstance(ours, N.FrozenBatchNorm2d))
    oracle = randomize_(make[tnn]()).to(F64).train(training)
    oracle.load_state_dict(theirs.state_dict())
    g = torch.randn(x.shape, generator=torch.Generator().manual_seed(x.numel()), dtype=F64)
    t_kind, t_out = outcome(lambda: _forward_backward(theirs, x, g))
    o_kind, o_out = outcome(lambda: _forward_backward(ours, x, g))
    if t_kind == "raises":
        assert o_kind == "raises", f"{name}: torch raises {type(t_out).__name__} ({t_out}), normlab returns"
        assert_same_exception(o_out, t_out, name)
        return
    if o_kind == "raises" and _stricter_by_design(name, x, o_out):
        return
    assert o_kind == "ok", f"{name}: torch returns, normlab raises {type(o_out).__name__}: {o_out}"
    e_y, e_grads, e_bufs = _forward_backward(oracle, x.to(F64), g)
    (y, grads, bufs), (t_y, t_grads, t_bufs) = o_out, t_out
    eps = finfo_eps(dtype)
    layer_eps = getattr(oracle, "eps", None) or 1e-5
    n_row = max((rows(x).shape[1] if x.numel() else 1), 1)
    x_hat = math.sqrt(n_row)  # |x_hat| <= sqrt(row length)
    weight = getattr(oracle, "weight", None)
    h = amax(g) * max(1.0, amax(weight))
    rstd = _rstd_bound(rows, rms, x, oracle, layer_eps if not rms else (layer_eps or eps))
    # float64: torch's float64 to 1e-6 relative (it is itself ~1e-10 off on a mean of 1e6, where normlab's
    # recentered result is closer); float32: a few roundings, scaled as in tests/nn/test_training_oracle.py
    f64 = dtype == F64
    assert_no_worse_than_torch(y, t_y, e_y, (1e-6 if f64 else 16 * eps * x_hat) * max(1.0, amax(e_y)), f"{name} y")
    tol = 1e-6 * max(1.0, amax(e_grads[0])) if f64 else 16 * eps * rstd * h * (1 + x_hat) ** 2
    assert_no_worse_than_torch(grads[0], t_grads[0], e_grads[0], tol, f"{name} dx")
    for k, (a, b, e) in enumerate(zip(grads[1:], t_grads[1:], e_grads[1:], strict=True)):
        if e is None:
            assert a is None or amax(a) == 0, f"{name} dparam {k}"
            continue
        tol = 1e-6 * max(1.0, amax(e)) if f64 else 16 * eps * x.numel() * amax(g) * (1 + x_hat)
        assert_no_worse_than_torch(a, b, e, tol, f"{name} dparam {k}")
    for key, e in e_bufs.items():
        if key in bufs and e.is_floating_point():
            tol = (1e-6 if f64 else 16 * eps) * max(1.0, amax(e))
            assert_no_worse_than_torch(bufs[key], t_bufs[key], e, tol, f"{name} {key}")
        elif key in bufs:
            assert torch.equal(bufs[key], t_bufs[key]), f"{name} {key}"


@SETTINGS
@given(case=module_cases())
def _modules_agree(case):
    TRIED["modules"] += 1
    _check(*case)


@SETTINGS
@given(case=functional_cases())
def _functionals_agree(case):
    TRIED["functional"] += 1
    _check(*case)


def test_every_module_against_torch():
    before = TRIED["modules"]
    _modules_agree()
    assert TRIED["modules"] - before >= MAX_EXAMPLES


def test_every_functional_twin_against_torch():
    before = TRIED["functional"]
    _functionals_agree()
    assert TRIED["functional"] - before >= MAX_EXAMPLES
