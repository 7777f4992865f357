r"""``fold_batchnorm``: merge eval-mode BatchNorm into the Conv/ConvTranspose/Linear that feeds it.

In eval mode a BatchNorm is a per-channel affine map, so it composes with the linear layer before it:

.. math::
    s_c = \frac{\gamma_c}{\sqrt{\hat\sigma^2_c + \epsilon}}, \qquad
    W'_{c,\dots} = s_c\, W_{c,\dots}, \qquad
    b'_c = s_c\,(b_c - \hat\mu_c) + \beta_c

where ``c`` is the *output* channel: dim 0 of a Conv or Linear weight (out, in/groups, *k) or (out, in);
for a ConvTranspose, whose weight is (in, out/groups, *k), channel ``g * out/groups + j`` of group ``g``.
The arithmetic is done in float64 and rounded once into the layer's dtype.

Which pairs are folded is decided on the model's graph: the model is traced with ``torch.fx`` (norms,
convs and linears kept as leaves) and a BatchNorm is folded when its only input is the output of a
foldable layer that feeds nothing else and both modules run once per forward. If the model cannot be
traced (data-dependent control flow, Python checks on shapes), pairs are found on the autograd graph of
one forward on ``example_inputs`` when given (``_autograd_pairs.py``), and otherwise only neighbours
inside ``nn.Sequential`` containers are folded.
The model is changed in place: the layer gets the new weight and bias and the BatchNorm becomes
``nn.Identity`` (so the other state_dict keys and Sequential indices do not move).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import pairwise

import torch
import torch.fx as fx
import torch.nn as nn
from torch.nn.modules.batchnorm import _BatchNorm

from normlab.nn.surgery._autograd_pairs import pairs_from_autograd
from normlab.nn.surgery._families import family_of, normlab_class
from normlab.nn.surgery._tree import find_modules, replace_module, short_repr
from normlab.nn.surgery.freeze import FrozenBatchNorm

FOLDABLE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d,
            nn.Linear)


@dataclass
class FoldReport:
    """Pairs folded (layer name, BatchNorm name), BatchNorms left with the reason, and how pairs were found."""

    method: str = "torch.fx"
    folded: list[tuple[str, str]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.folded)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self.folded)

    def __str__(self) -> str:
        lines = [f"fold_batchnorm ({self.method}): {len(self.folded)} folded, {len(self.skipped)} not folded"]
        lines += [f"  {bn} folded into {layer}" for layer, bn in self.folded]
        lines += [f"  not folded {bn}: {why}" for bn, why in self.skipped]
        return "\n".join(lines)


def _batchnorm_classes() -> tuple[type, ...]:
    """BatchNorms, and the frozen ones (always an eval-mode affine map): ours and normlab.nn's."""
    frozen = normlab_class("frozen", "FrozenBatchNorm2d")
    return (_BatchNorm, FrozenBatchNorm) + ((frozen,) if frozen is not None else ())


