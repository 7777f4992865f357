"""Stacked ensembles: member i equals an independent run with seed i (oracle: plain torch loops)."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as sps
from torch import nn

from normlab.kit.ensemble import (
    NotStackableError,
    StackedLayerNorm,
    StackedLinear,
    VmapEnsemble,
    build_members,
    excess_kurtosis,
    make_ensemble,
    member_losses,
    stack_members,
    std_and_excess_kurtosis,
    unstack_member,
)


class Net(nn.Module):
    def __init__(self, dropout: float = 0.0, relu: bool = True):
        super().__init__()
        act = nn.ReLU() if relu else nn.Identity()
        self.linears = nn.Sequential(nn.Linear(2, 8), act, nn.Dropout(dropout), nn.Linear(8, 8), nn.LayerNorm(8),
                                     nn.Tanh(), nn.Linear(8, 1))

    def forward(self, x):
        return self.linears(x)


X = torch.linspace(-2, 2, 12).reshape(6, 2)
Y = torch.sin(X.sum(1))


def _independent(seed, steps, opt_cls, **opt_kw):
    torch.manual_seed(seed)
    m = Net()
    opt = opt_cls(m.parameters(), **opt_kw)
    for _ in range(steps):
        nn.MSELoss()(m(X).squeeze(-1), Y).backward()
        opt.step()
        opt.zero_grad()
    return m


@pytest.mark.parametrize("opt_cls, kw", [
    (torch.optim.Adam, {"lr": 0.01, "weight_decay": 0.01}),
    (torch.optim.AdamW, {"lr": 0.01, "weight_decay": 0.01}),
    (torch.optim.SGD, {"lr": 0.05, "momentum": 0.9, "weight_decay": 1e-3}),
])
def test_ensemble_members_reproduce_independent_runs(opt_cls, kw):
    seeds = (0, 3, 7)
    ens = make_ensemble(lambda: Net(), seeds)
    assert isinstance(ens, Net) and ens.ensemble_size == 3
    assert dict(ens.named_parameters())["linears.0.weight"].shape == (3, 8, 2)
    opt = opt_cls(ens.parameters(), **kw)
    for _ in range(25):
        member_losses(ens(X).squeeze(-1), Y).sum().backward()
        opt.step()
        opt.zero_grad()
    for i, s in enumerate(seeds):
        ref = _independent(s, 25, opt_cls, **kw).state_dict()
        got = unstack_member(ens, i)
        for k in ref:
            torch.testing.assert_close(got[k], ref[k], rtol=1e-5, atol=1e-6)


def test_initial_weights_equal_independent_init():
    ens = make_ensemble(lambda: Net(), (5,))
    torch.manual_seed(5)
    ref = Net().state_dict()
    for k, v in unstack_member(ens, 0).items():
        assert torch.equal(v, ref[k])


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 4), b=st.integers(1, 5), d_in=st.integers(1, 6), d_out=st.integers(1, 6),
       bias=st.booleans(), per_member=st.booleans())
def test_stacked_linear_equals_members(n, b, d_in, d_out, bias, per_member):
    layers = [nn.Linear(d_in, d_out, bias=bias).double() for _ in range(n)]
    st_lin = StackedLinear.from_members(layers)
    x = torch.randn(n, b, d_in, dtype=torch.float64) if per_member else torch.randn(b, d_in, dtype=torch.float64)
    y = st_lin(x)
    for i, m in enumerate(layers):
        torch.testing.assert_close(y[i], m(x[i] if per_member else x))


def test_stacked_layernorm_equals_members_and_gradcheck():
    lns = []
    for i in range(3):
        ln = nn.LayerNorm(5).double()
        with torch.no_grad():
            ln.weight.normal_(generator=torch.Generator().manual_seed(i))
            ln.bias.normal_()
        lns.append(ln)
    st_ln = StackedLayerNorm.from_members(lns)
    x = torch.randn(3, 4, 5, dtype=torch.float64, requires_grad=True)
    y = st_ln(x)
    for i, m in enumerate(lns):
        torch.testing.assert_close(y[i], m(x[i]))
    assert torch.autograd.gradcheck(lambda t: st_ln(t), (x,))


def test_dropout_masks_are_independent_per_member_and_keep_rate_right():
    ens = make_ensemble(lambda: nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.25)), (0, 1))
    torch.manual_seed(0)
    x = torch.ones(2, 2000, 4)
    with torch.no_grad():
        ens[0].weight.zero_()
        ens[0].bias.fill_(1.0)
        out = ens(x)
    kept = out != 0
    assert torch.allclose(out[kept], torch.tensor(1 / 0.75))  # inverted dropout scaling
    assert abs(kept.float().mean().item() - 0.75) < 0.02
    assert not torch.equal(kept[0], kept[1])
    ens.eval()
    assert torch.all(ens(x) == 1.0)


def test_dropout_ensemble_matches_independent_runs_in_distribution():
    """Final losses of 16 ensemble members vs 16 independent runs (different RNG streams, same law)."""
    seeds = tuple(range(16))

    def build():
        return Net(dropout=0.3)

    ens = make_ensemble(build, seeds)
    opt = torch.optim.Adam(ens.parameters(), lr=0.01)
    for _ in range(30):
        losses = member_losses(ens(X).squeeze(-1), Y)
        losses.sum().backward()
        opt.step()
        opt.zero_grad()
    ens_final = losses.detach().numpy()
    ind_final = []
    for s in seeds:
        torch.manual_seed(1000 + s)  # an unrelated dropout stream
        m = build()
        torch.manual_seed(s)
        m = build()
        o = torch.optim.Adam(m.parameters(), lr=0.01)
        for _ in range(30):
            loss = nn.MSELoss()(m(X).squeeze(-1), Y)
            loss.backward()
            o.step()
            o.zero_grad()
        ind_final.append(loss.item())
    assert sps.ks_2samp(ens_final, ind_final).pvalue > 0.01


def test_unsupported_modules_fall_back_to_vmap_and_match():
    def build():
        return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4, track_running_stats=False), nn.Linear(4, 1))

    members = build_members(build, (1, 2))
    with pytest.raises(NotStackableError, match="BatchNorm1d"):
        stack_members(members)
    ens = make_ensemble(build, (1, 2))
    assert isinstance(ens, VmapEnsemble) and ens.ensemble_size == 2
    x = torch.randn(5, 3)
    y = ens(x)
    for i, m in enumerate(build_members(build, (1, 2))):
        torch.testing.assert_close(y[i], m(x))
    with pytest.raises(NotStackableError):
        make_ensemble(build, (1,), allow_vmap=False)


def test_member_losses_and_kurtosis():
    pred = torch.tensor([[1.0, 2.0], [0.0, 0.0]])
    torch.testing.assert_close(member_losses(pred, torch.tensor([1.0, 0.0])), torch.tensor([2.0, 0.5]))
    g = torch.randn(2, 200000, generator=torch.Generator().manual_seed(0))
    k = excess_kurtosis(g)
    assert torch.all(k.abs() < 0.05)  # normal: excess kurtosis 0
    assert excess_kurtosis(torch.zeros(1, 10)).item() == 0.0


@given(
    rows=st.integers(1, 4), cols=st.integers(2, 300), scale=st.floats(1e-3, 1e3), offset=st.floats(-3, 3),
    seed=st.integers(0, 2**31 - 1),
)
@settings(max_examples=40, deadline=None)
def test_std_and_excess_kurtosis_equal_their_float64_definitions(rows, cols, scale, offset, seed):
    # offset in units of the spread: a float32 mean of |mean| >> std would shift the centered values by
    # its rounding (the float64 oracle has none), which is the data's conditioning, not the formula's
    x = (torch.randn(rows, cols, generator=torch.Generator().manual_seed(seed)) + offset) * scale
    x = x * (torch.rand(rows, cols, generator=torch.Generator().manual_seed(seed + 1)) < 0.9)  # exact zeros
    std, kurtosis = std_and_excess_kurtosis(x, dim=1)
    ref = x.double()
    centered = ref - ref.mean(dim=1, keepdim=True)
    m2, m4 = centered.pow(2).mean(dim=1), centered.pow(4).mean(dim=1)
    torch.testing.assert_close(std.double(), ref.std(dim=1), rtol=1e-4, atol=1e-6 * scale)
    expected = torch.where(m2 > 0, m4 / m2**2 - 3, torch.zeros_like(m2))
    torch.testing.assert_close(kurtosis.double(), expected, rtol=1e-3, atol=1e-3)
    assert std_and_excess_kurtosis(torch.full((1, 5), 3.0), dim=1)[1].item() == 0.0  # a constant row
