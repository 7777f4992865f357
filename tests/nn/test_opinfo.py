"""torch's own OpInfo samples for the functional norms, run through normlab.nn.functional with torch as oracle.

``torch.testing._internal.common_methods_invocations.op_db`` holds, for ``layer_norm``, ``group_norm``,
``batch_norm``, ``instance_norm`` and ``rms_norm``, the sample inputs torch tests its own ops with (odd
shapes, eps, momenta, optional weight/bias/running statistics) and, for some, error inputs. For every
sample and supported real dtype: torch runs first, normlab's twin takes the same arguments; forward,
backward (every input that requires grad) and the running statistics must agree with torch to the
tolerance of tests/nn/oracle.py against torch in float64 (normlab may only be closer). For every error
input normlab raises the documented error type (or a subclass; its message names the argument).

Deliberate differences (stated in normlab.nn.functional): torch's samples include ``eps < 0`` and
``momentum = -1.2``, which torch computes with (a negative eps can take a square root of a negative
number), and an empty 1D input to batch_norm; normlab refuses them with ``NormValueError`` naming the
argument. Those samples are checked to raise exactly that.

torch.testing._internal imports ``expecttest`` (a torch dev dependency, in normlab's ``dev`` extra).
"""

from __future__ import annotations

import functools

import pytest
import torch
from oracle import F64, amax, assert_no_worse_than_torch, finfo_eps, outcome

import normlab.nn as N
from normlab.nn import functional as NF

OPS = {
    "nn.functional.layer_norm": NF.layer_norm,
    "nn.functional.group_norm": NF.group_norm,
    "nn.functional.batch_norm": NF.batch_norm,
    "nn.functional.instance_norm": NF.instance_norm,
    "nn.functional.rms_norm": NF.rms_norm,
}
DTYPES = [torch.float64, torch.float32, torch.bfloat16, torch.float16]


@functools.cache
def _op_db():
    from torch.testing._internal.common_methods_invocations import op_db

    return {op.name: op for op in op_db if op.name in OPS and op.variant_test_name == ""}


def _cast(value, dtype):
    if isinstance(value, torch.Tensor) and value.is_floating_point():
        return value.detach().to(dtype).requires_grad_(value.requires_grad)
    if isinstance(value, (list, tuple)):
        return type(value)(_cast(v, dtype) for v in value)
    return value


def _run(fn, sample, dtype):
    """fn on a fresh copy of the sample (its running statistics are updated in place): output, the
    gradients of every tensor that requires grad, and the tensors after the call."""
    args = _cast(sample.args, dtype)
    kwargs = {k: _cast(v, dtype) for k, v in sample.kwargs.items()}
    x = _cast(sample.input, dtype)
    y = fn(x, *args, **kwargs)
    leaves = [t for t in (x, *args, *kwargs.values()) if isinstance(t, torch.Tensor) and t.requires_grad]
    g = torch.randn(y.shape, generator=torch.Generator().manual_seed(y.numel()), dtype=F64).to(y.dtype)
    grads = torch.autograd.grad(y, leaves, g, allow_unused=True) if leaves and y.requires_grad else ()
    after = [t.detach().clone() for t in (*args, *kwargs.values()) if isinstance(t, torch.Tensor)]
    return y.detach(), grads, after


def _refused_by_design(name, sample) -> bool:
    eps = sample.kwargs.get("eps", 1e-5)
    momentum = sample.kwargs.get("momentum", 0.1)
    one_dim = name == "nn.functional.batch_norm" and sample.input.dim() < 2
    return one_dim or not eps > 0 or (momentum is not None and not 0 <= momentum <= 1)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", list(OPS))
def test_opinfo_samples_match_torch(name, dtype):
    op = _op_db()[name]
    if dtype not in op.supported_dtypes("cpu"):
        pytest.skip(f"{name} does not support {dtype} on CPU")
    ours, tried = OPS[name], 0
    for sample in op.sample_inputs("cpu", dtype, requires_grad=True):
        what = f"{name} {dtype} {tuple(sample.input.shape)} {sample.kwargs}"
        t_kind, t_out = outcome(lambda s=sample: _run(op.op, s, dtype))
        o_kind, o_out = outcome(lambda s=sample: _run(ours, s, dtype))
        if _refused_by_design(name, sample):
            assert o_kind == "raises" and isinstance(o_out, N.NormValueError), what
            assert any(word in str(o_out) for word in ("eps", "momentum", "1D input")), what
            continue
        if t_kind == "raises":
            assert o_kind == "raises" and isinstance(o_out, type(t_out)), f"{what}: torch raises {t_out!r}, we {o_out!r}"
            continue
        assert o_kind == "ok", f"{what}: torch returns, normlab raises {o_out!r}"
        tried += 1
        (y, grads, after), (t_y, t_grads, t_after) = o_out, t_out
        e_y, e_grads, e_after = _run(op.op, sample, F64)
        eps = finfo_eps(dtype)
        rel = 1e-6 if dtype == F64 else 64 * eps  # samples are O(1)-O(10) values: relative to the magnitude
        assert_no_worse_than_torch(y, t_y, e_y, rel * max(1.0, amax(e_y)), f"{what} y")
        assert len(grads) == len(t_grads), what
        for k, (a, b, e) in enumerate(zip(grads, t_grads, e_grads, strict=True)):
            if e is None:
                assert a is None or amax(a) == 0, f"{what} grad {k}"
                continue
            assert_no_worse_than_torch(a, b, e, rel * max(1.0, amax(e)), f"{what} grad {k}")
        for k, (a, b, e) in enumerate(zip(after, t_after, e_after, strict=True)):
            assert_no_worse_than_torch(a, b, e, rel * max(1.0, amax(e)), f"{what} tensor {k} after the call")
    assert tried > 0, f"no sample of {name} ran"


@pytest.mark.parametrize("name", list(OPS))
def test_opinfo_error_inputs_raise_torchs_error_type(name):
    op = _op_db()[name]
    if op.error_inputs_func is None:
        pytest.skip(f"torch has no error inputs for {name}")
    for error in op.error_inputs("cpu"):
        sample = error.sample_input
        with pytest.raises(error.error_type):
            op.op(sample.input, *sample.args, **sample.kwargs)
        with pytest.raises(error.error_type) as info:
            OPS[name](sample.input, *sample.args, **sample.kwargs)
        assert name.split(".")[-1] in str(info.value), f"normlab's message names the call: {info.value}"
