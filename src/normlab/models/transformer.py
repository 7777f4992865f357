"""A small decoder-only transformer for character-level language modeling (nanoGPT's shape).

One file, read top to bottom: attention, feed-forward, a block made of two ``Residual`` sublayers
(the placement and the norm are data), the model. Everything that differs between Post-LN, Pre-LN,
Sandwich-LN and DeepNorm lives in ``normlab.nn.residual``; this file only decides

* whether a final norm is needed before the LM head (yes when the residual stream leaves the last
  block un-normalized: ``pre``, ``sandwich``, ``none``), and
* the init: Xavier-normal everywhere (the setting of Xiong et al. 2020 and DeepNet), with DeepNet's
  gain ``beta`` on the FFN weights and the attention value and output projections for ``deepnorm``.

Shapes: B = batch, T = time (sequence), C = width (n_embd), H = heads, D = C // H, V = vocab.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from normlab.nn.registry import create_norm
from normlab.nn.residual import Placement, Residual, deepnorm_constants, deepnorm_init_


@dataclass(frozen=True)
class TransformerConfig:
    vocab_size: int
    block_size: int = 64  # longest context
    n_layer: int = 4
    n_embd: int = 64
    n_head: int = 4
    ffn_mult: int = 4  # hidden width of the FFN = ffn_mult * n_embd
    norm: str = "layernorm"  # any normlab.nn.registry name
    placement: str = "pre"  # post | pre | sandwich | deepnorm | none
    dropout: float = 0.0

    def __post_init__(self) -> None:
        for name in ("vocab_size", "block_size", "n_layer", "n_embd", "n_head", "ffn_mult"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"TransformerConfig: {name} must be a positive int, got {value!r}")
        if self.n_embd % self.n_head:
            raise ValueError(f"TransformerConfig: n_embd ({self.n_embd}) must be divisible by n_head "
                             f"({self.n_head})")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"TransformerConfig: dropout must be in [0, 1), got {self.dropout!r}")
        Placement.parse(self.placement)  # raises with the accepted names


class CausalSelfAttention(nn.Module):
    # Separate q/k/v projections (not one fused c_attn) so DeepNorm can scale v's init alone.
    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.n_head = cfg.n_head
        self.q_proj = nn.Linear(cfg.n_embd, cfg.n_embd)
        self.k_proj = nn.Linear(cfg.n_embd, cfg.n_embd)
        self.v_proj = nn.Linear(cfg.n_embd, cfg.n_embd)
        self.out_proj = nn.Linear(cfg.n_embd, cfg.n_embd)
        self.dropout = cfg.dropout

    def forward(self, x: Tensor) -> Tensor:
        B, T, C = x.shape
        H = self.n_head

        def heads(t: Tensor) -> Tensor:
            return t.view(B, T, H, C // H).transpose(1, 2)  # (B, H, T, D)

        q, k, v = heads(self.q_proj(x)), heads(self.k_proj(x)), heads(self.v_proj(x))  # (B, H, T, D)
        p = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)  # (B, H, T, D)
        y = y.transpose(1, 2).reshape(B, T, C)  # (B, T, C)
        return F.dropout(self.out_proj(y), p, self.training)  # (B, T, C)


class FeedForward(nn.Module):
    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.fc_in = nn.Linear(cfg.n_embd, cfg.ffn_mult * cfg.n_embd)
        self.fc_out = nn.Linear(cfg.ffn_mult * cfg.n_embd, cfg.n_embd)
        self.dropout = cfg.dropout

    def forward(self, x: Tensor) -> Tensor:
        h = F.gelu(self.fc_in(x))  # (B, T, 4C)
        return F.dropout(self.fc_out(h), self.dropout, self.training)  # (B, T, C)


class Block(nn.Module):
    def __init__(self, cfg: TransformerConfig, alpha: float | None) -> None:
        super().__init__()
        kw = dict(placement=cfg.placement, norm=cfg.norm, alpha=alpha)
        self.attn = Residual(CausalSelfAttention(cfg), cfg.n_embd, **kw)
        self.ffn = Residual(FeedForward(cfg), cfg.n_embd, **kw)

    def forward(self, x: Tensor) -> Tensor:
        return self.ffn(self.attn(x))  # (B, T, C)


class CharTransformer(nn.Module):
    """Decoder-only transformer: token + position embeddings, ``n_layer`` blocks, (final norm), LM head.

    Example::

        >>> model = CharTransformer(TransformerConfig(vocab_size=65, n_layer=2, placement="post"))
        >>> logits = model(torch.randint(0, 65, (3, 16)))
        >>> logits.shape
        torch.Size([3, 16, 65])
    """

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        placement = Placement.parse(cfg.placement)
        alpha, self.beta = deepnorm_constants("decoder", cfg.n_layer) if placement is Placement.DEEPNORM else (None, 1.0)
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.pos_emb = nn.Embedding(cfg.block_size, cfg.n_embd)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg, alpha) for _ in range(cfg.n_layer))
        # Post-LN and DeepNorm end every block with a norm; the others need one before the head.
        self.final_norm = nn.Identity() if placement.normalizes_stream else _final_norm(cfg)
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_normal_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, std=0.02)
        deepnorm_init_(self.beta_scaled_weights(), self.beta)  # beta = 1 unless placement is deepnorm

    def beta_scaled_weights(self) -> list[Tensor]:
        """The weights DeepNet's beta scales: FFN in/out and attention value and output projections."""
        out = []
        for block in self.blocks:
            attn, ffn = block.attn.sublayer, block.ffn.sublayer
            out += [attn.v_proj.weight, attn.out_proj.weight, ffn.fc_in.weight, ffn.fc_out.weight]
        return out

    def hidden_states(self, idx: Tensor) -> list[Tensor]:
        """The residual stream after the embeddings and after each block: ``n_layer + 1`` of (B, T, C)."""
        T = idx.shape[1]  # idx: (B, T)
        if T > self.cfg.block_size:
            raise ValueError(f"CharTransformer: sequence length {T} exceeds block_size {self.cfg.block_size}")
        pos = torch.arange(T, device=idx.device)  # (T,)
        x = self.drop(self.tok_emb(idx) + self.pos_emb(pos))  # (B, T, C)
        states = [x]
        for block in self.blocks:
            x = block(x)  # (B, T, C)
            states.append(x)
        return states

    def forward(self, idx: Tensor) -> Tensor:
        x = self.hidden_states(idx)[-1]  # (B, T, C)
        return self.lm_head(self.final_norm(x))  # (B, T, V)

    def loss(self, idx: Tensor, targets: Tensor) -> Tensor:
        logits = self(idx)  # (B, T, V)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def _final_norm(cfg: TransformerConfig) -> nn.Module:
    if Placement.parse(cfg.placement) is Placement.NONE:
        return nn.Identity()  # the "no norm" control has no norm anywhere
    return create_norm(cfg.norm, cfg.n_embd)

