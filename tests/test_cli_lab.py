"""The lab's command line: list, run (presets, --set, errors, resume), report, show."""

import json

import pytest
from typer.testing import CliRunner

from normlab.cli import app

runner = CliRunner()
TINY = ["--quick", "--seeds", "2", "--steps", "20", "--set", "arms=ln,none", "--set", "probe=false"]


def test_list_shows_every_study_with_a_description():
    r = runner.invoke(app, ["list"])
    assert r.exit_code == 0
    assert "ln-gradients" in r.stdout and "LayerNorm" in r.stdout
    data = json.loads(runner.invoke(app, ["list", "--json"]).stdout)
    assert {"name": "ln-gradients"}.items() <= next(d for d in data if d["name"] == "ln-gradients").items()


@pytest.mark.parametrize("args, message", [
    (["run", "no-such-study"], "unknown study 'no-such-study'; valid studies:"),
    (["run", "ln-gradients", "--set", "bogus=1"], "unknown key 'bogus'"),
    (["run", "ln-gradients", "--set", "steps=many"], "steps: expected an integer, got 'many'"),
    (["run", "ln-gradients", "--set", "steps"], "expected key=value"),
    (["run", "ln-gradients", "--seeds", "0"], "--seeds: expected a positive integer"),
    (["run", "ln-gradients", "--set", "arms=ln,bogus"], "arms[1]: expected one of ['dropout', 'dropout+ln'"),
    (["run", "ln-gradients", "--jobs", "-1"], "--jobs: expected a non-negative number"),
])
def test_bad_input_gets_a_clear_error(args, message):
    r = runner.invoke(app, args)
    assert r.exit_code == 2
    assert message in r.output
    assert "Traceback" not in r.output


def test_run_json_then_report_show_and_resume(tmp_path):
    out = tmp_path / "run"
    r = runner.invoke(app, ["run", "ln-gradients", *TINY, "--out", str(out), "--json", "--no-report"])
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout)
    assert summary["cells_run"] == 2 and summary["report"] is None
    cfg = json.loads((out / "config.json").read_text())["config"]
    assert cfg["seeds"] == 2 and cfg["steps"] == 20 and cfg["arms"] == ["ln", "none"] and cfg["probe"] is False
    assert "claims.json" in runner.invoke(app, ["show", str(out)]).output  # no report yet: says what to do

    r = runner.invoke(app, ["report", str(out)])
    assert r.exit_code == 0 and (out / "report.html").is_file() and "Report:" in r.stdout

    shown = json.loads(runner.invoke(app, ["show", str(out), "--json"]).stdout)
    assert shown["study"] == "ln-gradients" and {c["id"] for c in shown["claims"]} >= {"C1a", "C8", "K5"}
    text = runner.invoke(app, ["show", str(out)])
    assert text.exit_code == 0 and "C1a" in text.stdout and "Key numbers" in text.stdout

    again = runner.invoke(app, ["run", "ln-gradients", *TINY, "--out", str(out), "--json", "--no-report"])
    assert json.loads(again.stdout)["cells_skipped"] == 2
    other = runner.invoke(app, ["run", "ln-gradients", *TINY[:-4], "--out", str(out)])
    assert other.exit_code == 2 and "different config" in other.output

    record = json.loads((out / "config.json").read_text())
    record["config"]["lr"] = -1.0  # a hand-edited config.json: the report refuses it in one line
    (out / "config.json").write_text(json.dumps(record))
    r = runner.invoke(app, ["report", str(out)])
    assert r.exit_code == 2 and r.output.count("\n") == 1 and "config.json: " in r.output
    assert "lr: expected a finite number > 0, got -1.0" in r.output


def test_show_and_report_on_a_non_run_directory(tmp_path):
    for cmd in ("show", "report"):
        r = runner.invoke(app, [cmd, str(tmp_path)])
        assert r.exit_code == 2 and "not a normlab run directory" in r.output
