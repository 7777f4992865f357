"""normlab.nn layers against torch.nn on CPU float32: time ratio and achieved bandwidth, in one run.

For each norm and shape, forward (under no_grad, train mode) and forward+backward are timed for the
normlab layer and its torch.nn twin, alternating the two on every repeat so that load from other
processes hits both alike; the median is reported. Two clocks are read: wall time, and the CPU time the
process consumed (all its threads). On a shared machine wall time mostly measures the other processes,
so the verdicts use the CPU-time ratio; both ratios are printed. Bandwidth is the minimum traffic (forward: read x,
write y; forward+backward: also read x and dL/dy, write dL/dx) over the median time, next to this
machine's copy bandwidth (``dst.copy_(src)`` on 64 MiB) measured in the same run.

Norms per shape: LayerNorm/RMSNorm over the last dim; GroupNorm(32, C) and BatchNorm over dim 1
(BatchNorm1d for 2D/3D, BatchNorm2d for 4D); InstanceNorm over dim 1 (2D inputs are unbatched (C, L)).

Usage::

    python benchmarks/layers.py                 # full table, writes benchmarks/results/layers.md
    python benchmarks/layers.py --quick         # two small shapes, 3 repeats (a smoke run)
    python benchmarks/layers.py --compile       # adds torch.compile'd RMSNorm and its compile time
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn as tnn

import normlab.nn as N

SHAPES = [(4096, 1024), (16384, 768), (8, 512, 768), (32, 64, 56, 56)]
QUICK_SHAPES = [(512, 256), (4, 64, 24, 24)]
NORMS = ["layernorm", "rmsnorm", "groupnorm", "batchnorm", "instancenorm"]
TARGETS = {  # the targets: at most this ratio (normlab time / torch time), median over shapes
    "layernorm": 1.10, "groupnorm": 1.10, "batchnorm": 1.10, "instancenorm": 1.10, "rmsnorm": 1 / 1.5,
}


def build(norm: str, shape: tuple[int, ...]) -> tuple[tnn.Module, tnn.Module]:
    last, channels = shape[-1], shape[1]
    if norm == "layernorm":
        return N.LayerNorm(last), tnn.LayerNorm(last)
    if norm == "rmsnorm":
        return N.RMSNorm(last, eps=1e-6), tnn.RMSNorm(last, eps=1e-6)
    if norm == "groupnorm":
        return N.GroupNorm(32, channels), tnn.GroupNorm(32, channels)
    if norm == "batchnorm":
        return (N.BatchNorm2d(channels), tnn.BatchNorm2d(channels)) if len(shape) == 4 else (
            N.BatchNorm1d(channels), tnn.BatchNorm1d(channels))
    if norm == "instancenorm":
        c = shape[0] if len(shape) == 2 else channels  # a 2D input is one unbatched (C, L) sample
        return (N.InstanceNorm2d(c), tnn.InstanceNorm2d(c)) if len(shape) == 4 else (
            N.InstanceNorm1d(c), tnn.InstanceNorm1d(c))
    raise ValueError(f"unknown norm {norm!r}; expected one of {NORMS}")


def _time(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _clocks(fn, inner: int) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) per call, over ``inner`` back-to-back calls."""
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(inner):
        fn()
    return (time.perf_counter() - wall) / inner, (time.process_time() - cpu) / inner


MIN_SAMPLE_S = 0.1  # the CPU clock ticks in 4 ms steps on many kernels: make every sample much longer


def paired_median(fa, fb, repeats: int) -> tuple[tuple[float, float], tuple[float, float]]:
    """Median (wall, cpu) seconds per call of ``fa`` and ``fb``, run alternately (order flipped every
    repeat); each sample repeats the call enough times to last about ``MIN_SAMPLE_S``."""
    fa()  # warm-up
    inner = max(1, math.ceil(MIN_SAMPLE_S / max(_time(fb), 1e-6)))
    ta, tb = [], []
    for r in range(repeats):
        for fn, out in ((fb, tb), (fa, ta)) if r % 2 else ((fa, ta), (fb, tb)):
            out.append(_clocks(fn, inner))

    def med(samples):
        return statistics.median(s[0] for s in samples), statistics.median(s[1] for s in samples)

    return med(ta), med(tb)


def copy_bandwidth(repeats: int) -> float:
    """Bytes per second of ``dst.copy_(src)`` on 64 MiB float32 (read + write counted)."""
    src = torch.randn(16 * 1024 * 1024)
    dst = torch.empty_like(src)
    dst.copy_(src)
    t = statistics.median(_time(lambda: dst.copy_(src)) for _ in range(max(repeats, 5)))
    return 2 * src.numel() * src.element_size() / t


def forward_fn(module, x):
    def run():
        with torch.no_grad():
            module(x)
    return run


def forward_backward_fn(module, x, grad):
    xg = x.clone().requires_grad_()

    def run():
        xg.grad = None
        for p in module.parameters():
            p.grad = None
        module(xg).backward(grad)
    return run


