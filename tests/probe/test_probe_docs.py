"""docs/probe-on-your-model.md is executable: every python block runs (in order, one namespace) and prints
exactly the text block that follows it."""

from __future__ import annotations

import contextlib
import io
import re
import warnings
from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "probe-on-your-model.md"
_BLOCK = re.compile(r"```python\n(?P<code>.*?)```\n\n```text\n(?P<out>.*?)```\n", re.S)


def test_every_example_prints_what_the_doc_shows():
    text = DOC.read_text()
    blocks = [(m["code"], m["out"]) for m in _BLOCK.finditer(text)]
    assert len(blocks) == text.count("```python")  # every python block has its output shown
    namespace: dict = {"__name__": "probe_doc"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.compile's and transformers' own notices
        for code, expected in blocks:
            buffer = io.StringIO()
            with contextlib.redirect_stdout(buffer):
                exec(compile(code, str(DOC), "exec"), namespace)
            assert buffer.getvalue() == expected, f"block:\n{code}"
