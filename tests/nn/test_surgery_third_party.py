"""Surgery on real third-party models: Hugging Face's norm classes <-> normlab's, BatchNorm folding and
recalibration on Hugging Face's ResNet (which torch.fx cannot trace)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers.models.llama.modeling_llama import LlamaRMSNorm

import normlab.nn as N
from normlab.nn.surgery import convert_norms, fold_batchnorm, recalibrate_batchnorm, register_norm_class
from third_party_models import batch, bert, gpt2, llama, resnet


def _perturb_norms(model, classes):
    """Gains away from 1 and biases away from 0, so that carrying them over is tested."""
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, classes):
                m.weight.copy_(1 + 0.2 * torch.randn(m.weight.shape, generator=gen))
                if getattr(m, "bias", None) is not None:
                    m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=gen))


def _logits(model, name):
    with torch.no_grad():
        return model(**batch(name, 0)).logits


def test_llama_rmsnorm_to_normlab_and_back_keeps_the_outputs():
    model = llama().eval()
    _perturb_norms(model, LlamaRMSNorm)
    expected = _logits(model, "llama")
    report = convert_norms(model, from_=LlamaRMSNorm, to="rmsnorm")
    assert len(report) == 5 and all(r.carried == ("weight",) for r in report)
    converted = [m for m in model.modules() if isinstance(m, N.RMSNorm)]
    assert len(converted) == 5 and converted[0].eps == 1e-6
    assert not any(isinstance(m, LlamaRMSNorm) for m in model.modules())
    # Llama's RMSNorm and normlab's differ only in float32 rounding order
    torch.testing.assert_close(_logits(model, "llama"), expected, rtol=1e-5, atol=1e-5)
    back = convert_norms(model, from_="rmsnorm", to=LlamaRMSNorm)
    assert len(back) == 5 and sum(isinstance(m, LlamaRMSNorm) for m in model.modules()) == 5
    torch.testing.assert_close(_logits(model, "llama"), expected, rtol=1e-5, atol=1e-5)


def test_normlab_rmsnorm_with_default_eps_to_llama_keeps_its_eps_and_a_weightless_one_is_refused():
    model = nn.Sequential(nn.Linear(4, 8), N.RMSNorm(8))  # eps=None: finfo(float32).eps at run time
    x = torch.randn(3, 4)
    expected = model(x).detach()
    convert_norms(model, from_="rmsnorm", to=LlamaRMSNorm)
    assert model[1].variance_epsilon == torch.finfo(torch.float32).eps
    torch.testing.assert_close(model(x), expected)
    with pytest.raises(ValueError, match="always has a weight"):
        convert_norms(nn.Sequential(N.RMSNorm(8, elementwise_affine=False)), from_="rmsnorm", to=LlamaRMSNorm)


@pytest.mark.parametrize(("build", "name", "count"), [(gpt2, "gpt2", 5), (bert, "bert", 6)])
def test_gpt2_and_bert_layernorm_to_normlab_keeps_the_outputs(build, name, count):
    model = build().eval()
    _perturb_norms(model, nn.LayerNorm)
    expected = _logits(model, name)
    report = convert_norms(model, from_=nn.LayerNorm, to="layernorm")
    assert len(report) == count and all(r.carried == ("weight", "bias") for r in report)
    assert sum(type(m) is N.LayerNorm for m in model.modules()) == count
    torch.testing.assert_close(_logits(model, name), expected, rtol=0, atol=0)  # same kernel, same numbers


def test_a_registered_class_converts_like_a_known_one():
    class ScaleNorm(nn.Module):  # someone's RMSNorm, with its own attribute names
        def __init__(self, size, epsilon=1e-5):
            super().__init__()
            self.gain, self.epsilon = nn.Parameter(torch.ones(size)), epsilon
            self.weight = self.gain

        def forward(self, x):
            return self.gain * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.epsilon)

    model = nn.Sequential(nn.Linear(4, 8), ScaleNorm(8))
    with pytest.raises(ValueError, match="not a norm layer normlab knows"):
        convert_norms(model, from_=ScaleNorm, to="rmsnorm")
    register_norm_class(ScaleNorm, "rmsnorm", read=lambda m: {"normalized_shape": tuple(m.gain.shape),
                                                              "eps": m.epsilon, "elementwise_affine": True})
    with torch.no_grad():
        model[1].gain.mul_(1.5)
    x = torch.randn(3, 4)
    expected = model(x).detach()
    convert_norms(model, from_=ScaleNorm, to="rmsnorm")
    assert isinstance(model[1], N.RMSNorm) and model[1].eps == 1e-5
    torch.testing.assert_close(model(x), expected)


def _trained_resnet():
    model = resnet().train()
    with torch.no_grad():
        for step in range(3):
            model(**batch("resnet", step))
    return model.eval()


def test_fold_batchnorm_on_hf_resnet_via_the_autograd_graph():
    model = _trained_resnet()
    pixels = batch("resnet", 9)["pixel_values"]
    with torch.no_grad():
        expected = model(pixel_values=pixels).logits
    without_example = fold_batchnorm(_trained_resnet())
    assert len(without_example) == 0 and "pass example_inputs=" in without_example.method  # fx cannot trace it
    report = fold_batchnorm(model, example_inputs={"pixel_values": pixels})
    assert report.method.startswith("autograd graph")
    assert len(report) == 6 and not report.skipped
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    with torch.no_grad():
        torch.testing.assert_close(model(pixel_values=pixels).logits, expected, rtol=1e-4, atol=1e-5)


class _Untraceable(nn.Module):
    """fx fails on the Python branch; conv `a` also feeds the residual, conv `b` feeds only its BN."""

    def __init__(self):
        super().__init__()
        self.a, self.bn_a = nn.Conv2d(3, 3, 3, padding=1), nn.BatchNorm2d(3)
        self.b, self.bn_b = nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3)

    def forward(self, x):
        if x.shape[1] != 3:  # a Python check on the input, as Hugging Face models do
            raise ValueError("3 channels")
        a = self.a(x)
        return self.bn_b(self.b(self.bn_a(a) + a))


def test_autograd_pairing_works_on_a_frozen_model_and_leaves_it_frozen():
    torch.manual_seed(0)
    model = _Untraceable().eval().requires_grad_(False)
    x = torch.randn(2, 3, 5, 5)
    expected = model(x)
    report = fold_batchnorm(model, example_inputs=x)
    assert report.folded == [("b", "bn_b")]
    assert not any(p.requires_grad for p in model.parameters())
    torch.testing.assert_close(model(x), expected, rtol=1e-5, atol=1e-6)


def test_autograd_pairing_refuses_a_layer_whose_output_feeds_something_else():
    torch.manual_seed(0)
    model = _Untraceable()
    model.train()
    with torch.no_grad():
        model(torch.randn(4, 3, 5, 5))
    model.eval()
    buffers = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(2, 3, 5, 5)
    expected = model(x).detach()
    report = fold_batchnorm(model, example_inputs=x)
    assert report.folded == [("b", "bn_b")]
    assert dict(report.skipped) == {"bn_a": "the output of a also feeds 1 other operation(s)"}
    torch.testing.assert_close(model(x), expected, rtol=1e-5, atol=1e-6)
    assert torch.equal(model.bn_a.running_mean, buffers["bn_a.running_mean"])  # the example forward left no trace


def test_recalibrated_resnet_statistics_equal_population_statistics():
    model = resnet()
    batches = [{"pixel_values": batch("resnet", s)["pixel_values"]} for s in range(4)]
    recalibrate_batchnorm(model, batches)
    # the oracle: layer by layer in call order, each BatchNorm's input over all batches in eval mode
    # (earlier layers already recalibrated), its mean and unbiased variance
    oracle = resnet().eval()
    for name, bn in [(n, m) for n, m in oracle.named_modules() if isinstance(m, nn.BatchNorm2d)]:
        seen = []
        handle = bn.register_forward_pre_hook(lambda m, args, seen=seen: seen.append(args[0].detach().double()))
        with torch.no_grad():
            for b in batches:
                oracle(**b)
        handle.remove()
        values = torch.cat([t.transpose(0, 1).reshape(t.shape[1], -1) for t in seen], dim=1)  # (C, all)
        with torch.no_grad():
            bn.running_mean.copy_(values.mean(1))
            bn.running_var.copy_(values.var(1, unbiased=True))
        ours = dict(model.named_modules())[name]
        torch.testing.assert_close(ours.running_mean.double(), values.mean(1), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(ours.running_var.double(), values.var(1, unbiased=True), rtol=1e-5, atol=1e-6)
