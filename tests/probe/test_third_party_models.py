"""The probe on real third-party models (Hugging Face GPT-2, Llama, BERT, ResNet) against a naive oracle.

Every statistic the probe reports for a training step -- activations of every leaf module, norm-layer
inputs and outputs, gradients, weights, updates, running statistics, the global gradient norm, and the
histogram counts -- equals obvious per-tensor code run on the same step; and after the ``with`` block the
models, optimizers and torch's global hook tables hold exactly the hooks they held before.
"""

from __future__ import annotations

import math

import pytest
import torch
from probe_oracle import Lookup
from torch import nn

from normlab.probe import Probe
from normlab.probe.hooks import SAMPLE_ABOVE_ELEMENTS, is_norm_layer
from third_party_models import BUILDERS, batch, gpt2, llama

STEPS = 3
ACTIVATION_STATS = ("mean", "std", "rms", "absmax", "zero_frac")
TENSOR_STATS = ("norm", "mean", "std", "absmax")


def _first_float(value):
    if isinstance(value, torch.Tensor):
        return value if value.is_floating_point() else None
    if isinstance(value, (tuple, list)):
        return next((v for v in value if isinstance(v, torch.Tensor) and v.is_floating_point()), None)
    return None


class Oracle:
    """Clones, in plain per-tensor code, what one training step shows: leaf-module outputs (norm-layer
    inputs too) of the last training forward, gradients and weights as the optimizer sees them, weights
    after the step, running statistics."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.outputs: dict[str, torch.Tensor] = {}
        self.inputs: dict[str, torch.Tensor] = {}
        self.handles = [m.register_forward_hook(self._hook(name)) for name, m in model.named_modules()
                        if not list(m.children())]
        self.steps: list[dict] = []

    def _hook(self, name):
        def hook(module, args, output):
            out = _first_float(output)
            if out is not None and torch.is_grad_enabled() and module.training:
                self.outputs[name] = out.detach().clone()
                if args and isinstance(args[0], torch.Tensor):
                    self.inputs[name] = args[0].detach().clone()
        return hook

    def before_step(self):
        params = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
        self._grads = {n: p.grad.detach().clone() for n, p in params if p.grad is not None}
        self._weights = {n: p.detach().clone() for n, p in params}

    def after_step(self):
        updates = {n: p.detach() - self._weights[n] for n, p in self.model.named_parameters() if n in self._weights}
        running = {n: b.detach().clone() for n, b in self.model.named_buffers()
                   if n.rsplit(".", 1)[-1] in ("running_mean", "running_var")}
        self.steps.append({"outputs": dict(self.outputs), "inputs": dict(self.inputs), "grads": self._grads,
                           "weights": self._weights, "updates": updates, "running": running})
        self.outputs, self.inputs = {}, {}

    def close(self):
        for h in self.handles:
            h.remove()


def naive(t: torch.Tensor) -> dict[str, float]:
    t = t.double()
    return {"mean": t.mean().item(), "std": t.std(unbiased=False).item(), "rms": t.pow(2).mean().sqrt().item(),
            "absmax": t.abs().max().item(), "zero_frac": (t == 0).double().mean().item(),
            "norm": t.norm().item()}


def _close(actual: float, expected: float, scale: float, what) -> None:
    # float32 models, reduced in float32 by the probe: relative 1e-4 of the value, or 1e-5 of the tensor's
    # scale (a mean near 0 of values near 0.02 has no relative precision to speak of)
    assert math.isclose(actual, expected, rel_tol=1e-4, abs_tol=1e-5 * scale + 1e-12), (what, actual, expected)


def _train(model, name, *, accumulate=1, autocast=False, set_to_none=True, steps=STEPS, optimizer=None,
           probe_kwargs=None):
    model.train()
    optimizer = optimizer or torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    optimizers = optimizer if isinstance(optimizer, list) else [optimizer]
    oracle = Oracle(model)
    with Probe(model, optimizer, histograms=True, **(probe_kwargs or {})) as probe:
        for step in range(steps):
            for micro in range(accumulate):
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                    loss = model(**batch(name, step * accumulate + micro)).loss
                (loss / accumulate).backward()
            oracle.before_step()
            for opt in optimizers:
                opt.step()
            oracle.after_step()
            for opt in optimizers:
                opt.zero_grad(set_to_none=set_to_none)
    oracle.close()
    return probe, oracle


def _check_against_oracle(model, probe, oracle, *, activation_rtol=None):
    table = probe.scalars()
    find = Lookup(table)
    norm_layers = {n for n, m in model.named_modules() if is_norm_layer(m) and not list(m.children())}
    checked = {"activation": 0, "norm": 0, "param": 0, "running": 0}
    for step, snap in enumerate(oracle.steps):
        for name, output in snap["outputs"].items():
            if output[0].numel() * output.shape[0] > SAMPLE_ABOVE_ELEMENTS:
                continue  # summarized from a sample (tested in test_oracle.py)
            kinds = ({"norm_in": snap["inputs"][name], "norm_out": output} if name in norm_layers
                     else {"activation": output})
            for kind, tensor in kinds.items():
                if not find.has(step=step, name=name, kind=kind, stat="mean"):
                    # an output changed in place after its hook (ResNet's `hidden += residual`) is dropped
                    # once, at step 0, and reduced in the hook from then on
                    assert step == 0, (step, name, kind)
                    continue
                expected = naive(tensor)
                for stat in ACTIVATION_STATS:
                    _close(find(step=step, name=name, kind=kind, stat=stat), expected[stat], expected["rms"],
                           (step, name, kind, stat))
                checked["norm" if kind != "activation" else "activation"] += 1
        for name, weight in snap["weights"].items():
            tensors = {"weight": weight}
            if name in snap["grads"]:
                tensors["grad"] = snap["grads"][name]
            for kind, tensor in tensors.items():
                expected = naive(tensor)
                for stat in TENSOR_STATS:
                    _close(find(step=step, name=name, kind=kind, stat=stat), expected[stat], expected["rms"],
                           (step, name, kind, stat))
            update = naive(snap["updates"][name])
            for stat in ("norm", "std"):
                _close(find(step=step, name=name, kind="update", stat=stat), update[stat], update["rms"],
                       (step, name, "update", stat))
            checked["param"] += 1
        for name, value in snap["running"].items():
            expected = naive(value)
            for stat in ("mean", "rms"):
                _close(find(step=step, name=name, kind="running_stats", stat=stat), expected[stat],
                       expected["rms"], (step, name, stat))
            checked["running"] += 1
        global_norm = math.sqrt(sum(naive(g)["norm"] ** 2 for g in snap["grads"].values()))
        _close(find(step=step, name="model", kind="global", stat="grad_norm"), global_norm, global_norm, step)
    return checked


def _check_histograms(probe, oracle, step: int):
    """Each parameter's gradient and weight histogram: counts of ``bin_lo <= x < bin_hi``, counted naively."""
    hist = probe.histograms().astype({"name": str, "kind": str})
    hist = hist[hist.step == step]
    snap = oracle.steps[step]
    for kind, tensors in (("grad", snap["grads"]), ("weight", snap["weights"])):
        for name, tensor in tensors.items():
            rows = hist[(hist.kind == kind) & (hist.name == name)]
            assert len(rows) == probe.binning.bins, (kind, name)
            values = tensor.double().flatten()
            for lo, hi, count in zip(rows.bin_lo, rows.bin_hi, rows["count"], strict=True):
                assert count == int(((values >= lo) & (values < hi)).sum()), (kind, name, lo, hi)


