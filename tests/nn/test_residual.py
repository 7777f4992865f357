"""Residual placements against their formulas, and DeepNet's constants against the published ones."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from normlab.nn.residual import Placement, Residual, deepnorm_constants, deepnorm_init_

DIM = 8



def _ffn(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(DIM, 16), nn.GELU(), nn.Linear(16, DIM)).double()


def _ln(t: torch.Tensor, norm_module: nn.Module) -> torch.Tensor:
    """The oracle norm, written out: LayerNorm or RMSNorm with the module's affine parameters."""
    # By name, so the oracle works for torch's layers and normlab's drop-ins alike.
    if "rms" not in type(norm_module).__name__.lower():
        mu = t.mean(-1, keepdim=True)
        var = ((t - mu) ** 2).mean(-1, keepdim=True)
        return (t - mu) / torch.sqrt(var + norm_module.eps) * norm_module.weight + norm_module.bias
    eps = norm_module.eps if norm_module.eps is not None else torch.finfo(t.dtype).eps
    return t / torch.sqrt((t**2).mean(-1, keepdim=True) + eps) * norm_module.weight


def _randomize_affine(block: Residual) -> None:
    # Non-trivial gamma/beta so a norm swapped for another (or applied at the wrong place) shows.
    with torch.no_grad():
        for p in block.parameters():
            if p.dim() == 1:
                p.uniform_(0.5, 1.5)


def _formula(block: Residual, x: torch.Tensor) -> torch.Tensor:
    f = block.sublayer
    p = block.placement
    if p is Placement.POST:
        return _ln(x + f(x), block.post_norm)
    if p is Placement.PRE:
        return x + f(_ln(x, block.pre_norm))
    if p is Placement.SANDWICH:
        return x + _ln(f(_ln(x, block.pre_norm)), block.post_norm)
    if p is Placement.DEEPNORM:
        return _ln(block.alpha * x + f(x), block.post_norm)
    return x + f(x)


@pytest.mark.parametrize("norm", ["layernorm", "rmsnorm"])
@pytest.mark.parametrize("placement", list(Placement))
@settings(max_examples=10, deadline=None)
@given(batch=st.integers(1, 4), seq=st.integers(1, 5), scale=st.floats(0.1, 100.0))
def test_forward_equals_formula(placement: Placement, norm: str, batch: int, seq: int, scale: float) -> None:
    alpha = 1.7 if placement is Placement.DEEPNORM else None
    block = Residual(_ffn(), DIM, placement=placement, norm=norm, alpha=alpha).double()
    _randomize_affine(block)
    x = torch.randn(batch, seq, DIM, dtype=torch.float64) * scale
    torch.testing.assert_close(block(x), _formula(block, x), rtol=1e-10, atol=1e-10)


def test_placements_differ() -> None:
    # Guards the formula test against a wrapper that ignores the placement.
    x = torch.randn(3, DIM, dtype=torch.float64)
    outs = {}
    for p in Placement:
        block = Residual(_ffn(), DIM, placement=p, alpha=2.0 if p is Placement.DEEPNORM else None).double()
        outs[p] = block(x)
    for a in Placement:
        for b in Placement:
            if a is not b:
                assert not torch.allclose(outs[a], outs[b]), (a, b)


def test_which_norms_exist() -> None:
    expected = {"post": (False, True), "pre": (True, False), "sandwich": (True, True),
                "deepnorm": (False, True), "none": (False, False)}
    for name, (before, after) in expected.items():
        block = Residual(_ffn(), DIM, placement=name, alpha=1.5 if name == "deepnorm" else None)
        assert (block.pre_norm is not None, block.post_norm is not None) == (before, after), name


def test_norm_kind_from_registry() -> None:
    block = Residual(_ffn(), DIM, placement="sandwich", norm="rmsnorm")
    assert "RMSNorm" in type(block.pre_norm).__name__ and "RMSNorm" in type(block.post_norm).__name__


def test_gradients_flow_to_sublayer_and_norm() -> None:
    block = Residual(_ffn(), DIM, placement="sandwich").double()
    x = torch.randn(2, 3, DIM, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(block, (x,))


def test_extra_arguments_reach_sublayer() -> None:
    class Masked(nn.Module):
        def forward(self, x, mask=None):
            return x * mask

    block = Residual(Masked(), DIM, placement="none")
    x = torch.randn(2, DIM)
    torch.testing.assert_close(block(x, mask=torch.zeros(DIM)), x)


def test_string_and_enum_agree() -> None:
    assert Placement.parse("PRE") is Placement.PRE
    assert Placement.parse(Placement.POST) is Placement.POST
    assert Residual(_ffn(), DIM, placement="pre").placement is Placement.PRE


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"placement": "postln"}, ValueError, "placement must be one of"),
        ({"placement": 3}, ValueError, "placement must be one of"),
        ({"placement": "deepnorm"}, ValueError, "needs alpha"),
        ({"placement": "pre", "alpha": 2.0}, ValueError, "only used by placement='deepnorm'"),
        ({"placement": "deepnorm", "alpha": -1.0}, ValueError, "finite positive"),
        ({"placement": "deepnorm", "alpha": float("nan")}, ValueError, "finite positive"),
        ({"placement": "pre", "norm": "nope"}, ValueError, "unknown norm"),
        ({"placement": "pre", "norm": nn.LayerNorm}, TypeError, "registry name"),
    ],
)
def test_bad_arguments(kwargs, error, match) -> None:
    with pytest.raises(error, match=match):
        Residual(_ffn(), DIM, **kwargs)


