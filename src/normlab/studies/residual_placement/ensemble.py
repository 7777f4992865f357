"""residual-placement: S independently seeded copies of :class:`~normlab.models.transformer.CharTransformer`
trained as one vectorized ensemble.

Every tensor carries a leading member axis ``S`` (one member per seed): weights ``(S, out, in)``, activations
``(S, B, T, C)``. Member ``s`` is initialised by copying the weights of ``CharTransformer(cfg)`` built under
``torch.manual_seed(seed_s)`` (so the init is the library's: Xavier-normal, DeepNet's ``beta`` for
DeepNorm), and its forward pass is the library model's, written with batched matrix products (tested
equal to ``CharTransformer`` to float precision). Members never mix: every reduction (a norm's statistics,
attention, the loss) stays inside one member, the loss is the sum of the members' losses (so each
member's gradient is its own), and :class:`EnsembleAdam` is Adam applied elementwise with a learning rate
per member (so a member's trajectory is exactly that of a lone model trained with torch's Adam).

Why not ``torch.func.vmap`` over the library model: normlab's LayerNorm inspects its statistics in numpy
(a numerics guard), which vmap cannot trace.

``norm="batchnorm"`` (not a library placement option): BatchNorm over the ``B*T`` positions of each
channel, per member, with running statistics (momentum 0.1, PyTorch's convention) used in eval mode; the
member's weights start as LayerNorm's (weight 1, bias 0), so BN and LN runs of a seed share their init.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from normlab.models.transformer import CharTransformer, TransformerConfig
from normlab.nn.residual import Placement, deepnorm_constants

BN_MOMENTUM = 0.1
BN_EPS = 1e-5


def _key(name: str) -> str:
    return name.replace(".", "/")  # ParameterDict keys may not contain dots


class Ensemble(nn.Module):
    """``len(seeds)`` members of one architecture (placement, norm, depth), stacked.

    ``norm`` is ``"layernorm"``, ``"rmsnorm"`` (the library's layers, as in ``CharTransformer``) or
    ``"batchnorm"`` (see the module docstring).
    """

    def __init__(self, cfg: TransformerConfig, seeds: Sequence[int]) -> None:
        super().__init__()
        self.cfg, self.seeds = cfg, tuple(seeds)
        self.norm = cfg.norm
        lib_norm = "layernorm" if cfg.norm == "batchnorm" else cfg.norm
        members = []
        for s in self.seeds:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(s)
                members.append(CharTransformer(TransformerConfig(**{**cfg.__dict__, "norm": lib_norm})))
        self.placement = Placement.parse(cfg.placement)
        self.alpha = deepnorm_constants("decoder", cfg.n_layer)[0] if self.placement is Placement.DEEPNORM else 1.0
        self.eps = _norm_eps(members[0])
        self.params = nn.ParameterDict({
            _key(name): nn.Parameter(torch.stack([dict(m.named_parameters())[name].detach() for m in members]))
            for name, _ in members[0].named_parameters()
        })
        if self.norm == "batchnorm":
            S, C = len(self.seeds), cfg.n_embd
            for name in self.params:
                if name.endswith("norm/weight"):
                    stem = name[: -len("weight")]
                    self.register_buffer(_key(stem + "running_mean"), torch.zeros(S, C))
                    self.register_buffer(_key(stem + "running_var"), torch.ones(S, C))

    @property
    def size(self) -> int:
        return len(self.seeds)

    def p(self, name: str) -> Tensor:
        return self.params[_key(name)]

    # ---- pieces

    def _linear(self, x: Tensor, name: str) -> Tensor:
        """``x @ W^T + b`` per member: x (S, ..., in) -> (S, ..., out)."""
        w = self.p(name + ".weight")  # (S, out, in)
        shape = x.shape
        y = torch.bmm(x.reshape(shape[0], -1, shape[-1]), w.transpose(1, 2))  # (S, N, out)
        bias = self.params.get(_key(name + ".bias"))
        if bias is not None:
            y = y + bias[:, None, :]
        return y.reshape(*shape[:-1], w.shape[1])

    def _norm(self, x: Tensor, name: str) -> Tensor:
        """The norm ``name`` (a module path such as ``blocks.0.attn.pre_norm``) on x (S, B, T, C)."""
        S = x.shape[0]
        w = self.p(name + ".weight").view(S, 1, 1, -1)
        if self.norm == "rmsnorm":
            return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * w
        b = self.p(name + ".bias").view(S, 1, 1, -1)
        if self.norm == "layernorm":
            return F.layer_norm(x, (x.shape[-1],), eps=self.eps) * w + b
        rm, rv = getattr(self, _key(name + ".running_mean")), getattr(self, _key(name + ".running_var"))
        if self.training:
            mean = x.mean(dim=(1, 2))  # (S, C): over the B*T positions of each channel
            var = x.var(dim=(1, 2), unbiased=False)
            with torch.no_grad():
                n = x.shape[1] * x.shape[2]
                rm.lerp_(mean.detach(), BN_MOMENTUM)
                rv.lerp_(var.detach() * n / max(n - 1, 1), BN_MOMENTUM)
        else:
            mean, var = rm, rv
        return (x - mean[:, None, None, :]) * torch.rsqrt(var[:, None, None, :] + BN_EPS) * w + b

    def _attn(self, x: Tensor, name: str) -> Tensor:
        S, B, T, C = x.shape
        H = self.cfg.n_head

        def heads(t: Tensor) -> Tensor:
            return t.reshape(S * B, T, H, C // H).transpose(1, 2)  # (S*B, H, T, D)

        q, k, v = (heads(self._linear(x, f"{name}.{p}_proj")) for p in "qkv")
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (S*B, H, T, D)
        return self._linear(y.transpose(1, 2).reshape(S, B, T, C), f"{name}.out_proj")

    def _ffn(self, x: Tensor, name: str) -> Tensor:
        return self._linear(F.gelu(self._linear(x, f"{name}.fc_in")), f"{name}.fc_out")

    def _residual(self, x: Tensor, name: str, branch) -> Tensor:
        p = self.placement
        if p is Placement.POST:
            return self._norm(x + branch(x, f"{name}.sublayer"), f"{name}.post_norm")
        if p is Placement.PRE:
            return x + branch(self._norm(x, f"{name}.pre_norm"), f"{name}.sublayer")
        if p is Placement.SANDWICH:
            h = branch(self._norm(x, f"{name}.pre_norm"), f"{name}.sublayer")
            return x + self._norm(h, f"{name}.post_norm")
        if p is Placement.DEEPNORM:
            return self._norm(self.alpha * x + branch(x, f"{name}.sublayer"), f"{name}.post_norm")
        return x + branch(x, f"{name}.sublayer")

    # ---- the model

    def hidden_states(self, idx: Tensor) -> list[Tensor]:
        """The residual stream after the embeddings and after each block: idx (S, B, T) -> (S, B, T, C) each."""
        S, B, T = idx.shape
        tok = self.p("tok_emb.weight")  # (S, V, C)
        x = torch.gather(tok, 1, idx.reshape(S, B * T, 1).expand(-1, -1, tok.shape[-1])).reshape(S, B, T, -1)
        x = x + self.p("pos_emb.weight")[:, None, :T, :]
        states = [x]
        for i in range(self.cfg.n_layer):
            x = self._residual(x, f"blocks.{i}.attn", self._attn)
            x = self._residual(x, f"blocks.{i}.ffn", self._ffn)
            states.append(x)
        return states

    def head_input(self, x: Tensor) -> Tensor:
        """What the LM head reads: the last stream, through the final norm where the placement has one."""
        if self.placement.normalizes_stream or self.placement is Placement.NONE:
            return x
        return self._norm(x, "final_norm")

    def forward(self, idx: Tensor) -> Tensor:
        return self._linear(self.head_input(self.hidden_states(idx)[-1]), "lm_head")  # (S, B, T, V)

    def losses(self, idx: Tensor, targets: Tensor) -> Tensor:
        """Per-member mean cross-entropy: idx, targets (S, B, T) -> (S,)."""
        logits = self(idx)
        S = logits.shape[0]
        ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none")
        return ce.view(S, -1).mean(1)

    def block_parameters(self) -> list[Tensor]:
        """The stacked parameters of the transformer blocks (what a 'parameter update' measures)."""
        return [p for name, p in self.params.items() if name.startswith("blocks/")]


def _norm_eps(model: CharTransformer) -> float:
    for module in model.modules():
        if hasattr(module, "normalized_shape"):
            eps = getattr(module, "eps", None)
            return float(eps) if eps is not None else float(torch.finfo(torch.float32).eps)
    return 1e-5


class EnsembleAdam:
    """Adam (Kingma & Ba, torch's default form, no weight decay) with a learning rate per member.

    Elementwise, so member ``s`` follows exactly the trajectory torch.optim.Adam would give a lone model
    with ``lr = lrs[s]``. ``lrs`` is a (S,) tensor, set before each step (warmup schedules).
    """

    def __init__(self, params: Sequence[Tensor], betas: tuple[float, float] = (0.9, 0.98), eps: float = 1e-8):
        self.params = list(params)
        self.b1, self.b2 = betas
        self.eps = eps
        self.m = [torch.zeros_like(p) for p in self.params]
        self.v = [torch.zeros_like(p) for p in self.params]
        self.t = 0

    @torch.no_grad()
    def step(self, lrs: Tensor) -> None:
        self.t += 1
        c1, c2 = 1 - self.b1**self.t, 1 - self.b2**self.t
        for p, m, v in zip(self.params, self.m, self.v, strict=True):
            if p.grad is None:
                continue
            g = p.grad
            m.lerp_(g, 1 - self.b1)
            v.mul_(self.b2).addcmul_(g, g, value=1 - self.b2)
            denom = (v / c2).sqrt_().add_(self.eps)
            lr = lrs.view(-1, *([1] * (p.dim() - 1))) / c1
            p.sub_(lr * m / denom)

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None


def relative_change(now: Sequence[Tensor], start: Sequence[Tensor]) -> Tensor:
    """Per member: ||theta_now - theta_start|| / ||theta_start|| over the given stacked tensors -> (S,)."""
    num = sum((a - b).pow(2).flatten(1).sum(1) for a, b in zip(now, start, strict=True))
    den = sum(b.pow(2).flatten(1).sum(1) for b in start)
    return (num / den).sqrt()


__all__ = ["BN_EPS", "BN_MOMENTUM", "Ensemble", "EnsembleAdam", "relative_change"]
