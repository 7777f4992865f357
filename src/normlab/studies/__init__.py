"""Every study normlab knows, found by auto-discovery.

Each module in this package that defines a subclass of :class:`normlab.lab.spec.Study` (with a ``name``)
contributes one instance to the registry, keyed by ``Study.name``. To add a study, add a file: nothing
here needs editing. Installed packages add studies through the ``normlab.studies`` entry-point group,
and ``normlab run path/to/my_study.py`` runs a study file from anywhere (:mod:`normlab.studies._sources`).
A module or entry point that fails to load does not hide the others: its error is kept in
:func:`discovery_errors` and shown by ``normlab list``.
"""

from __future__ import annotations

import importlib
import pkgutil
import traceback

from normlab.lab.spec import Study
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
                and obj.__module__ == modname
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


__all__ = ["StudyFileError", "UnknownStudyError", "discovery_errors", "get_study", "load_study_file", "registry",
           "study_of_run"]