def _hook_tables(model: nn.Module, optimizers) -> dict:
    """Every hook table a probe could write to, as {where: tuple of handle ids}."""
    from torch.nn.modules import module as module_globals
    from torch.optim import optimizer as optimizer_globals

    tables = {}
    for name, m in model.named_modules():
        for attr in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks",
                     "_state_dict_hooks", "_load_state_dict_pre_hooks"):
            tables[(name, attr)] = tuple(getattr(m, attr, {}))
    for i, opt in enumerate(optimizers):
        for attr in ("_optimizer_step_pre_hooks", "_optimizer_step_post_hooks"):
            tables[(f"optimizer{i}", attr)] = tuple(getattr(opt, attr))
    for attr in ("_global_forward_hooks", "_global_forward_pre_hooks", "_global_backward_hooks",
                 "_global_backward_pre_hooks"):
        tables[("torch.nn", attr)] = tuple(getattr(module_globals, attr))
    for attr in ("_global_optimizer_pre_hooks", "_global_optimizer_post_hooks"):
        tables[("torch.optim", attr)] = tuple(getattr(optimizer_globals, attr))
    for p in model.parameters():
        tables[("param", id(p))] = tuple(getattr(p, "_backward_hooks", None) or ())
    return tables


@pytest.mark.parametrize("name", list(BUILDERS))
def test_statistics_equal_naive_per_tensor_computation(name):
    model = BUILDERS[name]()
    before = _hook_tables(model, [])
    probe, oracle = _train(model, name)
    checked = _check_against_oracle(model, probe, oracle)
    # the oracle covered every kind of row this model has
    assert checked["activation"] > 10 and checked["norm"] > 0 and checked["param"] == STEPS * len(
        [p for p in model.parameters() if p.requires_grad])
    assert (checked["running"] > 0) == (name == "resnet")
    _check_histograms(probe, oracle, step=STEPS - 1)
    after = _hook_tables(model, [])
    assert after == before  # every module hook the probe installed is gone


