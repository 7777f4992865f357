"""The key numbers a report shows: what the study declares, each with its summary named; a study that declares
nothing gets a trimmed final-step table; key_numbers.json keeps the full table. And the posts are named by
title and file."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parent.parent / "engine"))
from toy_study import ToyConfig, ToyStudy

from normlab.cli import app
from normlab.engine.spec import KeyNumber, StoredRun
from normlab.kit.intervals import wilson_interval
from normlab.kit.key_numbers import metric_numbers
from normlab.report import run_and_report
from normlab.report.numbers import DEFAULT_ROWS, declared_table, final_step_table, shown_table
from normlab.report.summary import key_numbers_markdown, posts_line


def _metrics(n_metrics: int, arms=("a", "b"), seeds=4) -> pd.DataFrame:
    rows = [(arm, s, step, f"m{k}", float(1 + k + s + step)) for arm in arms for s in range(seeds)
            for step in (0, 5) for k in range(n_metrics)]
    return pd.DataFrame(rows, columns=["arm", "seed", "step", "metric", "value"])


def test_declared_numbers_are_summarised_by_scale_and_named():
    table = declared_table([
        KeyNumber("final loss", "a", (1.0, 10.0, 100.0), "positive"),
        KeyNumber("runs diverged", "a", (1, 0, 0, 0, 1, 0, 0, 0), "binary"),
        KeyNumber("accuracy", "a", (0.90, 0.99), "proportion"),
        KeyNumber("log ratio", "a", (-1.0, 1.0, 3.0)),
    ])
    loss, div, acc, signed = (table.iloc[i] for i in range(4))
    assert loss["estimate"] == pytest.approx(10.0) and loss["summary"].startswith("geometric mean over 3 seeds")
    assert (div["lo"], div["hi"]) == pytest.approx(wilson_interval(2, 8))
    assert div["summary"] == "2 of 8 seeds, 95% Wilson interval"
    assert 0 <= acc["lo"] and acc["hi"] <= 1 and acc["estimate"] == pytest.approx(0.945)
    assert signed["estimate"] == pytest.approx(1.0) and signed["summary"].startswith("mean over 3 seeds, 95% t")
    md = key_numbers_markdown(table)
    assert "| final loss | a | 10 [" in md and "geometric mean over 3 seeds" in md


def test_a_study_that_declares_nothing_gets_a_trimmed_named_final_step_table():
    full = final_step_table(_metrics(20))
    assert len(full) == 40 and set(full["metric"]) == {f"m{k}" for k in range(20)}
    assert (full["step"] == 5).all()
    row = full[(full["arm"] == "a") & (full["metric"] == "m0")].iloc[0]
    assert row["estimate"] == pytest.approx(np.mean([6.0, 7.0, 8.0, 9.0]))  # step 5, seeds 0..3
    assert row["quantity"] == "m0 at step 5" and row["summary"].startswith("mean over 4 seeds")
    shown, note = shown_table([], full)
    assert len(shown) == DEFAULT_ROWS and f"first {DEFAULT_ROWS} of 40" in note
    declared, note = shown_table([KeyNumber("m0", "a", (1.0, 2.0))], full)
    assert len(declared) == 1 and "40 rows" in note


def test_metric_numbers_takes_one_value_per_seed_at_the_step_asked():
    m = _metrics(1).assign(batch_size=lambda d: np.where(d["seed"] % 2, 4, 8))
    nums = metric_numbers(m, "m0", "m0 at the end", scale="positive", arms=("b",))
    assert [k.arm for k in nums] == ["b, batch_size=8", "b, batch_size=4"]
    assert nums[0].values == (6.0, 8.0)
    first = metric_numbers(m, "m0", "m0 at step 0", step=0, batch_size=4)
    assert [k.arm for k in first] == ["a", "b"] and first[0].values == (2.0, 4.0)


def test_key_number_rejects_an_unknown_scale():
    with pytest.raises(ValueError, match="scale"):
        KeyNumber("x", "a", (1.0,), "log")  # type: ignore[arg-type]


class _Declaring(ToyStudy):
    def key_numbers(self, run: StoredRun) -> list[KeyNumber]:
        return metric_numbers(run.metrics, "loss", "training loss at the last step", scale="positive")


def test_the_report_shows_the_declared_numbers_and_the_json_keeps_the_full_table(tmp_path):
    out = run_and_report(_Declaring(), ToyConfig(), tmp_path / "run")
    rows = json.loads((out.run_dir / "key_numbers.json").read_text())
    key = [r for r in rows if r["table"] == "key"]
    assert [r["arm"] for r in key] == ["fast", "slow"]
    assert all(r["summary"].startswith("geometric mean over 4 seeds") for r in key)
    assert [r["metric"] for r in rows if r["table"] == "final step"] == ["loss", "loss"]
    md = (out.run_dir / "summary.md").read_text()
    assert "| training loss at the last step | fast |" in md and "geometric mean over 4 seeds" in md
    html = (out.run_dir / "report.html").read_text()
    assert "geometric mean over 4 seeds" in html
    shown = CliRunner().invoke(app, ["show", str(out.run_dir)])
    assert shown.exit_code == 0 and "training loss at the last step" in shown.stdout
    assert "geometric mean over 4 seeds" in shown.stdout


def test_posts_are_named_by_title_and_file_even_where_the_file_is_absent():
    line = posts_line(("003", "002"), {"003": "Transformer 模型介绍(五)—归一化 Add & Norm"})
    assert line == ("post 003 «Transformer 模型介绍(五)—归一化 Add & Norm» (seeds/003_07b95923b0134b21.txt); "
                    "post 002 (seeds/002_0c1ed254184aaf19.txt)")
    assert posts_line(("999",), {"999": "t"}) == "post 999 «t»"  # an unknown post: no file to name


def test_every_post_file_name_is_the_shared_files_name():
    from normlab.kit.posts import POST_FILES
    shared = Path("/work/shared/seeds")
    if not shared.is_dir():
        pytest.skip("the shared posts are not on this machine")
    assert sorted(POST_FILES.values()) == sorted(p.name for p in shared.glob("*.txt"))
    assert all(name.startswith(f"{pid}_") for pid, name in POST_FILES.items())


def test_no_interval_for_one_seed_reads_in_words():
    table = declared_table([KeyNumber("x", "a", (0.5,), "proportion")])
    assert "(n=1: no interval)" in key_numbers_markdown(table)
    assert not math.isnan(table.iloc[0]["estimate"])
