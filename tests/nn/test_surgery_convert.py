"""convert_norms against hand-built oracles: the converted model computes what a model built by hand with
the target layers and the copied parameters computes; round trips keep the state_dict bit for bit."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn
from hypothesis import given, settings
from hypothesis import strategies as st

import normlab.nn as nl
from normlab.nn.surgery import ConversionError, convert_norms


def _randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial affine parameters and running statistics, so that 'copied' is observable."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name.endswith("num_batches_tracked"):
                tensor.fill_(int(torch.randint(1, 100, (1,), generator=gen)))
            elif name.endswith("running_var"):
                tensor.copy_(torch.rand(tensor.shape, generator=gen) + 0.5)
            elif tensor.is_floating_point():
                tensor.copy_(torch.randn(tensor.shape, generator=gen))
    return model


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


@settings(max_examples=12, deadline=None)
@given(groups=st.sampled_from([1, 2, 4]), per_group=st.integers(1, 3), affine=st.booleans(), seed=st.integers(0, 99))
def test_batchnorm_to_groupnorm_equals_hand_built_groupnorm(groups, per_group, affine, seed):
    channels = groups * per_group
    model = _randomize(nn.Sequential(nn.Conv2d(3, channels, 3), nn.BatchNorm2d(channels, affine=affine)), seed)
    oracle = nn.Sequential(copy.deepcopy(model[0]), nn.GroupNorm(groups, channels, affine=affine))
    if affine:
        oracle[1].load_state_dict({"weight": model[1].weight, "bias": model[1].bias})
    report = convert_norms(model, from_=nn.BatchNorm2d, to=nn.GroupNorm, num_groups=groups)
    x = torch.randn(2, 3, 6, 6, generator=torch.Generator().manual_seed(seed))
    assert type(model[1]) is nn.GroupNorm and model[1].num_groups == groups
    torch.testing.assert_close(model(x), oracle(x), rtol=0, atol=0)
    (replacement,) = report
    assert replacement.names == ("1",)
    assert set(replacement.dropped) == {"running_mean", "running_var", "num_batches_tracked"}
    assert replacement.carried == (("weight", "bias") if affine else ())


@settings(max_examples=15, deadline=None)
@given(shape=st.lists(st.integers(1, 5), min_size=1, max_size=3), seed=st.integers(0, 99))
def test_layernorm_to_rmsnorm_equals_hand_built_rmsnorm(shape, seed):
    model = _randomize(nn.Sequential(nn.LayerNorm(shape, eps=1e-3)), seed)
    oracle = nn.RMSNorm(shape, eps=1e-3)
    oracle.load_state_dict({"weight": model[0].weight})
    report = convert_norms(model, from_="layernorm", to="rmsnorm")
    x = torch.randn(4, *shape, generator=torch.Generator().manual_seed(seed))
    assert isinstance(model[0], nn.RMSNorm) and model[0].eps == 1e-3
    torch.testing.assert_close(model(x), oracle(x))
    assert report.replaced[0].dropped == ("bias",)  # reported: the centring term has no RMSNorm twin


def _mixed_torch_model() -> nn.Module:
    return _randomize(nn.Sequential(
        nn.Conv1d(2, 4, 1), nn.BatchNorm1d(4), nn.Conv1d(4, 4, 1), nn.InstanceNorm1d(4, affine=True),
        nn.Unflatten(2, (2, 2)), nn.BatchNorm2d(4, momentum=0.3), nn.GroupNorm(2, 4), nn.Flatten(2),
        nn.LayerNorm(4), nn.Unflatten(2, (1, 2, 2)), nn.BatchNorm3d(4, eps=1e-3),
    ))


_NORM_CLASSES = (nn.BatchNorm1d, nn.InstanceNorm1d, nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm, nn.BatchNorm3d)


def test_round_trip_torch_normlab_torch_keeps_state_dict_and_outputs():
    model = _mixed_torch_model().train()
    before, types = _state(model), [type(m) for m in model]
    x = torch.randn(3, 2, 4)
    expected = copy.deepcopy(model)(x)
    for torch_cls in _NORM_CLASSES:
        assert len(convert_norms(model, from_=torch_cls, to=getattr(nl, torch_cls.__name__))) == 1
    assert sum(type(m).__module__.startswith("normlab.nn") for m in model) == len(_NORM_CLASSES)
    torch.testing.assert_close(copy.deepcopy(model)(x), expected, rtol=0, atol=0)  # train-mode outputs
    for torch_cls in _NORM_CLASSES:
        convert_norms(model, from_=getattr(nl, torch_cls.__name__), to=torch_cls)
    assert [type(m) for m in model] == types
    after = model.state_dict()
    assert list(after) == list(before)
    for key, value in before.items():
        assert after[key].dtype == value.dtype and torch.equal(after[key], value), key


def test_family_names_resolve_to_normlab_classes_of_the_same_rank():
    model = _mixed_torch_model()
    convert_norms(model, from_="batchnorm", to="batchnorm")
    assert [type(model[i]) for i in (1, 5, 10)] == [nl.BatchNorm1d, nl.BatchNorm2d, nl.BatchNorm3d]
    assert model[5].momentum == 0.3 and model[10].eps == 1e-3


def test_running_stats_train_mode_and_requires_grad_carry_between_batchnorms():
    model = _randomize(nn.Sequential(nn.BatchNorm2d(3))).eval()
    model[0].weight.requires_grad_(False)
    expected = _state(model)
    convert_norms(model, from_=nn.BatchNorm2d, to=nl.BatchNorm2d)
    assert isinstance(model[0], nl.BatchNorm2d) and not model[0].training
    assert not model[0].weight.requires_grad and model[0].bias.requires_grad
    for key, value in model.state_dict().items():
        assert torch.equal(value, expected[key])


def test_channels_first_batchnorm_to_layernorm2d_equals_hand_built():
    model = _randomize(nn.Sequential(nn.BatchNorm2d(6)))
    oracle = nl.LayerNorm2d(6)
    oracle.load_state_dict({"weight": model[0].weight, "bias": model[0].bias})
    convert_norms(model, from_="batchnorm", to="layernorm")
    x = torch.randn(2, 6, 3, 3)
    assert type(model[0]) is nl.LayerNorm2d
    torch.testing.assert_close(model(x), oracle(x), rtol=0, atol=0)


def test_shared_module_stays_shared_under_every_name():
    bn = nn.BatchNorm1d(4)
    model = nn.Sequential(bn, nn.Linear(4, 4), bn)
    report = convert_norms(model, from_=nn.BatchNorm1d, to=nn.GroupNorm, num_groups=2)
    assert model[0] is model[2] and isinstance(model[0], nn.GroupNorm)
    assert report.replaced[0].names == ("0", "2")


def test_to_none_and_factory():
    model = nn.Sequential(nn.Linear(3, 3), nn.LayerNorm(3))
    convert_norms(model, from_=nn.LayerNorm, to="none")
    assert isinstance(model[1], nn.Identity)
    model = _randomize(nn.Sequential(nn.LayerNorm(3)))
    seen = []
    convert_norms(model, from_=nn.LayerNorm, to=lambda m, scale: seen.append(scale) or nn.LayerNorm(3), scale=2)
    assert seen == [2]
    assert isinstance(model[0], nn.LayerNorm)


def test_report_prints_names_classes_and_state():
    model = nn.Sequential(nn.Sequential(nn.Conv2d(1, 4, 1), nn.BatchNorm2d(4)))
    text = str(convert_norms(model, from_=nn.BatchNorm2d, to=nn.GroupNorm, num_groups=2))
    assert "1 module(s) replaced" in text and "0.1: nn.BatchNorm2d(4" in text and "-> nn.GroupNorm(2, 4" in text
    assert "carried weight, bias; dropped running_mean, running_var, num_batches_tracked" in text


def _assert_refused(model: nn.Module, match: str, **kwargs) -> None:
    before, objects = _state(model), list(model.modules())
    with pytest.raises(ConversionError, match=match):
        convert_norms(model, **kwargs)
    assert list(model.modules()) == objects  # nothing replaced
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_refuses_groups_that_do_not_divide_channels_before_mutating():
    model = nn.Sequential(nn.BatchNorm2d(8), nn.BatchNorm2d(6), nn.BatchNorm2d(4))
    _assert_refused(model, r"(?s)1 layer\(s\).*  1: GroupNorm num_groups=4 must be a positive divisor of the 6",
                    from_="batchnorm", to=nn.GroupNorm, num_groups=4)


def test_refuses_axis_and_rank_changes_and_missing_arguments():
    _assert_refused(nn.Sequential(nn.LayerNorm(4)), "normalizes the trailing dims but nn.BatchNorm1d normalizes dim 1",
                    from_=nn.LayerNorm, to=nn.BatchNorm1d)
    _assert_refused(nn.Sequential(nn.BatchNorm2d(4)), "normalizes dim 1 .* but nn.RMSNorm normalizes the trailing",
                    from_=nn.BatchNorm2d, to=nn.RMSNorm)
    _assert_refused(nn.Sequential(nn.BatchNorm2d(4)), "takes 2d inputs but nn.InstanceNorm1d takes 1d",
                    from_=nn.BatchNorm2d, to=nn.InstanceNorm1d)
    _assert_refused(nn.Sequential(nn.LayerNorm((4, 3))), r"normalizes trailing shape \(4, 3\) but the new "
                    r"nn.RMSNorm\(\(3,\).* normalizes trailing shape \(3,\)", from_=nn.LayerNorm, to=nn.RMSNorm,
                    normalized_shape=3)
    _assert_refused(nn.Sequential(nn.BatchNorm2d(4)), r"normalizes C=4 channels but .* C=8 channels",
                    from_=nn.BatchNorm2d, to=nn.GroupNorm, num_groups=2, num_channels=8)
    _assert_refused(nn.Sequential(nn.BatchNorm2d(4)), "needs num_groups", from_=nn.BatchNorm2d, to=nn.GroupNorm)
    _assert_refused(nn.Sequential(nn.GroupNorm(2, 4)), "cannot choose between the 1d/2d/3d",
                    from_=nn.GroupNorm, to="batchnorm")
    _assert_refused(nn.Sequential(nn.BatchNorm2d(4)), "unexpected keyword", from_=nn.BatchNorm2d, to=nn.GroupNorm,
                    num_groups=2, colour="red")


def test_bad_arguments_are_type_errors_naming_the_argument():
    model = nn.Sequential(nn.BatchNorm2d(4))
    with pytest.raises(TypeError, match="from_ must be"):
        convert_norms(model, from_="batchnrom", to=nn.GroupNorm)
    with pytest.raises(TypeError, match="to must be"):
        convert_norms(model, from_="batchnorm", to="grupnorm")
    with pytest.raises(TypeError, match=r"model must be a torch\.nn\.Module"):
        convert_norms("model", from_="batchnorm", to="groupnorm")
    with pytest.raises(ValueError, match="the model itself is a BatchNorm2d"):
        convert_norms(nn.BatchNorm2d(4), from_="batchnorm", to=nn.GroupNorm, num_groups=2)


def test_keras_momentum_convention_and_lazy_modules():
    model = nn.Sequential(nl.BatchNorm2d(4, momentum=0.99, momentum_convention="keras"))
    convert_norms(model, from_=nl.BatchNorm2d, to=nn.BatchNorm2d)  # torch has torch's convention only
    assert type(model[0]) is nn.BatchNorm2d and model[0].momentum == pytest.approx(0.01)
    direct = nn.Sequential(nl.BatchNorm2d(4, momentum=0.99, momentum_convention="keras"))
    convert_norms(direct, from_=nl.BatchNorm2d, to=_KerasBatchNorm2d)
    assert direct[0].momentum_convention == "keras" and direct[0].keras_momentum == 0.99
    assert direct[0].momentum == pytest.approx(0.01)
    lazy = nn.Sequential(nn.LazyBatchNorm2d())
    with pytest.raises(ConversionError, match="lazy module not yet initialized; run one forward first"):
        convert_norms(lazy, from_="batchnorm", to=nn.GroupNorm, num_groups=1)
    assert type(lazy[0]) is nn.LazyBatchNorm2d


class _KerasBatchNorm2d(nl.BatchNorm2d):
    """A distinct class, so converting normlab's BatchNorm2d into it is not a no-op."""
