"""Whether two run directories of one study hold the same results: claims and every cell's tables, exactly.

For refactors that must not change numbers: run a study's preset with the old tree and the new one,
then ``python benchmarks/compare_runs.py BEFORE AFTER [BEFORE2 AFTER2 ...]``. Compares ``claims.json``
(every claim's fields) and each ``cells/<cell>/**/*.parquet`` (``DataFrame.equals``: same values, NaN
where NaN, same dtypes). Prints one line per pair; exits 1 if any pair differs.

Wall-clock measurements differ between any two runs: ``--ignore-metrics REGEX`` drops the rows of a
table's ``metric`` column that match (e.g. ``'^(ms_per_step|norm_us/.*)$'``), ``--ignore-values ID,...``
compares only the verdict of those claims (e.g. residual-placement's timing claim ``rmsnorm-cheaper``).
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import pandas as pd


def _claims(run: Path) -> dict[str, dict]:
    return {c["id"]: c for c in json.loads((run / "claims.json").read_text())["claims"]}


def _table(path: Path, ignore_metrics: re.Pattern | None) -> pd.DataFrame:
    frame = pd.read_parquet(path)
    if ignore_metrics is not None and "metric" in frame.columns:
        frame = frame[~frame["metric"].astype(str).str.match(ignore_metrics)].reset_index(drop=True)
    return frame


def differences(before: Path, after: Path, *, ignore_metrics: re.Pattern | None = None,
                ignore_values: frozenset[str] = frozenset()) -> list[str]:
    """What differs between the two runs (empty: identical claims and cell tables)."""
    found = []
    old, new = _claims(before), _claims(after)
    if old.keys() != new.keys():
        found.append(f"claim ids differ: {sorted(old.keys() ^ new.keys())}")
    for cid in sorted(old.keys() & new.keys()):
        keys = {"verdict"} if cid in ignore_values else old[cid].keys() | new[cid].keys()
        changed = sorted(k for k in keys if old[cid].get(k) != new[cid].get(k))
        if changed:
            found.append(f"claim {cid}: {', '.join(changed)} differ")
    tables_old = {p.relative_to(before) for p in (before / "cells").rglob("*.parquet")}
    tables_new = {p.relative_to(after) for p in (after / "cells").rglob("*.parquet")}
    if tables_old != tables_new:
        found.append(f"cell tables present in one run only: {sorted(map(str, tables_old ^ tables_new))[:10]}")
    for rel in sorted(tables_old & tables_new):
        if not _table(before / rel, ignore_metrics).equals(_table(after / rel, ignore_metrics)):
            found.append(f"{rel} differs")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="BEFORE AFTER pairs of run directories")
    parser.add_argument("--ignore-metrics", default=None, help="regex of metric names not compared")
    parser.add_argument("--ignore-values", default="", help="comma-separated claim ids: compare the verdict only")
    args = parser.parse_args(argv)
    if len(args.runs) % 2:
        parser.error(f"runs must come in BEFORE AFTER pairs, got {len(args.runs)} paths")
    pattern = re.compile(args.ignore_metrics) if args.ignore_metrics else None
    ignore_values = frozenset(filter(None, args.ignore_values.split(",")))
    failed = False
    for before, after in zip(args.runs[::2], args.runs[1::2], strict=True):
        found = differences(Path(before), Path(after), ignore_metrics=pattern, ignore_values=ignore_values)
        n_tables = sum(1 for _ in (Path(before) / "cells").rglob("*.parquet"))
        n_claims = len(_claims(Path(before)))
        print(f"{before} vs {after}: " + ("identical" if not found else "DIFFERENT")
              + f" ({n_claims} claims, {n_tables} cell tables)")
        for line in found:
            print(f"  {line}")
        failed |= bool(found)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
