"""dropout_add_norm equals the unfused composition norm(residual + dropout(x)) under the same RNG state."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from normlab.nn.fused import counter_drop_probability, counter_dropout_mask, dropout_add_norm


def _inputs(shape, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    c = shape[-1]
    return (torch.randn(shape, generator=g, dtype=dtype), torch.randn(shape, generator=g, dtype=dtype),
            torch.randn(c, generator=g, dtype=dtype), torch.randn(c, generator=g, dtype=dtype))


def _eager(x, r, w, b, p, training, eps, norm):
    y = r + F.dropout(x, p, training)
    if norm == "layernorm":
        return F.layer_norm(y, (x.shape[-1],), w, b, eps)
    return F.rms_norm(y, (x.shape[-1],), w, eps)


@pytest.mark.parametrize("norm", ["layernorm", "rmsnorm"])
@settings(max_examples=25, deadline=None)
@given(
    shape=st.lists(st.integers(1, 9), min_size=1, max_size=3).map(tuple),
    p=st.sampled_from([0.0, 0.1, 0.5, 0.9, 1.0]),
    training=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
def test_same_as_eager_under_same_global_rng(norm, shape, p, training, seed) -> None:
    x, r, w, b = _inputs(shape)
    b = b if norm == "layernorm" else None
    torch.manual_seed(seed)
    fused = dropout_add_norm(x, r, w, b, p=p, training=training, eps=1e-5, norm=norm)
    torch.manual_seed(seed)
    eager = _eager(x, r, w, b, p, training, 1e-5, norm)
    torch.testing.assert_close(fused, eager, rtol=0, atol=0)  # the same mask and the same arithmetic


def test_explicit_generator_matches_bernoulli_mask() -> None:
    x, r, w, b = _inputs((16, 32))
    fused = dropout_add_norm(x, r, w, b, p=0.3, training=True, generator=torch.Generator().manual_seed(7))
    mask = torch.empty_like(x).bernoulli_(0.7, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(fused, F.layer_norm(r + x * mask / 0.7, (32,), w, b))


def test_dropout_is_actually_applied_and_varies() -> None:
    x, r, w, b = _inputs((64, 32))
    a = dropout_add_norm(x, r, w, b, p=0.5, training=True)
    c = dropout_add_norm(x, r, w, b, p=0.5, training=True)
    assert not torch.allclose(a, c)  # fresh masks
    torch.testing.assert_close(dropout_add_norm(x, r, w, b, p=0.5, training=False),
                               F.layer_norm(r + x, (32,), w, b))


def test_gradients_match_eager() -> None:
    x, r, w, b = _inputs((4, 6), dtype=torch.float64)
    leaves = [t.clone().requires_grad_() for t in (x, r, w, b)]
    torch.manual_seed(3)
    dropout_add_norm(*leaves, p=0.4, training=True).pow(2).sum().backward()
    fused_grads = [t.grad for t in leaves]
    leaves = [t.clone().requires_grad_() for t in (x, r, w, b)]
    torch.manual_seed(3)
    _eager(*leaves, 0.4, True, 1e-5, "layernorm").pow(2).sum().backward()
    for g_fused, t in zip(fused_grads, leaves, strict=True):
        torch.testing.assert_close(g_fused, t.grad)


def test_gradcheck_counter_mask() -> None:
    x, r, w, b = (t.requires_grad_() for t in _inputs((3, 5), dtype=torch.float64))

    def f(x, r, w, b):
        return dropout_add_norm(x, r, w, b, p=0.4, training=True, mask="counter", seed=11)

    assert torch.autograd.gradcheck(f, (x, r, w, b))


def test_counter_mask_matches_composition_with_same_mask() -> None:
    x, r, w, b = _inputs((8, 128))
    fused = dropout_add_norm(x, r, w, b, p=0.2, training=True, mask="counter", seed=5)
    keep = counter_dropout_mask(x.shape, 0.2, 5)
    scale = 1 / (1 - counter_drop_probability(0.2))  # the rate the mask really has (p rounded to 2^-16)
    assert abs(counter_drop_probability(0.2) - 0.2) <= 2**-17
    torch.testing.assert_close(fused, F.layer_norm(r + x * keep * scale, (128,), w, b))


def test_counter_mask_odd_sizes_and_extreme_p() -> None:
    assert counter_dropout_mask((7, 3), 0.5, 0).shape == (7, 3)  # odd count: half of the last hash unused
    assert counter_dropout_mask((1001,), 0.0, 0).all()
    x, r, w, b = _inputs((3, 8))
    y = dropout_add_norm(x, r, w, b, p=1 - 2**-20, training=True, mask="counter", seed=1)  # rounds to 1
    torch.testing.assert_close(y, F.layer_norm(r, (8,), w, b))


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_counter_mask_statistics(p: float) -> None:
    # Keep rate within 5 standard errors of 1-p; neighbouring seeds give nearly independent masks.
    n = 200_000
    a = counter_dropout_mask((n,), p, 1)
    b = counter_dropout_mask((n,), p, 2)
    se = (p * (1 - p) / n) ** 0.5
    assert abs(a.float().mean().item() - (1 - p)) < 5 * se
    agree = (a == b).float().mean().item()
    expected = p * p + (1 - p) * (1 - p)  # agreement rate of two independent masks
    assert abs(agree - expected) < 5 * (expected * (1 - expected) / n) ** 0.5
    assert torch.equal(a, counter_dropout_mask((n,), p, 1))  # a pure function of the seed


def test_counter_mask_neighbours_uncorrelated() -> None:
    m = counter_dropout_mask((100_000,), 0.5, 0).float()
    corr = torch.corrcoef(torch.stack([m[:-1], m[1:]]))[0, 1].item()
    assert abs(corr) < 5 / 100_000**0.5


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"p": 1.5}, "p must be a probability"),
        ({"norm": "batchnorm"}, "norm must be one of"),
        ({"mask": "philox"}, "mask must be one of"),
        ({"mask": "counter"}, "needs seed="),
        ({"norm": "rmsnorm"}, "has no bias"),
    ],
)
def test_bad_arguments(kwargs, match) -> None:
    x, r, w, b = _inputs((2, 4))
    args = {"p": 0.1, "training": True, **kwargs}
    with pytest.raises(ValueError, match=match):
        dropout_add_norm(x, r, w, b, **args)


def test_shape_errors() -> None:
    x, r, w, b = _inputs((2, 4))
    with pytest.raises(ValueError, match="same shape"):
        dropout_add_norm(x, r[:1], w, b, p=0.1, training=True)
    with pytest.raises(ValueError, match=r"weight must have shape \(4,\)"):
        dropout_add_norm(x, r, w[:3], b, p=0.1, training=True)
