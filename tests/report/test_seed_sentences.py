"""A study's seed sentences: each tested by claims (shown with their verdicts) or marked why it cannot be."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import ClassVar

import pytest

sys.path.insert(0, str(Path(__file__).parent.parent / "engine"))
from toy_study import ToyConfig, ToyStudy

from normlab.engine.load import load_run
from normlab.engine.spec import SeedSentence
from normlab.report import run_and_report
from normlab.report.build import check_claims


class ToyWithSentences(ToyStudy):
    seeds_from = ("999",)
    post_titles: ClassVar[dict[str, str]] = {"999": "学习率越大越好"}
    seed_sentences = (
        SeedSentence("999", "学习率越大,损失越低。", "A larger learning rate gives a lower loss.", tested_by=("T1",)),
        SeedSentence("999", "这是显然的。", "This is obvious.", why_not="a judgement of taste, not a measurement"),
    )


def test_a_sentence_is_tested_or_says_why_not():
    with pytest.raises(ValueError, match="either tested_by"):
        SeedSentence("000", "q", "e")
    with pytest.raises(ValueError, match="either tested_by"):
        SeedSentence("000", "q", "e", tested_by=("C1",), why_not="both")


def test_report_lists_every_sentence_with_the_verdict_of_its_claim(tmp_path):
    out = run_and_report(ToyWithSentences(), ToyConfig(steps=12), tmp_path / "run")
    verdict = {c.id: c.verdict for c in out.claims}["T1"]
    summary = (out.run_dir / "summary.md").read_text()
    assert f"| 999 | 学习率越大,损失越低。 | A larger learning rate gives a lower loss. | T1: {verdict} |" in summary
    assert "not tested: a judgement of taste, not a measurement" in summary
    assert "post 999 «学习率越大越好»" in summary
    page = out.report.read_text()
    assert "Every claim sentence of the posts" in page and f"T1: {verdict}" in page and "学习率越大越好" in page


def test_a_sentence_naming_a_claim_the_study_does_not_make_is_an_error(tmp_path):
    class Typo(ToyWithSentences):
        seed_sentences = (SeedSentence("999", "q", "e", tested_by=("T9",)),)

    out = run_and_report(ToyStudy(), ToyConfig(steps=10), tmp_path / "run", report=False)
    study = Typo()
    with pytest.raises(ValueError, match=r"tested_by names claims .*\['T9'\]"):
        check_claims(study, study.claims(load_run(out.run_dir, ToyStudy())))
