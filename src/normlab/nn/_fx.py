"""torch.fx support: normlab's layers appear in a symbolic trace as torch's own norm layers do.

``torch.fx`` keeps modules defined in ``torch.nn`` as *leaves* (one ``call_module`` node; the module runs
for real when the GraphModule is called) and traces into every other module's forward. Tracing into
normlab's forward cannot work: its input checks and the recentering test read values of the input, which
a symbolic ``Proxy`` does not have. ``Tracer.is_leaf_module`` decides by ``m.__module__``, which normlab
should not fake (pickling, torch.compile and other tools read it too), and plain ``symbolic_trace`` gives
no hook to extend the list. So each forward, on receiving a Proxy, emits the same ``call_module`` node a
leaf would get, from inside the trace. The traced graph then has torch's shape and keeps torch's
behaviour: the module runs whole at call time (checks, recentering, the fused RMSNorm), and
``train()``/``eval()`` on the GraphModule still switch BatchNorm between batch and running statistics,
where tracing through would freeze the mode seen at trace time.

A module that is itself the traced root has no qualified name to call, so there the plain torch
functional path is traced instead (what ``symbolic_trace(torch.nn.LayerNorm(...))`` records).
"""

from __future__ import annotations

from collections.abc import Callable

import torch.fx as fx
import torch.nn as nn


def is_fx_proxy(x: object) -> bool:
    return isinstance(x, fx.Proxy)


def traced_as_leaf(module: nn.Module, input: fx.Proxy, root_path: Callable[[fx.Proxy], fx.Proxy]) -> fx.Proxy:
    """A ``call_module`` node for ``module`` applied to ``input``; ``root_path(input)`` if it is the root."""
    tracer = input.tracer
    if getattr(tracer, "root", None) is not module:
        return tracer.create_proxy("call_module", tracer.path_of_module(module), (input,), {})
    return root_path(input)
