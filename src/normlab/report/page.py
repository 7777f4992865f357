"""Everything one report shows, gathered once: ``summary.md`` and ``report.html`` render the same page."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from normlab.engine.spec import Claim, SeedSentence
from normlab.report.preset import SMOKE_TEST_VERDICT, Preset


@dataclass
class Page:
    study: str
    description: str
    posts: str  # "post 000 «title» (seeds/000_….txt); ..." ("" for a study that reproduces no post)
    preset: Preset
    claims: list[Claim]
    sentences: tuple[SeedSentence, ...]
    figures: list[dict[str, Any]]  # name, title, how_to_read, png (bytes)
    notes: str
    numbers: pd.DataFrame  # the key numbers shown (report.numbers.COLUMNS)
    numbers_note: str  # what the shown table is, one sentence
    config: dict[str, Any]
    env: dict[str, Any] = field(default_factory=dict)

    def verdict_shown(self, claim: Claim) -> str:
        """The verdict as a reader should take it: a quick run's are not judged at its size."""
        return SMOKE_TEST_VERDICT if self.preset.smoke_test else claim.verdict

    def run_line(self) -> str:
        """Preset and sizes, when, and with which normlab (from env.json)."""
        parts = [self.preset.line()]
        if self.env.get("created_utc"):
            parts.append(f"run {self.env['created_utc']}")
        version = (self.env.get("versions") or {}).get("normlab")
        git = self.env.get("git") or {}
        commit = git.get("commit") if isinstance(git, dict) else None
        if version:
            parts.append(f"normlab {version}" + (f" ({str(commit)[:10]})" if commit else ""))
        return "; ".join(parts)
