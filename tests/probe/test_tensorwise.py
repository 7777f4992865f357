"""``TensorwiseMoments`` (a lean vector's parameter moments, taken at capture) against a naive float64
per-tensor oracle, for every mix of small and large, contiguous and strided, float32 and other-dtype
tensors, with and without the copy into the region."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from normlab.probe.policy import ReductionPolicy
from normlab.probe.tensorwise import TensorwiseMoments

POLICY = ReductionPolicy(small_tensor_elements=8)  # tensors of more than 8 values per member are large


def _oracle(tensors, members: int) -> np.ndarray:
    """(4, segments): mean, population variance, absmax, 0 (the zero fraction is not taken for parameters)."""
    columns = []
    for t in tensors:
        for row in t.detach().to(torch.float64).reshape(members, -1):
            columns.append([row.mean().item(), row.var(correction=0).item(), row.abs().max().item(), 0.0])
    return np.asarray(columns).T


def _tensor(kind: str, members: int, per_member: int, generator: torch.Generator) -> torch.Tensor:
    if kind == "strided":  # a transposed view: not contiguous, reduced from the region
        return (torch.randn(per_member, members, generator=generator) * 3 + 1).t()
    t = torch.randn(members, per_member, generator=generator) * 2 - 5
    return t.to(torch.bfloat16) if kind == "bf16" else t


@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    specs=st.lists(st.tuples(st.integers(1, 40), st.sampled_from(["plain", "plain", "strided", "bf16"])),
                   min_size=1, max_size=7),
    members=st.sampled_from([1, 3]),
    copy=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_moments_equal_the_per_tensor_oracle_and_the_region_holds_what_it_must(specs, members, copy, seed):
    generator = torch.Generator().manual_seed(seed)
    tensors = [_tensor(kind, members, n, generator) for n, kind in specs]
    lengths = [t.numel() for t in tensors]
    moments = TensorwiseMoments(lengths, members, torch.device("cpu"), torch.float32, POLICY)
    region = torch.full((sum(lengths),), float("nan"))
    moments.capture(tensors, region, copy=copy)

    expected = _oracle(tensors, members)
    got = moments.moments.to(torch.float64).numpy()
    np.testing.assert_allclose(got[[0, 2, 3]], expected[[0, 2, 3]], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got[1], expected[1], rtol=1e-4, atol=1e-6)

    starts = np.cumsum([0, *lengths])
    for t, begin, end in zip(tensors, starts[:-1], starts[1:], strict=True):
        held = region[begin:end]
        small = t.numel() // members <= POLICY.small_tensor_elements
        must_hold = copy or small or t.dtype != torch.float32 or not t.is_contiguous()
        if must_hold:
            torch.testing.assert_close(held, t.reshape(-1).to(torch.float32))
        else:  # a large float32 contiguous tensor is reduced where it is, never copied without ``copy``
            assert torch.isnan(held).all()


def test_an_update_region_skips_its_absmax():
    t = torch.randn(1, 50)
    moments = TensorwiseMoments([50], 1, torch.device("cpu"), torch.float32, POLICY, absmax=False)
    moments.capture([t], torch.empty(50), copy=False)
    assert torch.isnan(moments.moments[2]).all()
    assert moments.moments[1].item() == pytest.approx(t.double().var(correction=0).item(), rel=1e-5)


def _tables(policy: ReductionPolicy, manual: bool):
    from probe_oracle import bn_relu_model
    from torch import nn

    from normlab.probe import Probe

    model = bn_relu_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01, weight_decay=0.01)
    generator = torch.Generator().manual_seed(0)
    with Probe(model, None if manual else optimizer, histograms=3, policy=policy) as probe:
        for _ in range(7):
            x, y = torch.randn(16, 3, generator=generator, dtype=torch.float64), torch.randn(16, dtype=torch.float64)
            optimizer.zero_grad()
            nn.functional.mse_loss(model(x).squeeze(-1), y).backward()
            optimizer.step()
            if manual:
                probe.step()
        assert probe._vector.lean == (policy.split_above_elements == 0)
        return probe.scalars(), probe.histograms()


@pytest.mark.parametrize("manual", [False, True])
def test_a_lean_probe_records_what_the_segment_path_records_with_histograms_on_some_steps(manual):
    lean = _tables(ReductionPolicy(ring_elements=0, split_above_elements=0, small_tensor_elements=4), manual)
    segments = _tables(ReductionPolicy(ring_elements=0), manual)
    keys = ["step", "member", "name", "kind", "stat"]
    a, b = (t.sort_values(keys).reset_index(drop=True) for t in (lean[0], segments[0]))
    assert len(a) == len(b) > 0 and set(a["step"]) == set(range(7))
    pd_equal = (a[keys].astype(str) == b[keys].astype(str)).all().all()
    assert pd_equal
    np.testing.assert_allclose(a["value"], b["value"], rtol=1e-9, atol=1e-12)
    hkeys = ["step", "member", "name", "kind", "bin_lo"]
    ha, hb = (t.sort_values(hkeys).reset_index(drop=True) for t in (lean[1], segments[1]))
    assert set(ha["step"]) == {0, 3, 6} and len(ha) == len(hb)
    np.testing.assert_array_equal(ha["count"], hb["count"])
