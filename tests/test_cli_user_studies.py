"""Studies from users: ``normlab run path/to/study.py``, the ``normlab.studies`` entry points, and the
example of docs/writing-a-study.md (a real file, run end to end here)."""

from __future__ import annotations

import importlib
import json
import re
import shutil
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import normlab.studies
from normlab.cli import app

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "docs" / "examples" / "my_study.py"
DOC = ROOT / "docs" / "writing-a-study.md"
TOY = ROOT / "tests" / "engine" / "toy_study.py"

runner = CliRunner()


def cli(*args):
    return runner.invoke(app, [str(a) for a in args])


def error_line(result) -> str:
    """The single ``error: ...`` line of a failed command, with no traceback."""
    assert result.exit_code != 0, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


@pytest.fixture
def fresh_registry(monkeypatch):
    """Discovery runs again in the test (entry points included) and is forgotten after it."""
    monkeypatch.setattr(normlab.studies, "_REGISTRY", None)
    monkeypatch.setattr(normlab.studies, "_ERRORS", {})


def toy_file(directory: Path, name: str = "toy_copy.py", study_name: str = "toy") -> Path:
    """The engine tests' toy study as a user's own file outside normlab."""
    path = directory / name
    path.write_text(TOY.read_text().replace('name = "toy"', f"name = {study_name!r}"))
    return path


# -- the documented example ------------------------------------------------------------------------


def test_the_doc_shows_the_example_file_verbatim():
    doc = DOC.read_text()
    assert "docs/examples/my_study.py" in doc
    blocks = re.findall(r"```python\n(.*?)```", doc, flags=re.S)
    assert EXAMPLE.read_text() in blocks, "docs/writing-a-study.md must quote docs/examples/my_study.py exactly"


def test_the_example_runs_reports_and_shows_through_the_cli(tmp_path):
    out = tmp_path / "run"
    r = cli("run", EXAMPLE, "--quick", "--out", out, "--progress", "none", "--json")
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout)
    assert summary["study"] == "my-study" and summary["cells_run"] == 2
    assert [c["id"] for c in summary["claims"]] == ["C1"]
    record = json.loads((out / "config.json").read_text())
    assert record["study_source"] == {"file": str(EXAMPLE)}
    assert record["config"]["steps"] == 30 and record["config"]["seeds"] == 4
    assert "my-study" not in normlab.studies.registry()  # a file study is not registered

    (out / "report.html").unlink()
    r = cli("report", out)
    assert r.exit_code == 0, r.output
    assert (out / "report.html").is_file() and (out / "figures" / "loss.png").is_file()
    r = cli("show", out)
    assert r.exit_code == 0, r.output
    assert r.output.startswith(f"my-study  ({out})") and "C1" in r.output and "test_loss" in r.output


# -- normlab run FILE ------------------------------------------------------------------------------


def test_a_file_study_resumes_and_is_found_again_after_a_move(tmp_path):
    src = toy_file(tmp_path)
    out = tmp_path / "run"
    assert cli("run", src, "--quick", "--out", out, "--progress", "none").exit_code == 0
    r = cli("run", src, "--quick", "--out", out, "--progress", "none")
    assert r.exit_code == 0 and "0 cells run, 2 resumed" in r.output, r.output

    moved = src.rename(tmp_path / "moved.py")
    line = error_line(cli("report", out))
    assert str(src) in line and "no such file" in line and "normlab run NEW_PATH --out" in line
    r = cli("run", moved, "--quick", "--out", out, "--progress", "none")  # records the new place
    assert r.exit_code == 0 and "2 resumed" in r.output, r.output
    assert json.loads((out / "config.json").read_text())["study_source"] == {"file": str(moved)}
    assert cli("report", out).exit_code == 0

    moved.write_text(moved.read_text().replace("name = 'toy'", "name = 'renamed'"))
    line = error_line(cli("report", out))
    assert "defines study 'renamed', not 'toy'" in line


def test_a_file_study_named_like_a_built_in_one_reports_from_its_file(tmp_path):
    """A user's edited copy of a built-in keeps its name: report must not fall back to the built-in."""
    src = toy_file(tmp_path, study_name="overfitting")
    out = tmp_path / "run"
    assert cli("run", src, "--quick", "--out", out, "--progress", "none", "--no-report").exit_code == 0
    r = cli("report", out)
    assert r.exit_code == 0, r.output
    assert "T1" in r.output  # the toy's claim, not the built-in overfitting study's


def test_a_run_directory_without_a_recorded_source_still_resumes_and_reports(tmp_path, monkeypatch):
    """Run directories written before study files existed: config.json holds only study and config."""
    monkeypatch.syspath_prepend(str(TOY.parent))
    from toy_study import ToyStudy

    monkeypatch.setattr(normlab.studies, "_REGISTRY", {"toy": ToyStudy()})
    out = tmp_path / "run"
    assert cli("run", "toy", "--quick", "--out", out, "--progress", "none").exit_code == 0
    assert "study_source" not in json.loads((out / "config.json").read_text())
    r = cli("run", "toy", "--quick", "--out", out, "--progress", "none")
    assert r.exit_code == 0 and "2 resumed" in r.output, r.output
    assert cli("report", out).exit_code == 0


def test_workers_are_told_to_import_a_file_study_but_not_an_importable_one(tmp_path):
    from normlab.engine.parallel import _study_module_file
    from normlab.studies import load_study_file

    study = load_study_file(toy_file(tmp_path))
    assert _study_module_file(study) == (type(study).__module__, str(tmp_path / "toy_copy.py"))
    assert _study_module_file(normlab.studies.get_study("overfitting")) is None


