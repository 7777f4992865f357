"""Assemble benchmarks/RESULTS.md from the per-area tables in benchmarks/results/*.md.

Each benchmark script writes its own latest table (with the command that printed it) to
benchmarks/results/<area>.md; this script only concatenates them, so RESULTS.md never holds a number
that a script did not print. Run: `python benchmarks/collect_results.py`.
"""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent
ORDER = ["layers", "probe", "lab", "dropout_add_norm", "surgery", "cnn-members"]


def main() -> None:
    parts = {p.stem: p for p in sorted((HERE / "results").glob("*.md"))}
    names = [n for n in ORDER if n in parts] + sorted(set(parts) - set(ORDER))
    out = [
        "# Benchmark results",
        "",
        "Latest tables printed by the scripts in `benchmarks/` (each section names its command). Ratios are",
        "measured against the anchor in the same run; absolute times come from a shared 2-core machine.",
        "Regenerate this file with `python benchmarks/collect_results.py` after rerunning a script.",
        "",
        *(f"- [{n}](#{n})" for n in names),
        "",
    ]
    for n in names:
        text = "\n" + parts[n].read_text().strip()
        out += [f'<a id="{n}"></a>', "", text.replace("\n# ", "\n## ").strip(), ""]
    (HERE / "RESULTS.md").write_text("\n".join(out))
    print(f"wrote {HERE / 'RESULTS.md'} from {len(names)} result files")


if __name__ == "__main__":
    main()
