"""The run directory: the single source of truth of a study run.

Layout::

    RUN_DIR/
      .lock                  held (flock) by the process running or reporting into RUN_DIR
      config.json            {"study": name, "config": {...resolved fields...}}
                             (+ "study_source": {"file": path} for a study run from a file, or
                             {"entry_point": ...} for an installed one)
      env.json               versions, threads, git state (of the first run into this directory)
      cells/<cell.key>/      metrics.parquet, probe_scalars.parquet, probe_histograms.parquet,
                             <extra>.parquet, tb/ (TensorBoard events), DONE (written last)
      figures/*.png|svg, summary.md, report.html, claims.json, key_numbers.json

Every file goes through :mod:`normlab.atomic` (temp file + fsync + ``os.replace`` + directory fsync), so
a kill -9 leaves either the old file or the new one, never half of one, and a full disk or read-only
directory raises :class:`~normlab.atomic.WriteError` naming the file.

A cell counts as done only when its ``DONE`` marker exists *and* its files check out: ``DONE`` names the
cell and records the size of every file the cell stored, and each Parquet file's footer and the metrics
table's columns are checked on read. A damaged cell is named by :class:`DamagedCellError` when read, and
is wiped and rerun by the next ``normlab run`` into the directory, like a cell without ``DONE``.

One process at a time uses a run directory: :meth:`RunStore.lock` takes an exclusive ``flock`` on
``.lock``, which the kernel drops when the process exits, however it dies (no stale locks). Worker
processes of ``--jobs`` write cells while their parent holds the lock; Dask workers (``--executor dask``)
write nothing here: they return each cell to the process holding the lock, which stores it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from normlab.atomic import (
    FILE_MODE,
    TEMP_SUFFIX,
    WriteError,
    atomic_write_json,
    atomic_write_parquet,
    make_dirs,
)
from normlab.engine.spec import METRIC_COLUMNS, Cell, CellResult, Claim

CONFIG_FILE = "config.json"
SOURCE_KEY = "study_source"  # in config.json: where a study from outside normlab came from (not identity)
ENV_FILE = "env.json"
CELLS_DIR = "cells"
DONE_FILE = "DONE"
LOCK_FILE = ".lock"
CLAIMS_FILE = "claims.json"
KEY_NUMBERS_FILE = "key_numbers.json"
RESERVED_TABLES = ("metrics", "probe_scalars", "probe_histograms")

# Run directories this process holds the lock of (resolved path -> depth): run_study builds the report
# while it holds the lock, and build_report takes it too.
_HELD: dict[str, int] = {}


class RunDirError(RuntimeError):
    """The run directory cannot be used as asked (different config, not a run directory, ...)."""


class RunDirBusyError(RunDirError):
    """Another process holds the run directory's lock."""


class DamagedCellError(RunDirError):
    """A cell marked done whose files do not check out (truncated, missing, wrong columns, bad DONE)."""

    def __init__(self, message: str, key: str):
        super().__init__(message)
        self.key = key


def cell_to_json(cell: Cell) -> dict[str, Any]:
    return {"arm": cell.arm, "seeds": list(cell.seeds), "params": [[k, v] for k, v in cell.params]}


def cell_from_json(d: dict[str, Any]) -> Cell:
    return Cell(arm=d["arm"], seeds=tuple(d["seeds"]), params=tuple((k, v) for k, v in d["params"]))


