"""Overhead of normlab.probe, measured in one run against plain training and the seed's own logging.

(a) Seed 000's `ln` arm (1000 full-batch Adam steps) with a gradient and weight histogram of every parameter
    every step: Probe / plain, and the seed's tensorboardX `add_histogram` loop / plain (the anchor).
(b) A convolutional model whose step takes >= 50 ms here: scalar tier every step / plain, and a
    Cockpit-style table of tier x interval (1, 4, 16, 64).
(gpt2) A real third-party model: Hugging Face GPT-2 from a small config (4 layers, width 256, 3.7M
    parameters; random weights, built offline), AdamW, batch 8 x 128 tokens: scalar tier every step / plain
    (target <= 1.05) and scalars + histograms every step / plain (target <= 1.5), paired rounds as in (b).
(memory) Peak RSS of a 50.4M-parameter MLP (Linear(2048, 2048) x 12, SGD) after 3 plain steps and
    after 3 more with the default Probe, each arm in a fresh interpreter, over the weights' bytes.
    Target: growth <= 3 x weight bytes (plus the histograms' counts). Not part of the default parts.

Times are process CPU times (``time.process_time``: all threads of this process, so TensorBoard's writer
thread counts) -- on a shared machine wall time mostly measures the scheduler. (a) keeps the minimum
over interleaved rounds; (b), where the differences are a few percent, pairs each arm's block of steps
with the plain arm's block in the same round and reports the mean ratio with its 95% interval. Usage:

    .venv/bin/python benchmarks/probe.py [--rounds 3] [--out benchmarks/results/probe.md]
    .venv/bin/python benchmarks/probe.py --parts memory --out benchmarks/results/probe.md
    .venv/bin/python benchmarks/probe.py --parts gpt2 --out benchmarks/results/probe.md

(each part replaces only its own section of ``--out``, which records the command that printed it).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from scipy import stats
from torch import nn

from normlab.probe import Probe

SEED_STEPS = 1000
INTERVALS = (1, 4, 16, 64)


# -- (a) seed 000 -------------------------------------------------------------------------------------


def seed000_setup():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(2, 20), nn.Linear(20, 20), nn.Linear(20, 20), nn.LayerNorm(20),
        nn.Linear(20, 20), nn.LayerNorm(20), nn.Linear(20, 1),
    )
    x1, x2 = torch.arange(-10, 10).float(), torch.arange(0, 20).float()
    x = torch.cat((x1.unsqueeze(1), x2.unsqueeze(1)), dim=1)
    y = 2 * x1 - x2**2 + 1
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01, weight_decay=0.01)
    return model, optimizer, x, y, nn.MSELoss()


def seed000_plain(steps: int) -> float:
    model, optimizer, x, y, loss_function = seed000_setup()
    start = time.process_time()
    for _ in range(steps):
        loss = loss_function(y, model(x).squeeze())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return time.process_time() - start


def seed000_probe(steps: int, parquet: bool = False, tensorboard: bool = False, modules=None) -> float:
    model, optimizer, x, y, loss_function = seed000_setup()
    with tempfile.TemporaryDirectory() as tmp:
        start = time.process_time()
        logdir = Path(tmp) / "tb" if tensorboard else None
        with Probe(model, optimizer, histograms=True, modules=modules, logdir=logdir) as probe:
            for _ in range(steps):
                loss = loss_function(y, model(x).squeeze())
                loss.backward()
                optimizer.step()
                optimizer.zero_grad()
        if parquet:
            probe.save(Path(tmp) / "probe")
        elapsed = time.process_time() - start
    assert probe.steps == steps
    return elapsed


def seed000_tensorboardx(steps: int) -> float:
    """The seed's loop: add_histogram of every parameter's gradient and value, and the loss, every step."""
    from tensorboardX import SummaryWriter

    model, optimizer, x, y, loss_function = seed000_setup()
    with tempfile.TemporaryDirectory() as tmp:
        writer = SummaryWriter(logdir=tmp)
        start = time.process_time()
        for step in range(steps):
            loss = loss_function(y, model(x).squeeze())
            loss.backward()
            for name, layer in model.named_parameters():
                writer.add_histogram(name + "_grad", layer.grad, step)
                writer.add_histogram(name + "_data", layer, step)
            writer.add_scalar("loss", loss, step)
            optimizer.step()
            optimizer.zero_grad()
        writer.close()
        return time.process_time() - start


# -- (b) a model with a >= 50 ms step -----------------------------------------------------------------


def conv_setup(batch: int):
    torch.manual_seed(0)

    def block(c_in, c_out):
        return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]

    model = nn.Sequential(
        *block(3, 32), *block(32, 64), nn.MaxPool2d(2), *block(64, 128), nn.MaxPool2d(2), *block(128, 128),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, 10),
    )
    x, y = torch.randn(batch, 3, 32, 32), torch.randint(0, 10, (batch,))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    return model, optimizer, x, y


class ConvArm:
    """One conv model (and its probe, unless ``tier`` is plain) trained in timed blocks of steps.

    Every arm keeps its own model and probe for the whole measurement, so the probe's one-time set-up
    (two warm-up steps) is not counted and a block of an interval-``e`` arm holds its share of recorded steps.
    """

    def __init__(self, batch: int, tier: str, every: int, warmup: int = 2):
        model, optimizer, x, y = conv_setup(batch)
        self._attach(model, optimizer, tier, every, warmup, x=x, y=y)

    def _attach(self, model, optimizer, tier: str, every: int, warmup: int, **data) -> None:
        self.model, self.optimizer = model, optimizer
        vars(self).update(data)
        self.probe = None
        if tier != "plain":
            self.probe = Probe(self.model, self.optimizer, every=every, histograms=(tier == "scalars+histograms"))
        self.block(warmup)

    def loss(self) -> torch.Tensor:
        return nn.functional.cross_entropy(self.model(self.x), self.y)

    def block(self, steps: int) -> float:
        start = time.process_time()
        for _ in range(steps):
            self.loss().backward()
            self.optimizer.step()
            self.optimizer.zero_grad()
        return time.process_time() - start


def paired_ratios(arms: dict, rounds: int, block: int, seed: int = 0) -> dict:
    """Per arm: the ratio of its block time to the plain arm's block time in each round.

    Rounds visit the arms in a random order, so slow drifts of a shared machine hit every arm alike and
    cancel in the per-round ratio; ``rounds * block`` should be a multiple of the longest interval.
    """
    order = random.Random(seed)
    times = {key: [] for key in arms}
    for _ in range(rounds):
        keys = list(arms)
        order.shuffle(keys)
        for key in keys:
            times[key].append(arms[key].block(block))
    plain = np.asarray(times[("plain", 1)])
    return {key: np.asarray(value) / plain for key, value in times.items()}, float(np.median(plain)) / block


def mean_interval(ratios: np.ndarray) -> tuple[float, float, float]:
    """Mean and 95% t-interval of the per-round ratios."""
    mean = float(ratios.mean())
    half = float(stats.t.ppf(0.975, len(ratios) - 1) * ratios.std(ddof=1) / np.sqrt(len(ratios)))
    return mean, mean - half, mean + half


# -- (gpt2) a real third-party model -------------------------------------------------------------------

GPT2_HEADING = "## (gpt2)"


class GPT2Arm(ConvArm):
    """Hugging Face GPT-2 (small config) trained in timed blocks, with a probe unless ``tier`` is plain."""

    def __init__(self, tier: str, every: int, warmup: int = 2):
        import transformers
        from transformers import GPT2Config, GPT2LMHeadModel

        transformers.logging.set_verbosity_error()
        torch.manual_seed(0)
        config = GPT2Config(n_layer=4, n_head=4, n_embd=256, vocab_size=2048, n_positions=128, bos_token_id=0,
                            eos_token_id=0, loss_type="ForCausalLM")
        model = GPT2LMHeadModel(config)
        ids = torch.randint(0, config.vocab_size, (8, 128), generator=torch.Generator().manual_seed(0))
        self._attach(model, torch.optim.AdamW(model.parameters(), lr=1e-4), tier, every, warmup, ids=ids)

    def loss(self) -> torch.Tensor:
        return self.model(input_ids=self.ids, labels=self.ids).loss


def part_gpt2(args) -> list[str]:
    arms = {("plain", 1): GPT2Arm("plain", 1), ("scalars", 1): GPT2Arm("scalars", 1),
            ("scalars+histograms", 1): GPT2Arm("scalars+histograms", 1)}
    params = sum(p.numel() for p in arms[("plain", 1)].model.parameters())
    ratios, step_s = paired_ratios(arms, args.gpt2_rounds, args.gpt2_block)
    lines = [
        f"{GPT2_HEADING} Hugging Face GPT-2, small config (4 layers, width 256, {params / 1e6:.1f}M parameters), "
        f"AdamW, batch 8 x 128 tokens, plain step {step_s * 1e3:.0f} ms",
        "",
        f"CPU time / plain: mean over {args.gpt2_rounds} rounds of the per-round ratio (each arm trains "
        f"{args.gpt2_block} steps per round, arms in random order), with its 95% interval.",
        "",
        "| Probe(model, optimizer, ...) every step | / plain | target |",
        "|---|---:|---|",
    ]
    for tier, target in (("scalars", "<= 1.05"), ("scalars+histograms", "<= 1.5")):
        mean, low, high = mean_interval(ratios[(tier, 1)])
        lines.append(f"| {tier} | {mean:.3f} ({low:.3f}-{high:.3f}) | {target} |")
    print("\n".join(lines), flush=True)
    return [*lines, ""]


# -- (memory) a 50M-parameter MLP ---------------------------------------------------------------------

MEMORY_WIDTH, MEMORY_DEPTH = 2048, 12
MEMORY_HEADING = "## (memory)"
FIXED_MMAP_THRESHOLD = {"MALLOC_MMAP_THRESHOLD_": "65536"}


def memory_child(histograms: bool) -> None:
    """In a fresh interpreter: peak RSS after 3 plain steps, then after 3 probe steps (printed as JSON)."""
    torch.manual_seed(0)
    model = nn.Sequential(*[nn.Linear(MEMORY_WIDTH, MEMORY_WIDTH) for _ in range(MEMORY_DEPTH)])
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    x = torch.randn(16, MEMORY_WIDTH)

    def steps(n: int) -> None:
        for _ in range(n):
            model(x).square().mean().backward()
            optimizer.step()
            optimizer.zero_grad()

    def peak() -> int:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux

    steps(3)
    plain = peak()
    with Probe(model, optimizer, histograms=histograms):
        steps(3)
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    print(json.dumps({"plain": plain, "probe": peak(), "weights": weights}))


def part_memory(args) -> list[str]:
    rows = []
    for allocator, extra_env in (("glibc default", {}), ("MALLOC_MMAP_THRESHOLD_=65536", FIXED_MMAP_THRESHOLD)):
        for histograms in (False, True):
            done = subprocess.run(
                [sys.executable, __file__, "--threads", str(args.threads), "--memory-child", str(int(histograms))],
                capture_output=True, text=True, check=True, env={**os.environ, **extra_env})
            rows.append((allocator, histograms, json.loads(done.stdout.strip().splitlines()[-1])))
    weights = rows[0][2]["weights"]
    lines = [
        f"{MEMORY_HEADING} MLP Linear({MEMORY_WIDTH}, {MEMORY_WIDTH}) x {MEMORY_DEPTH}, {weights / 4e6:.1f}M parameters "
        f"({weights / 1e6:.0f} MB of weights), SGD, batch 16",
        "",
        "Peak RSS (`ru_maxrss`) after 3 plain steps, then after 3 more steps with `Probe(model, optimizer)`, "
        "each arm in a fresh interpreter. The fixed mmap threshold makes glibc return every freed block of "
        "64 KiB or more, so that RSS follows what is alive rather than the allocator's heap. Target: growth "
        "<= 3 x weight bytes.",
        "",
        "| allocator | probe | plain peak (MB) | probe peak (MB) | plain / weights | probe / weights | "
        "growth / weights |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for allocator, histograms, r in rows:
        tier = "scalars + histograms" if histograms else "scalars"
        lines.append(f"| {allocator} | {tier} | {r['plain'] / 1e6:.0f} | {r['probe'] / 1e6:.0f} | "
                     f"{r['plain'] / weights:.2f} | {r['probe'] / weights:.2f} | "
                     f"{(r['probe'] - r['plain']) / weights:.2f} |")
    print("\n".join(lines), flush=True)
    return [*lines, ""]


# -- driver -------------------------------------------------------------------------------------------


def best_of(rounds: int, runs: dict[str, Callable[[], float]]) -> dict[str, float]:
    """Minimum time of each run over ``rounds`` interleaved rounds."""
    best = {name: float("inf") for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            best[name] = min(best[name], run())
    return best


def part_a(args) -> list[str]:
    """(a): seed 000 with histograms every step; min over interleaved rounds."""
    seed000_plain(50), seed000_probe(50), seed000_tensorboardx(5)  # warm-up
    scale = SEED_STEPS / args.anchor_steps
    times = best_of(args.rounds, {
        "plain": lambda: seed000_plain(SEED_STEPS),
        "probe": lambda: seed000_probe(SEED_STEPS),
        "probe_params": lambda: seed000_probe(SEED_STEPS, modules=[]),
        "probe_parquet": lambda: seed000_probe(SEED_STEPS, parquet=True),
        "probe_tensorboard": lambda: seed000_probe(SEED_STEPS, parquet=True, tensorboard=True),
        "tensorboardx": lambda: seed000_tensorboardx(args.anchor_steps) * scale,
    })
    plain = times["plain"]
    lines = [
        f"## (a) seed 000 `ln` arm, {SEED_STEPS} steps, gradient + weight histograms of every parameter every step",
        "",
        f"CPU time, minimum over {args.rounds} interleaved rounds.",
        "",
        "| run | CPU time (s) | / plain | target |",
        "|---|---:|---:|---|",
        f"| plain training | {plain:.3f} | 1.00 | |",
        f"| Probe(histograms=True): all scalars + histograms (params and module outputs), in memory | {times['probe']:.3f} | "
        f"{times['probe'] / plain:.2f} | <= 1.5 |",
        f"| Probe(histograms=True, modules=[]): parameters only, as the seed logs | {times['probe_params']:.3f} | "
        f"{times['probe_params'] / plain:.2f} | <= 1.5 |",
        f"| Probe(histograms=True) + `save()` to Parquet at the end | {times['probe_parquet']:.3f} | "
        f"{times['probe_parquet'] / plain:.2f} | |",
        f"| same + `logdir=` TensorBoard events of every scalar and histogram | {times['probe_tensorboard']:.3f} | "
        f"{times['probe_tensorboard'] / plain:.2f} | |",
        f"| seed's tensorboardX `add_histogram` loop (anchor; {args.anchor_steps} steps x {scale:g}) | "
        f"{times['tensorboardx']:.3f} | {times['tensorboardx'] / plain:.1f} | |",
        "",
    ]
    print("\n".join(lines), flush=True)
    return lines


def part_b(args) -> list[str]:
    """(b): the conv net, tier x interval, paired rounds."""
    arms = {("plain", 1): ConvArm(args.batch, "plain", 1)}
    for tier in ("scalars", "scalars+histograms"):
        for every in INTERVALS:
            arms[(tier, every)] = ConvArm(args.batch, tier, every)
    ratios, step_s = paired_ratios(arms, args.conv_rounds, args.conv_block)
    step_ms = step_s * 1e3
    table = [
        f"## (b) conv net (4 conv-BN-ReLU blocks, batch {args.batch} of 3x32x32), plain step {step_ms:.0f} ms",
        "",
        f"CPU time / plain: mean over {args.conv_rounds} rounds of the per-round ratio (each arm trains "
        f"{args.conv_block} steps per round, arms in random order), with its 95% interval. "
        "Target for the scalar tier every step: <= 1.05.",
        "",
        "| tier \\ every | " + " | ".join(str(e) for e in INTERVALS) + " |",
        "|---|" + "---:|" * len(INTERVALS),
    ]
    for tier in ("scalars", "scalars+histograms"):
        cells = []
        for every in INTERVALS:
            mean, low, high = mean_interval(ratios[(tier, every)])
            cells.append(f"{mean:.3f} ({low:.3f}-{high:.3f})")
        table.append(f"| {tier} | " + " | ".join(cells) + " |")
    print("\n".join(table))
    if step_ms < 50:
        print(f"note: plain step {step_ms:.0f} ms < 50 ms; raise --batch", file=sys.stderr)
    return [*table, ""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="interleaved repetitions (min is kept)")
    parser.add_argument("--anchor-steps", type=int, default=100,
                        help="steps of the tensorboardX anchor, scaled to 1000 (it is the slow one)")
    parser.add_argument("--conv-rounds", type=int, default=16, help="(b): rounds of paired blocks")
    parser.add_argument("--conv-block", type=int, default=8, help="(b): steps per arm per round")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--gpt2-rounds", type=int, default=12, help="(gpt2): rounds of paired blocks")
    parser.add_argument("--gpt2-block", type=int, default=2, help="(gpt2): steps per arm per round")
    parser.add_argument("--parts", default="a,b", help="which parts to run: a, b, gpt2, memory, comma-separated")
    parser.add_argument("--out", type=Path, default=None, help="also write the tables (markdown) here")
    parser.add_argument("--memory-child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    unknown = parts - set(PARTS)
    if unknown:
        parser.error(f"--parts: unknown part(s) {sorted(unknown)}; choose from {', '.join(PARTS)}")
    torch.set_num_threads(args.threads)
    if args.memory_child is not None:
        memory_child(bool(args.memory_child))
        return
    machine = (f"torch {torch.__version__}, {args.threads} intra-op thread(s), "
               f"{platform.processor() or platform.machine()}, python {platform.python_version()}")
    command = ".venv/bin/python benchmarks/probe.py " + shlex.join(sys.argv[1:])
    sections = {}
    for name, run in PARTS.items():
        if name in parts:
            lines = run(args)
            sections[lines[0].split(")")[0] + ")"] = [lines[0], "", f"Command: `{command}`; {machine}", "", *lines[2:]]
    if args.out is not None:
        write_sections(args.out, sections)


PARTS = {"a": part_a, "b": part_b, "gpt2": part_gpt2, "memory": part_memory}


def write_sections(path: Path, sections: dict[str, list[str]]) -> None:
    """Replace (or add, in PARTS order) the ``## (part)`` sections run now; keep the others as they are."""
    old = path.read_text() if path.exists() else ""
    chunks = re.split(r"(?m)^(?=## \()", old)
    kept = {chunk.split(")")[0] + ")": chunk.rstrip("\n") for chunk in chunks[1:]}
    kept.update({key: "\n".join(lines).rstrip("\n") for key, lines in sections.items()})
    order = [f"## ({name})" for name in PARTS]
    keys = sorted(kept, key=lambda k: order.index(k) if k in order else len(order))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("# normlab.probe overhead\n\n" + "\n\n".join(kept[k] for k in keys) + "\n")


if __name__ == "__main__":
    main()
