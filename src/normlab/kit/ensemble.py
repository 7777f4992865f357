"""Many seeds as one model: vectorized ensembles whose members equal independent runs.

An ensemble of ``N`` members is built from an ordinary ``nn.Module`` builder: member ``i`` is
``torch.manual_seed(seeds[i]); builder()``, exactly what an independent run with that seed would
create. Their parameters are then stacked into ``(N, ...)`` tensors and every leaf module is swapped for a
*stacked* twin that applies member ``i``'s weights to member ``i``'s slice of the activations:

=====================  ==================================================================================
``nn.Linear``          ``y[i] = x[i] @ W[i]^T + b[i]`` via one ``baddbmm``; ``x`` is ``(N, B, in)``
                       (a ``(B, in)`` input is shared by all members)
``nn.LayerNorm``       normalize over the last dims per row, then member ``i``'s ``gamma[i]``, ``beta[i]``
``nn.RMSNorm``         scale by the RMS over the last dims per row, then member ``i``'s ``gamma[i]``
``nn.Dropout``         unchanged: one call draws an independent mask for every element, hence per member
elementwise            ``ReLU``, ``Tanh``, ``GELU``, ``Identity``, ... are shared (no parameters)
=====================  ==================================================================================

Which norm classes get a stacked twin is the norm registry's ``stacked`` fact
(:func:`normlab.nn.registry.class_facts`, exact classes): torch's and normlab's LayerNorm and RMSNorm.
normlab's twins normalize with normlab's functional (so large means are recentered as in the member).

The root module keeps its class and ``forward`` (a container such as the seed's ``Model`` that just calls
its children works unchanged), gains ``ensemble_size = N``, and its parameters keep the member's names
(``linears.0.weight``), now shaped ``(N, ...)``: the convention :class:`normlab.probe.Probe` reads.

Why the optimizer needs nothing special: with ``loss = sum_i loss_i`` member ``i``'s parameters get
exactly ``d loss_i / d theta_i``, and Adam, AdamW and SGD (momentum, weight decay) update each element
from its own gradient and state only. So a stacked run equals ``N`` independent runs up to floating-point
summation order; with dropout it equals them *in distribution* (the masks come from one RNG stream
instead of ``N``). ``tests/kit/test_ensemble.py`` checks both.

Models with other leaf modules fall back to :class:`VmapEnsemble` (``torch.func.functional_call`` under
``vmap(randomness="different")``), or a study runs its seeds one by one with :func:`run_sequential`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from normlab.nn import functional as NF
from normlab.nn.registry import class_facts

_ELEMENTWISE = (
    nn.Identity, nn.ReLU, nn.LeakyReLU, nn.Tanh, nn.Sigmoid, nn.GELU, nn.SiLU, nn.ELU, nn.Softplus, nn.Dropout,
)


class NotStackableError(TypeError):
    """The model holds a module the stacked ensemble has no twin for."""


class StackedLinear(nn.Module):
    """``N`` ``nn.Linear`` layers applied member-wise: ``(N, B, in) -> (N, B, out)``."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None):
        super().__init__()
        self.weight = nn.Parameter(weight)  # (N, out, in)
        self.bias = nn.Parameter(bias) if bias is not None else None  # (N, out)

    @classmethod
    def from_members(cls, layers: Sequence[nn.Linear]) -> StackedLinear:
        w = torch.stack([m.weight.detach() for m in layers]).clone()
        b = torch.stack([m.bias.detach() for m in layers]).clone() if layers[0].bias is not None else None
        return cls(w, b)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = self.weight.shape[0]
        if x.dim() == 2:  # a batch shared by every member
            x = x.unsqueeze(0).expand(n, *x.shape)
        if x.dim() < 3 or x.shape[0] != n:
            raise ValueError(f"StackedLinear: expected input (N={n}, ..., in), got shape {tuple(x.shape)}")
        wt = self.weight.transpose(1, 2)  # (N, in, out)
        if x.dim() == 3:  # the common case: no reshapes (bmm takes the expanded, stride-0 shared input as is)
            if self.bias is None:
                return torch.bmm(x, wt)
            return torch.baddbmm(self.bias.unsqueeze(1), x, wt)  # (N, B, out)
        lead = x.shape[1:-1]
        x3 = x.reshape(n, -1, x.shape[-1])  # (N, B, in)
        if self.bias is None:
            y = torch.bmm(x3, wt)
        else:
            y = torch.baddbmm(self.bias.unsqueeze(1), x3, wt)  # (N, B, out)
        return y.reshape(n, *lead, y.shape[-1])

    def extra_repr(self) -> str:
        n, out, inp = self.weight.shape
        return f"members={n}, in_features={inp}, out_features={out}, bias={self.bias is not None}"


