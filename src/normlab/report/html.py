"""A self-contained HTML report: figures embedded as base64 PNG, no server, no external assets."""

from __future__ import annotations

import base64
import html
import json
import re
from collections.abc import Callable, Sequence

import pandas as pd

from normlab.engine.spec import Claim, SeedSentence
from normlab.report.page import Page
from normlab.report.summary import (
    EFFECT_NOTE,
    bottom_line,
    correction_line,
    decided,
    fmt_interval,
    fmt_num,
    seed_sentence_rows,
    survival,
)

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#222;background:#fff;line-height:1.45}
h1{border-bottom:3px solid #1f77b4;padding-bottom:.2em}h2{margin-top:1.8em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;width:100%;font-size:.9em;margin:1em 0}
th,td{border:1px solid #ddd;padding:.35em .5em;text-align:left;vertical-align:top}
th{background:#f3f5f8}.supported{background:#d9f2d9;font-weight:600}.refuted{background:#f8d7d7;font-weight:600}
.inconclusive{background:#fff1c7;font-weight:600}.detail{color:#555;font-size:.85em}
.notjudged{background:#e6e6e6;color:#555;font-weight:600}.banner{background:#fff4d6;border:2px solid #e0a800;
padding:.7em 1em;border-radius:6px;font-weight:600;margin:1em 0}.runline{color:#444;font-size:.9em}
ul.bottom li{margin:.6em 0}ul.bottom span.supported,ul.bottom span.refuted,ul.bottom span.inconclusive,
ul.bottom span.notjudged{padding:0 .3em;border-radius:3px}nav ol{columns:2;font-size:.9em}
figure{margin:1.5em 0;padding:1em;border:1px solid #e3e3e3;border-radius:6px}
figure img{max-width:100%;height:auto}figcaption{margin-top:.6em}.howto{color:#333;background:#f7f9fc;
padding:.6em .8em;border-left:4px solid #1f77b4;margin-top:.5em}.badges span{display:inline-block;
padding:.2em .6em;margin-right:.4em;border-radius:4px}code{background:#f3f3f3;padding:0 .2em}
"""


def _inline_md(text: str) -> str:
    """Escape, then a tiny subset of markdown: `code`, **bold**, *em*."""
    t = html.escape(text)
    t = re.sub(r"`([^`]+)`", r"<code>\1</code>", t)
    t = re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", t)
    return re.sub(r"(?<![*\w])\*([^*]+)\*(?!\*)", r"<em>\1</em>", t)


def markdown_to_html(md: str) -> str:
    """Enough markdown for study notes: headings, paragraphs, bullet lists, inline code/bold/em."""
    out: list[str] = []
    in_list = False
    para: list[str] = []

    def flush() -> None:
        if para:
            out.append("<p>" + _inline_md(" ".join(para)) + "</p>")
            para.clear()

    for line in md.splitlines():
        s = line.strip()
        if s.startswith(("- ", "* ")):
            flush()
            if not in_list:
                out.append("<ul>")
                in_list = True
            out.append("<li>" + _inline_md(s[2:]) + "</li>")
            continue
        if in_list and (not s or not line.startswith(" ")):
            out.append("</ul>")
            in_list = False
        elif in_list:  # continuation of a bullet
            out[-1] = out[-1][:-5] + " " + _inline_md(s) + "</li>"
            continue
        if not s:
            flush()
        elif s.startswith("#"):
            flush()
            level = min(len(s) - len(s.lstrip("#")) + 2, 6)
            out.append(f"<h{level}>{_inline_md(s.lstrip('#').strip())}</h{level}>")
        else:
            para.append(s)
    flush()
    if in_list:
        out.append("</ul>")
    return "\n".join(out)


def claims_table_html(claims: list[Claim], shown: Callable[[Claim], str] = lambda c: c.verdict) -> str:
    rows = []
    for c in claims:
        ci = f" {fmt_interval(c.ci[0], c.ci[1], c.n)}" if c.ci else ""
        holm = f"<br>Holm p = {fmt_num(c.p_adjusted)}" if c.p_adjusted is not None else ""
        survives = "" if c.survives is None else f"<div class='detail'>survives Holm: {survival(c)}</div>"
        verdict = shown(c)
        css = c.verdict if verdict == c.verdict else "notjudged"
        rows.append(
            "<tr>"
            f"<td>{html.escape(c.id)}</td>"
            f"<td>{_inline_md(c.claim)}<div class='detail'>source: {html.escape(c.source)}</div></td>"
            f"<td>{html.escape(c.measurement)}<div class='detail'>{html.escape(c.detail)}</div></td>"
            f"<td class='{css}'>{html.escape(verdict)}{survives}</td>"
            f"<td>{html.escape(c.statistic)} = {fmt_num(c.value)}<br>p = {fmt_num(c.p_value)}{holm}</td>"
            f"<td>{fmt_num(c.effect_size)}{ci}</td><td>{html.escape(c.unit or '–')}</td><td>{fmt_num(c.n)}</td>"
            "</tr>"
        )
    return (
        "<table><thead><tr><th>id</th><th>claim</th><th>measurement</th><th>verdict</th><th>test</th>"
        "<th>effect [95% CI]</th><th>unit</th><th>n</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>"
        f"<p>{html.escape(correction_line(claims))}</p><p class='detail'>{html.escape(EFFECT_NOTE)}</p>"
    )


def seed_sentences_html(sentences: Sequence[SeedSentence], claims: list[Claim],
                        shown: Callable[[Claim], str] = lambda c: c.verdict) -> str:
    if not sentences:
        return ""
    rows = "".join(f"<tr><td>{html.escape(a)}</td><td lang='zh'>{html.escape(b)}</td><td>{html.escape(c)}</td>"
                   f"<td>{html.escape(d)}</td></tr>" for a, b, c, d in seed_sentence_rows(sentences, claims, shown))
    return ("<h2 id='sentences'>Every claim sentence of the posts</h2><table><thead><tr><th>post</th>"
            "<th>the post says</th><th>in English</th><th>tested by (verdict)</th></tr></thead>"
            f"<tbody>{rows}</tbody></table>")


def bottom_line_html(page: Page) -> str:
    items = []
    for quote, english, judged in bottom_line(page):
        said = (f"<span lang='zh'>«{html.escape(quote)}»</span> ({html.escape(english)})" if quote
                else _inline_md(english))
        verdicts = "".join(
            f"<div><span class='{c.verdict if v == c.verdict else 'notjudged'}'>{html.escape(c.id)}: "
            f"{html.escape(v)}</span> <span class='detail'>{html.escape(decided(c.detail))}</span></div>"
            for c, v in judged)
        items.append(f"<li>{said}{verdicts}</li>")
    return "<ul class='bottom'>" + "".join(items) + "</ul>" if items else "<p>(no claims)</p>"


def key_numbers_html(table: pd.DataFrame) -> str:
    if table.empty:
        return "<p>(no metrics)</p>"
    body = "".join(
        f"<tr><td>{html.escape(str(r['quantity']))}</td><td>{html.escape(str(r['arm']))}</td>"
        f"<td>{fmt_num(r['estimate'])} {fmt_interval(r['lo'], r['hi'], r['n'])}</td>"
        f"<td class='detail'>{html.escape(str(r['summary']))}</td></tr>" for _, r in table.iterrows())
    return ("<table><thead><tr><th>quantity</th><th>arm</th><th>value [95% CI]</th><th>summary</th></tr></thead>"
            f"<tbody>{body}</tbody></table>")


_SECTIONS = (("bottom", "Bottom line"), ("claims", "Claims"), ("sentences", "Every claim sentence of the posts"),
             ("figures", "Figures"), ("notes", "Study notes"), ("numbers", "Key numbers"),
             ("config", "Config and environment"))


def render_html(page: Page) -> str:
    """The whole report as one HTML string."""
    claims = page.claims
    counts = {v: sum(c.verdict == v for c in claims) for v in ("supported", "refuted", "inconclusive")}
    figs = []
    for f in page.figures:
        b64 = base64.b64encode(f["png"]).decode("ascii")
        figs.append(
            f"<figure id='fig-{html.escape(f['name'])}'><img alt='{html.escape(f['title'])}' "
            f"src='data:image/png;base64,{b64}'><figcaption><strong>{html.escape(f['title'])}</strong>"
            f"<div class='howto'><em>How to read:</em> {_inline_md(f['how_to_read'])}</div></figcaption></figure>"
        )
    env = page.env
    env_small = {k: env.get(k) for k in ("created_utc", "python", "platform", "torch_threads", "device")}
    env_small["versions"] = env.get("versions")
    env_small["git"] = env.get("git")
    banner = page.preset.banner(page.study)
    badges = ("<div class='badges'><span class='notjudged'>smoke test: verdicts not judged</span></div>"
              if page.preset.smoke_test else
              f"<div class='badges'><span class='supported'>{counts['supported']} supported</span>"
              f"<span class='refuted'>{counts['refuted']} refuted</span>"
              f"<span class='inconclusive'>{counts['inconclusive']} inconclusive</span></div>")
    toc = "".join(f"<li><a href='#{a}'>{t}</a></li>" for a, t in _SECTIONS if a != "sentences" or page.sentences)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>normlab · {html.escape(page.study)}</title><style>{_CSS}</style></head><body>
<h1>normlab · {html.escape(page.study)}</h1>
<p>{html.escape(page.description)}{' Reproduces ' + html.escape(page.posts) + '.' if page.posts else ''}</p>
<p class='runline'>Run: {html.escape(page.run_line())}</p>
{f"<div class='banner' id='smoke-test'>{html.escape(banner)}</div>" if banner else ''}
<nav><ol>{toc}</ol></nav>
<h2 id='bottom'>Bottom line</h2>
<p>What the posts claim, and the verdict on each as the post attributes it (the detail names the measurement
or control that decided it).</p>
{bottom_line_html(page)}
{badges}
<h2 id='claims'>Claims</h2>
<p>Each claim of the seed text, the measurement that tests it, and the verdict computed from the stored
metrics: <em>supported</em> (significant in the claimed direction, with the required effect),
<em>refuted</em> (significant the other way, or the data rule out an effect that large),
<em>inconclusive</em> (neither). One rule throughout: a one-sided test at 0.025 beside two-sided 95%
intervals. <em>unit</em> is what was randomised independently and <em>n</em> how many of those units the
statistic used; <em>Holm p</em> adjusts each p-value for the number of claims in this study.</p>
{claims_table_html(claims, page.verdict_shown)}
{seed_sentences_html(page.sentences, claims, page.verdict_shown)}
<h2 id='figures'>Figures</h2>
{''.join(figs)}
<h2 id='notes'>Study notes</h2>
{markdown_to_html(page.notes) if page.notes.strip() else '<p>(none)</p>'}
<h2 id='numbers'>Key numbers</h2><p>{_inline_md(page.numbers_note)}</p>
{key_numbers_html(page.numbers)}
<h2 id='config'>Config and environment</h2>
<pre>{html.escape(json.dumps(page.config, indent=2))}</pre>
<pre>{html.escape(json.dumps(env_small, indent=2, default=str))}</pre>
</body></html>
"""