def measure(norm, shape, repeats, bandwidth, compiled=False):
    torch.manual_seed(0)
    ours, theirs = build(norm, shape)
    if compiled:
        ours = torch.compile(ours, dynamic=False)
    x = torch.randn(shape)
    grad = torch.randn(shape)
    rows = []
    for mode, traffic in (("forward", 2), ("fwd+bwd", 5)):
        if mode == "forward":
            fa, fb = forward_fn(ours, x), forward_fn(theirs, x)
        else:
            fa, fb = forward_backward_fn(ours, x, grad), forward_backward_fn(theirs, x, grad)
        compile_s = _time(fa) if compiled else None  # first call compiles
        (wall_ours, cpu_ours), (wall_torch, cpu_torch) = paired_median(fa, fb, repeats)
        achieved = traffic * x.numel() * x.element_size() / wall_ours
        rows.append({
            "norm": norm + (" (compiled)" if compiled else ""), "shape": shape, "mode": mode,
            "torch_ms": wall_torch * 1e3, "normlab_ms": wall_ours * 1e3, "wall_ratio": wall_ours / wall_torch,
            "torch_cpu_ms": cpu_torch * 1e3, "normlab_cpu_ms": cpu_ours * 1e3, "ratio": cpu_ours / cpu_torch,
            "gbs": achieved / 1e9, "of_copy": achieved / bandwidth, "compile_s": compile_s,
        })
        print(_row(rows[-1]), flush=True)
    return rows


def _row(r) -> str:
    shape = "x".join(map(str, r["shape"]))
    extra = f" (compile {r['compile_s']:.1f} s)" if r["compile_s"] is not None else ""
    return (f"| {r['norm']} | {shape} | {r['mode']} | {r['torch_cpu_ms']:.1f} | {r['normlab_cpu_ms']:.1f} | "
            f"**{r['ratio']:.2f}** | {r['torch_ms']:.1f} | {r['normlab_ms']:.1f} | {r['wall_ratio']:.2f} | "
            f"{r['gbs']:.2f} | {100 * r['of_copy']:.0f}%{extra} |")


NOTES = [
    "Notes:",
    "- Ratios are normlab time / torch time from the same run, each the median of paired, alternating "
    "repeats; each repeat loops the call for >= 0.1 s (the CPU clock has 4 ms ticks). The verdicts use CPU time (all threads of this process): on a machine shared with other "
    "processes, wall time mostly measures them. Wall-time ratios are printed alongside.",
    "- Bandwidth is minimum traffic over wall time (forward: read x + write y; fwd+bwd: 5 tensor passes) "
    "against `dst.copy_(src)` measured at the start of the run.",
    "- RMSNorm's torch anchor is `torch.nn.RMSNorm` (torch 2.13 CPU: a fused kernel under no_grad, a "
    "composite of pow/mean/rsqrt/mul with grad). normlab's is an eager autograd.Function (no compile).",
    "- LayerNorm/GroupNorm/BatchNorm/InstanceNorm run torch's native kernels plus normlab's checks and a "
    "recentering test on the per-row statistics (see normlab/nn/functional.py).",
]


def summary(rows) -> list[str]:
    lines = ["| norm | mode | median normlab/torch (CPU time) | (wall time) | target | met (CPU time) |",
             "|---|---|---|---|---|---|"]
    for norm in dict.fromkeys(r["norm"] for r in rows):
        base = norm.split(" ")[0]
        for mode in ("forward", "fwd+bwd"):
            ratios = [r["ratio"] for r in rows if r["norm"] == norm and r["mode"] == mode]
            med = statistics.median(ratios)
            wall = statistics.median(r["wall_ratio"] for r in rows if r["norm"] == norm and r["mode"] == mode)
            target = TARGETS[base]
            label = f"<= {target:.2f}" if base != "rmsnorm" else "<= 0.67 (1.5x faster)"
            lines.append(f"| {norm} | {mode} | {med:.2f} | {wall:.2f} | {label} | {'yes' if med <= target else 'no'} |")
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="small shapes, 3 repeats")
    parser.add_argument("--norms", nargs="*", default=NORMS, choices=NORMS)
    parser.add_argument("--compile", action="store_true", help="also time torch.compile'd normlab RMSNorm")
    parser.add_argument("--out", type=Path, default=None, help="write the markdown table here")
    args = parser.parse_args(argv)
    shapes, repeats = (QUICK_SHAPES, 3) if args.quick else (SHAPES, args.repeats)
    bandwidth = copy_bandwidth(repeats)
    header = [
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU float32, median of {repeats} "
        f"paired repeats; copy bandwidth {bandwidth / 1e9:.2f} GB/s; load average at start "
        f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs (other processes share them: read ratios, not times)",
        "",
        "| norm | shape | mode | torch CPU ms | normlab CPU ms | normlab/torch CPU | torch wall ms | "
        "normlab wall ms | normlab/torch wall | normlab GB/s (wall) | of copy BW |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    print("\n".join(header), flush=True)
    rows = []
    for norm in args.norms:
        for shape in shapes:
            rows += measure(norm, shape, repeats, bandwidth)
    if args.compile and "rmsnorm" in args.norms:
        for shape in shapes:
            rows += measure("rmsnorm", shape, repeats, bandwidth, compiled=True)
    lines = summary(rows)
    print("\n" + "\n".join(lines))
    if args.out is not None:
        command = "python benchmarks/layers.py " + " ".join(sys.argv[1:] if argv is None else argv)
        text = "\n".join([
            "# normlab.nn layers vs torch.nn (CPU float32)", "", f"Command: `{command.strip()}`", "",
            *header, *(_row(r) for r in rows), "", *lines, "", *NOTES, "",
        ])
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
