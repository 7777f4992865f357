"""Read a run directory back into the objects a study's ``claims``/``figures`` receive."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from normlab.lab.config import ConfigError, config_from_dict
from normlab.lab.spec import Cell, StoredRun, Study
from normlab.lab.store import SOURCE_KEY, RunDirError, RunStore


def load_config(run_dir: Path | str, study: Study | None = None) -> tuple[Study, Any]:
    """The study (found by the name in ``config.json`` unless given) and its resolved config.

    ``config.json`` is the identity of the run: a value that does not fit the study's ``Config`` (say,
    edited by hand) is a :class:`RunDirError` naming the file and the field, never a guess.
    """
    store = RunStore(run_dir)
    record = store.read_config()
    if study is None:
        from normlab.studies import UnknownStudyError, study_of_run

        try:  # by name; a study run from a file is imported again from the file config.json recorded
            study = study_of_run(record["study"], record.get(SOURCE_KEY))
        except UnknownStudyError as e:
            raise RunDirError(f"{run_dir}: {e}") from None
    elif record["study"] != study.name:
        raise RunDirError(f"{run_dir} holds study {record['study']!r}, not {study.name!r}")
    try:
        return study, config_from_dict(study.Config, record["config"])
    except (ConfigError, TypeError, ValueError) as e:
        raise RunDirError(f"{store.config_path}: {e}") from None


def study_cells(run_dir: Path | str, study: Study, config: Any) -> list[Cell]:
    """``study.cells(config)``; a config that loads but that the study rejects names ``config.json``."""
    try:
        return list(study.cells(config))
    except (TypeError, ValueError) as e:
        raise RunDirError(f"{RunStore(run_dir).config_path}: {study.name}: {e}") from None


def load_run(run_dir: Path | str, study: Study | None = None) -> tuple[Study, StoredRun]:
    """``(study, StoredRun)`` from disk alone: config plus the tables of every done cell.

    A damaged cell is a :class:`~normlab.lab.store.DamagedCellError` naming it.
    """
    study, config = load_config(run_dir, study)
    store = RunStore(run_dir)
    metrics, scalars, hists, extra = store.read_tables(study_cells(run_dir, study, config))
    return study, StoredRun(
        config=config, metrics=metrics, probe_scalars=scalars, probe_histograms=hists, extra=extra,
        run_dir=Path(run_dir),
    )
