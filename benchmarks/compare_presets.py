"""Whether a change left every study's quick preset unchanged: claims and cell tables, against a git revision.

``python benchmarks/compare_presets.py --base REV [--studies a,b] [--keep DIR]`` checks REV out into a
temporary git worktree, runs each study's ``--quick`` preset with that tree's code and with this one
(each in its own interpreter, ``PYTHONPATH`` pointing at the tree's ``src``), and compares the two run
directories with :mod:`compare_runs` (wall-clock metrics and the timing claim excluded). Prints one line
per study; exits 1 if any differs. For refactors that must not change a number.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from compare_runs import differences  # noqa: E402

WALL_CLOCK_METRICS = re.compile(r"^(ms_per_step|norm_us/.*)$")
WALL_CLOCK_CLAIMS = frozenset({"rmsnorm-cheaper"})


def _studies(src: Path) -> list[str]:
    code = "from normlab.studies import registry; print(' '.join(registry()))"
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(src)},
                         capture_output=True, text=True, check=True)
    return out.stdout.split()


def _run(src: Path, study: str, out: Path) -> None:
    cmd = [sys.executable, "-m", "normlab.cli", "run", study, "--quick", "--out", str(out), "--progress", "none"]
    done = subprocess.run(cmd, env={**os.environ, "PYTHONPATH": str(src)}, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{study} failed under {src}:\n{done.stderr[-2000:]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="git revision to compare against (e.g. HEAD~3, a hash)")
    parser.add_argument("--studies", default="", help="comma-separated study names (default: every study)")
    parser.add_argument("--keep", type=Path, default=None, help="keep the run directories here")
    args = parser.parse_args(argv)
    work = Path(args.keep or tempfile.mkdtemp(prefix="normlab-compare-"))
    base_tree = work / "base-tree"
    if not base_tree.exists():
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(base_tree), args.base],
                       check=True, capture_output=True)
    try:
        names = [s for s in args.studies.split(",") if s] or _studies(ROOT / "src")
        differ = 0
        for name in names:
            before, after = work / "before" / name, work / "after" / name
            _run(base_tree / "src", name, before)
            _run(ROOT / "src", name, after)
            found = differences(before, after, ignore_metrics=WALL_CLOCK_METRICS, ignore_values=WALL_CLOCK_CLAIMS)
            print(f"{name}: " + ("identical" if not found else "DIFFERS: " + "; ".join(found[:5])), flush=True)
            differ += bool(found)
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base_tree)],
                       capture_output=True)
    return 1 if differ else 0


if __name__ == "__main__":
    raise SystemExit(main())
