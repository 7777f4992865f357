"""Text renderings of a run: the claims table, the key numbers, the posts, and ``summary.md``."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from normlab.engine.spec import Claim, SeedSentence
from normlab.kit.posts import post_file
from normlab.report.page import Page


def fmt_num(x: Any, digits: int = 3) -> str:
    """A number as a reader sees it: 3 significant digits; a missing or undefined value is "–" (never
    ``nan``), an unbounded one "unbounded" (never ``inf``)."""
    if x is None:
        return "–"
    if isinstance(x, (float, np.floating)):
        if math.isnan(x):
            return "–"
        if math.isinf(x):
            return "unbounded"
        return f"{x:.{digits}g}"
    return str(x)


def fmt_interval(lo: Any, hi: Any, n: Any = None) -> str:
    """``[lo, hi]``; an interval that one value cannot give (n=1) or that is undefined says so in words."""
    if n == 1:
        return "(n=1: no interval)"
    finite = all(isinstance(v, (int, float, np.floating)) and math.isfinite(v) for v in (lo, hi))
    if finite:
        return f"[{fmt_num(lo)}, {fmt_num(hi)}]"
    return "(no interval)" if lo is not None or hi is not None else ""


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


def seed_sentence_rows(sentences: Sequence[SeedSentence], claims: list[Claim],
                       shown: Callable[[Claim], str] = lambda c: c.verdict) -> list[tuple[str, str, str, str]]:
    """``(seed, quote, english, how tested)`` per sentence; "how tested" names each claim with its verdict."""
    verdicts = {c.id: shown(c) for c in claims}
    rows = []
    for s in sentences:
        tested = ", ".join(f"{i}: {verdicts[i]}" for i in s.tested_by) if s.tested_by else f"not tested: {s.why_not}"
        rows.append((s.seed, s.quote, s.english, tested))
    return rows


def posts_line(seeds_from: Sequence[str], post_titles: dict[str, str]) -> str:
    """"post 000 «title» (seeds/000_….txt); post 003 ..." (the seed articles, by their id, their own title and the
    file a reader can open; the file's name is shown whether or not this machine holds it)."""
    def one(p: str) -> str:
        title = f" «{post_titles[p]}»" if p in post_titles else ""
        file = post_file(p)
        return f"post {p}{title}" + (f" ({file})" if file else "")
    return "; ".join(one(p) for p in seeds_from)


def cell(text: object) -> str:
    """Text for a markdown table cell: a ``|`` would end the cell, a newline the row."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def seed_sentences_markdown(sentences: Sequence[SeedSentence], claims: list[Claim],
                            shown: Callable[[Claim], str] = lambda c: c.verdict) -> str:
    if not sentences:
        return ""
    head = "| post | the post says | in English | tested by (verdict) |\n|---|---|---|---|\n"
    body = "\n".join(f"| {cell(a)} | {cell(b)} | {cell(c)} | {cell(d)} |"
                     for a, b, c, d in seed_sentence_rows(sentences, claims, shown))
    return head + body + "\n"


EFFECT_NOTE = ("effect [95% CI]: the claim's effect with its 95% interval, in the units its test names: a "
               "relative change as a fraction (-0.25 = 25% lower; for losses a ratio of geometric means minus one, "
               "its interval on the log scale), Cohen's d where the test says d, else a difference in the "
               "measure's own units. p is one-sided in the claimed direction; Holm adjusts it for the number of "
               "claims in the study. unit: what was randomised independently; n: how many of those units.")


def claims_markdown(claims: list[Claim], shown: Callable[[Claim], str] = lambda c: c.verdict) -> str:
    head = ("| id | claim | verdict | statistic | p (one-sided) | p (Holm) | survives | effect [95% CI] | unit | n |\n"
            "|---|---|---|---|---|---|---|---|---|---|\n")
    lines = []
    for c in claims:
        ci = f" {fmt_interval(c.ci[0], c.ci[1], c.n)}" if c.ci else ""
        lines.append(
            f"| {cell(c.id)} | {cell(c.claim)} | **{shown(c)}** | {cell(c.statistic)}={fmt_num(c.value)} "
            f"| {fmt_num(c.p_value)} | {fmt_num(c.p_adjusted)} | {survival(c)} | {fmt_num(c.effect_size)}{ci} "
            f"| {cell(c.unit or '–')} | {fmt_num(c.n)} |"
        )
    return head + "\n".join(lines) + "\n\n" + correction_line(claims) + "\n\n" + EFFECT_NOTE + "\n"


def key_numbers_markdown(table: pd.DataFrame) -> str:
    """| quantity | arm | value [95% CI] | summary over seeds |: each number with its summary named."""
    if table.empty:
        return "(no metrics)\n"
    head = "| quantity | arm | value [95% CI] | summary |\n|---|---|---|---|\n"
    body = [f"| {cell(r['quantity'])} | {cell(r['arm'])} | {fmt_num(r['estimate'])} {fmt_interval(r['lo'], r['hi'], r['n'])} "
            f"| {cell(r['summary'])} |" for _, r in table.iterrows()]
    return head + "\n".join(body) + "\n"


def decided(detail: str, limit: int = 240) -> str:
    """The head of a claim's detail (up to its first "; "): what decided the verdict, for the bottom line.
    The whole detail stays in the claims table."""
    head = detail.split("; ", 1)[0].strip()
    return head if len(head) <= limit else head[: limit - 1].rstrip() + "…"


def bottom_line(page: Page) -> list[tuple[str, str, list[tuple[Claim, str]]]]:
    """What the posts claim and what came out: ``(quote, english, [(claim, verdict shown)])`` for each tested
    seed sentence; a study without seed sentences gets one entry per claim."""
    by_id = {c.id: c for c in page.claims}
    if page.sentences:
        return [(s.quote, s.english, [(by_id[i], page.verdict_shown(by_id[i])) for i in s.tested_by])
                for s in page.sentences if s.tested_by]
    return [("", c.claim, [(c, page.verdict_shown(c))]) for c in page.claims]


def summary_markdown(page: Page) -> str:
    claims = page.claims
    counts = {v: sum(c.verdict == v for c in claims) for v in ("supported", "refuted", "inconclusive")}
    lines = []
    for quote, english, judged in bottom_line(page):
        said = f"«{quote}» ({english})" if quote else english
        lines.append(f"- {said}: " + "; ".join(f"**{c.id} {v}**: {decided(c.detail)}" if c.detail else f"**{c.id} {v}**"
                                              for c, v in judged))
    banner = page.preset.banner(page.study)
    parts = [
        f"# {page.study}\n\n{page.description}\n" + (f"\nReproduces {page.posts}.\n" if page.posts else ""),
        f"Run: {page.run_line()}.\n" + (f"\n> **{banner}**\n" if banner else ""),
        "## Bottom line\n\n" + ("\n".join(lines) if lines else "(no claims)") + "\n",
        ("Claims: smoke test, not judged.\n" if page.preset.smoke_test else
         f"Claims: {counts['supported']} supported, {counts['refuted']} refuted, {counts['inconclusive']} "
         "inconclusive.\n"),
        "## Claims\n\n" + claims_markdown(claims, page.verdict_shown),
    ]
    if page.sentences:
        parts.append("## Every claim sentence of the posts\n\n"
                     + seed_sentences_markdown(page.sentences, claims, page.verdict_shown))
    parts.append("## Figures\n\n" + "\n".join(f"- `figures/{f['name']}.png`: **{f['title']}**. {f['how_to_read']}"
                                               for f in page.figures) + "\n")
    if page.notes.strip():
        parts.append("## Notes\n\n" + page.notes.strip() + "\n")
    parts.append("## Key numbers\n\n" + page.numbers_note + "\n\n" + key_numbers_markdown(page.numbers))
    parts.append("## Config\n\n" + "\n".join(f"- `{k}` = `{v}`" for k, v in page.config.items()) + "\n")
    return "\n".join(parts)
