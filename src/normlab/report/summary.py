"""Text renderings of a run: key numbers (final value of every metric per arm) and the claims table."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from normlab.engine.spec import METRIC_COLUMNS, Claim, SeedSentence
from normlab.kit.stats import mean_ci


def key_numbers(metrics: pd.DataFrame) -> pd.DataFrame:
    """Each metric's value at its last step, per arm (and params): mean, 95% interval and n over seeds."""
    if metrics.empty:
        return pd.DataFrame(columns=["arm", "metric", "step", "mean", "lo", "hi", "n"])
    group_cols = [c for c in metrics.columns if c not in METRIC_COLUMNS]
    rows = []
    for keys, g in metrics.groupby([*group_cols, "metric"], sort=False, dropna=False):
        keys = keys if isinstance(keys, tuple) else (keys,)
        last = g["step"].max()
        iv = mean_ci(g.loc[g["step"] == last, "value"].to_numpy(dtype=float))
        rows.append({**dict(zip([*group_cols, "metric"], keys, strict=True)), "step": int(last),
                     "mean": iv.mean, "lo": iv.lo, "hi": iv.hi, "n": iv.n})
    return pd.DataFrame(rows)


def fmt_num(x: Any, digits: int = 3) -> str:
    if x is None:
        return "–"
    if isinstance(x, (float, np.floating)):
        if math.isnan(x):
            return "nan"
        if math.isinf(x):
            return "∞" if x > 0 else "-∞"
        return f"{x:.{digits}g}"
    return str(x)


def survival(c: Claim) -> str:
    """How a verdict fares under the study's Holm correction: "yes"/"no" for supported ones, else "–"."""
    return "–" if c.survives is None else ("yes" if c.survives else "no")


def correction_line(claims: list[Claim]) -> str:
    """One sentence: how many supported verdicts survive Holm's correction over the study's p-values."""
    tested = [c for c in claims if c.p_adjusted is not None]
    supported = [c for c in tested if c.verdict == "supported"]
    if not tested:
        return "No claim here has a p-value, so there is nothing to correct for multiplicity."
    kept = sum(bool(c.survives) for c in supported)
    lost = [c.id for c in supported if not c.survives]
    return (f"Holm's correction over the {len(tested)} claims with a p-value: {kept} of {len(supported)} supported "
            f"verdicts survive" + (f" (not: {', '.join(lost)})." if lost else "."))


def seed_sentence_rows(sentences: Sequence[SeedSentence], claims: list[Claim]) -> list[tuple[str, str, str, str]]:
    """``(seed, quote, english, how tested)`` per sentence; "how tested" names each claim with its verdict."""
    verdicts = {c.id: c.verdict for c in claims}
    rows = []
    for s in sentences:
        tested = ", ".join(f"{i}: {verdicts[i]}" for i in s.tested_by) if s.tested_by else f"not tested: {s.why_not}"
        rows.append((s.seed, s.quote, s.english, tested))
    return rows


def posts_line(seeds_from: Sequence[str], post_titles: dict[str, str]) -> str:
    """"post 000 «title»; post 003 «title»" (the seed articles, by their id and their own title)."""
    return "; ".join(f"post {p}" + (f" «{post_titles[p]}»" if p in post_titles else "") for p in seeds_from)


def seed_sentences_markdown(sentences: Sequence[SeedSentence], claims: list[Claim]) -> str:
    if not sentences:
        return ""
    head = "| post | the post says | in English | tested by (verdict) |\n|---|---|---|---|\n"
    body = "\n".join(f"| {a} | {b} | {c} | {d} |" for a, b, c, d in seed_sentence_rows(sentences, claims))
    return head + body + "\n"


def claims_markdown(claims: list[Claim]) -> str:
    head = ("| id | claim | verdict | statistic | p (one-sided) | p (Holm) | survives | effect [95% CI] | unit | n |\n"
            "|---|---|---|---|---|---|---|---|---|---|\n")
    lines = []
    for c in claims:
        ci = f" [{fmt_num(c.ci[0])}, {fmt_num(c.ci[1])}]" if c.ci else ""
        lines.append(
            f"| {c.id} | {c.claim} | **{c.verdict}** | {c.statistic}={fmt_num(c.value)} | {fmt_num(c.p_value)} "
            f"| {fmt_num(c.p_adjusted)} | {survival(c)} | {fmt_num(c.effect_size)}{ci} | {c.unit or '–'} "
            f"| {fmt_num(c.n)} |"
        )
    return head + "\n".join(lines) + "\n" + "\n" + correction_line(claims) + "\n"


def key_numbers_markdown(table: pd.DataFrame, max_rows: int = 200) -> str:
    if table.empty:
        return "(no metrics)\n"
    cols = [c for c in table.columns if c not in ("mean", "lo", "hi")]
    head = "| " + " | ".join([*cols, "mean [95% CI]"]) + " |\n|" + "---|" * (len(cols) + 1) + "\n"
    body = []
    for _, r in table.head(max_rows).iterrows():
        cells = [fmt_num(r[c]) for c in cols]
        body.append("| " + " | ".join([*cells, f"{fmt_num(r['mean'])} [{fmt_num(r['lo'])}, {fmt_num(r['hi'])}]"]) + " |")
    more = f"\n({len(table) - max_rows} more rows in key_numbers.json)\n" if len(table) > max_rows else "\n"
    return head + "\n".join(body) + more


def summary_markdown(study_name: str, description: str, claims: list[Claim], numbers: pd.DataFrame,
                     notes: str, figures: list[tuple[str, str, str]], config: dict[str, Any],
                     sentences: Sequence[SeedSentence] = (), posts: str = "") -> str:
    counts = {v: sum(c.verdict == v for c in claims) for v in ("supported", "refuted", "inconclusive")}
    parts = [
        f"# {study_name}\n\n{description}\n" + (f"\nReproduces {posts}.\n" if posts else ""),
        f"Claims: {counts['supported']} supported, {counts['refuted']} refuted, "
        f"{counts['inconclusive']} inconclusive.\n",
        "## Claims\n\n" + claims_markdown(claims),
        "## Figures\n\n" + "\n".join(f"- `figures/{n}.png`: **{t}**. {h}" for n, t, h in figures) + "\n",
    ]
    if sentences:
        parts.append("## Every claim sentence of the posts\n\n" + seed_sentences_markdown(sentences, claims))
    if notes.strip():
        parts.append("## Notes\n\n" + notes.strip() + "\n")
    parts.append("## Key numbers (last step, mean over seeds)\n\n" + key_numbers_markdown(numbers))
    parts.append("## Config\n\n" + "\n".join(f"- `{k}` = `{v}`" for k, v in config.items()) + "\n")
    return "\n".join(parts)
