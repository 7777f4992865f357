"""The char transformer: shapes, causality, the placement wiring, DeepNorm's beta init, and that it learns."""

from __future__ import annotations

import math

import pytest
import torch

from normlab.models.transformer import CharTransformer, TransformerConfig
from normlab.nn.residual import Placement, deepnorm_constants

PLACEMENTS = [p.value for p in Placement]



def _model(**kw) -> CharTransformer:
    torch.manual_seed(0)
    cfg = dict(vocab_size=11, block_size=12, n_layer=3, n_embd=16, n_head=2)
    cfg.update(kw)
    return CharTransformer(TransformerConfig(**cfg))


@pytest.mark.parametrize("placement", PLACEMENTS)
@pytest.mark.parametrize("norm", ["layernorm", "rmsnorm"])
def test_shapes_and_finite(placement: str, norm: str) -> None:
    m = _model(placement=placement, norm=norm)
    idx = torch.randint(0, 11, (4, 12))
    logits = m(idx)
    assert logits.shape == (4, 12, 11) and torch.isfinite(logits).all()
    states = m.hidden_states(idx)
    assert len(states) == 4 and all(s.shape == (4, 12, 16) for s in states)


@pytest.mark.parametrize("placement", PLACEMENTS)
def test_causal(placement: str) -> None:
    # Changing the future must not change the past's logits.
    m = _model(placement=placement).eval()
    idx = torch.randint(0, 11, (2, 12))
    changed = idx.clone()
    changed[:, 7:] = (changed[:, 7:] + 1) % 11
    torch.testing.assert_close(m(idx)[:, :7], m(changed)[:, :7])
    assert not torch.allclose(m(idx)[:, 7:], m(changed)[:, 7:])


def test_blocks_use_the_configured_placement_and_norm() -> None:
    m = _model(placement="sandwich", norm="rmsnorm")
    for block in m.blocks:
        for res in (block.attn, block.ffn):
            assert res.placement is Placement.SANDWICH
            assert "RMSNorm" in type(res.pre_norm).__name__
    # A final norm only where the stream leaves the last block unnormalized.
    assert "Identity" in type(_model(placement="post").final_norm).__name__
    assert "Identity" in type(_model(placement="deepnorm").final_norm).__name__
    assert "LayerNorm" in type(_model(placement="pre").final_norm).__name__
    assert "Identity" in type(_model(placement="none").final_norm).__name__


def test_post_ln_stream_is_normalized_after_every_block() -> None:
    m = _model(placement="post", n_layer=4)
    for h in m.hidden_states(torch.randint(0, 11, (3, 12)))[1:]:
        torch.testing.assert_close(h.mean(-1), torch.zeros(h.shape[:-1]), atol=1e-5, rtol=0)


def test_deepnorm_alpha_and_beta_init() -> None:
    n_layer = 6
    alpha, beta = deepnorm_constants("decoder", n_layer)
    m = _model(placement="deepnorm", n_layer=n_layer, n_embd=64, n_head=4)
    assert all(b.attn.alpha == pytest.approx(alpha) for b in m.blocks)
    scaled = {id(w) for w in m.beta_scaled_weights()}
    assert len(scaled) == 4 * n_layer
    # Measured std / Xavier std: beta for v, out, fc_in, fc_out; 1 for q and k.
    def ratio(w: torch.Tensor) -> float:
        fan_out, fan_in = w.shape
        return w.std().item() / math.sqrt(2.0 / (fan_in + fan_out))

    scaled_ratios = [ratio(w) for w in m.beta_scaled_weights()]
    assert sum(scaled_ratios) / len(scaled_ratios) == pytest.approx(beta, rel=0.05)
    qk = [ratio(b.attn.sublayer.q_proj.weight) for b in m.blocks] + [ratio(b.attn.sublayer.k_proj.weight) for b in m.blocks]
    assert sum(qk) / len(qk) == pytest.approx(1.0, rel=0.05)


def test_non_deepnorm_is_unscaled_xavier() -> None:
    m = _model(placement="post", n_embd=64, n_head=4)
    w = m.blocks[0].ffn.sublayer.fc_out.weight
    assert w.std().item() == pytest.approx(math.sqrt(2.0 / (256 + 64)), rel=0.05)


@pytest.mark.parametrize("placement", ["post", "pre", "deepnorm"])
def test_learns_a_repeating_sequence(placement: str) -> None:
    # A period-5 sequence is predictable from context: loss must fall far below log(vocab).
    torch.manual_seed(0)
    m = _model(placement=placement, n_layer=2)
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    seq = torch.arange(13) % 5
    x, y = seq[:-1].repeat(8, 1), seq[1:].repeat(8, 1)
    for _ in range(60):
        loss = m.loss(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.2 * math.log(11)


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"n_embd": 15}, "divisible by n_head"),
        ({"n_layer": 0}, "n_layer must be a positive int"),
        ({"placement": "middle"}, "placement must be one of"),
        ({"dropout": 1.0}, "dropout must be in"),
    ],
)
def test_bad_config(kw, match) -> None:
    with pytest.raises(ValueError, match=match):
        _model(**kw)


def test_too_long_sequence() -> None:
    with pytest.raises(ValueError, match="exceeds block_size 12"):
        _model()(torch.zeros(1, 13, dtype=torch.long))
