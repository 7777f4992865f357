"""The table that drives the generic layer tests: normlab module, torch anchor, sample input, reference.

Each case builds a normlab layer and the torch.nn layer it replaces (same arguments), a sample input
shape, and the float64 reference forward/backward from ``normlab.nn.reference`` for training mode.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn as tnn

import normlab.nn as N
from normlab.nn import reference as R


class TorchLayerNorm2d(tnn.LayerNorm):
    """The torch anchor for channels-first LayerNorm: torch's LayerNorm on a channels-last view."""

    def forward(self, x):
        return super().forward(x.movedim(1, -1)).movedim(-1, 1)


class TorchRMSNorm2d(tnn.RMSNorm):
    def forward(self, x):
        return super().forward(x.movedim(1, -1)).movedim(-1, 1)


@dataclass(frozen=True)
class Case:
    name: str
    make: Callable[[], tnn.Module]  # normlab
    make_torch: Callable[[], tnn.Module]
    shape: tuple[int, ...]
    # (x, module) -> float64 output, and (grad, x, module) -> (dx, dweight, dbias) in training mode
    ref: Callable
    ref_backward: Callable
    running_stats: bool = False

    def __repr__(self) -> str:
        return self.name


def _wb(m):
    return m.weight, getattr(m, "bias", None)


def _bn(x, m):
    return R.batch_norm(x, *_wb(m), m.eps)


def _bn_b(g, x, m):
    return R.batch_norm_backward(g, x, *_wb(m), m.eps)


def _ln(x, m):
    return R.layer_norm(x, m.normalized_shape, *_wb(m), m.eps)


def _ln_b(g, x, m):
    return R.layer_norm_backward(g, x, m.normalized_shape, *_wb(m), m.eps)


def _rms_eps(x, m):
    return torch.finfo(x.dtype).eps if m.eps is None else m.eps


def _rms(x, m):
    return R.rms_norm(x, m.normalized_shape, m.weight, _rms_eps(x, m))


def _rms_b(g, x, m):
    dx, dw = R.rms_norm_backward(g, x, m.normalized_shape, m.weight, _rms_eps(x, m))
    return dx, dw, None


def _gn(x, m):
    return R.group_norm(x, m.num_groups, *_wb(m), m.eps)


def _gn_b(g, x, m):
    return R.group_norm_backward(g, x, m.num_groups, *_wb(m), m.eps)


def _in(x, m):
    x1 = x if x.dim() == m._batched_ndim else x.unsqueeze(0)
    y = R.instance_norm(x1, *_wb(m), m.eps)
    return y if x.dim() == m._batched_ndim else y.squeeze(0)


def _in_b(g, x, m):
    unbatched = x.dim() != m._batched_ndim
    if unbatched:
        g, x = g.unsqueeze(0), x.unsqueeze(0)
    dx, dw, db = R.instance_norm_backward(g, x, *_wb(m), m.eps)
    return (dx.squeeze(0) if unbatched else dx), dw, db


def _ln2d(x, m):
    return R.layer_norm(x.movedim(1, -1), m.normalized_shape, *_wb(m), m.eps).movedim(-1, 1)


def _ln2d_b(g, x, m):
    dx, dw, db = R.layer_norm_backward(g.movedim(1, -1), x.movedim(1, -1), m.normalized_shape, *_wb(m), m.eps)
    return dx.movedim(-1, 1), dw, db


def _rms2d(x, m):
    return R.rms_norm(x.movedim(1, -1), m.normalized_shape, m.weight, _rms_eps(x, m)).movedim(-1, 1)


def _rms2d_b(g, x, m):
    dx, dw = R.rms_norm_backward(g.movedim(1, -1), x.movedim(1, -1), m.normalized_shape, m.weight, _rms_eps(x, m))
    return dx.movedim(-1, 1), dw, None


def _pair(name, normlab_cls, torch_cls, args, kwargs, shape, ref, ref_b, running=False):
    return Case(name, lambda: normlab_cls(*args, **kwargs), lambda: torch_cls(*args, **kwargs), shape, ref, ref_b,
                running)


