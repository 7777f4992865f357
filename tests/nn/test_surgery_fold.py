"""fold_batchnorm: the folded model equals the unfolded eval-mode model (float32 tolerance; float64 to
1e-12), no BatchNorm is left where folding was possible, and the others are reported with the reason."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.nn.modules.batchnorm import _BatchNorm

import normlab.nn as nl
from normlab.nn.surgery import fold_batchnorm, freeze_batchnorm

_CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
_CONV_T = {1: nn.ConvTranspose1d, 2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}
_BN = {0: nn.BatchNorm1d, 1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}


def _nontrivial(bn: _BatchNorm, gen: torch.Generator) -> _BatchNorm:
    with torch.no_grad():
        bn.running_mean.copy_(torch.randn(bn.num_features, generator=gen) * 2)
        bn.running_var.copy_(torch.rand(bn.num_features, generator=gen) * 3 + 0.05)
        if bn.weight is not None:
            bn.weight.copy_(torch.randn(bn.num_features, generator=gen))
            bn.bias.copy_(torch.randn(bn.num_features, generator=gen))
    return bn


@settings(max_examples=25, deadline=None)
@given(
    kind=st.sampled_from(["conv", "conv_t", "linear"]),
    dims=st.integers(1, 3),
    groups=st.sampled_from([1, 2]),
    per_group=st.integers(1, 3),
    bias=st.booleans(),
    affine=st.booleans(),
    double=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_folded_equals_unfolded(kind, dims, groups, per_group, bias, affine, double, seed):
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    cin, cout = 2 * groups, per_group * groups
    if kind == "linear":
        layer, bn, shape = nn.Linear(cin, cout, bias=bias), nn.BatchNorm1d(cout, affine=affine), (4, cin)
    else:
        cls = (_CONV if kind == "conv" else _CONV_T)[dims]
        layer = cls(cin, cout, 3, padding=1, groups=groups, bias=bias)
        bn, shape = _BN[dims](cout, affine=affine), (2, cin, *([5] * dims))
    model = nn.Sequential(layer, _nontrivial(bn, gen), nn.ReLU()).eval()
    dtype = torch.float64 if double else torch.float32
    model.to(dtype)
    x = torch.randn(shape, generator=gen, dtype=dtype)
    expected = model(x)
    report = fold_batchnorm(model)
    assert report.folded == [("0", "1")] and report.skipped == []
    assert not any(isinstance(m, _BatchNorm) for m in model.modules())
    assert model[0].bias is not None and model[0].bias.dtype == dtype
    tol = {"rtol": 1e-12, "atol": 1e-12} if double else {"rtol": 1e-5, "atol": 1e-5}
    torch.testing.assert_close(model(x), expected, **tol)


class Branchy(nn.Module):
    """A residual block that is no Sequential: fx finds conv1->bn1; the others cannot be folded."""

    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 4, 3, padding=1, bias=False), nl.BatchNorm2d(4)
        self.conv2, self.bn2 = nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4)
        self.bn3 = nn.BatchNorm2d(4)
        self.norm = nl.LayerNorm2d(4)  # normlab layers validate inputs in Python: traced as leaves
        self.head = nn.Linear(4, 3)
        self.bn_head = nn.BatchNorm1d(3)
        self.unused = nn.BatchNorm1d(3)

    def forward(self, x):
        h = torch.relu(self.bn1(self.conv1(x)))  # (B, 4, H, W)
        y = self.conv2(h)
        out = self.bn2(y) + y  # conv2's output also feeds the residual add
        out = self.norm(self.bn3(torch.relu(out)))  # bn3's input is a relu, not a layer
        return self.bn_head(self.head(out.mean(dim=(2, 3))))


def test_graph_folding_folds_what_it_can_and_says_why_not_for_the_rest():
    gen = torch.Generator().manual_seed(0)
    model = Branchy()
    for m in model.modules():
        if isinstance(m, _BatchNorm):
            _nontrivial(m, gen)
    model.eval()
    x = torch.randn(2, 3, 5, 5, generator=gen)
    expected = model(x)
    report = fold_batchnorm(model)
    assert report.method == "torch.fx"
    assert report.folded == [("conv1", "bn1"), ("head", "bn_head")]
    reasons = dict(report.skipped)
    assert reasons["bn2"] == "the output of conv2 also feeds add"
    assert reasons["bn3"] == "its input (relu_1) is not the output of a Conv, ConvTranspose or Linear"
    assert reasons["unused"] == "not called by the traced forward"
    assert isinstance(model.bn1, nn.Identity) and isinstance(model.bn2, nn.BatchNorm2d)
    torch.testing.assert_close(model(x), expected, rtol=1e-5, atol=1e-5)
    text = str(report)
    assert "bn1 folded into conv1" in text and "not folded bn2: the output of conv2 also feeds add" in text


class SharedConv(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv1d(2, 2, 1), nn.BatchNorm1d(2)

    def forward(self, x):
        return self.bn(self.conv(x)) + self.conv(x)


def test_layer_called_twice_is_not_folded():
    model = SharedConv().eval()
    report = fold_batchnorm(model)
    assert report.folded == [] and report.skipped == [("bn", "conv is called 2 times per forward")]


class Untraceable(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4))
        self.tail = nn.BatchNorm2d(4)

    def forward(self, x):
        x = self.body(x)
        return self.tail(x) if x.sum() > 0 else x  # data-dependent: fx cannot trace it


def test_untraceable_model_falls_back_to_sequential_neighbours():
    gen = torch.Generator().manual_seed(1)
    model = Untraceable()
    _nontrivial(model.body[1], gen), _nontrivial(model.tail, gen)
    model.eval()
    x = torch.randn(2, 3, 4, 4, generator=gen)
    expected = model(x)
    report = fold_batchnorm(model)
    assert report.method.startswith("nn.Sequential neighbours; torch.fx could not trace the model")
    assert report.folded == [("body.0", "body.1")]
    assert report.skipped == [("tail", "not directly after a Conv, ConvTranspose or Linear in an nn.Sequential")]
    torch.testing.assert_close(model(x), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("model", "reason"),
    [
        (nn.Sequential(nn.Conv1d(2, 3, 1), nn.BatchNorm1d(3)).train(), "in training mode"),
        (nn.Sequential(nn.Conv1d(2, 3, 1), nn.BatchNorm1d(3, track_running_stats=False)).eval(),
         "track_running_stats=False"),
    ],
)
def test_unfoldable_batchnorm_is_left_and_reported(model, reason):
    before = copy.deepcopy(model.state_dict())
    report = fold_batchnorm(model)
    assert report.folded == [] and report.skipped[0][0] == "1" and reason in report.skipped[0][1]
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_tied_weights_are_not_folded():
    model = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3), nn.Linear(3, 3)).eval()
    model[2].weight = model[0].weight
    report = fold_batchnorm(model)
    assert report.skipped == [("1", "the parameters of nn.Linear(in_features=3, out_features=3, bias=True) "
                                    "are shared with another module")]


def test_frozen_batchnorms_fold_in_train_mode():
    gen = torch.Generator().manual_seed(2)
    model = nn.Sequential(nn.Conv2d(3, 4, 1), _nontrivial(nn.BatchNorm2d(4), gen), nn.Conv2d(4, 4, 1),
                          _nontrivial(nn.BatchNorm2d(4), gen)).eval()
    model[3] = nl.FrozenBatchNorm2d.from_batchnorm(model[3])
    freeze_batchnorm(model)
    model.train()
    x = torch.randn(2, 3, 4, 4, generator=gen)
    expected = model(x)
    report = fold_batchnorm(model)
    assert report.folded == [("0", "1"), ("2", "3")]
    torch.testing.assert_close(model(x), expected, rtol=1e-5, atol=1e-5)
