"""Benchmark: ln-gradients as vectorized ensembles with the probe vs the seed's own script.

Measured in one run, on this machine, in interleaved rounds (the minimum of each measurement is kept):

* anchor: the seed's training loop exactly as written (000_*.txt), logging removed, one seed per arm,
  for each of the four seed arms (one thread, and optionally torch's default thread count);
* lab: the same four arms trained by normlab (``ln_gradients.train_arm``), N seeds per arm as one stacked
  ensemble, with the study's own per-step measures and ``normlab.probe.Probe``: the study's default
  schedule, a full probe (scalars every step, histograms of every parameter's gradient and value every
  10 steps) and no probe; on one core, and on the whole machine (the arms as cells in one spawned worker
  process per core, as ``normlab run --jobs 0``; wall time once the workers are warm), where the anchor
  is also run as copies of the script side by side;
* per-run throughput ratio = anchor seconds per run / (lab seconds per arm / N);
* the wall time of the whole default study (``normlab run ln-gradients``: every arm x 32 seeds + report),
  with ``--jobs 1`` and one job per core.

Usage: ``python benchmarks/lab.py [--seeds 32] [--steps 1000] [--rounds 3] [--skip-study]
[--out benchmarks/results/lab.md]``
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch
from torch import nn, optim

from normlab.engine.memory import retain_freed_memory
from normlab.engine.spec import Cell, CellContext
from normlab.studies.ln_gradients import ARMS, SEED_ARMS, Config, SeedModel, train_arm


def seed_script(arm: str, iteration: int) -> float:
    """The seed's loop (its Model, data, Adam, MSELoss, full batch), without the tensorboardX logging."""
    lr = 0.01
    x1 = torch.arange(-10, 10).float()
    x2 = torch.arange(0, 20).float()
    x = torch.cat((x1.unsqueeze(1), x2.unsqueeze(1)), dim=1)
    y = 2 * x1 - x2**2 + 1
    model = SeedModel(ARMS[arm])  # layer for layer the seed's Model (tests/studies/test_ln_gradients.py)
    optimizer = optim.Adam(model.parameters(), lr=lr, weight_decay=0.01)
    loss_function = nn.MSELoss()
    t0 = time.perf_counter()
    for _ in range(iteration):
        y_pred = model(x)
        loss = loss_function(y, y_pred.squeeze())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return time.perf_counter() - t0


def lab_arm(arm: str, seeds: int, steps: int, **probe) -> float:
    cfg = Config(seeds=seeds, steps=steps, **probe)
    ctx = CellContext(cell=Cell(arm, tuple(range(seeds))), device=torch.device("cpu"), probe_dir=None, tb_dir=None)
    t0 = time.perf_counter()
    train_arm(cfg, ctx)
    return time.perf_counter() - t0


def _lab_arm_in_worker(arm: str, seeds: int, steps: int, probe: dict) -> float:
    torch.set_num_threads(1)
    retain_freed_memory()  # as normlab's worker processes do
    return lab_arm(arm, seeds, steps, **probe)


def _seed_script_in_worker(arm: str, steps: int) -> float:
    torch.set_num_threads(1)
    return seed_script(arm, steps)


def _warm_up_worker(barrier, fn, args: tuple) -> None:
    """Run one job of the measured kind (imports, first-call costs, the memory a cell needs), then wait
    for the other workers: each worker takes exactly one warm-up (it cannot take a second while it
    waits at the barrier)."""
    fn(*args)
    barrier.wait()