def _as_json(obj: Any) -> Any:
    """``obj`` as it reads back from JSON (tuples become lists): what a DONE marker is compared with."""
    return json.loads(json.dumps(obj, default=lambda o: o.item() if hasattr(o, "item") else list(o)))


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _numeric(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or pa.types.is_floating(t)


def _stringlike(t: pa.DataType) -> bool:
    if pa.types.is_dictionary(t):
        t = t.value_type
    return pa.types.is_string(t) or pa.types.is_large_string(t)


# What the claims compute with: the column types a non-empty metrics table must have.
_METRIC_TYPES = {
    "seed": ("numbers", _numeric),
    "step": ("numbers", _numeric),
    "metric": ("strings", _stringlike),
    "value": ("numbers", lambda t: _numeric(t) or pa.types.is_boolean(t) or pa.types.is_null(t)),
}


def parquet_problem(path: Path, *, metrics: bool = False) -> str | None:
    """Why ``path`` is not a readable Parquet file (or, with ``metrics``, not a metrics table); else None.

    Reads the footer only (a truncated file has none), and for a metrics table its schema.
    """
    try:
        meta = pq.ParquetFile(path)
        schema = meta.schema_arrow
    except Exception as e:  # pyarrow raises ArrowInvalid, OSError, ... for a damaged file
        return f"{path.name} is unreadable ({_first_line(e)})"
    if not metrics:
        return None
    missing = [c for c in METRIC_COLUMNS if c not in schema.names]
    if missing:
        return f"{path.name} lacks column(s) {missing} (expected {list(METRIC_COLUMNS)})"
    if meta.metadata.num_rows:
        for name, (what, ok) in _METRIC_TYPES.items():
            t = schema.field(name).type
            if not ok(t):
                return f"{path.name}: column {name!r} holds {t}, expected {what}"
    return None


class RunStore:
    """Reads and writes one run directory."""

    def __init__(self, run_dir: Path | str):
        self.run_dir = Path(run_dir)

    # -- lock -----------------------------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the directory's exclusive lock for the ``with`` block (re-entrant within a process).

        Another process holding it gives :class:`RunDirBusyError` at once (no waiting), without writing
        anything. The directory is created if needed, after checking that it may become a run directory.
        """
        self._check_usable()
        make_dirs(self.run_dir)
        key = os.path.realpath(self.run_dir)
        if key in _HELD:
            _HELD[key] += 1
            try:
                yield
            finally:
                _HELD[key] -= 1
            return
        path = self.run_dir / LOCK_FILE
        try:
            # Read-only is enough for flock, and opening an existing lock file needs no write permission.
            fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
        except OSError as e:
            raise WriteError(path, e) from e
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise RunDirBusyError(f"another normlab run is using {self.run_dir}") from None
            _HELD[key] = 1
            try:
                yield
            finally:
                del _HELD[key]
        finally:
            os.close(fd)  # releases the lock

    def _check_usable(self) -> None:
        """A clear error for an ``--out`` that is a file, or a foreign non-empty directory."""
        if self.run_dir.exists() and not self.run_dir.is_dir():
            raise RunDirError(f"{self.run_dir} is a file, not a directory; choose another --out directory")
        if self.run_dir.is_dir() and not self.config_path.exists():
            # what a run leaves when it fails before config.json (a full disk, say) does not count
            if any(p.name not in (LOCK_FILE, ENV_FILE) and not p.name.endswith(TEMP_SUFFIX)
                   for p in self.run_dir.iterdir()):
                raise RunDirError(f"{self.run_dir} exists, is not empty and is not a normlab run directory")

    # -- config and env -------------------------------------------------------------------------
    @property
    def config_path(self) -> Path:
        return self.run_dir / CONFIG_FILE

    def read_config(self) -> dict[str, Any]:
        """``{"study": name, "config": {...}}``; a clear error if this is not a run directory."""
        if not self.config_path.is_file():
            raise RunDirError(f"{self.run_dir}: not a normlab run directory (no {CONFIG_FILE})")
        try:
            record = json.loads(self.config_path.read_text())
        except (OSError, UnicodeDecodeError, ValueError) as e:
            raise RunDirError(f"{self.config_path}: unreadable ({_first_line(e)})") from None
        if (not isinstance(record, dict) or not isinstance(record.get("study"), str)
                or not isinstance(record.get("config"), dict)):
            raise RunDirError(f"{self.config_path}: expected {{\"study\": name, \"config\": {{...}}}}, "
                              f"got {json.dumps(record)[:120]}")
        return record

    def read_env(self) -> dict[str, Any]:
        """``env.json`` (``{}`` if absent); a clear error if it is damaged."""
        path = self.run_dir / ENV_FILE
        if not path.is_file():
            return {}
        try:
            env = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, ValueError) as e:
            env, why = None, _first_line(e)
        else:
            why = "expected a JSON object"
        if not isinstance(env, dict):
            raise RunDirError(f"{path}: damaged ({why}); {self._rerun_hint()} rewrites it")
        return env

    def init(self, study_name: str, config: dict[str, Any], env: dict[str, Any],
             source: dict[str, str] | None = None) -> bool:
        """Create the directory, or check that an existing one holds the same study and config.

        ``source`` (where a study from outside normlab came from) is recorded but is not part of the
        run's identity: resuming from a moved study file records the new place. Returns True when the
        directory already held this run (a resume). Call it holding :meth:`lock`.
        """
        self._check_usable()
        record: dict[str, Any] = {"study": study_name, "config": config, **({SOURCE_KEY: source} if source else {})}
        if self.config_path.exists():
            old = self.read_config()
            if old["study"] != study_name:
                raise RunDirError(
                    f"{self.run_dir} holds a run of study {old['study']!r}, not {study_name!r}; "
                    "choose another --out directory"
                )
            if old["config"] != config:
                diffs = sorted(k for k in set(config) | set(old["config"]) if config.get(k) != old["config"].get(k))
                detail = ", ".join(f"{k}: {old['config'].get(k)!r} -> {config.get(k)!r}" for k in diffs)
                raise RunDirError(
                    f"{self.run_dir} was created with a different config ({detail}); resume with the same "
                    "settings or choose another --out directory"
                )
            if source and old.get(SOURCE_KEY) != source:
                atomic_write_json(self.config_path, {**old, SOURCE_KEY: source})
            self.remove_stale_temp_files()
            try:
                self.read_env()
            except RunDirError:  # damaged: what it recorded is lost; record this run's environment instead
                atomic_write_json(self.run_dir / ENV_FILE, env)
            return True
        make_dirs(self.run_dir)
        atomic_write_json(self.run_dir / ENV_FILE, env)
        atomic_write_json(self.config_path, record)  # last: its presence marks a run directory
        return False

    def remove_stale_temp_files(self) -> None:
        """Temp files of a write that a kill interrupted (cell directories are wiped on rerun anyway).
        Only while holding :meth:`lock`: otherwise they may be another process's writes in progress."""
        for d in (self.run_dir, self.run_dir / "figures"):
            if d.is_dir():
                for p in d.glob(f".*{TEMP_SUFFIX}"):
                    p.unlink(missing_ok=True)

    def _rerun_hint(self) -> str:
        try:
            record = self.read_config()
            source = record.get(SOURCE_KEY)
            study = source.get("file", record["study"]) if isinstance(source, dict) else record["study"]
        except RunDirError:
            study = "STUDY"
        return f"`normlab run {study} --out {self.run_dir}` with the settings of this run"

    # -- cells ----------------------------------------------------------------------------------
    def cell_dir(self, cell: Cell) -> Path:
        return self.run_dir / CELLS_DIR / cell.key

    def is_marked_done(self, cell: Cell) -> bool:
        """The cell has a DONE marker (its files may still be damaged: see :meth:`damage`)."""
        return (self.cell_dir(cell) / DONE_FILE).is_file()

    def is_done(self, cell: Cell) -> bool:
        """The cell has a DONE marker and its files check out."""
        return self.is_marked_done(cell) and self.damage(cell) is None

    def damage(self, cell: Cell) -> str | None:
        """What is wrong with a cell marked done (None: nothing). Cheap: sizes, footers and schemas."""
        d = self.cell_dir(cell)
        record, problem = self._read_marker(d)
        if problem:
            return problem
        if _as_json({k: record.get(k) for k in ("arm", "seeds", "params")}) != _as_json(cell_to_json(cell)):
            return f"{DONE_FILE} names another cell ({record['arm']!r}, seeds {record['seeds']})"
        if not (d / "metrics.parquet").is_file():
            return "metrics.parquet is missing"
        for p in sorted(d.glob("*.parquet")):
            problem = parquet_problem(p, metrics=p.stem == "metrics")
            if problem:
                return problem
        files = record.get("files")
        for name, size in (files if isinstance(files, dict) else {}).items():  # older markers have no sizes
            p = d / name
            if not p.is_file():
                return f"{name} is missing"
            if p.stat().st_size != size:
                return f"{name} has {p.stat().st_size} bytes, not the {size} it was stored with"
        return None

    @staticmethod
    def _read_marker(d: Path) -> tuple[dict[str, Any], str | None]:
        try:
            record = json.loads((d / DONE_FILE).read_text())
        except (OSError, UnicodeDecodeError, ValueError) as e:
            return {}, f"{DONE_FILE} is unreadable ({_first_line(e)})"
        try:
            cell_from_json(record).key  # noqa: B018  (it must describe a cell)
        except (TypeError, ValueError, KeyError, AttributeError):
            return {}, f"{DONE_FILE} is not a cell record"
        return record, None

    def damaged(self, key: str, problem: str) -> DamagedCellError:
        return DamagedCellError(
            f"{self.run_dir}: cell {key} is damaged: {problem}; {self._rerun_hint()} redoes it", key)

    def check_cell(self, cell: Cell) -> None:
        """:class:`DamagedCellError` naming the cell if it is marked done but damaged."""
        if self.is_marked_done(cell):
            problem = self.damage(cell)
            if problem:
                raise self.damaged(cell.key, problem)

    def prepare_cell(self, cell: Cell) -> Path:
        """An empty directory for a cell about to run (leftovers of an interrupted attempt are wiped)."""
        d = self.cell_dir(cell)
        if d.exists():
            try:
                shutil.rmtree(d)
            except OSError as e:
                raise WriteError(d, e) from e
        return make_dirs(d)

    def write_cell(self, cell: Cell, result: CellResult, seconds: float | None = None) -> None:
        """Store a cell's tables, then its DONE marker (so a half-written cell is never 'done').

        The marker records the size of every file in the cell directory, and the stored metrics table
        is checked as a reader will check it: a cell stored without error reads back as intact.
        """
        d = self.cell_dir(cell)
        for name in result.extra:
            if name in RESERVED_TABLES or not name.replace("_", "").isalnum():
                raise ValueError(f"CellResult.extra: table name {name!r} is reserved or not alphanumeric/_")
        atomic_write_parquet(d / "metrics.parquet", result.metrics)
        problem = parquet_problem(d / "metrics.parquet", metrics=True)
        if problem:
            raise ValueError(f"cell {cell.arm!r}: the metrics table cannot be stored as it is: {problem}")
        if result.probe_scalars is not None and len(result.probe_scalars):
            atomic_write_parquet(d / "probe_scalars.parquet", result.probe_scalars)
        if result.probe_histograms is not None and len(result.probe_histograms):
            atomic_write_parquet(d / "probe_histograms.parquet", result.probe_histograms)
        for name, df in result.extra.items():
            atomic_write_parquet(d / f"{name}.parquet", df)
        files = {p.relative_to(d).as_posix(): p.stat().st_size for p in sorted(d.rglob("*"))
                 if p.is_file() and p.name != DONE_FILE and not p.name.endswith(TEMP_SUFFIX)}
        atomic_write_json(d / DONE_FILE, {**cell_to_json(cell), "seconds": seconds, "files": files})

    def done_cells(self) -> list[Cell]:
        """Cells with a DONE marker, in a stable order (sorted by key); a damaged marker is an error."""
        root = self.run_dir / CELLS_DIR
        if not root.is_dir():
            return []
        out = []
        for d in sorted(root.iterdir()):
            if (d / DONE_FILE).is_file():
                record, problem = self._read_marker(d)
                cell = None if problem else cell_from_json(record)
                if cell is not None and cell.key != d.name:
                    problem = f"{DONE_FILE} names another cell ({cell.arm!r}, seeds {list(cell.seeds)})"
                if problem:
                    raise self.damaged(d.name, problem)
                out.append(cell)
        return out

    def check_cells(self) -> None:
        """:class:`DamagedCellError` for the first damaged cell among those marked done."""
        for cell in self.done_cells():
            self.check_cell(cell)

    def read_tables(self, cells: list[Cell] | None = None) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame,
                                                                    dict[str, pd.DataFrame]]:
        """Metrics, probe scalars, probe histograms and extra tables of done cells, concatenated.

        Cells without DONE are left out (a run in progress); a damaged one is a
        :class:`DamagedCellError`. The engine adds ``arm`` and one column per ``Cell.params`` key to every
        table.
        """
        cells = self.done_cells() if cells is None else [c for c in cells if self.is_marked_done(c)]
        metrics, scalars, hists, extra = [], [], [], {}
        for cell in cells:
            self.check_cell(cell)
            d = self.cell_dir(cell)
            for path in sorted(d.glob("*.parquet")):
                try:
                    df = pd.read_parquet(path)
                except Exception as e:  # damage past the footer (the cheap check) shows up here
                    raise self.damaged(cell.key, f"{path.name} is unreadable ({_first_line(e)})") from None
                df.insert(0, "arm", cell.arm)
                for k, v in cell.params:
                    df[k] = v
                if path.stem == "metrics":
                    metrics.append(df)
                elif path.stem == "probe_scalars":
                    scalars.append(df)
                elif path.stem == "probe_histograms":
                    hists.append(df)
                else:
                    extra.setdefault(path.stem, []).append(df)

        def cat(frames: list[pd.DataFrame], columns: tuple[str, ...] = ()) -> pd.DataFrame:
            if frames:
                return pd.concat(frames, ignore_index=True)
            return pd.DataFrame(columns=["arm", *columns])

        return (
            cat(metrics, METRIC_COLUMNS),
            cat(scalars),
            cat(hists),
            {k: cat(v) for k, v in extra.items()},
        )

    # -- the report's files that `normlab show` reads -------------------------------------------
    def _read_report_json(self, name: str) -> Any:
        path = self.run_dir / name
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, ValueError) as e:
            raise self._damaged_report_file(name, _first_line(e)) from None

    def _damaged_report_file(self, name: str, why: str) -> RunDirError:
        return RunDirError(f"{self.run_dir / name}: damaged ({why}); rebuild it with `normlab report {self.run_dir}`")

    def read_claims(self) -> list[dict[str, Any]] | None:
        """The claims of ``claims.json``, each a dict of :class:`Claim` fields (None: no report yet)."""
        doc = self._read_report_json(CLAIMS_FILE)
        if doc is None:
            return None
        claims = doc.get("claims") if isinstance(doc, dict) else None
        if not isinstance(claims, list):
            raise self._damaged_report_file(CLAIMS_FILE, 'expected {"claims": [...]}')
        for i, c in enumerate(claims):
            try:
                ci = c.get("ci")
                if ci is not None and (not isinstance(ci, list) or len(ci) != 2 or not all(x is None or _is_number(x) for x in ci)):
                    raise ValueError(f"ci: expected [lo, hi], got {ci!r}")
                for k in ("value", "p_value", "effect_size", "n"):
                    if c.get(k) is not None and not _is_number(c[k]):
                        raise ValueError(f"{k}: expected a number, got {c[k]!r}")
                Claim(**{**c, "ci": None})
            except (TypeError, ValueError, AttributeError) as e:
                raise self._damaged_report_file(CLAIMS_FILE, f"claim {i}: {_first_line(e)}") from None
        return claims

    def read_claims_preset(self) -> tuple[str | None, bool]:
        """``(preset line, smoke test?)`` that ``claims.json`` records (``(None, False)`` when absent)."""
        doc = self._read_report_json(CLAIMS_FILE)
        if not isinstance(doc, dict):
            return None, False
        line = doc.get("preset_line")
        return (line if isinstance(line, str) else None), doc.get("smoke_test") is True

    def read_key_numbers(self) -> list[dict[str, Any]]:
        """The rows of ``key_numbers.json`` (``[]`` if absent): ``"table": "key"`` the report's key numbers,
        ``"final step"`` every metric at its last step per arm; each with its ``summary`` named."""
        rows = self._read_report_json(KEY_NUMBERS_FILE)
        if rows is None:
            return []
        need = {"table", "quantity", "arm", "estimate", "lo", "hi", "n", "summary"}
        old = {"metric", "step", "mean", "lo", "hi", "n"}  # the rows written before key numbers named their summary
        if isinstance(rows, list) and rows and all(isinstance(r, dict) and old <= set(r) for r in rows):
            raise RunDirError(f"{self.run_dir / KEY_NUMBERS_FILE}: written by an older normlab (unnamed summaries); "
                              f"rebuild it with `normlab report {self.run_dir}`")
        if not isinstance(rows, list) or not all(
                isinstance(r, dict) and need <= set(r) and r["table"] in ("key", "final step")
                and all(r[k] is None or _is_number(r[k]) for k in ("estimate", "lo", "hi")) for r in rows):
            raise self._damaged_report_file(KEY_NUMBERS_FILE, f"expected rows with {sorted(need)}, numbers or null")
        return rows


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)
