"""dropout_add_norm vs the eager composition norm(residual + F.dropout(x)), on CPU.

Prints a Markdown table: median time per call of each variant and its ratio to the anchor (the eager
composition) measured in the same run. Variants are timed in interleaved rounds (every variant once
per round, then the next round), so drift in a shared machine's load hits all of them alike.

    .venv/bin/python benchmarks/dropout_add_norm.py [--rounds 7] [--clock thread|wall] [--threads 1]

The default clock is the calling thread's CPU time with one torch thread: on a shared machine, wall time
mostly measures how long the process waited for a core.

Rows marked "part" time a single ingredient, to show where the time goes (on CPU, drawing the random
mask costs far more than the add and the norm).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from normlab.nn.fused import counter_dropout_mask, dropout_add_norm

P = 0.1


def _variants(shape: tuple[int, ...], backward: bool) -> dict[str, Callable[[], object]]:
    c = shape[-1]
    x = torch.randn(shape, requires_grad=backward)
    r = torch.randn(shape, requires_grad=backward)
    w = torch.ones(c, requires_grad=backward)
    b = torch.zeros(c, requires_grad=backward)
    g = torch.randn(shape)

    def run(f: Callable[[], torch.Tensor]) -> Callable[[], object]:
        if not backward:
            return f
        return lambda: f().backward(g)

    out = {
        "eager: layer_norm(r + F.dropout(x))  [anchor]": run(lambda: F.layer_norm(r + F.dropout(x, P), (c,), w, b)),
        "fused, bernoulli mask (same draw as F.dropout)": run(
            lambda: dropout_add_norm(x, r, w, b, p=P, training=True)),
        "fused, counter mask": run(lambda: dropout_add_norm(x, r, w, b, p=P, training=True, mask="counter", seed=1)),
        "eager, no dropout: layer_norm(r + x)": run(lambda: F.layer_norm(r + x, (c,), w, b)),
    }
    if not backward:
        out |= {
            "part: bernoulli_ mask alone": lambda: torch.empty_like(x).bernoulli_(1 - P),
            "part: counter mask alone": lambda: counter_dropout_mask(shape, P, 1),
            "part: layer_norm alone": lambda: F.layer_norm(x, (c,), w, b),
        }
    return out


def _time(fn: Callable[[], object], min_seconds: float, clock: Callable[[], float]) -> float:
    """Seconds per call: repeat until at least ``min_seconds`` have passed on ``clock``."""
    fn()
    n, start = 0, clock()
    while True:
        fn()
        n += 1
        elapsed = clock() - start
        if elapsed >= min_seconds:
            return elapsed / n


def bench(shape: tuple[int, ...], backward: bool, rounds: int, min_seconds: float,
          clock: Callable[[], float]) -> list[tuple[str, float, float]]:
    variants = _variants(shape, backward)
    samples: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(rounds):
        for name, fn in variants.items():
            samples[name].append(_time(fn, min_seconds, clock))
    medians = {k: statistics.median(v) for k, v in samples.items()}
    anchor = medians[next(iter(variants))]
    return [(k, t, t / anchor) for k, t in medians.items()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--min-seconds", type=float, default=0.05, help="per timing sample")
    ap.add_argument("--clock", choices=("thread", "wall"), default="thread",
                    help="thread: this thread's CPU time (default; with 1 torch thread every kernel runs on it, "
                         "and time spent descheduled on a shared machine does not count); wall: perf_counter")
    args = ap.parse_args()
    if args.clock == "thread" and args.threads != 1:
        ap.error("--clock thread measures only the calling thread: use it with --threads 1, or --clock wall")
    clock = time.thread_time if args.clock == "thread" else time.perf_counter
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), float32, p={P}, "
          f"median of {args.rounds} interleaved rounds, clock: {args.clock}\n")
    print("| shape | pass | variant | ms per call | ratio to eager |")
    print("|---|---|---|---:|---:|")
    for shape in ((16, 128, 512), (4, 64, 256)):
        for backward in (False, True):
            for name, t, ratio in bench(shape, backward, args.rounds, args.min_seconds, clock):
                print(f"| {tuple(shape)} | {'fwd+bwd' if backward else 'fwd'} | {name} | {t * 1e3:.3f} | {ratio:.2f} |")


if __name__ == "__main__":
    main()
