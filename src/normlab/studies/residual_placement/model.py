"""residual-placement: what a cell computes. Training one arm for all its seeds as one vectorized ensemble
(and what it records), and the ``norm-cost`` cell's timing of each norm alone."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
import torch

from normlab.data.corpus import CharCorpus, load_shakespeare
from normlab.kit.tables import metric_rows
from normlab.models.transformer import TransformerConfig
from normlab.nn.registry import create_norm
from normlab.studies.residual_placement.config import NORMS, Arm, Config
from normlab.studies.residual_placement.ensemble import Ensemble, EnsembleAdam, relative_change

Row = tuple[int, int, str, float]


def _stacked_batch(corpus: CharCorpus, split: str, config: Config, generators: Sequence[torch.Generator],
                   batch_size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One batch per member from its own generator: (S, B, T) inputs and targets."""
    b = batch_size or config.batch_size
    pairs = [corpus.batch(split, b, config.block_size, g) for g in generators]
    return torch.stack([x for x, _ in pairs]), torch.stack([y for _, y in pairs])


def _eval_losses(model: Ensemble, corpus: CharCorpus, config: Config) -> np.ndarray:
    """Mean validation loss per member over fixed windows (the same for every run), eval mode."""
    g = torch.Generator().manual_seed(12345)
    S = model.size
    model.eval()
    total = torch.zeros(S, dtype=torch.float64)
    with torch.no_grad():
        for _ in range(config.eval_batches):
            x, y = corpus.batch("val", config.eval_batch_size, config.block_size, g)
            total += model.losses(x.expand(S, -1, -1), y.expand(S, -1, -1)).double()
    model.train()
    return (total / config.eval_batches).numpy()


def train_ensemble(config: Config, corpus: CharCorpus, arm: Arm, seeds: Sequence[int],
                   progress: Callable[[int, int], None] = lambda done, total: None) -> list[Row]:
    """Train ``arm`` for every seed at once; returns rows ``(seed, step, metric, value)``.

    Per seed ``s``: the initial weights are ``CharTransformer``'s under ``torch.manual_seed(s)`` and the
    training batches come from a generator seeded with ``s``, so seed ``s`` sees the same data in every
    cell (every placement, norm, depth, learning rate and warmup).
    """
    S = len(seeds)
    model = Ensemble(TransformerConfig(
        vocab_size=corpus.vocab_size, block_size=config.block_size, n_layer=arm.depth, n_embd=config.width,
        n_head=config.heads, norm=arm.norm, placement=arm.placement), seeds)
    rows: list[Row] = []

    def emit(step: int, metric: str, values) -> None:
        rows.extend((int(s), step, metric, float(v)) for s, v in zip(seeds, np.asarray(values, dtype=float), strict=True))

    data = [torch.Generator().manual_seed(int(s)) for s in seeds]
    probe, _ = corpus.batch("val", 8, config.block_size, torch.Generator().manual_seed(777))
    probe = probe.expand(S, -1, -1)

    # Gradients at initialization (Xiong et al.): one batch per seed, no update.
    x, y = _stacked_batch(corpus, "train", config, [torch.Generator().manual_seed(int(s) + 1) for s in seeds])
    model.losses(x, y).sum().backward()
    for layer in range(arm.depth):
        pre = f"blocks/{layer}/"
        ffn = model.params[pre + "ffn/sublayer/fc_out/weight"].grad
        block_sq = sum(p.grad.pow(2).flatten(1).sum(1) for n, p in model.params.items()
                       if n.startswith(pre) and p.grad is not None)
        emit(layer + 1, "init_grad_ffn", ffn.flatten(1).norm(dim=1))
        emit(layer + 1, "init_grad_block", block_sq.sqrt())
    for p in model.params.values():
        p.grad = None

    with torch.no_grad():
        h0 = model.head_input(model.hidden_states(probe)[-1])
    theta0 = [p.detach().clone() for p in model.block_parameters()]
    opt = EnsembleAdam(list(model.params.values()), betas=(0.9, 0.98))
    alive = torch.ones(S, dtype=torch.bool)
    blew_up = torch.zeros(S, dtype=torch.bool)
    window = torch.zeros(S, dtype=torch.float64)
    count = 0
    first_logged: torch.Tensor | None = None
    peak = torch.full((S,), -math.inf, dtype=torch.float64)
    t0 = time.thread_time()  # CPU time of this thread (the study runs torch on 1 thread): load-independent
    for step in range(1, config.steps + 1):
        scale = min(1.0, step / arm.warmup) if arm.warmup else 1.0
        lrs = torch.where(alive, arm.lr * scale, 0.0)
        x, y = _stacked_batch(corpus, "train", config, data)
        losses = model.losses(x, y)
        finite = torch.isfinite(losses.detach())
        alive &= finite  # a non-finite loss ends a member: it is frozen (lr 0, no gradient) and recorded
        opt.zero_grad()
        torch.where(alive, losses, torch.zeros_like(losses)).sum().backward()
        opt.step(torch.where(alive, lrs, 0.0))
        window += torch.where(finite, losses.detach().double(), torch.full_like(window, math.inf))
        count += 1
        if step <= config.track_updates:
            with torch.no_grad():
                change = model.head_input(model.hidden_states(probe)[-1]) - h0
                emit(step, "update_rms", change.pow(2).flatten(1).mean(1).sqrt())
                emit(step, "weight_update_rel", relative_change(model.block_parameters(), theta0))
        if step % config.log_every == 0 or step == config.steps:
            mean = window / count
            emit(step, "train_loss", mean)
            if first_logged is None:
                first_logged = mean.clone()
            peak = torch.maximum(peak, torch.where(torch.isfinite(mean), mean, torch.full_like(mean, math.inf)))
            window.zero_()
            count = 0
            progress(step, config.steps)
    blew_up = ~alive | ~torch.isfinite(peak) | (peak > first_logged + config.blowup_margin)
    emit(config.steps, "ms_per_step", np.full(S, 1000 * (time.thread_time() - t0) / (config.steps * S)))

    val = _eval_losses(model, corpus, config)
    unigram = corpus.unigram_loss()
    plateau = ~np.isfinite(val) | (val > unigram - config.learned_margin)
    diverged = blew_up.numpy() | plateau
    emit(config.steps, "val_loss", val)
    emit(config.steps, "blew_up", blew_up.numpy())
    emit(config.steps, "plateau", plateau)
    emit(config.steps, "diverged", diverged)
    emit(config.steps, "peak_train_loss", peak.numpy())
    emit(0, "start_train_loss", first_logged.numpy())
    emit(0, "unigram_loss", np.full(S, unigram))
    model.eval()
    with torch.no_grad():
        for layer, h in enumerate(model.hidden_states(probe)):
            emit(layer, "stream_rms", h.pow(2).flatten(1).mean(1).sqrt())
            emit(layer, "stream_maxabs", h.abs().flatten(1).amax(1))
    return rows


def train_arm(config: Config, arm: Arm, seeds: Sequence[int], progress: Callable[[int, int], None]) -> pd.DataFrame:
    """One training cell: :func:`train_ensemble` on the corpus the config keeps."""
    corpus = load_shakespeare(max_chars=config.corpus_chars)
    return metric_rows(train_ensemble(config, corpus, arm, seeds, progress))


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