@pytest.mark.slow  # spawns two workers that each import torch
def test_a_file_study_runs_in_worker_processes(tmp_path):
    src = toy_file(tmp_path)
    out = tmp_path / "run"
    r = cli("run", src, "--quick", "--out", out, "--jobs", "2", "--progress", "none")
    assert r.exit_code == 0, r.output
    assert "2 cells run" in r.output


@pytest.mark.parametrize(("body", "expected"), [
    ("x = 1\n", "expected exactly one Study subclass with a `name`, found none"),
    ("from normlab.engine.spec import Study\nclass A(Study):\n    name = 'a'\nclass B(Study):\n    name = 'b'\n",
     "found 2 (A, B)"),
    ("def f(:\n", "failed to import: SyntaxError"),
    ("import math\n\nraise RuntimeError('no data here')\n", "RuntimeError: no data here (at "),
])
def test_a_bad_study_file_is_one_error_line(tmp_path, body, expected):
    path = tmp_path / "bad_study.py"
    path.write_text(body)
    line = error_line(cli("run", path, "--quick", "--out", tmp_path / "run"))
    assert expected in line and str(path) in line
    if "RuntimeError" in expected:
        assert f"{path.resolve()}:3)" in line  # where: the file and the line that raised
    assert not (tmp_path / "run").exists()


def test_a_missing_study_file_is_one_error_line(tmp_path):
    line = error_line(cli("run", tmp_path / "nope.py", "--out", tmp_path / "run"))
    assert "nope.py: no such file" in line


def test_an_imported_base_class_does_not_count_as_the_files_study(tmp_path):
    """A file that imports a study class and subclasses it defines one study: its own."""
    toy_file(tmp_path, "base_toy.py")
    path = tmp_path / "derived.py"
    path.write_text(f"import sys\nsys.path.insert(0, {str(tmp_path)!r})\nfrom base_toy import ToyStudy\n\n"
                    "class Mine(ToyStudy):\n    name = 'mine'\n")
    r = cli("run", path, "--quick", "--out", tmp_path / "run", "--progress", "none")
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "run" / "config.json").read_text())["study"] == "mine"
    sys.modules.pop("base_toy", None)


# -- entry points ----------------------------------------------------------------------------------

ENTRY_POINTS = """\
[normlab.studies]
fake-good = fake_user_studies:GoodStudy
fake-instance = fake_user_studies:INSTANCE
fake-broken = fake_user_studies_missing:Nope
fake-clash = fake_user_studies:ClashStudy
fake-not-a-study = fake_user_studies:NOT_A_STUDY
"""

MODULE = """\
from fake_toy import ToyStudy

class GoodStudy(ToyStudy):
    name = "fake-good"
    description = "From an installed package."

class _Other(ToyStudy):
    name = "fake-instance"

INSTANCE = _Other()

class ClashStudy(ToyStudy):
    name = "overfitting"

NOT_A_STUDY = 42
"""


@pytest.fixture
def fake_distribution(tmp_path, monkeypatch, fresh_registry):
    """A distribution ``fakepkg`` on sys.path declaring ``normlab.studies`` entry points (no pip)."""
    site = tmp_path / "site"
    info = site / "fakepkg-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fakepkg\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(ENTRY_POINTS)
    toy_file(site, "fake_toy.py")
    (site / "fake_user_studies.py").write_text(MODULE)
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    yield site
    for name in ("fake_toy", "fake_user_studies"):
        sys.modules.pop(name, None)
    importlib.invalidate_caches()


def test_entry_points_register_studies_next_to_the_built_in_ones(fake_distribution):
    studies = normlab.studies.registry()
    assert "overfitting" in studies and "fake-good" in studies and "fake-instance" in studies
    assert type(studies["overfitting"]).__module__ == "normlab.studies.overfitting.study"  # not overridden
    assert studies["fake-good"].source == {"entry_point": "fake-good = fake_user_studies:GoodStudy",
                                           "distribution": "fakepkg"}
    errors = normlab.studies.discovery_errors()
    assert "duplicate study name 'overfitting'" in errors["entry point fake-clash (fake_user_studies:ClashStudy)"]
    assert "ModuleNotFoundError" in errors["entry point fake-broken (fake_user_studies_missing:Nope)"]
    assert "expected a Study" in errors["entry point fake-not-a-study (fake_user_studies:NOT_A_STUDY)"]
    assert not any(k.startswith("entry point fake-good") or k.startswith("entry point fake-instance")
                   for k in errors)


def test_list_shows_entry_point_studies_with_their_origin_and_the_broken_ones(fake_distribution):
    r = cli("list")
    assert r.exit_code == 0, r.output
    good = next(line for line in r.stdout.splitlines() if line.startswith("fake-good"))
    assert "(from entry point fake-good = fake_user_studies:GoodStudy (fakepkg))" in good
    builtin = next(line for line in r.stdout.splitlines() if line.startswith("overfitting"))
    assert "(from" not in builtin
    assert "warning: entry point fake-broken (fake_user_studies_missing:Nope) failed to load" in r.output
    data = {d["name"]: d for d in json.loads(cli("list", "--json").stdout)}
    assert data["overfitting"]["origin"] == "built-in"
    assert data["fake-good"]["origin"].startswith("entry point fake-good")


def test_an_entry_point_study_runs_and_reports_by_name(fake_distribution, tmp_path):
    out = tmp_path / "run"
    r = cli("run", "fake-good", "--quick", "--out", out, "--progress", "none")
    assert r.exit_code == 0, r.output
    record = json.loads((out / "config.json").read_text())
    assert record["study"] == "fake-good" and record["study_source"]["distribution"] == "fakepkg"
    assert cli("report", out).exit_code == 0
    shutil.rmtree(out)