def side_by_side(fn, jobs: list[tuple], workers: int) -> float:
    """Wall seconds to run ``fn(*args)`` for every ``args`` in ``workers`` spawned processes that have
    already started and run one such job: the steady state of a long study, where start-up and the
    first cell's fresh memory are paid once per worker. Start-up is left out here as it is from the
    one-process measurements (the whole-study rows include everything)."""
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager, ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        barrier = manager.Barrier(workers)
        list(pool.map(_warm_up_worker, [barrier] * workers, [fn] * workers, [jobs[0]] * workers))
        t0 = time.perf_counter()
        list(pool.map(fn, *zip(*jobs, strict=True)))
        return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=32)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--skip-study", action="store_true", help="skip the whole-default-study wall time")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the minimum of each is kept")
    ap.add_argument("--anchor-threads", default="1",
                    help="comma-separated torch thread counts for the anchor (0 = torch's default); the "
                         "ratio uses the fastest. On a busy 2-core machine the default (2) can be 10x slower.")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "lab.md")
    args = ap.parse_args()
    default_threads = torch.get_num_threads()
    retain_freed_memory()  # as the `normlab` command does in the process that runs cells

    thread_counts = sorted({int(t) or default_threads for t in args.anchor_threads.split(",")}, reverse=True)
    variants = {
        "normlab, study default probe (scalars /10, histograms /50)": {},
        "normlab, full probe (scalars every step, histograms /10)": {"probe_every": 1, "hist_every": 10},
        "normlab, no probe": {"probe": False},
    }
    cores = os.cpu_count() or 1
    seed_script("ln", 20), lab_arm("ln", 4, 20)  # warm-up
    # Interleaved rounds, the minimum of each measurement kept: a shared machine only ever adds time.
    best: dict[tuple, float] = {}

    def keep(key: tuple, seconds_per_run: float) -> None:
        best[key] = min(best.get(key, float("inf")), seconds_per_run)

    runs = len(SEED_ARMS) * args.seeds
    for _ in range(args.rounds):
        for threads in thread_counts:
            torch.set_num_threads(threads)
            keep(("anchor", threads), sum(seed_script(a, args.steps) for a in SEED_ARMS) / len(SEED_ARMS))
        torch.set_num_threads(1)  # what the study runs with (LnGradients.threads)
        for label, kw in variants.items():
            keep(("lab", label), sum(lab_arm(a, args.seeds, args.steps, **kw) for a in SEED_ARMS) / runs)
        # The whole machine: the four arms as cells in one worker process per core (`normlab run --jobs 0`),
        # against the seed's script as written (one process) and against copies of it run side by side.
        if cores > 1:
            jobs = [(a, args.steps) for a in SEED_ARMS]
            keep(("anchor_side",), side_by_side(_seed_script_in_worker, jobs, cores) / len(SEED_ARMS))
            for label, kw in variants.items():
                jobs = [(a, args.seeds, args.steps, kw) for a in SEED_ARMS]
                keep(("lab_side", label), side_by_side(_lab_arm_in_worker, jobs, cores) / runs)

    best_anchor = min(best[("anchor", t)] for t in thread_counts)
    rows = [(f"seed script, 1 seed/arm, {t} thread(s)", best[("anchor", t)], None) for t in thread_counts]
    rows += [(f"{label}, {args.seeds} seeds/arm", best[("lab", label)], best_anchor / best[("lab", label)])
             for label in variants]
    machine_rows = []
    if cores > 1:
        anchor_side_run = best[("anchor_side",)]
        for label in variants:
            per_run = best[("lab_side", label)]
            machine_rows.append((f"{label}, {args.seeds} seeds/arm", per_run, best_anchor / per_run,
                                 anchor_side_run / per_run))

    study_walls = {}
    if not args.skip_study:
        from normlab.report import run_and_report
        from normlab.studies import get_study

        torch.set_num_threads(default_threads)
        for jobs in sorted({1, cores}):
            with tempfile.TemporaryDirectory() as tmp:
                t0 = time.perf_counter()
                study = get_study("ln-gradients")
                run_and_report(study, study.Config(), Path(tmp) / "run", jobs=jobs)
                study_walls[jobs] = time.perf_counter() - t0

    load = os.getloadavg()
    lines = [
        "# lab benchmark: ln-gradients ensembles vs the seed's script",
        "",
        f"Command: `.venv/bin/python benchmarks/lab.py --seeds {args.seeds} --steps {args.steps}"
        f" --rounds {args.rounds} --anchor-threads {args.anchor_threads}{' --skip-study' if args.skip_study else ''}`",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, default threads "
        f"{default_threads}; load average at the end {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} "
        "(the machine is shared: absolute times are inflated, ratios are measured in the same run).",
        "",
        f"{args.steps} steps per run, the seed's four arms. Ratio = seconds per run of the faster anchor "
        f"({best_anchor:.3f} s) / seconds per run in the ensemble (target >= 20x).",
        "",
        "| what | seconds per run | per-run throughput ratio |",
        "|---|---|---|",
    ]
    for label, sec, ratio in rows:
        lines.append(f"| {label} | {sec:.4f} | {'anchor' if ratio is None else f'{ratio:.1f}x'} |")
    if machine_rows:
        lines += [
            "",
            f"The whole machine ({cores} cores): the four arms as cells in {cores} spawned worker processes, one "
            "thread each (what `normlab run --jobs 0` does), wall time once each worker has run one such arm "
            "(the steady state of a long study: start-up is left out here as in the rows above; the "
            "whole-study times below include it). Ratios "
            f"against the seed's script as written (one process, {best_anchor:.3f} s per run) and against "
            f"{cores} copies of it run side by side ({anchor_side_run:.3f} s per run).",
            "",
            "| what | wall seconds per run | vs the seed's script | vs copies side by side |",
            "|---|---|---|---|",
        ]
        for label, sec, ratio, ratio_side in machine_rows:
            lines.append(f"| {label} | {sec:.4f} | {ratio:.1f}x | {ratio_side:.1f}x |")
    for jobs, wall in study_walls.items():
        c = study.Config()
        lines += ["", f"Whole default study (`normlab run ln-gradients --jobs {jobs}`: {len(c.arms)} arms "
                  f"x {c.seeds} seeds x {c.steps} steps, probe, report): **{wall:.1f} s** wall."]
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
