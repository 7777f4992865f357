"""docs/probe-on-your-model.md is executable: every python block runs (in order, one namespace) and prints
exactly the text block that follows it. So is the *Adding a statistic* section of docs/probe.md."""

from __future__ import annotations

import contextlib
import io
import re
import warnings
from pathlib import Path

DOCS = Path(__file__).resolve().parents[2] / "docs"
DOC = DOCS / "probe-on-your-model.md"
_BLOCK = re.compile(r"```python\n(?P<code>.*?)```\n\n```text\n(?P<out>.*?)```\n", re.S)


def _run_blocks(text: str, path: Path) -> int:
    blocks = [(m["code"], m["out"]) for m in _BLOCK.finditer(text)]
    assert len(blocks) == text.count("```python")  # every python block has its output shown
    namespace: dict = {"__name__": "probe_doc"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.compile's and transformers' own notices
        for code, expected in blocks:
            buffer = io.StringIO()
            with contextlib.redirect_stdout(buffer):
                exec(compile(code, str(path), "exec"), namespace)
            assert buffer.getvalue() == expected, f"block:\n{code}"
    return len(blocks)


def test_every_example_prints_what_the_doc_shows():
    _run_blocks(DOC.read_text(), DOC)


def test_the_adding_a_statistic_example_prints_what_the_doc_shows():
    path = DOCS / "probe.md"
    section = path.read_text().split("## Adding a statistic\n", 1)[1].split("\n## ", 1)[0]
    assert _run_blocks(section, path) == 1
