"""Every study normlab knows, found by auto-discovery.

Each package (or module) in this package whose namespace holds a subclass of
:class:`normlab.engine.spec.Study` (with a ``name``) defined inside it contributes one instance to the
registry, keyed by ``Study.name``. A built-in study is a package ``studies/<name>/``: ``config.py`` (its
``Config`` and constants), ``model.py`` (what a cell trains), ``claims.py``, ``figures.py`` and ``study.py``
(the :class:`Study` that wires them), re-exported by its ``__init__``. To add a study, add a package:
nothing here needs editing. Installed packages add studies through the ``normlab.studies`` entry-point group,
and ``normlab run path/to/my_study.py`` runs a study file from anywhere (:mod:`normlab.studies._sources`).
A module or entry point that fails to load does not hide the others: its error is kept in
:func:`discovery_errors` and shown by ``normlab list``.
"""

from __future__ import annotations

import importlib
import pkgutil
import traceback
from pathlib import Path

from normlab.engine.spec import Study
from normlab.engine.store import SOURCE_KEY, RunDirError, RunStore
from normlab.studies._sources import StudyFileError, entry_point_studies, load_study_file

_REGISTRY: dict[str, Study] | None = None
_ERRORS: dict[str, str] = {}


class UnknownStudyError(KeyError):
    """No study has that name (the message lists the valid names)."""

    def __str__(self) -> str:  # KeyError quotes its message; this one reads as a sentence
        return str(self.args[0])


def _discover() -> dict[str, Study]:
    found: dict[str, Study] = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        modname = f"{__name__}.{info.name}"
        try:
            module = importlib.import_module(modname)
        except Exception:  # keep the other studies usable; report the broken one
            _ERRORS[modname] = traceback.format_exc(limit=3)
            continue
        for obj in vars(module).values():
            if (
                isinstance(obj, type)
                and issubclass(obj, Study)
                and obj is not Study
                and (obj.__module__ == modname or obj.__module__.startswith(modname + "."))
                and isinstance(getattr(obj, "name", None), str)
            ):
                if obj.name in found:
                    _ERRORS[modname] = f"duplicate study name {obj.name!r} (also in {type(found[obj.name]).__module__})"
                    continue
                found[obj.name] = obj()
    found.update(entry_point_studies(found, _ERRORS))  # a clash with a built-in is an error, not an override
    return dict(sorted(found.items()))


def registry() -> dict[str, Study]:
    """``{name: Study instance}`` for every discovered study, sorted by name."""
    global _REGISTRY
    if _REGISTRY is None:
        _REGISTRY = _discover()
    return _REGISTRY


def discovery_errors() -> dict[str, str]:
    """``{module or entry point: error}`` for study modules and entry points that failed to load."""
    registry()
    return dict(_ERRORS)


def get_study(name: str) -> Study:
    """The study called ``name``; an error listing the valid names otherwise."""
    studies = registry()
    if name not in studies:
        valid = ", ".join(studies) or "(none found)"
        raise UnknownStudyError(f"unknown study {name!r}; valid studies: {valid}")
    return studies[name]


def study_of_run(name: str, source: dict | None) -> Study:
    """The study a run directory recorded: from the file in ``source`` (``study_source``) if it names one
    (even when a registered study has the same name: a user's edited copy of a built-in), else by ``name``.

    A file study whose file is gone or no longer defines ``name`` is an :class:`UnknownStudyError` saying
    so and how to point the run at the file's new place.
    """
    if not (isinstance(source, dict) and isinstance(source.get("file"), str)):
        return get_study(name)
    file = source["file"]
    hint = "if it moved, resume the run with `normlab run NEW_PATH --out RUN_DIR` (same settings) to record it"
    try:
        study = load_study_file(file)
    except StudyFileError as e:
        raise UnknownStudyError(f"study {name!r} was loaded from {file}: {e}; {hint}") from None
    if study.name != name:
        raise UnknownStudyError(f"study file {file} now defines study {study.name!r}, not {name!r}; {hint}")
    return study


def study_of_run_dir(run_dir: Path | str) -> Study:
    """The study that ``run_dir`` holds (by the name and source its ``config.json`` recorded); a
    :class:`~normlab.engine.store.RunDirError` naming the directory when it cannot be found."""
    record = RunStore(run_dir).read_config()
    try:
        return study_of_run(record["study"], record.get(SOURCE_KEY))
    except UnknownStudyError as e:
        raise RunDirError(f"{run_dir}: {e}") from None


__all__ = ["StudyFileError", "UnknownStudyError", "discovery_errors", "get_study", "load_study_file", "registry",
           "study_of_run",
           "study_of_run_dir"]
