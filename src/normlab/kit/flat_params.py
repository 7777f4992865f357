"""All parameters of an ensemble in one ``(N, P)`` tensor, and all gradients in another.

A stacked ensemble of a small network has a dozen parameter tensors, and every training step pays a
per-tensor price that has nothing to do with arithmetic: the optimizer's Python loop over its tensors,
one fresh gradient tensor per parameter, and a concatenation whenever a per-member quantity of the
whole gradient is wanted (its norm). :func:`flatten_parameters` moves every parameter's data into the
columns of one member-major matrix ``flat.param`` ``(N, P)`` (member ``i``'s parameters are row ``i``, in
``model.parameters()`` order) and gives every parameter a ``.grad`` that is a view of the same columns of
``flat.grad``. Then:

* the optimizer is built on the single leaf ``flat.param`` (Adam/AdamW/SGD are elementwise, so this is
  the same update as on the separate tensors: bit-identical with the for-loop and foreach kernels; the
  fused kernels round their vectorized body and scalar tail differently, so there it is the same to
  float rounding -- all tested);
* backward accumulates into the views in place, so ``flat.grad`` holds every gradient with no copy, and
  ``flat.grad.norm(dim=1)`` is the per-member gradient norm;
* ``flat.zero_grad()`` is one fill. Call it instead of ``optimizer.zero_grad()``, whose default
  ``set_to_none=True`` would drop ``flat.param.grad`` (the optimizer would then skip every step).

The training step itself costs about the same either way; what the flat layout saves is the per-step
concatenation of the gradients where a per-member quantity of the whole gradient is read, and the probe
captures the parameters with one gather.
The module's parameters keep their names and shapes (they are strided views), so ``state_dict``,
``normlab.probe.Probe`` and everything that reads ``model.parameters()`` work unchanged.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch import nn

# A stacked (N, 1) parameter viewed out of an (N, P) matrix has strides (P, 1); autograd's layout check
# reports that once as a possible slowdown. It is not one here (the gradient is the same kind of view).
warnings.filterwarnings("ignore", message="grad and param do not obey the gradient layout contract")


@dataclass
class FlatParameters:
    """``param``: the leaf to optimize, ``(N, P)``; ``grad``: its gradient, the parameters' ``.grad`` views."""

    param: nn.Parameter
    grad: torch.Tensor

    def zero_grad(self) -> None:
        self.grad.zero_()


def flatten_parameters(model: nn.Module, members: int) -> FlatParameters:
    """Re-seat every trainable parameter of ``model`` (each shaped ``(members, ...)``) in one ``(members, P)``
    matrix; returns it with its gradient matrix. Values are copied, so the model computes exactly as before."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("flatten_parameters: the model has no trainable parameters")
    for p in params:
        if p.dim() == 0 or p.shape[0] != members:
            raise ValueError(f"flatten_parameters: every parameter needs shape ({members}, ...), got {tuple(p.shape)}")
        if p.grad is not None:
            raise ValueError("flatten_parameters: call it before the first backward (a parameter has a .grad)")
    first = params[0]
    if any(p.dtype != first.dtype or p.device != first.device for p in params):
        raise ValueError("flatten_parameters: all parameters must share one dtype and device")
    widths = [p[0].numel() for p in params]
    data = torch.empty((members, sum(widths)), device=first.device, dtype=first.dtype)
    grad = torch.zeros_like(data)
    start = 0
    with torch.no_grad():
        for p, width in zip(params, widths, strict=True):
            columns = slice(start, start + width)
            data[:, columns].copy_(p.reshape(members, width))
            p.data = data[:, columns].view(p.shape)
            p.grad = grad[:, columns].view(p.shape)
            start += width
    leaf = nn.Parameter(data)
    leaf.grad = grad
    return FlatParameters(leaf, grad)