def test_bad_dim_and_sublayer() -> None:
    with pytest.raises(ValueError, match="dim must be a positive int"):
        Residual(_ffn(), 0, placement="pre")
    with pytest.raises(TypeError, match=r"sublayer must be an nn\.Module"):
        Residual(lambda x: x, DIM, placement="pre")
    with pytest.raises(ValueError, match="last dimension 8"):
        Residual(_ffn(), DIM, placement="pre")(torch.randn(2, 5))


# ---- DeepNet constants (Wang et al. 2022, Table 1) ----


def test_worked_value_decoder_6() -> None:
    alpha, beta = deepnorm_constants("decoder", 6)
    assert alpha == pytest.approx(12**0.25) and round(alpha, 3) == 1.861
    assert beta == pytest.approx(48**-0.25) and round(beta, 3) == 0.380


@pytest.mark.parametrize("n", [1, 6, 12, 100, 1000])
def test_single_stack_formula(n: int) -> None:
    for kind in ("decoder", "encoder"):
        alpha, beta = deepnorm_constants(kind, n)
        assert alpha == pytest.approx((2 * n) ** 0.25, rel=1e-12)
        assert beta == pytest.approx((8 * n) ** -0.25, rel=1e-12)
        assert alpha**4 == pytest.approx(2 * n) and beta**-4 == pytest.approx(8 * n)


@pytest.mark.parametrize(("n", "m"), [(6, 6), (12, 6), (100, 100), (1, 3)])
def test_encoder_decoder_formula(n: int, m: int) -> None:
    a_enc, b_enc = deepnorm_constants("encdec-encoder", n, m)
    assert a_enc == pytest.approx(0.81 * math.exp((4 * math.log(n) + math.log(m)) / 16), rel=1e-12)
    assert b_enc == pytest.approx(0.87 * math.exp(-(4 * math.log(n) + math.log(m)) / 16), rel=1e-12)
    a_dec, b_dec = deepnorm_constants("encdec-decoder", n, m)
    assert a_dec == pytest.approx((3 * m) ** 0.25) and b_dec == pytest.approx((12 * m) ** -0.25)
    assert a_dec**4 == pytest.approx(3 * m)


def test_encoder_decoder_worked_values() -> None:
    # 6+6 layers: encoder 0.81 * 6^(5/16), 0.87 * 6^(-5/16); decoder 18^(1/4), 72^(-1/4).
    a, b = deepnorm_constants("encdec-encoder", 6, 6)
    assert (round(a, 3), round(b, 3)) == (1.418, 0.497)
    a, b = deepnorm_constants("encdec-decoder", 6, 6)
    assert (round(a, 3), round(b, 3)) == (2.060, 0.343)


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (("gpt", 6), "kind must be one of"),
        (("decoder", 0), "n_layers must be a positive int"),
        (("decoder", 6.0), "n_layers must be a positive int"),
        (("decoder", 6, 6), "m_layers is only for encoder-decoder"),
        (("encdec-encoder", 6), "needs m_layers"),
        (("encdec-decoder", 6, -1), "m_layers must be a positive int"),
    ],
)
def test_constants_bad_arguments(args, match) -> None:
    with pytest.raises(ValueError, match=match):
        deepnorm_constants(*args)


def test_deepnorm_init_scales_std_by_beta() -> None:
    torch.manual_seed(0)
    w = torch.empty(400, 600)
    deepnorm_init_([w], 0.38)
    xavier_std = math.sqrt(2.0 / (400 + 600))
    assert w.std().item() == pytest.approx(0.38 * xavier_std, rel=0.02)
    with pytest.raises(ValueError, match="beta must be"):
        deepnorm_init_([w], 0.0)
    with pytest.raises(ValueError, match="weight matrices"):
        deepnorm_init_([torch.empty(4)], 0.5)


def test_deepnorm_output_is_normalized() -> None:
    # A property of the formula, not the code: DeepNorm's output has per-row mean 0, var 1 (LN, no affine).
    block = Residual(_ffn(), DIM, placement="deepnorm", alpha=deepnorm_constants("decoder", 6)[0]).double()
    y = block(torch.randn(5, DIM, dtype=torch.float64) * 30)
    torch.testing.assert_close(y.mean(-1), torch.zeros(5, dtype=torch.float64), atol=1e-10, rtol=0)
    torch.testing.assert_close(y.var(-1, unbiased=False), torch.ones(5, dtype=torch.float64), atol=1e-3, rtol=0)
