"""Which BatchNorm reads which layer's output, found on the autograd graph of one example forward.

``fold_batchnorm`` first tries ``torch.fx``. Real models often cannot be traced symbolically (Hugging
Face's ResNet checks its input's channel count in Python, for one), but any model can be *run*. One eval
forward on an example input, with forward hooks on the BatchNorms and the foldable layers, records:

- the autograd node that produced each foldable layer's output, and that produced each BatchNorm's input:
  a BatchNorm reads a layer's output directly exactly when the two are the same node (a view, an in-place
  change or any op in between makes a different node);
- how many edges of the whole graph, walked back from the model's outputs, point at each node: a layer
  whose output feeds anything besides its BatchNorm has more than one;
- how often each module ran in the forward.

Limitation: a use that autograd does not record (a ``.detach()``, an integer op) is not seen. For the
example forward only, gradients are switched on and frozen parameters made to require them (a model
prepared for inference has none that do, and would leave no graph); both are restored after it.
"""

from __future__ import annotations

from collections import Counter

import torch
import torch.nn as nn


def _tensors(value, found: list[torch.Tensor]) -> list[torch.Tensor]:
    """Every tensor inside ``value`` (tensors, tuples/lists, dicts and Hugging Face ``ModelOutput``s)."""
    if isinstance(value, torch.Tensor):
        found.append(value)
    elif isinstance(value, dict):
        for item in value.values():
            _tensors(item, found)
    elif isinstance(value, (tuple, list)):
        for item in value:
            _tensors(item, found)
    return found


def _edge_counts(roots: list[torch.Tensor]) -> Counter:
    """``{node: number of graph edges pointing at it}`` over the graph reachable from ``roots``."""
    counts: Counter = Counter()
    seen: set = set()
    stack = [t.grad_fn for t in roots if t.grad_fn is not None]
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        for parent, _ in node.next_functions:
            if parent is not None:
                counts[parent] += 1
                stack.append(parent)
    return counts


def _call(model: nn.Module, example):
    if isinstance(example, dict):
        return model(**example)
    if isinstance(example, (tuple, list)):
        return model(*example)
    return model(example)


def pairs_from_autograd(model: nn.Module, example, batchnorm_classes: tuple[type, ...],
                        foldable: tuple[type, ...]) -> tuple[list[tuple[str, str]], dict[str, str]]:
    """``(pairs, reasons)``: (layer, BatchNorm) names that can be folded, and why each other BatchNorm cannot.

    ``example`` is one input: a tensor, a tuple of positional arguments or a dict of keyword arguments.
    The model is run once as it is (call ``model.eval()`` first); its parameters are not changed, and
    BatchNorm buffers a training-mode forward would update are restored afterwards.
    """
    names = {id(m): name for name, m in model.named_modules()}
    layer_nodes: dict[str, object] = {}  # layer name -> grad_fn of its output
    bn_inputs: dict[str, object] = {}  # BatchNorm name -> grad_fn of its input
    calls: Counter = Counter()

    def hook(module, args, output):
        name = names[id(module)]
        calls[name] += 1
        if isinstance(module, batchnorm_classes):
            bn_inputs[name] = args[0].grad_fn if args and isinstance(args[0], torch.Tensor) else None
        elif isinstance(output, torch.Tensor):
            layer_nodes[name] = output.grad_fn

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (*batchnorm_classes, *foldable))]
    buffers = [(b, b.clone()) for m in model.modules() if isinstance(m, batchnorm_classes) for b in m.buffers()]
    frozen = [p for p in model.parameters() if not p.requires_grad]  # a model prepared for inference
    try:
        for p in frozen:
            p.requires_grad_(True)
        with torch.enable_grad():
            outputs = _tensors(_call(model, example), [])
    finally:
        for h in handles:
            h.remove()
        for p in frozen:
            p.requires_grad_(False)
        with torch.no_grad():
            for buffer, saved in buffers:
                buffer.copy_(saved)
    edges = _edge_counts(outputs)
    producer = {node: name for name, node in layer_nodes.items() if node is not None}
    pairs, reasons = [], {}
    for bn_name, node in bn_inputs.items():
        source = producer.get(node) if node is not None else None
        if calls[bn_name] > 1:
            reasons[bn_name] = f"called {calls[bn_name]} times per forward"
        elif node is None:
            reasons[bn_name] = "the example forward left no autograd graph at its input (nothing before it has parameters)"
        elif source is None:
            reasons[bn_name] = "its input is not the output of a Conv, ConvTranspose or Linear"
        elif edges[node] > 1:
            reasons[bn_name] = f"the output of {source} also feeds {edges[node] - 1} other operation(s)"
        elif calls[source] > 1:
            reasons[bn_name] = f"{source} is called {calls[source]} times per forward"
        else:
            pairs.append((source, bn_name))
    return pairs, reasons
