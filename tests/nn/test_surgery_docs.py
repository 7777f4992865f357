"""docs/surgery.md is executable: every python block runs (in order, one namespace) and prints exactly the
text block that follows it, so the worked examples cannot drift from the code."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "surgery.md"
_BLOCK = re.compile(r"```python\n(?P<code>.*?)```\n(?:\n```text\n(?P<out>.*?)```\n)?", re.S)


def doc_blocks(text: str) -> list[tuple[str, str | None]]:
    """(code, expected output or None) for each python block of the document."""
    return [(m["code"], m["out"]) for m in _BLOCK.finditer(text)]


def run_blocks(blocks: list[tuple[str, str | None]]) -> list[str]:
    namespace: dict = {"__name__": "surgery_doc"}
    outputs = []
    for code, _ in blocks:
        buffer = io.StringIO()
        with contextlib.redirect_stdout(buffer):
            exec(compile(code, str(DOC), "exec"), namespace)
        outputs.append(buffer.getvalue())
    return outputs


def test_every_example_prints_what_the_doc_shows():
    blocks = doc_blocks(DOC.read_text())
    assert len(blocks) >= 8
    for (code, expected), got in zip(blocks, run_blocks(blocks), strict=True):
        if expected is None:
            pytest.fail(f"no output block after:\n{code}")
        assert got == expected, f"block:\n{code}"