class StackedLayerNorm(nn.Module):
    """``N`` ``nn.LayerNorm`` layers: shared normalization, member-wise ``gamma``/``beta``."""

    def __init__(self, normalized_shape: tuple[int, ...], eps: float, weight: torch.Tensor | None,
                 bias: torch.Tensor | None, normalize: Callable = F.layer_norm):
        super().__init__()
        self.normalized_shape = tuple(normalized_shape)
        self.eps = eps
        self.weight = nn.Parameter(weight) if weight is not None else None  # (N, *normalized_shape)
        self.bias = nn.Parameter(bias) if bias is not None else None
        self.normalize = normalize  # (x, normalized_shape, weight, bias, eps): the members' functional

    @classmethod
    def from_members(cls, layers: Sequence[nn.LayerNorm]) -> StackedLayerNorm:
        first = layers[0]
        w = torch.stack([m.weight.detach() for m in layers]).clone() if first.weight is not None else None
        b = torch.stack([m.bias.detach() for m in layers]).clone() if first.bias is not None else None
        normalize = F.layer_norm if type(first) is nn.LayerNorm else NF.layer_norm
        return cls(first.normalized_shape, first.eps, w, b, normalize)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.normalize(x, self.normalized_shape, None, None, self.eps)
        if self.weight is None and self.bias is None:
            return y
        # (N, *shape) -> (N, 1, ..., 1, *shape) to broadcast over the batch dims of (N, B, ..., *shape)
        view = (self.weight if self.weight is not None else self.bias).shape
        extra = y.dim() - len(view)
        shape = (view[0],) + (1,) * extra + tuple(view[1:])
        if self.weight is not None:
            y = y * self.weight.reshape(shape)
        if self.bias is not None:
            y = y + self.bias.reshape(shape)
        return y

    def extra_repr(self) -> str:
        n = (self.weight if self.weight is not None else self.bias)
        members = n.shape[0] if n is not None else "?"
        return f"members={members}, normalized_shape={self.normalized_shape}, eps={self.eps}"


class StackedRMSNorm(nn.Module):
    """``N`` ``nn.RMSNorm`` layers: shared scaling by the RMS, member-wise ``gamma``."""

    def __init__(self, normalized_shape: tuple[int, ...], eps: float | None, weight: torch.Tensor | None,
                 normalize: Callable = F.rms_norm):
        super().__init__()
        self.normalized_shape = tuple(normalized_shape)
        self.eps = eps
        self.weight = nn.Parameter(weight) if weight is not None else None  # (N, *normalized_shape)
        self.normalize = normalize  # (x, normalized_shape, weight, eps): the members' functional

    @classmethod
    def from_members(cls, layers: Sequence[nn.RMSNorm]) -> StackedRMSNorm:
        first = layers[0]
        w = torch.stack([m.weight.detach() for m in layers]).clone() if first.weight is not None else None
        normalize = F.rms_norm if type(first) is nn.RMSNorm else NF.rms_norm
        return cls(first.normalized_shape, first.eps, w, normalize)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.normalize(x, list(self.normalized_shape), None, self.eps)
        if self.weight is None:
            return y
        # (N, *shape) -> (N, 1, ..., 1, *shape) to broadcast over the batch dims of (N, B, ..., *shape)
        view = self.weight.shape
        return y * self.weight.reshape((view[0],) + (1,) * (y.dim() - len(view)) + tuple(view[1:]))

    def extra_repr(self) -> str:
        members = self.weight.shape[0] if self.weight is not None else "?"
        return f"members={members}, normalized_shape={self.normalized_shape}, eps={self.eps}"


_STACKED_NORMS = {"layernorm": StackedLayerNorm, "rmsnorm": StackedRMSNorm}  # the registry's ``stacked`` kinds


def _stack_leaf(name: str, layers: list[nn.Module]) -> nn.Module:
    first = layers[0]
    if type(first) is nn.Linear:
        return StackedLinear.from_members(layers)  # type: ignore[arg-type]
    facts = class_facts(type(first))
    if facts is not None and facts.stacked in _STACKED_NORMS:
        return _STACKED_NORMS[facts.stacked].from_members(layers)
    if isinstance(first, _ELEMENTWISE):
        return copy.deepcopy(first)
    raise NotStackableError(
        f"module {name!r} of type {type(first).__name__} has no stacked twin "
        f"(supported: Linear, LayerNorm, RMSNorm (torch's and normlab's), "
        f"{', '.join(t.__name__ for t in _ELEMENTWISE)})"
    )


def build_members(builder: Callable[[], nn.Module], seeds: Sequence[int]) -> list[nn.Module]:
    """``[torch.manual_seed(s); builder() for s in seeds]``: each as an independent run would build it."""
    if not seeds:
        raise ValueError("seeds: expected at least one seed, got none")
    members = []
    for s in seeds:
        torch.manual_seed(int(s))
        members.append(builder())
    return members


