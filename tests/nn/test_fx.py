"""torch.fx: normlab's layers trace as torch's do (leaf call_module nodes), and the traced graph computes the
original model's numbers, which are torch's for the same state_dict, in train and eval mode."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.fx as fx
import torch.nn as tnn
import torch.nn.functional as F
from nn_cases import TorchLayerNorm2d, TorchRMSNorm2d, randomize_

import normlab.nn as N


class TorchFrozenBatchNorm2d(tnn.BatchNorm2d):
    """The torch anchor for FrozenBatchNorm2d: BatchNorm2d's eval-mode function in any mode (functional, as
    this class is outside torch.nn and gets traced through, where BatchNorm2d's rank check cannot run)."""

    def forward(self, x):
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)


NORMLAB = {
    "bn1": N.BatchNorm1d, "bn2": N.BatchNorm2d, "bn3": N.BatchNorm3d, "ln": N.LayerNorm, "rms": N.RMSNorm,
    "ln2d": N.LayerNorm2d, "rms2d": N.RMSNorm2d, "gn": N.GroupNorm, "in1": N.InstanceNorm1d,
    "in2": N.InstanceNorm2d, "frozen": N.FrozenBatchNorm2d,
}
TORCH = {
    "bn1": tnn.BatchNorm1d, "bn2": tnn.BatchNorm2d, "bn3": tnn.BatchNorm3d, "ln": tnn.LayerNorm,
    "rms": tnn.RMSNorm, "ln2d": TorchLayerNorm2d, "rms2d": TorchRMSNorm2d, "gn": tnn.GroupNorm,
    "in1": tnn.InstanceNorm1d, "in2": tnn.InstanceNorm2d, "frozen": TorchFrozenBatchNorm2d,
}
C, H, W = 6, 4, 5


class EveryNorm(tnn.Module):
    """Every normlab layer once, on an (N, C, H, W) input, built from ``classes`` (normlab's or torch's)."""

    def __init__(self, classes: dict) -> None:
        super().__init__()
        self.bn2, self.frozen, self.gn = classes["bn2"](C), classes["frozen"](C), classes["gn"](3, C)
        self.in2 = classes["in2"](C, affine=True, track_running_stats=True)
        self.ln2d, self.rms2d, self.bn3 = classes["ln2d"](C), classes["rms2d"](C), classes["bn3"](C)
        self.bn1, self.in1 = classes["bn1"](C), classes["in1"](C, affine=True)
        self.ln, self.rms = classes["ln"](H * W), classes["rms"](H * W)

    def forward(self, x):
        x = self.rms2d(self.ln2d(self.in2(self.gn(self.frozen(self.bn2(x))))))
        x = x + self.bn3(x.unsqueeze(2)).squeeze(2)  # (N, C, 1, H, W)
        z = self.in1(self.bn1(x.flatten(2)))  # (N, C, H*W)
        return self.rms(self.ln(z)) + self.rms(z.abs())  # the same module twice: two call_module nodes


def _models():
    model = randomize_(EveryNorm(NORMLAB))
    reference = EveryNorm(TORCH)
    reference.load_state_dict(model.state_dict())  # torch's BatchNorm fills in num_batches_tracked
    return model, reference


def test_symbolic_trace_keeps_every_normlab_layer_as_one_call_module_node():
    model, _ = _models()
    graph = fx.symbolic_trace(model).graph
    called = [node.target for node in graph.nodes if node.op == "call_module"]
    assert sorted(called) == sorted([*NORMLAB, "rms"])
    assert not [n for n in graph.nodes if n.op == "call_function" and "norm" in getattr(n.target, "__name__", "")]


def test_traced_graph_equals_the_module_and_torch_in_train_then_eval():
    model, reference = _models()
    traced = fx.symbolic_trace(copy.deepcopy(model))  # traced once, in train mode
    traced_torch = fx.symbolic_trace(reference)
    gen = torch.Generator().manual_seed(0)
    for mode in (True, True, False):  # two training steps update the running statistics, then eval
        for m in (model, traced, traced_torch):
            m.train(mode)
        x = torch.randn(3, C, H, W, generator=gen) * 2 + 1
        out = model(x)
        assert torch.equal(traced(x), out)  # the same modules run: identical, not merely close
        torch.testing.assert_close(traced_torch(x), out)
    for name, value in model.state_dict().items():
        assert torch.equal(traced.state_dict()[name], value), name
        torch.testing.assert_close(traced_torch.state_dict()[name], value, msg=name)


def test_traced_graph_keeps_normlab_input_checks():
    traced = fx.symbolic_trace(_models()[0])
    with pytest.raises(ValueError, match="num_features=6"):
        traced(torch.randn(2, 5, H, W))


@pytest.mark.parametrize("name", list(NORMLAB))
@pytest.mark.parametrize("training", [True, False])
def test_a_layer_traced_as_the_root_computes_torchs_numbers(name, training):
    args = (3, C) if name == "gn" else (C,)
    shape = {"bn1": (4, C, 7), "in1": (4, C, 7), "bn3": (4, C, 2, 3, 3), "ln": (4, 3, C), "rms": (4, 3, C)}
    x = torch.randn(shape.get(name, (4, C, 3, 3)))
    layer = randomize_(NORMLAB[name](*args)).train(training)
    anchor = TORCH[name](*args).train(training)
    anchor.load_state_dict(layer.state_dict())
    traced = fx.symbolic_trace(layer)
    torch.testing.assert_close(traced(x), anchor(x))
    for key, value in traced.state_dict().items():
        torch.testing.assert_close(value, anchor.state_dict()[key], msg=key)
