"""Cells in worker processes (``jobs > 1``): the same numbers and files as one by one, errors surface."""

import sys
from pathlib import Path

import pandas as pd
import pytest

from normlab.lab.load import load_run
from normlab.lab.parallel import resolve_jobs
from normlab.lab.runner import run_study
from normlab.lab.store import RunStore

sys.path.insert(0, str(Path(__file__).parent))
from toy_study import ToyConfig, ToyStudy

CONFIG = ToyConfig(seeds=3, steps=12, arms=("fast", "slow", "fast-again"))
  # 3 cells, 2 workers

def test_jobs_2_gives_the_numbers_and_files_of_jobs_1(tmp_path):
    one = run_study(ToyStudy(), CONFIG, tmp_path / "one", report=False)
    two = run_study(ToyStudy(), CONFIG, tmp_path / "two", report=False, jobs=2)
    assert sorted(two.cells_run) == sorted(one.cells_run) and len(two.cells_run) == 3
    _, a = load_run(one.run_dir, ToyStudy())
    _, b = load_run(two.run_dir, ToyStudy())
    keys = ["arm", "seed", "step", "metric"]
    pd.testing.assert_frame_equal(a.metrics.sort_values(keys).reset_index(drop=True),
                                  b.metrics.sort_values(keys).reset_index(drop=True))
    for cell in RunStore(two.run_dir).done_cells():
        files = sorted(p.name for p in RunStore(two.run_dir).cell_dir(cell).iterdir())
        assert files == sorted(p.name for p in RunStore(one.run_dir).cell_dir(cell).iterdir())
    assert RunStore(two.run_dir).read_config()["config"] == RunStore(one.run_dir).read_config()["config"]


def test_a_failing_cell_raises_and_the_others_stay_done(tmp_path, monkeypatch):
    monkeypatch.setenv("TOY_FAIL_ARM", "slow")  # spawned workers inherit the environment
    with pytest.raises(ValueError, match="arm slow fails on request"):
        run_study(ToyStudy(), CONFIG, tmp_path / "run", report=False, jobs=2)
    done = {cell.arm for cell in RunStore(tmp_path / "run").done_cells()}
    assert "slow" not in done
    monkeypatch.delenv("TOY_FAIL_ARM")
    resumed = run_study(ToyStudy(), CONFIG, tmp_path / "run", report=False, jobs=2)
    assert len(resumed.cells_run) + len(resumed.cells_skipped) == 3 and resumed.cells_run
    assert {cell.arm for cell in RunStore(tmp_path / "run").done_cells()} == set(CONFIG.arms)


@pytest.mark.parametrize("jobs", [-1, 1.5, True, "2"])
def test_bad_jobs_are_rejected(jobs, tmp_path):
    with pytest.raises(ValueError, match="jobs"):
        run_study(ToyStudy(), CONFIG, tmp_path / "run", report=False, jobs=jobs)
    assert not (tmp_path / "run").exists()  # nothing written


def test_zero_jobs_means_one_per_core():
    import os

    assert resolve_jobs(0) == (os.cpu_count() or 1)
    assert resolve_jobs(3) == 3
