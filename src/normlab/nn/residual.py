r"""Where the norm goes around a residual connection: Post-LN, Pre-LN, Sandwich-LN, DeepNorm.

A transformer block is two residual sublayers (attention, feed-forward). Each wraps a sublayer
:math:`F` and differs only in where the normalization :math:`\mathrm{N}` sits:

.. math::

    \text{post:}\quad     & x \leftarrow \mathrm{N}(x + F(x))                       && \text{(Vaswani et al. 2017)} \\
    \text{pre:}\quad      & x \leftarrow x + F(\mathrm{N}(x))                       && \text{(Xiong et al. 2020)} \\
    \text{sandwich:}\quad & x \leftarrow x + \mathrm{N}_{out}(F(\mathrm{N}_{in}(x))) && \text{(CogView, Ding et al. 2021)} \\
    \text{deepnorm:}\quad & x \leftarrow \mathrm{N}(\alpha x + F(x))                && \text{(DeepNet, Wang et al. 2022)} \\
    \text{none:}\quad     & x \leftarrow x + F(x)

DeepNorm also scales the initialization of the FFN weights and the attention value and output
projections by :math:`\beta` (see :func:`deepnorm_constants` and :func:`deepnorm_init_`).

The placement is data (:class:`Placement`, which also accepts its strings), checked once in
:func:`_validated`; there are no per-placement boolean flags.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from enum import Enum
from typing import Any

import torch
from torch import Tensor, nn

from normlab.nn.registry import create_norm

__all__ = ["DEEPNORM_KINDS", "Placement", "Residual", "deepnorm_constants", "deepnorm_init_"]


class Placement(str, Enum):
    """Where the norm sits around a residual sublayer. ``Placement("pre")`` and ``Placement.PRE`` agree."""

    POST = "post"
    PRE = "pre"
    SANDWICH = "sandwich"
    DEEPNORM = "deepnorm"
    NONE = "none"

    @classmethod
    def parse(cls, value: Placement | str) -> Placement:
        """``value`` as a Placement, or a ValueError that lists the accepted names."""
        if isinstance(value, cls):
            return value
        if isinstance(value, str):
            try:
                return cls(value.lower())
            except ValueError:
                pass
        names = ", ".join(repr(p.value) for p in cls)
        raise ValueError(f"placement must be one of {names} (or a Placement), got {value!r}")

    @property
    def norm_before(self) -> bool:
        """Whether the sublayer's input is normalized (``N_in`` above)."""
        return self in (Placement.PRE, Placement.SANDWICH)

    @property
    def norm_after(self) -> bool:
        """Whether a norm follows: of the sum (post, deepnorm) or of the branch (sandwich)."""
        return self in (Placement.POST, Placement.SANDWICH, Placement.DEEPNORM)

    @property
    def normalizes_stream(self) -> bool:
        """Whether the residual stream itself leaves the block normalized (post, deepnorm)."""
        return self in (Placement.POST, Placement.DEEPNORM)


def _validated(placement: Placement | str, dim: Any, alpha: Any, norm: Any) -> tuple[Placement, float]:
    """The one place a Residual's arguments are checked. Returns the placement and the alpha to use."""
    placement = Placement.parse(placement)
    if isinstance(dim, bool) or not isinstance(dim, int) or dim <= 0:
        raise ValueError(f"Residual: dim must be a positive int (the feature size), got {dim!r}")
    if not isinstance(norm, str):
        raise TypeError(f"Residual: norm must be a registry name such as 'layernorm', got {type(norm).__name__}")
    if placement is Placement.DEEPNORM:
        if alpha is None:
            raise ValueError(
                "Residual: placement='deepnorm' needs alpha (the residual scale); "
                "get it from deepnorm_constants(kind, n_layers)"
            )
        alpha = float(alpha)
        if not math.isfinite(alpha) or alpha <= 0:
            raise ValueError(f"Residual: alpha must be a finite positive number, got {alpha!r}")
        return placement, alpha
    if alpha is not None:
        raise ValueError(f"Residual: alpha is only used by placement='deepnorm', got alpha={alpha!r} "
                         f"with placement={placement.value!r}")
    return placement, 1.0


