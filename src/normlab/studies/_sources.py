"""Studies from outside this package: a user's ``.py`` file, and the ``normlab.studies`` entry points.

``normlab run path/to/my_study.py`` imports the file as a module of its own (a name derived from the
file's resolved path, so two files called ``my_study.py`` do not collide) and runs the one ``Study``
subclass it defines. The run directory records the file in ``config.json`` (``study_source``), so
``normlab report RUN_DIR`` imports it again.

An installed package contributes studies by declaring entry points in the ``normlab.studies`` group, each
naming a ``Study`` subclass (or instance), e.g. in ``pyproject.toml``::

    [project.entry-points."normlab.studies"]
    my-study = "my_package.my_study:MyStudy"
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
import traceback
from importlib import metadata
from pathlib import Path
from typing import Any

from normlab.engine.spec import Study

ENTRY_POINT_GROUP = "normlab.studies"


class StudyFileError(ValueError):
    """A study file that is missing, fails to import, or does not define exactly one study."""


def looks_like_a_file(arg: str) -> bool:
    """Whether a ``normlab run STUDY`` argument names a study file (``*.py``) rather than a study name."""
    return arg.endswith(".py")


def _is_study_class(obj: Any) -> bool:
    return (isinstance(obj, type) and issubclass(obj, Study) and obj is not Study
            and isinstance(getattr(obj, "name", None), str))


def _where(e: BaseException, path: Path) -> str:
    """``file:line`` of the deepest frame of ``e`` inside the study file (else the deepest frame)."""
    if isinstance(e, SyntaxError) and e.lineno:
        return f"{e.filename or path}:{e.lineno}"
    frames = traceback.extract_tb(e.__traceback__)
    inside = [f for f in frames if Path(f.filename).resolve() == path] or frames
    return f"{inside[-1].filename}:{inside[-1].lineno}" if inside else str(path)


def module_name_for(path: Path) -> str:
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:12]
    stem = "".join(c if c.isalnum() else "_" for c in path.stem)
    return f"normlab_user_study_{stem}_{digest}"


def load_study_file(file: str | Path) -> Study:
    """The study defined in ``file``: import it and instantiate its one ``Study`` subclass with a name.

    The instance's ``source`` is ``{"file": resolved path}``. Every failure is a :class:`StudyFileError`
    with a one-line message naming the file.
    """
    path = Path(file).expanduser()
    if not path.is_file():
        raise StudyFileError(f"study file {file}: no such file")
    path = path.resolve()
    name = module_name_for(path)
    # Always the file as it is now (an edited file in a long-lived process, as `normlab report` would see it).
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise StudyFileError(f"study file {file}: cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling (--jobs) look the module up by name
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        del sys.modules[name]
        raise StudyFileError(f"study file {file} failed to import: {type(e).__name__}: {e} "
                             f"(at {_where(e, path)})") from None
    classes = [obj for obj in vars(module).values() if _is_study_class(obj) and obj.__module__ == name]
    if len(classes) != 1:
        found = ", ".join(c.__name__ for c in classes)
        raise StudyFileError(
            f"study file {file}: expected exactly one Study subclass with a `name`, found "
            + (f"{len(classes)} ({found})" if classes else "none"))
    try:
        study = classes[0]()
    except Exception as e:
        raise StudyFileError(f"study file {file}: {classes[0].__name__}() failed: {type(e).__name__}: {e}") from None
    study.source = {"file": str(path)}
    return study


def entry_point_studies(taken: dict[str, Study], errors: dict[str, str]) -> dict[str, Study]:
    """``{name: Study}`` from the ``normlab.studies`` entry points of the installed distributions.

    A broken entry point (fails to load, is not a study, or reuses a name in ``taken`` or of another entry
    point) is recorded in ``errors`` under ``entry point NAME (VALUE)`` and skipped.
    """
    found: dict[str, Study] = {}
    for ep in sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: (e.name, e.value)):
        where = f"entry point {ep.name} ({ep.value})"
        try:
            obj = ep.load()
            study = obj() if _is_study_class(obj) else obj
        except Exception:  # keep the other studies usable; report the broken one
            errors[where] = traceback.format_exc(limit=3)
            continue
        if not isinstance(study, Study) or not isinstance(getattr(study, "name", None), str):
            errors[where] = f"TypeError: expected a Study subclass (or instance) with a `name`, got {obj!r:.100}"
            continue
        if study.name in taken or study.name in found:
            other = "a built-in study" if study.name in taken else "another entry point"
            errors[where] = f"duplicate study name {study.name!r} (also {other}); this one is not registered"
            continue
        dist = getattr(ep, "dist", None)
        study.source = {"entry_point": f"{ep.name} = {ep.value}",
                        **({"distribution": dist.name} if dist is not None else {})}
        found[study.name] = study
    return found


def describe_source(source: dict[str, str] | None) -> str:
    """``built-in``, ``file PATH`` or ``entry point NAME = VALUE (DIST)``."""
    if not source:
        return "built-in"
    if "file" in source:
        return f"file {source['file']}"
    dist = f" ({source['distribution']})" if source.get("distribution") else ""
    return f"entry point {source.get('entry_point', '?')}{dist}"
