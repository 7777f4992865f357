"""freeze_batchnorm / unfreeze_batchnorm: the frozen model computes the eval-mode original in train mode
too, gets no gradient into gamma/beta (but the input's gradient equals the eval-mode one), keeps its
state_dict keys, and unfreezing gives back the very same modules with the same state."""

from __future__ import annotations

import copy
import io

import pytest
import torch
import torch.nn as nn

import normlab.nn as nl
from normlab.nn.surgery import FrozenBatchNorm, freeze_batchnorm, unfreeze_batchnorm


def _model(bn_cls=nn.BatchNorm2d) -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), bn_cls(4), nn.ReLU(), nn.Conv2d(4, 2, 1), nn.BatchNorm2d(2))
    model.train()
    for _ in range(3):  # non-trivial running statistics and num_batches_tracked
        model(torch.randn(5, 3, 6, 6) * 3 + 1)
    with torch.no_grad():
        for bn in (model[1], model[4]):
            bn.weight.uniform_(0.5, 2)
            bn.bias.normal_()
    return model


@pytest.mark.parametrize("bn_cls", [nn.BatchNorm2d, nl.BatchNorm2d])
def test_frozen_model_in_train_mode_computes_the_eval_mode_original(bn_cls):
    model = _model(bn_cls)
    oracle = copy.deepcopy(model).eval()
    stats_before = {k: v.clone() for k, v in model.state_dict().items()}
    report = freeze_batchnorm(model)
    assert report.changed == ["1", "4"]
    model.train()
    assert model[1].training  # the flag follows train() ...
    x = torch.randn(2, 3, 6, 6)
    torch.testing.assert_close(model(x), oracle(x), rtol=0, atol=0)  # ... the function does not
    for key, value in model.state_dict().items():
        assert torch.equal(value, stats_before[key]), key  # nothing updated by a train-mode forward


def test_no_gradient_reaches_frozen_affine_but_input_gradient_is_the_eval_one():
    model = _model()
    oracle = copy.deepcopy(model).eval()
    freeze_batchnorm(model)
    model.train()
    names = {name for name, _ in model.named_parameters()}
    assert names == {"0.weight", "0.bias", "3.weight", "3.bias"}
    x, x_oracle = torch.randn(2, 3, 6, 6, requires_grad=True), None
    x_oracle = x.detach().clone().requires_grad_()
    model(x).square().sum().backward()
    oracle(x_oracle).square().sum().backward()
    torch.testing.assert_close(x.grad, x_oracle.grad)
    torch.testing.assert_close(model[0].weight.grad, oracle[0].weight.grad)
    assert not model[1].weight.requires_grad and model[1].weight.grad is None


def test_state_dict_keys_unchanged_and_checkpoints_load_both_ways():
    model = _model()
    unfrozen_keys = list(model.state_dict())
    frozen = copy.deepcopy(model)
    freeze_batchnorm(frozen)
    assert list(frozen.state_dict()) == unfrozen_keys
    fresh = _model()
    with torch.no_grad():
        fresh[1].running_mean.add_(1)
    fresh.load_state_dict(frozen.state_dict(), strict=True)  # frozen checkpoint -> unfrozen model
    assert torch.equal(fresh[1].running_mean, model[1].running_mean)
    other = _model()
    freeze_batchnorm(other)
    other.load_state_dict(model.state_dict(), strict=True)  # unfrozen checkpoint -> frozen model
    buffer = io.BytesIO()
    torch.save(other, buffer)
    buffer.seek(0)
    reloaded = torch.load(buffer, weights_only=False)
    assert isinstance(reloaded[1], FrozenBatchNorm)
    x = torch.randn(1, 3, 6, 6)
    torch.testing.assert_close(reloaded.train()(x), copy.deepcopy(model).eval()(x))


def test_unfreeze_restores_the_same_modules_state_flags_and_hooks():
    model = _model().eval()
    model[1].bias.requires_grad_(False)
    originals, state = [model[1], model[4]], {k: v.clone() for k, v in model.state_dict().items()}
    calls = []
    model[1].register_forward_hook(lambda *args: calls.append(1))
    freeze_batchnorm(model)
    model.train()
    model(torch.randn(2, 3, 6, 6))
    report = unfreeze_batchnorm(model)
    assert report.changed == ["1", "4"]
    assert [model[1], model[4]] == originals and type(model[1]) is nn.BatchNorm2d
    assert model[1].training  # follows the model.train() made while frozen
    assert model[1].weight.requires_grad and not model[1].bias.requires_grad
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key
    model(torch.randn(2, 3, 6, 6))
    assert calls == [1]  # the hook is back with its module
    assert not torch.equal(model[1].running_mean, state["1.running_mean"])  # and it trains again


def test_unfreeze_carries_values_loaded_while_frozen():
    model = _model()
    freeze_batchnorm(model)
    new_state = {k: (v + 1 if v.is_floating_point() else v) for k, v in model.state_dict().items()}
    model.load_state_dict(new_state)
    unfreeze_batchnorm(model)
    assert torch.equal(model[1].weight, new_state["1.weight"]) and isinstance(model[1].weight, nn.Parameter)


def test_batchnorm_without_running_stats_is_skipped_with_reason():
    model = nn.Sequential(nn.BatchNorm1d(3, track_running_stats=False), nn.BatchNorm1d(3))
    report = freeze_batchnorm(model)
    assert report.changed == ["1"]
    assert report.skipped == [("0", "track_running_stats=False: no statistics to freeze")]
    assert "skipped 0: track_running_stats=False" in str(report)


def test_frozen_layer_rejects_wrong_channels():
    model = nn.Sequential(nn.BatchNorm1d(3))
    freeze_batchnorm(model)
    with pytest.raises(ValueError, match=r"expected input of shape \(N, 3, \*\), got \(2, 4\)"):
        model(torch.randn(2, 4))


def test_deepcopy_of_a_frozen_model_unfreezes_independently():
    model = _model()
    freeze_batchnorm(model)
    twin = copy.deepcopy(model)
    unfreeze_batchnorm(twin)
    assert isinstance(model[1], FrozenBatchNorm) and type(twin[1]) is nn.BatchNorm2d
    assert twin[1].weight is not model[1].__dict__["original"].weight
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in twin.state_dict().items())