class _LeafTracer(fx.Tracer):
    """Keeps norms and foldable layers as single call_module nodes, whatever package defines them."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        # normlab's layers validate their inputs in Python, which a symbolic trace cannot run through.
        is_norm = family_of(type(m)) is not None or type(m).__module__.startswith("normlab.nn.")
        return is_norm or isinstance(m, (*_batchnorm_classes(), *FOLDABLE)) or super().is_leaf_module(m, qualname)


def _pairs_from_graph(model: nn.Module) -> tuple[list[tuple[str, str]], dict[str, str]]:
    graph = _LeafTracer().trace(model)
    calls = Counter(node.target for node in graph.nodes if node.op == "call_module")
    pairs, reasons = [], {}
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(model.get_submodule(node.target), _batchnorm_classes()):
            continue
        bn_name, source = node.target, node.args[0] if node.args else None
        if calls[bn_name] > 1:
            reasons[bn_name] = f"called {calls[bn_name]} times per forward"
        elif not (isinstance(source, fx.Node) and source.op == "call_module"
                  and isinstance(model.get_submodule(source.target), FOLDABLE)):
            what = source.name if isinstance(source, fx.Node) else repr(source)
            reasons[bn_name] = f"its input ({what}) is not the output of a Conv, ConvTranspose or Linear"
        elif len(source.users) > 1:
            others = sorted(user.name for user in source.users if user is not node)
            reasons[bn_name] = f"the output of {source.target} also feeds {', '.join(others)}"
        elif calls[source.target] > 1:
            reasons[bn_name] = f"{source.target} is called {calls[source.target]} times per forward"
        else:
            pairs.append((source.target, bn_name))
    return pairs, reasons


def _pairs_from_sequentials(model: nn.Module) -> list[tuple[str, str]]:
    pairs = []
    for name, container in model.named_modules():
        if not isinstance(container, nn.Sequential):
            continue
        children = list(container.named_children())
        for (layer_name, layer), (bn_name, bn) in pairwise(children):
            if isinstance(layer, FOLDABLE) and isinstance(bn, _batchnorm_classes()):
                prefix = f"{name}." if name else ""
                pairs.append((prefix + layer_name, prefix + bn_name))
    return pairs


def _out_channels(layer: nn.Module) -> int:
    if isinstance(layer, nn.Linear):
        return layer.out_features
    return layer.out_channels


def _why_not(layer: nn.Module, bn: nn.Module, shared: set[int]) -> str | None:
    if isinstance(bn, _BatchNorm) and bn.training:
        return "in training mode (folding uses running statistics; call model.eval() first)"
    if bn.running_mean is None:
        return "track_running_stats=False: eval mode normalizes with batch statistics, not a fixed map"
    if bn.num_features != _out_channels(layer):
        return f"{bn.num_features} features but {short_repr(layer)} has {_out_channels(layer)} outputs"
    if any(id(p) in shared for p in layer.parameters(recurse=False)):
        return f"the parameters of {short_repr(layer)} are shared with another module"
    return None


@torch.no_grad()
def _fold_into(layer: nn.Module, bn: nn.Module) -> None:
    f64 = torch.float64
    scale = torch.rsqrt(bn.running_var.to(f64) + bn.eps)  # (C,)
    if bn.weight is not None:
        scale = scale * bn.weight.to(f64)
    shift = -bn.running_mean.to(f64) * scale
    if bn.bias is not None:
        shift = shift + bn.bias.to(f64)
    weight = layer.weight.to(f64)
    if isinstance(layer, (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
        groups, kernel = layer.groups, weight.shape[2:]
        grouped = weight.reshape(groups, weight.shape[0] // groups, weight.shape[1], *kernel)
        folded = grouped * scale.reshape(groups, 1, weight.shape[1], *([1] * len(kernel)))
        folded = folded.reshape(weight.shape)
    else:
        folded = weight * scale.reshape(-1, *([1] * (weight.dim() - 1)))
    layer.weight.copy_(folded.to(layer.weight.dtype))
    old_bias = layer.bias.to(f64) if layer.bias is not None else torch.zeros_like(scale)
    new_bias = (old_bias * scale + shift).to(device=layer.weight.device, dtype=layer.weight.dtype)
    if layer.bias is None:
        layer.bias = nn.Parameter(new_bias, requires_grad=layer.weight.requires_grad)
    else:
        layer.bias.copy_(new_bias)


def fold_batchnorm(model: nn.Module, example_inputs=None) -> FoldReport:
    """Fold, in place, every eval-mode BatchNorm that directly follows a Conv/ConvTranspose/Linear.

    Pairs are found on the ``torch.fx`` graph; for a model fx cannot trace, on the autograd graph of one
    forward on ``example_inputs`` (a tensor, a tuple of positional arguments or a dict of keyword
    arguments, e.g. one batch of a Hugging Face model's inputs), and without it only among
    ``nn.Sequential`` neighbours.

    Frozen BatchNorms (:class:`FrozenBatchNorm`, ``normlab.nn.FrozenBatchNorm2d``) are folded too, in any
    mode: they always compute the eval-mode map.

    Outputs of the folded model equal the unfolded model's (eval mode) up to float rounding. Folded
    BatchNorms become ``nn.Identity``; the others stay and are listed in the report with the reason
    (training mode, no running statistics, input not from a foldable layer, that layer's output used
    elsewhere, module called more than once, channel mismatch, shared parameters).

    A Linear followed by BatchNorm1d is folded as ``(N, C)`` features, the only layout where the
    Linear's outputs are the BatchNorm's channels.

    Returns:
        A :class:`FoldReport` (``report.folded``: ``(layer, batchnorm)`` names; ``report.skipped``).

    Example::

        >>> model.eval(); report = fold_batchnorm(model); print(report)
    """
    report = FoldReport()
    batchnorms = find_modules(model, lambda m: isinstance(m, _batchnorm_classes()), "fold_batchnorm")
    try:
        pairs, reasons = _pairs_from_graph(model)
        called = {bn for _, bn in pairs} | set(reasons)
        for match in batchnorms:
            if not called.intersection(match.names):
                reasons[match.name] = "not called by the traced forward"
    except Exception as exc:  # fx cannot trace data-dependent control flow; run the model or use containers.
        untraceable = f"torch.fx could not trace the model ({type(exc).__name__})"
        if example_inputs is not None:
            report.method = f"autograd graph of the example forward; {untraceable}"
            pairs, reasons = pairs_from_autograd(model, example_inputs, _batchnorm_classes(), FOLDABLE)
            missing = "not called by the example forward"
        else:
            report.method = f"nn.Sequential neighbours; {untraceable}; pass example_inputs= to use the autograd graph"
            pairs, reasons = _pairs_from_sequentials(model), {}
            missing = "not directly after a Conv, ConvTranspose or Linear in an nn.Sequential"
        seen = {bn for _, bn in pairs} | set(reasons)
        for match in batchnorms:
            if not seen.intersection(match.names):
                reasons[match.name] = missing
    ids = Counter(id(p) for _, p in model.named_parameters(remove_duplicate=False))
    shared = {key for key, count in ids.items() if count > 1}
    aliases = {name: match.names for match in batchnorms for name in match.names}
    for layer_name, bn_name in pairs:
        layer, bn = model.get_submodule(layer_name), model.get_submodule(bn_name)
        why = _why_not(layer, bn, shared)
        if why is not None:
            reasons[bn_name] = why
            continue
        _fold_into(layer, bn)
        for name in aliases.get(bn_name, [bn_name]):
            replace_module(model, name, nn.Identity())
        report.folded.append((layer_name, bn_name))
    report.skipped = sorted(reasons.items())
    return report
