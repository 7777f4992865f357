"""A quick run is a smoke test wherever a verdict appears; numbers never read nan or inf."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parent.parent / "engine"))
from toy_study import ToyConfig, ToyStudy

from normlab.cli import app
from normlab.report import run_and_report
from normlab.report.preset import SMOKE_TEST_VERDICT, preset_of
from normlab.report.summary import fmt_interval, fmt_num


def test_the_preset_is_read_from_the_config_itself():
    study = ToyStudy()
    assert preset_of(study, ToyConfig()).kind == "default"
    quick = preset_of(study, ToyConfig(steps=10))
    assert quick.kind == "quick" and quick.smoke_test
    assert quick.sizes == (("steps", 10, 30),)
    assert "steps=10" in quick.banner("toy") and "steps=30" in quick.banner("toy")
    custom = preset_of(study, ToyConfig(steps=12, seeds=5))
    assert custom.kind == "custom" and not custom.smoke_test and custom.banner("toy") == ""
    assert custom.sizes == (("seeds", 5, 4), ("steps", 12, 30))  # what differs from the default, named
    smaller = preset_of(study, ToyConfig(steps=8, seeds=5))  # below the quick preset's steps: still a smoke test
    assert smaller.kind == "quick" and smaller.smoke_test


def test_a_quick_report_marks_every_verdict_not_judged(tmp_path):
    out = run_and_report(ToyStudy(), ToyConfig(steps=10), tmp_path / "q")
    doc = json.loads((out.run_dir / "claims.json").read_text())
    assert doc["preset"] == "quick" and doc["smoke_test"] is True
    assert doc["claims"][0]["verdict"] in ("supported", "refuted", "inconclusive")  # computed, kept for tools
    summary = (out.run_dir / "summary.md").read_text()
    assert "Smoke test" in summary and f"**{SMOKE_TEST_VERDICT}**" in summary
    assert f"**{doc['claims'][0]['verdict']}**" not in summary
    page = out.report.read_text()
    assert "id='smoke-test'" in page and "smoke test: verdicts not judged" in page
    assert page.index("Bottom line") < page.index("id='claims'")
    shown = CliRunner().invoke(app, ["show", str(out.run_dir)])
    assert "a smoke test" in shown.output and SMOKE_TEST_VERDICT in shown.output


def test_a_default_like_report_shows_verdicts_and_no_smoke_banner(tmp_path):
    out = run_and_report(ToyStudy(), ToyConfig(steps=12), tmp_path / "d")
    page = out.report.read_text()
    assert "id='smoke-test'" not in page and "custom settings" in page
    verdict = json.loads((out.run_dir / "claims.json").read_text())["claims"][0]["verdict"]
    assert f"<td class='{verdict}'>{verdict}" in page


def test_numbers_never_read_nan_or_inf():
    assert fmt_num(math.nan) == "–" and fmt_num(math.inf) == "unbounded" and fmt_num(None) == "–"
    assert fmt_interval(-math.inf, math.inf, 1) == "(n=1: no interval)"
    assert fmt_interval(math.nan, math.nan, 5) == "(no interval)"
    assert fmt_interval(0.5, 1.25, 5) == "[0.5, 1.25]"


def test_the_bottom_line_keeps_what_decided_a_verdict_and_the_table_keeps_the_rest():
    from normlab.report.summary import decided

    assert decided("refuted by C8b (control); C8a: supported (t=3)") == "refuted by C8b (control)"
    assert decided("a" * 300, limit=10) == "a" * 9 + "…"
    assert decided("") == ""
