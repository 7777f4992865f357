"""Read a run directory back into the objects a study's ``claims``/``figures`` receive."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from normlab.lab.config import config_from_dict
from normlab.lab.spec import StoredRun, Study
from normlab.lab.store import RunDirError, RunStore


def load_config(run_dir: Path | str, study: Study | None = None) -> tuple[Study, Any]:
    """The study (found by the name in ``config.json`` unless given) and its resolved config."""
    record = RunStore(run_dir).read_config()
    if study is None:
        from normlab.studies import UnknownStudyError, get_study

        try:
            study = get_study(record["study"])
        except UnknownStudyError as e:
            raise RunDirError(f"{run_dir}: {e}") from None
    elif record.get("study") != study.name:
        raise RunDirError(f"{run_dir} holds study {record.get('study')!r}, not {study.name!r}")
    return study, config_from_dict(study.Config, record["config"])


def load_run(run_dir: Path | str, study: Study | None = None) -> tuple[Study, StoredRun]:
    """``(study, StoredRun)`` from disk alone: config plus the tables of every done cell."""
    study, config = load_config(run_dir, study)
    store = RunStore(run_dir)
    metrics, scalars, hists, extra = store.read_tables(list(study.cells(config)))
    return study, StoredRun(
        config=config, metrics=metrics, probe_scalars=scalars, probe_histograms=hists, extra=extra,
        run_dir=Path(run_dir),
    )
