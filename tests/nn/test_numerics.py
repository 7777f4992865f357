"""Sound numerics: no cancellation, constant input, half precision, memory layouts, empty batches."""

from __future__ import annotations

import pytest
import torch
from nn_cases import CASES, randomize_

import normlab.nn as N

# layers that subtract a mean (RMSNorm does not, so it has no cancellation risk and no zero output)
CENTERING = [c for c in CASES if not c.name.startswith("rms")]
BATCHED = [c for c in CASES if "unbatched" not in c.name]


def _ids(cases):
    return [c.name for c in cases]


@pytest.mark.parametrize("case", CENTERING, ids=_ids(CENTERING))
def test_large_mean_small_std_has_no_cancellation(case):
    """Mean 1e4, std 1e-2 in float32 normalizes to within 1e-3 of the float64 result."""
    gen = torch.Generator().manual_seed(0)
    x = 1e4 + 1e-2 * torch.randn(case.shape, generator=gen)
    module = case.make()
    expected = case.ref(x.double(), module)  # the float32 input, normalized in float64
    torch.testing.assert_close(module(x).double(), expected, rtol=0, atol=1e-3)


@pytest.mark.parametrize("case", CENTERING, ids=_ids(CENTERING))
def test_constant_input_gives_zeros_not_nan(case):
    module = case.make()  # default init: weight 1, bias 0
    y = module(torch.full(case.shape, 3.25))
    assert torch.isfinite(y).all()
    # torch's kernels give up to |x| / sqrt(eps) * 2**-24 (4e-5 here); normlab recenters such inputs
    torch.testing.assert_close(y, torch.zeros_like(y), rtol=0, atol=1e-5)


@pytest.mark.parametrize("case", [c for c in CASES if c.name.startswith("rms")], ids=lambda c: c.name)
def test_rmsnorm_zero_input_gives_zeros_and_finite_gradients(case):
    module = case.make()
    x = torch.zeros(case.shape, requires_grad=True)
    y = module(x)
    y.sum().backward()
    assert torch.equal(y, torch.zeros_like(y))
    assert torch.isfinite(x.grad).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("case", BATCHED, ids=_ids(BATCHED))
def test_half_inputs_accumulate_in_float32_and_keep_their_dtype(case, dtype):
    module = randomize_(case.make())  # float32 parameters, as in autocast-style mixed precision
    gen = torch.Generator().manual_seed(0)
    x = (torch.randn(case.shape, generator=gen) * 3 + 2).to(dtype)
    y = module(x)
    assert y.dtype == dtype
    expected = case.ref(x.double(), module)
    # the only error allowed is rounding the result to the half type (plus float32 arithmetic)
    tol = 2 ** -8 if dtype == torch.float16 else 2 ** -6
    torch.testing.assert_close(y.double(), expected, rtol=tol, atol=tol)
    # torch's half kernels round differently in places (InstanceNorm with running stats takes another
    # path); both must be within half rounding of the float64 result, and of each other
    torch.testing.assert_close(y, randomize_(case.make_torch())(x), rtol=tol, atol=2 * tol)


@pytest.mark.parametrize("case", BATCHED, ids=_ids(BATCHED))
def test_non_contiguous_and_channels_last_inputs(case):
    module = randomize_(case.make())
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(case.shape, generator=gen)
    expected = module(x)
    wide = torch.randn(*case.shape[:-1], 2 * case.shape[-1], generator=gen)
    wide[..., ::2] = x  # a strided view with the same values
    torch.testing.assert_close(module(wide[..., ::2]), expected)
    if x.dim() in (4, 5):
        fmt = torch.channels_last if x.dim() == 4 else torch.channels_last_3d
        torch.testing.assert_close(module(x.contiguous(memory_format=fmt)), expected)


@pytest.mark.parametrize("case", BATCHED, ids=_ids(BATCHED))
def test_empty_batch_behaves_like_torch(case):
    shape = (0, *case.shape[1:])
    outcomes = []
    for module in (case.make(), case.make_torch()):
        x = torch.randn(shape, requires_grad=True)
        try:
            y = module(x)
            y.sum().backward()
            outcomes.append(("ok", tuple(y.shape), [b.clone() for b in module.buffers()]))
        except Exception as error:  # torch itself raises for some empty inputs; then we must raise too
            outcomes.append(("raises", type(error).__name__, None))
    ours, theirs = outcomes
    assert ours[:2] == theirs[:2]
    if ours[2] is not None:
        for a, b in zip(ours[2], theirs[2], strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)  # torch gives NaN stats for IN


def test_rmsnorm_fast_path_matches_torch_at_scale():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(64, 512, generator=gen, requires_grad=True)
    w = torch.randn(512, generator=gen, requires_grad=True)
    g = torch.randn(64, 512, generator=gen)
    ours = N.functional.rms_norm(x, [512], w, 1e-6)
    dx, dw = torch.autograd.grad(ours, (x, w), g)
    theirs = torch.nn.functional.rms_norm(x, [512], w, 1e-6)
    tdx, tdw = torch.autograd.grad(theirs, (x, w), g)
    torch.testing.assert_close(ours, theirs)
    torch.testing.assert_close(dx, tdx)
    torch.testing.assert_close(dw, tdw, rtol=1e-4, atol=1e-4)


def test_rmsnorm_double_backward_matches_torch():
    """A gradient penalty differentiates the backward; normlab's hand-written one must support it."""
    x = torch.randn(3, 6, dtype=torch.float64, requires_grad=True)
    w = torch.randn(6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradgradcheck(lambda a, b: N.functional.rms_norm(a, [6], b, 1e-5), (x, w))


def test_recentering_off_gives_torchs_numbers_and_on_fixes_them(monkeypatch):
    gen = torch.Generator().manual_seed(0)
    x = 1e4 + 1e-2 * torch.randn(8, 3, 16, generator=gen)
    exact = N.reference.layer_norm(x, [16])
    torch_y = torch.nn.LayerNorm(16)(x)
    assert (torch_y.double() - exact).abs().max() > 1e-2  # the failure recentering exists to fix
    assert (N.LayerNorm(16)(x).double() - exact).abs().max() < 1e-3
    monkeypatch.setattr(N.functional, "RECENTER_RATIO", float("inf"))
    assert torch.equal(N.LayerNorm(16)(x), torch_y)
    assert torch.equal(N.GroupNorm(1, 3)(x), torch.nn.GroupNorm(1, 3)(x))


@pytest.mark.parametrize("make", [lambda: N.LayerNorm(16), lambda: N.GroupNorm(1, 16), lambda: N.BatchNorm1d(8)],
                         ids=["LayerNorm", "GroupNorm", "BatchNorm1d"])
def test_a_nan_row_does_not_turn_recentering_off_for_the_others(make):
    """Row 3 holds a NaN; the other rows have |mean| / std = 1e6 and must still be recentered."""
    gen = torch.Generator().manual_seed(0)
    x = 1e4 + 1e-2 * torch.randn(8, 16, generator=gen)
    x[3, 5] = float("nan")
    module = make()
    transpose = isinstance(module, N.BatchNorm1d)  # its rows are channels: feed x.t() (N=16, C=8)
    y = module(x.t()).t() if transpose else module(x)
    exact = N.reference.layer_norm(x.double(), [16])  # every row standardized (no affine at init)
    assert y[3].isnan().all()  # NaN propagates within its row, as in torch
    others = torch.arange(8) != 3
    assert (y[others].double() - exact[others]).abs().max() < 1e-3  # torch is ~0.1 off here