class Residual(nn.Module):
    r"""A residual connection around ``sublayer`` with the norm placed as ``placement`` says.

    .. math::
        \text{post: } N(x + F(x)) \quad \text{pre: } x + F(N(x)) \quad
        \text{sandwich: } x + N_{out}(F(N_{in}(x))) \quad \text{deepnorm: } N(\alpha x + F(x))

    Args:
        sublayer: the branch :math:`F`; any module mapping ``(*, dim)`` to ``(*, dim)``. Extra positional
            and keyword arguments of :meth:`forward` (an attention mask, say) are passed on to it.
        dim: feature size, the last dimension of the input.
        placement: a :class:`Placement` or one of ``"post"``, ``"pre"``, ``"sandwich"``, ``"deepnorm"``,
            ``"none"``.
        norm: a name from :func:`normlab.nn.registry.create_norm` (``"layernorm"``, ``"rmsnorm"``, ...).
        alpha: DeepNorm's residual scale (required for ``"deepnorm"``, rejected otherwise); see
            :func:`deepnorm_constants`.
        norm_kwargs: extra keyword arguments for the norm (``eps``, ``elementwise_affine``, ...).

    Attributes:
        pre_norm: the norm applied to the sublayer's input (``pre``, ``sandwich``), else ``None``.
        post_norm: the norm applied after (to the sum for ``post``/``deepnorm``, to the branch for
            ``sandwich``), else ``None``.

    Shape:
        - Input: :math:`(*, \text{dim})`
        - Output: :math:`(*, \text{dim})`, same shape as the input.

    Example::

        >>> ffn = nn.Sequential(nn.Linear(16, 64), nn.GELU(), nn.Linear(64, 16))
        >>> block = Residual(ffn, 16, placement="pre", norm="rmsnorm")
        >>> block(torch.randn(2, 5, 16)).shape
        torch.Size([2, 5, 16])
    """

    def __init__(
        self,
        sublayer: nn.Module,
        dim: int,
        *,
        placement: Placement | str,
        norm: str = "layernorm",
        alpha: float | None = None,
        norm_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(sublayer, nn.Module):
            raise TypeError(f"Residual: sublayer must be an nn.Module, got {type(sublayer).__name__}")
        self.placement, self.alpha = _validated(placement, dim, alpha, norm)
        self.dim = dim
        self.norm_name = norm
        self.sublayer = sublayer
        kwargs = dict(norm_kwargs or {})
        self.pre_norm = create_norm(norm, dim, **kwargs) if self.placement.norm_before else None
        self.post_norm = create_norm(norm, dim, **kwargs) if self.placement.norm_after else None

    def forward(self, x: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        if x.shape[-1] != self.dim:
            raise ValueError(f"Residual: expected input with last dimension {self.dim}, got shape {tuple(x.shape)}")
        p = self.placement
        if p is Placement.POST:
            return self.post_norm(x + self.sublayer(x, *args, **kwargs))
        if p is Placement.PRE:
            return x + self.sublayer(self.pre_norm(x), *args, **kwargs)
        if p is Placement.SANDWICH:
            return x + self.post_norm(self.sublayer(self.pre_norm(x), *args, **kwargs))
        if p is Placement.DEEPNORM:
            return self.post_norm(self.alpha * x + self.sublayer(x, *args, **kwargs))
        return x + self.sublayer(x, *args, **kwargs)

    def extra_repr(self) -> str:
        alpha = f", alpha={self.alpha:.4g}" if self.placement is Placement.DEEPNORM else ""
        return f"dim={self.dim}, placement={self.placement.value!r}, norm={self.norm_name!r}{alpha}"


DEEPNORM_KINDS: tuple[str, ...] = ("decoder", "encoder", "encdec-encoder", "encdec-decoder")


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"deepnorm_constants: {name} must be a positive int, got {value!r}")
    return value


def deepnorm_constants(kind: str, n_layers: int, m_layers: int | None = None) -> tuple[float, float]:
    r"""DeepNet's :math:`(\alpha, \beta)` for a stack (Wang et al. 2022, Table 1).

    .. math::
        \text{decoder-only (M layers) / encoder-only (N layers):}\quad
            \alpha = (2N)^{1/4},\ \beta = (8N)^{-1/4} \\
        \text{encoder-decoder, encoder:}\quad
            \alpha = 0.81\,(N^4 M)^{1/16},\ \beta = 0.87\,(N^4 M)^{-1/16} \\
        \text{encoder-decoder, decoder:}\quad
            \alpha = (3M)^{1/4},\ \beta = (12M)^{-1/4}

    Args:
        kind: ``"decoder"`` or ``"encoder"`` (a single stack of ``n_layers``), ``"encdec-encoder"`` or
            ``"encdec-decoder"`` (the two stacks of an encoder-decoder model).
        n_layers: the single stack's depth, or for encoder-decoder kinds the encoder depth :math:`N`.
        m_layers: the decoder depth :math:`M`, required for the encoder-decoder kinds and rejected
            otherwise.

    Returns:
        ``(alpha, beta)``: alpha scales the residual inside the norm, beta the init of the FFN weights
        and the attention value and output projections (:func:`deepnorm_init_`).

    Example::

        >>> alpha, beta = deepnorm_constants("decoder", 6)   # 12**0.25, 48**-0.25
        >>> round(alpha, 3), round(beta, 3)
        (1.861, 0.38)
    """
    if kind not in DEEPNORM_KINDS:
        raise ValueError(f"deepnorm_constants: kind must be one of {DEEPNORM_KINDS}, got {kind!r}")
    n = _positive_int("n_layers", n_layers)
    if kind in ("decoder", "encoder"):
        if m_layers is not None:
            raise ValueError(f"deepnorm_constants: m_layers is only for encoder-decoder kinds, "
                             f"got m_layers={m_layers!r} with kind={kind!r}")
        return (2 * n) ** 0.25, (8 * n) ** -0.25
    if m_layers is None:
        raise ValueError(f"deepnorm_constants: kind={kind!r} needs m_layers (the decoder depth M)")
    m = _positive_int("m_layers", m_layers)
    if kind == "encdec-encoder":
        return 0.81 * (n**4 * m) ** (1 / 16), 0.87 * (n**4 * m) ** (-1 / 16)
    return (3 * m) ** 0.25, (12 * m) ** -0.25


@torch.no_grad()
def deepnorm_init_(weights: Iterable[Tensor], beta: float) -> None:
    r"""DeepNet's init for the given weights: Xavier-normal with gain :math:`\beta`.

    Pass the FFN weights and the attention value and output projections; DeepNet leaves queries and
    keys at gain 1 because they do not enter the residual stream's magnitude (their product goes
    through a softmax).
    """
    beta = float(beta)
    if not math.isfinite(beta) or beta <= 0:
        raise ValueError(f"deepnorm_init_: beta must be a finite positive number, got {beta!r}")
    for w in weights:
        if w.dim() < 2:
            raise ValueError(f"deepnorm_init_: expected weight matrices (dim >= 2), got shape {tuple(w.shape)}")
        nn.init.xavier_normal_(w, gain=beta)
