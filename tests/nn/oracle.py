"""torch.nn as the oracle: error measures and tolerances shared by the oracle tests.

The rule for every comparison: normlab's distance to the float64 result must be within the bound its
dtype allows, or no larger than torch's own distance in that dtype (so where torch is right normlab
matches it, and where torch's kernel is off normlab may only be better).
"""

from __future__ import annotations

import torch

F64 = torch.float64


def finfo_eps(dtype: torch.dtype) -> float:
    return torch.finfo(dtype).eps


def max_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest absolute difference, with matching non-finite values (same nan/inf pattern) counting 0."""
    a, b = a.detach().to(F64), b.detach().to(F64)
    same = (a == b) | (a.isnan() & b.isnan())
    diff = torch.where(same, torch.zeros_like(a), (a - b).abs())
    if diff.numel() == 0:
        return 0.0
    return float(diff.nan_to_num(nan=float("inf")).max())


def amax(t: torch.Tensor | None) -> float:
    if t is None or t.numel() == 0:
        return 0.0
    finite = t.detach().to(F64).abs().nan_to_num(nan=0.0, posinf=0.0, neginf=0.0)
    return float(finite.max())


def assert_no_worse_than_torch(ours, theirs, exact, tol: float, what: str, strict: bool = False) -> None:
    """``ours`` within ``tol`` of ``exact``, or (unless ``strict``) at most 1.5x torch's own error there."""
    mine, torchs = max_err(ours, exact), max_err(theirs, exact)
    allowed = tol if strict else max(tol, 1.5 * torchs)
    assert mine <= allowed, f"{what}: normlab is {mine:.3g} off float64, torch {torchs:.3g}, tol {tol:.3g}"


def outcome(fn):
    """``("ok", result)`` or ``("raises", exception)``: torch runs first, normlab must end the same way."""
    try:
        return "ok", fn()
    except Exception as error:  # the oracle compares exception types, whatever they are
        return "raises", error


def assert_same_exception(ours: BaseException, theirs: BaseException, what: str) -> None:
    """normlab raises torch's exception type or a subclass of it (messages may differ: normlab's name the
    argument)."""
    assert isinstance(ours, type(theirs)), (
        f"{what}: torch raises {type(theirs).__name__} ({theirs}), normlab {type(ours).__name__} ({ours})")