def stack_members(members: Sequence[nn.Module]) -> nn.Module:
    """One module computing all ``members`` at once (see the module docstring). Raises NotStackableError."""
    members = list(members)
    first = members[0]
    names = [n for n, _ in first.named_modules()]
    for m in members[1:]:
        if [n for n, _ in m.named_modules()] != names:
            raise ValueError("stack_members: members must have the same structure")
    stacked = copy.deepcopy(first)
    for name, module in first.named_modules():
        if name == "" or any(True for _ in module.children()):
            if name == "" and not any(True for _ in module.children()):
                raise NotStackableError(f"root module {type(module).__name__} has no children to stack")
            if any(True for _ in module.parameters(recurse=False)) or any(True for _ in module.buffers(recurse=False)):
                raise NotStackableError(f"container {name or 'root'!r} holds its own parameters or buffers")
            continue
        twin = _stack_leaf(name, [m.get_submodule(name) for m in members])
        parent_name, _, child = name.rpartition(".")
        parent = stacked.get_submodule(parent_name) if parent_name else stacked
        setattr(parent, child, twin)
    stacked.ensemble_size = len(members)
    stacked.train(first.training)
    return stacked


class VmapEnsemble(nn.Module):
    """Fallback for any module: ``vmap(functional_call)`` over stacked parameters and buffers.

    Parameters are registered with ``.`` in names replaced by ``__`` (``nn.Module`` forbids dots); the
    original names are in ``param_names``. Randomness (dropout) is drawn independently per member.
    """

    def __init__(self, members: Sequence[nn.Module], *, shared_input: bool = True):
        super().__init__()
        members = list(members)
        self.shared_input = shared_input  # input (B, ...) for all members, else (N, B, ...)
        self.base = copy.deepcopy(members[0]).to("meta")
        self.param_names = [n for n, _ in members[0].named_parameters()]
        self.buffer_names = [n for n, _ in members[0].named_buffers()]
        for n in self.param_names:
            t = torch.stack([dict(m.named_parameters())[n].detach() for m in members]).clone()
            self.register_parameter(n.replace(".", "__"), nn.Parameter(t))
        for n in self.buffer_names:
            t = torch.stack([dict(m.named_buffers())[n].detach() for m in members]).clone()
            self.register_buffer(n.replace(".", "__"), t)
        self.ensemble_size = len(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from torch.func import functional_call, vmap

        self.base.train(self.training)
        params = {n: getattr(self, n.replace(".", "__")) for n in self.param_names}
        buffers = {n: getattr(self, n.replace(".", "__")) for n in self.buffer_names}

        def one(p: dict, b: dict, xi: torch.Tensor) -> torch.Tensor:
            return functional_call(self.base, (p, b), (xi,))

        in_dims = (0, 0, None if self.shared_input else 0)
        return vmap(one, in_dims=in_dims, randomness="different")(params, buffers, x)


def make_ensemble(builder: Callable[[], nn.Module], seeds: Sequence[int], *, allow_vmap: bool = True) -> nn.Module:
    """Build members with their seeds and stack them (stacked twins, else vmap when ``allow_vmap``)."""
    members = build_members(builder, seeds)
    try:
        return stack_members(members)
    except NotStackableError:
        if not allow_vmap:
            raise
        return VmapEnsemble(members)


def member_losses(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-member mean squared error, ``(N,)``: ``pred`` is ``(N, B, ...)``, ``target`` ``(B, ...)`` or ``(N, B, ...)``.

    Summing these gives each member the gradient of its own ``MSELoss`` (see the module docstring).
    """
    diff = pred - target  # broadcasts a shared target over members
    return diff.pow(2).flatten(1).mean(dim=1)


def unstack_member(stacked: nn.Module, index: int) -> dict[str, torch.Tensor]:
    """Member ``index``'s state as a plain ``state_dict`` (loadable into one ``builder()`` model)."""
    return {k: v[index].detach().clone() for k, v in stacked.state_dict().items()}


def run_sequential(seeds: Sequence[int], fn: Callable[[int], pd.DataFrame]) -> pd.DataFrame:
    """The fallback: run ``fn(seed)`` (after ``torch.manual_seed(seed)``) per seed, concatenate results."""
    frames = []
    for s in seeds:
        torch.manual_seed(int(s))
        frames.append(fn(int(s)))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def excess_kurtosis(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Fisher excess kurtosis along ``dim`` (0 for a normal distribution; large = peaked, heavy-tailed)."""
    return std_and_excess_kurtosis(x, dim)[1]


def std_and_excess_kurtosis(x: torch.Tensor, dim: int = -1) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x.std(dim), excess_kurtosis(x, dim))`` from one set of centered values.

    Two-pass (mean, then centered powers): on CPU ``Tensor.std`` uses Welford's update, which costs more
    than both statistics computed here from one set of centered values.
    The std is the sample one (``correction=1``) as ``Tensor.std``; the kurtosis uses the population
    variance: ``m4 / m2**2 - 3`` with ``m_k = mean((x - mean)**k)``, 0 for a constant.
    """
    n = x.shape[dim]
    c = x - x.mean(dim=dim, keepdim=True)
    c2 = c.square_()
    sum2 = c2.sum(dim=dim)
    var = sum2 / n
    m4 = c2.square_().sum(dim=dim).div_(n)
    kurtosis = torch.where(var > 0, m4 / var.clamp_min(torch.finfo(x.dtype).tiny) ** 2 - 3.0, torch.zeros_like(var))
    return (sum2 / (n - 1)).sqrt_(), kurtosis
