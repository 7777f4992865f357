"""recalibrate_batchnorm against the statistics of the whole dataset at once (float64 oracles), for single
and stacked BatchNorms, unequal batch sizes, dropout, shared layers and mode restoration."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.nn.modules.batchnorm import _BatchNorm

from normlab.nn.surgery import PooledMoments, recalibrate_batchnorm


def _channel_stats(h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and unbiased variance of (N, C, *) in float64: torch's running_var convention."""
    rows = h.double().transpose(0, 1).reshape(h.shape[1], -1)
    return rows.mean(dim=1), rows.var(dim=1, correction=1)


def _oracle_population(model: nn.Sequential, batches: list[torch.Tensor]) -> dict[str, tuple]:
    """Walk the Sequential on the concatenated data; each BatchNorm gets its input's statistics and then
    normalizes with them (eval mode), so the next layers see the recalibrated model."""
    model = copy.deepcopy(model).eval().requires_grad_(False)
    h, stats = torch.cat(batches), {}
    for name, layer in model.named_children():
        if isinstance(layer, _BatchNorm):
            mean, var = _channel_stats(h)
            stats[name] = (mean, var)
            layer.running_mean.copy_(mean.to(layer.running_mean.dtype))
            layer.running_var.copy_(var.to(layer.running_var.dtype))
        h = layer(h)
    return stats


def _oracle_one_pass(model: nn.Sequential, batches: list[torch.Tensor]) -> dict[str, tuple]:
    """Every BatchNorm normalizes each batch with that batch's statistics; inputs pooled over batches."""
    model = copy.deepcopy(model).eval()
    inputs: dict[str, list] = {}
    for x in batches:
        h = x
        for name, layer in model.named_children():
            if isinstance(layer, _BatchNorm):
                inputs.setdefault(name, []).append(h)
                h = F.batch_norm(h, None, None, layer.weight, layer.bias, training=True, eps=layer.eps)
            else:
                h = layer(h)
    return {name: _channel_stats(torch.cat(hs)) for name, hs in inputs.items()}


def _stacked(dtype=torch.float64) -> nn.Sequential:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.5), nn.Conv2d(4, 3, 1), nn.BatchNorm2d(3),
        nn.Flatten(), nn.Linear(3 * 4 * 4, 5), nn.BatchNorm1d(5), nn.Dropout(0.3),
    ).to(dtype)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, _BatchNorm):
                m.weight.uniform_(0.5, 2), m.bias.normal_()
    return model


def _data(sizes, seed=0, dtype=torch.float64) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(n, 3, 6, 6, generator=gen, dtype=dtype) * 2 + 1 for n in sizes]


def _assert_stats(model: nn.Module, expected: dict, tol: float) -> None:
    for name, (mean, var) in expected.items():
        bn = model.get_submodule(name)
        torch.testing.assert_close(bn.running_mean.double(), mean, rtol=tol, atol=tol)
        torch.testing.assert_close(bn.running_var.double(), var, rtol=tol, atol=tol)


@settings(max_examples=6, deadline=None)
@given(sizes=st.lists(st.integers(1, 6), min_size=1, max_size=4).filter(lambda s: sum(s) >= 2),
       seed=st.integers(0, 999))
def test_population_equals_whole_dataset_statistics_for_stacked_layers(sizes, seed):
    model, batches = _stacked(), _data(sizes, seed)
    report = recalibrate_batchnorm(model, batches)
    _assert_stats(model, _oracle_population(model, batches), tol=1e-10)
    assert report.passes == 3 and report.batches == len(sizes)
    assert report.counts == {"1": 16 * sum(sizes), "5": 16 * sum(sizes), "8": sum(sizes)}
    assert int(model[1].num_batches_tracked) == len(sizes)


def test_population_in_float32_matches_float64_oracle_to_float32_rounding():
    model, batches = _stacked(torch.float32), _data([7, 2, 5], dtype=torch.float32)
    recalibrate_batchnorm(model, batches)
    _assert_stats(model, _oracle_population(model.double(), [b.double() for b in batches]), tol=1e-5)


def test_one_pass_equals_pooled_statistics_under_batch_normalization():
    model, batches = _stacked(), _data([5, 2, 7])
    report = recalibrate_batchnorm(model, iter(batches), estimator="one_pass")  # a generator is fine here
    assert report.passes == 1
    _assert_stats(model, _oracle_one_pass(model, batches), tol=1e-10)