CASES: list[Case] = [
    _pair("bn1d-2d", N.BatchNorm1d, tnn.BatchNorm1d, (6,), {}, (8, 6), _bn, _bn_b, True),
    _pair("bn1d-3d", N.BatchNorm1d, tnn.BatchNorm1d, (6,), {}, (4, 6, 5), _bn, _bn_b, True),
    _pair("bn2d", N.BatchNorm2d, tnn.BatchNorm2d, (4,), {}, (3, 4, 5, 5), _bn, _bn_b, True),
    _pair("bn2d-cma", N.BatchNorm2d, tnn.BatchNorm2d, (4,), {"momentum": None}, (3, 4, 5, 5), _bn, _bn_b, True),
    _pair("bn2d-noaffine", N.BatchNorm2d, tnn.BatchNorm2d, (4,), {"affine": False}, (3, 4, 5, 5), _bn, _bn_b, True),
    _pair("bn2d-notrack", N.BatchNorm2d, tnn.BatchNorm2d, (4,), {"track_running_stats": False}, (3, 4, 5, 5),
          _bn, _bn_b),
    _pair("bn3d", N.BatchNorm3d, tnn.BatchNorm3d, (3,), {"momentum": 0.3}, (2, 3, 3, 4, 4), _bn, _bn_b, True),
    _pair("ln", N.LayerNorm, tnn.LayerNorm, (7,), {}, (3, 5, 7), _ln, _ln_b),
    _pair("ln-2dims", N.LayerNorm, tnn.LayerNorm, ((4, 7),), {"eps": 1e-3}, (3, 4, 7), _ln, _ln_b),
    _pair("ln-nobias", N.LayerNorm, tnn.LayerNorm, (7,), {"bias": False}, (3, 5, 7), _ln, _ln_b),
    _pair("ln-noaffine", N.LayerNorm, tnn.LayerNorm, (7,), {"elementwise_affine": False}, (6, 7), _ln, _ln_b),
    _pair("rms", N.RMSNorm, tnn.RMSNorm, (7,), {}, (3, 5, 7), _rms, _rms_b),
    _pair("rms-2dims", N.RMSNorm, tnn.RMSNorm, ((4, 7),), {"eps": 1e-6}, (3, 4, 7), _rms, _rms_b),
    _pair("rms-noaffine", N.RMSNorm, tnn.RMSNorm, (7,), {"elementwise_affine": False}, (6, 7), _rms, _rms_b),
    _pair("gn", N.GroupNorm, tnn.GroupNorm, (2, 6), {}, (3, 6, 4, 4), _gn, _gn_b),
    _pair("gn-1d", N.GroupNorm, tnn.GroupNorm, (3, 6), {"eps": 1e-3}, (3, 6, 5), _gn, _gn_b),
    _pair("gn-noaffine", N.GroupNorm, tnn.GroupNorm, (1, 6), {"affine": False}, (2, 6, 3, 3), _gn, _gn_b),
    _pair("in1d", N.InstanceNorm1d, tnn.InstanceNorm1d, (4,), {}, (3, 4, 9), _in, _in_b),
    _pair("in1d-unbatched", N.InstanceNorm1d, tnn.InstanceNorm1d, (4,), {"affine": True}, (4, 9), _in, _in_b),
    _pair("in2d-affine", N.InstanceNorm2d, tnn.InstanceNorm2d, (4,), {"affine": True}, (3, 4, 5, 5), _in, _in_b),
    _pair("in2d-running", N.InstanceNorm2d, tnn.InstanceNorm2d, (4,),
          {"affine": True, "track_running_stats": True}, (3, 4, 5, 5), _in, _in_b, True),
    _pair("in3d", N.InstanceNorm3d, tnn.InstanceNorm3d, (3,), {"track_running_stats": True}, (2, 3, 3, 4, 4),
          _in, _in_b, True),
    _pair("ln2d", N.LayerNorm2d, TorchLayerNorm2d, (6,), {}, (2, 6, 4, 5), _ln2d, _ln2d_b),
    _pair("rms2d", N.RMSNorm2d, TorchRMSNorm2d, (6,), {"eps": 1e-6}, (2, 6, 4, 5), _rms2d, _rms2d_b),
]


def randomize_(module: tnn.Module, seed: int = 0) -> tnn.Module:
    """Give every parameter and float buffer non-default values, so parity tests see them used."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in [*module.named_parameters(), *module.named_buffers()]:
            if not t.is_floating_point():
                continue
            values = torch.rand(t.shape, generator=gen, dtype=t.dtype)
            # variances must stay positive; weights are kept away from 0 so gradients are informative
            t.copy_(values + 0.5 if "var" in name or "weight" in name else values - 0.5)
    return module
