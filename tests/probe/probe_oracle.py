"""Shared pieces for the probe tests: seed 000 models, a naive per-tensor oracle, table lookups.

Imported by name (`from probe_oracle import ...`): test folders have no __init__.py.
"""

from __future__ import annotations

import torch
from torch import nn

from normlab.probe import ReductionPolicy

# Each reduction path of the probe, chosen through its public policy (see normlab/probe/policy.py).
PATHS = {
    "deferred": ReductionPolicy(),  # small models: a ring of step vectors reduced every K steps
    "segments": ReductionPolicy(ring_elements=0),  # reduced at each step by the segment kernels
    "hook": ReductionPolicy(ring_elements=0, reduce_in_hooks=True),  # every output reduced in its hook
    # the step vector counts as large (lean, tensor by tensor): runs of biases, blocks of weights
    "split": ReductionPolicy(ring_elements=0, split_above_elements=0, small_tensor_elements=10),
}


def seed000_ln_model(dtype=torch.float64) -> nn.Sequential:
    """Seed 000's `ln` arm: Linear(2,20), Linear(20,20), Linear(20,20), LayerNorm, Linear, LayerNorm, Linear."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(2, 20), nn.Linear(20, 20), nn.Linear(20, 20), nn.LayerNorm(20),
        nn.Linear(20, 20), nn.LayerNorm(20), nn.Linear(20, 1),
    ).to(dtype)


def seed000_data(dtype=torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    x1 = torch.arange(-10, 10).to(dtype)
    x2 = torch.arange(0, 20).to(dtype)
    return torch.stack((x1, x2), dim=1), 2 * x1 - x2**2 + 1


def bn_relu_model(dtype=torch.float64) -> nn.Sequential:
    """Has zeros (ReLU), running stats (BatchNorm1d) and a Dropout that is skipped in eval."""
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(3, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 1)).to(dtype)


class NaiveOracle:
    """Records, with obvious per-tensor code, what the probe should report: clones of module outputs (and
    norm-layer inputs) during training forwards, gradients and weights before the step, weights after."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.outputs: dict[str, torch.Tensor] = {}
        self.inputs: dict[str, torch.Tensor] = {}
        self.handles = []
        for name, module in model.named_modules():
            if not list(module.children()):
                self.handles.append(module.register_forward_hook(self._hook(name)))

    def _hook(self, name):
        def hook(module, args, output):
            if torch.is_grad_enabled() and module.training:
                self.outputs[name] = output.detach().clone()
                self.inputs[name] = args[0].detach().clone()
        return hook

    def before_step(self):
        self.grads = {n: p.grad.detach().clone() for n, p in self.model.named_parameters()}
        self.weights = {n: p.detach().clone() for n, p in self.model.named_parameters()}

    def after_step(self):
        self.updates = {n: p.detach() - self.weights[n] for n, p in self.model.named_parameters()}
        self.running = {n: b.detach().clone() for n, b in self.model.named_buffers() if "running" in n}


def naive_summary(t: torch.Tensor) -> dict[str, float]:
    t = t.double()
    return {
        "mean": t.mean().item(), "std": t.std(unbiased=False).item(), "rms": t.pow(2).mean().sqrt().item(),
        "absmax": t.abs().max().item(), "zero_frac": (t == 0).double().mean().item(), "norm": t.norm().item(),
    }


class Lookup:
    """Exact-match access to a scalars table: ``Lookup(table)(step=0, name="1", kind="grad", stat="norm")``."""

    def __init__(self, frame):
        self.index: dict[tuple, list[float]] = {}
        for row in frame.astype({"name": str, "kind": str, "stat": str}).itertuples(index=False):
            self.index.setdefault((row.step, row.member, row.name, row.kind, row.stat), []).append(row.value)

    def __call__(self, *, step, name, kind, stat, member=0) -> float:
        hits = self.index.get((step, member, name, kind, stat), [])
        assert len(hits) == 1, f"expected one row for {(step, member, name, kind, stat)}, got {len(hits)}"
        return float(hits[0])

    def has(self, *, step, name, kind, stat, member=0) -> bool:
        return (step, member, name, kind, stat) in self.index
