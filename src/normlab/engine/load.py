"""Read a run directory back into the objects a study's ``claims``/``figures`` receive."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from normlab.engine.config import ConfigError, config_from_dict
from normlab.engine.spec import Cell, StoredRun, Study
from normlab.engine.store import RunDirError, RunStore


def load_config(run_dir: Path | str, study: Study) -> Any:
    """The resolved config of ``study`` that ``run_dir`` was run with.

    ``config.json`` is the identity of the run: another study's directory, or a value that does not fit the
    study's ``Config`` (say, edited by hand) is a :class:`RunDirError` naming the file and the field, never
    a guess. Which study a directory holds is the caller's to find (``normlab report`` looks it up by the
    name and source ``config.json`` records: :func:`normlab.studies.study_of_run`).
    """
    store = RunStore(run_dir)
    record = store.read_config()
    if record["study"] != study.name:
        raise RunDirError(f"{run_dir} holds study {record['study']!r}, not {study.name!r}")
    try:
        config = config_from_dict(study.Config, record["config"])
        study.check_config(config)
    except (ConfigError, TypeError, ValueError) as e:
        raise RunDirError(f"{store.config_path}: {e}") from None
    return config


def study_cells(run_dir: Path | str, study: Study, config: Any) -> list[Cell]:
    """``study.cells(config)``; a config that loads but that the study rejects names ``config.json``."""
    try:
        return list(study.cells(config))
    except (TypeError, ValueError) as e:
        raise RunDirError(f"{RunStore(run_dir).config_path}: {study.name}: {e}") from None


def load_run(run_dir: Path | str, study: Study) -> StoredRun:
    """``StoredRun`` from disk alone: ``study``'s config plus the tables of every done cell.

    A damaged cell is a :class:`~normlab.engine.store.DamagedCellError` naming it.
    """
    config = load_config(run_dir, study)
    store = RunStore(run_dir)
    metrics, scalars, hists, extra = store.read_tables(study_cells(run_dir, study, config))
    return StoredRun(
        config=config, metrics=metrics, probe_scalars=scalars, probe_histograms=hists, extra=extra,
        run_dir=Path(run_dir),
    )
