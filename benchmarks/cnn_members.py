"""SmallCNN with S members (seeds as one grouped model) vs S separate models, per training step, on CPU.

The anchor is S ordinary ``SmallCNN`` s stepped one after another (what a study would do seed by seed);
the variant is one ``SmallCNN(members=S)`` stepping all S at once. Both see batches of the same size per
member. Rounds interleave the two (anchor, variant, anchor, ...), so load drift on a shared machine hits
both alike; the clock is this thread's CPU time with one torch thread (wall time on a busy machine mostly
measures waiting for a core).

    .venv/bin/python benchmarks/cnn_members.py [--members 5] [--rounds 5] [--steps 20]

Prints a Markdown table: median CPU ms per training step of all S seeds, and anchor / variant.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from normlab.models.cnn import SmallCNN, build_members


def _step_separate(models, opts, x, y):
    for model, opt in zip(models, opts, strict=True):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def _step_members(model, opt, x, y, members):
    logits = model(x.repeat(1, members, 1, 1))  # (B, S, classes)
    loss = F.cross_entropy(logits.permute(0, 2, 1), y[:, None].expand(-1, members), reduction="none").mean(0).sum()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--members", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=20)
    args = ap.parse_args()
    torch.set_num_threads(1)
    s = args.members
    print(f"| norm | batch | image | {s} separate models (ms/step) | {s} members (ms/step) | ratio |")
    print("|---|---|---|---|---|---|")
    for norm in ("batchnorm", "groupnorm"):
        for batch, size in ((2, 14), (32, 14), (2, 28)):
            x, y = torch.randn(batch, 1, size, size), torch.randint(0, 10, (batch,))
            separate = [SmallCNN(widths=(8, 16, 16), norm=norm, num_groups=4) for _ in range(s)]
            sep_opts = [torch.optim.SGD(m.parameters(), lr=1e-3, momentum=0.9) for m in separate]
            grouped = build_members(range(s), widths=(8, 16, 16), norm=norm, num_groups=4)
            grp_opt = torch.optim.SGD(grouped.parameters(), lr=1e-3, momentum=0.9)
            times = {"anchor": [], "members": []}
            variants = {"anchor": (_step_separate, (separate, sep_opts, x, y)),
                        "members": (_step_members, (grouped, grp_opt, x, y, s))}
            for _ in range(args.rounds):
                for name, (fn, fn_args) in variants.items():
                    fn(*fn_args)  # warm-up step outside the clock
                    t0 = time.thread_time()
                    for _ in range(args.steps):
                        fn(*fn_args)
                    times[name].append((time.thread_time() - t0) / args.steps * 1000)
            a, m = statistics.median(times["anchor"]), statistics.median(times["members"])
            print(f"| {norm} | {batch} | {size}x{size} | {a:.2f} | {m:.2f} | {a / m:.2f}x |")


if __name__ == "__main__":
    main()
