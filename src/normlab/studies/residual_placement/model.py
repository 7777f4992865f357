"""residual-placement: what a cell computes. Training one seed of one arm (and what it records), and the
``norm-cost`` cell's timing of each norm alone."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
import torch

from normlab.data.corpus import CharCorpus, load_shakespeare
from normlab.kit.tables import metric_rows
from normlab.models.transformer import CharTransformer, TransformerConfig
from normlab.nn.registry import create_norm
from normlab.studies.residual_placement.config import NORMS, Config

Row = tuple[int, int, str, float]


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
             seed: int) -> list[Row]:
    """Train one model; returns rows ``(seed, step, metric, value)``."""
    rows: list[Row] = []
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


def train_arm(config: Config, placement: str, norm: str, depth: int, warmup: int, seeds: Sequence[int],
              progress: Callable[[int, int], None]) -> pd.DataFrame:
    """One training cell: :func:`run_seed` for each seed, on the corpus the config keeps."""
    corpus = load_shakespeare(max_chars=config.corpus_chars)
    rows: list[Row] = []
    for i, seed in enumerate(seeds):
        rows += run_seed(config, corpus, placement, norm, depth, warmup, seed)
        progress(i + 1, len(seeds))
    return metric_rows(rows)


def norm_cost(config: Config, reps: int) -> pd.DataFrame:
    """Forward+backward time of LN and RMSNorm at the model's activation shape, interleaved per repetition
    (``seed`` = the repetition)."""
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
    return metric_rows((rep, 0, f"norm_us/{name}", once(layer)) for rep in range(reps)
                       for name, layer in impls.items())