def test_unequal_batches_are_exact_where_a_cumulative_average_is_not():
    torch.manual_seed(1)
    batches = [torch.randn(n, 4, dtype=torch.float64) * s + s for n, s in ((2, 1.0), (9, 3.0))]
    ours = nn.Sequential(nn.BatchNorm1d(4)).double()
    cumulative = copy.deepcopy(ours)
    recalibrate_batchnorm(ours, batches)
    mean, var = _channel_stats(torch.cat(batches))
    torch.testing.assert_close(ours[0].running_mean, mean, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ours[0].running_var, var, rtol=1e-12, atol=1e-12)
    torch.optim.swa_utils.update_bn(batches, cumulative)  # averages per-batch means and variances
    assert (cumulative[0].running_var - var).abs().max() > 0.1


def test_shared_layer_called_twice_pools_both_inputs():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.bn, self.scale = nn.BatchNorm1d(3).double(), nn.Linear(3, 3).double()

        def forward(self, x):
            return self.bn(self.scale(self.bn(x)))

    model, x = Twice(), torch.randn(8, 3, dtype=torch.float64) * 2 + 1
    before = copy.deepcopy(model).eval()
    # One pass cannot reach a fixed point for a layer that feeds itself: the second call's input is the
    # one produced under the layer's previous statistics; both calls' inputs are pooled.
    expected = _channel_stats(torch.cat([x, before.scale(before.bn(x)).detach()]))
    recalibrate_batchnorm(model, [x])
    _assert_stats(model, {"bn": expected}, tol=1e-12)


def test_modes_restored_grad_off_and_dropout_off():
    model, batches = _stacked(), _data([4, 4])
    model.train()
    model[3].eval()  # mixed modes must come back as they were
    modes = [m.training for m in model.modules()]
    grad_states = []
    recalibrate_batchnorm(model, batches, forward=lambda m, b: grad_states.append(torch.is_grad_enabled()) or m(b))
    assert [m.training for m in model.modules()] == modes
    assert grad_states and not any(grad_states)
    assert all(p.grad is None for p in model.parameters())
    _assert_stats(model, _oracle_population(model, batches), tol=1e-10)  # the oracle has dropout off


def test_default_forward_takes_first_item_of_tuples_and_dicts_as_kwargs():
    model, batches = _stacked(), _data([3, 5])
    recalibrate_batchnorm(model, [(b, torch.zeros(len(b))) for b in batches])
    _assert_stats(model, _oracle_population(model, batches), tol=1e-10)

    class Keyword(nn.Module):
        def __init__(self):
            super().__init__()
            self.bn = nn.BatchNorm2d(3).double()

        def forward(self, image):
            return self.bn(image)

    keyword = Keyword()
    recalibrate_batchnorm(keyword, [{"image": b} for b in batches])
    torch.testing.assert_close(keyword.bn.running_var, _channel_stats(torch.cat(batches))[1])


def test_pooled_moments_merge_matches_concatenation():
    gen = torch.Generator().manual_seed(3)
    parts = [torch.randn(n, 2, 3, generator=gen) + 1e4 for n in (1, 4, 2)]  # large offset: no cancellation
    pooled = PooledMoments()
    for p in parts:
        pooled.add(p)
    mean, var = _channel_stats(torch.cat(parts))
    torch.testing.assert_close(pooled.mean, mean, rtol=1e-13, atol=0)
    torch.testing.assert_close(pooled.unbiased_var(), var, rtol=1e-9, atol=0)


def test_errors_and_skips():
    model = nn.Sequential(nn.BatchNorm1d(3, track_running_stats=False), nn.BatchNorm1d(3))
    with pytest.raises(TypeError, match="batches must be re-iterable"):
        recalibrate_batchnorm(model, (torch.randn(4, 3) for _ in range(2)))
    with pytest.raises(ValueError, match="estimator must be one of"):
        recalibrate_batchnorm(model, [torch.randn(4, 3)], estimator="ema")
    with pytest.raises(ValueError, match="batches is empty"):
        recalibrate_batchnorm(model, [])
    stacked = _stacked()
    before = copy.deepcopy(stacked.state_dict())
    with pytest.raises(ValueError, match="8 saw 1 value"):  # the last layer sees one value per channel
        recalibrate_batchnorm(stacked, _data([1]))
    assert all(torch.equal(v, before[k]) for k, v in stacked.state_dict().items())  # earlier layers put back
    report = recalibrate_batchnorm(model, [torch.randn(4, 3)])
    assert report.skipped == [("0", "track_running_stats=False: no running statistics")]
    assert list(report) == ["1"] and "skipped 0" in str(report)


def test_dataloader_of_tensor_dataset_is_re_iterable_and_exact():
    from torch.utils.data import DataLoader, TensorDataset

    batches = _data([10, 10, 4])
    data = torch.cat(batches)
    loader = DataLoader(TensorDataset(data, torch.zeros(len(data))), batch_size=10)  # batches of 10, 10, 4
    model = _stacked()
    recalibrate_batchnorm(model, loader)
    _assert_stats(model, _oracle_population(model, batches), tol=1e-10)