def test_tied_embedding_and_head_are_reported_once():
    model = gpt2()
    assert model.lm_head.weight is model.transformer.wte.weight
    probe, oracle = _train(model, "gpt2", steps=1)
    grads = probe.scalars().astype({"name": str, "kind": str})
    names = set(grads[grads.kind == "grad"].name)
    assert "transformer.wte.weight" in names and "lm_head.weight" not in names
    _check_against_oracle(model, probe, oracle)  # its gradient is the sum of both uses


def test_gradient_accumulation_counts_optimizer_steps_and_reports_the_accumulated_gradient():
    model = llama()
    probe, oracle = _train(model, "llama", accumulate=3, steps=2)
    assert probe.steps == 2
    assert sorted(probe.scalars()["step"].unique()) == [0, 1]
    _check_against_oracle(model, probe, oracle)  # the oracle saw .grad at the step: the sum of 3 passes


def test_zero_grad_to_zeros_instead_of_none():
    model = gpt2()
    probe, oracle = _train(model, "gpt2", set_to_none=False)
    _check_against_oracle(model, probe, oracle)


def test_bfloat16_autocast():
    model = llama()
    probe, oracle = _train(model, "llama", autocast=True, steps=2)
    outputs = oracle.steps[0]["outputs"]
    assert any(t.dtype == torch.bfloat16 for t in outputs.values())  # autocast really ran
    _check_against_oracle(model, probe, oracle)


def test_frozen_parameters_are_left_out():
    model = gpt2()
    model.transformer.wpe.weight.requires_grad_(False)
    model.transformer.h[0].requires_grad_(False)
    probe, oracle = _train(model, "gpt2", steps=2)
    table = probe.scalars().astype({"name": str, "kind": str})
    params = set(table[table.kind.isin(["grad", "weight", "update"])].name)
    assert "transformer.wpe.weight" not in params and not any(n.startswith("transformer.h.0.") for n in params)
    assert "transformer.h.1.attn.c_attn.weight" in params
    _check_against_oracle(model, probe, oracle)


def test_two_optimizers_embeddings_by_sgd_blocks_by_adamw():
    model = gpt2()
    embeddings = [p for n, p in model.named_parameters() if n.startswith(("transformer.wte", "transformer.wpe"))]
    rest = [p for n, p in model.named_parameters() if not n.startswith(("transformer.wte", "transformer.wpe"))]
    optimizers = [torch.optim.SGD(embeddings, lr=0.1, momentum=0.9), torch.optim.AdamW(rest, lr=1e-3)]
    probe, oracle = _train(model, "gpt2", optimizer=optimizers)
    assert probe.steps == STEPS
    checked = _check_against_oracle(model, probe, oracle)  # updates of both optimizers' parameters
    assert checked["param"] == STEPS * len(list(model.parameters()))


def test_hooks_are_removed_when_the_training_loop_raises():
    model = gpt2()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    before = _hook_tables(model, [optimizer])
    with pytest.raises(KeyError, match="boom"), Probe(model, optimizer, histograms=True):
        model(**batch("gpt2", 0)).loss.backward()
        optimizer.step()
        raise KeyError("boom")
    assert _hook_tables(model, [optimizer]) == before
