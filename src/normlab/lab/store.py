"""The run directory: the single source of truth of a study run.

Layout::

    RUN_DIR/
      config.json            {"study": name, "config": {...resolved fields...}}
      env.json               versions, threads, git state (of the first run into this directory)
      cells/<cell.key>/      metrics.parquet, probe_scalars.parquet, probe_histograms.parquet,
                             <extra>.parquet, tb/ (TensorBoard events), DONE (written last)
      figures/*.png|svg, summary.md, report.html, claims.json

Every file is written to a temporary name in the same directory and moved into place with
``os.replace`` (atomic on POSIX), so a kill -9 leaves either the old file or the new one, never half of
one. A cell counts as done only when its ``DONE`` marker exists; a cell directory without it is wiped and
rerun on resume.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

from normlab.lab.spec import METRIC_COLUMNS, Cell, CellResult

CONFIG_FILE = "config.json"
ENV_FILE = "env.json"
CELLS_DIR = "cells"
DONE_FILE = "DONE"


def _default_file_mode() -> int:
    """0o666 minus the process umask: what ``open()`` would give (mkstemp alone gives 0o600)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


_FILE_MODE = _default_file_mode()


class RunDirError(RuntimeError):
    """The run directory cannot be used as asked (different config, not a run directory, ...)."""


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temp file in the same directory + ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, _FILE_MODE)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(o: Any) -> Any:
    if hasattr(o, "item"):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, (set, frozenset, tuple)):
        return list(o)
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def atomic_write_parquet(path: Path, df: pd.DataFrame) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.fchmod(fd, _FILE_MODE)
    os.close(fd)
    try:
        df.to_parquet(tmp, index=False)
        with open(tmp, "rb") as f:  # on disk before the rename, as for the other writers
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def cell_to_json(cell: Cell) -> dict[str, Any]:
    return {"arm": cell.arm, "seeds": list(cell.seeds), "params": [[k, v] for k, v in cell.params]}


def cell_from_json(d: dict[str, Any]) -> Cell:
    return Cell(arm=d["arm"], seeds=tuple(d["seeds"]), params=tuple((k, v) for k, v in d["params"]))


class RunStore:
    """Reads and writes one run directory."""

    def __init__(self, run_dir: Path | str):
        self.run_dir = Path(run_dir)

    # -- config ---------------------------------------------------------------------------------
    @property
    def config_path(self) -> Path:
        return self.run_dir / CONFIG_FILE

    def read_config(self) -> dict[str, Any]:
        """``{"study": name, "config": {...}}``; a clear error if this is not a run directory."""
        if not self.config_path.is_file():
            raise RunDirError(f"{self.run_dir}: not a normlab run directory (no {CONFIG_FILE})")
        try:
            return json.loads(self.config_path.read_text())
        except json.JSONDecodeError as e:
            raise RunDirError(f"{self.config_path}: unreadable ({e})") from None

    def init(self, study_name: str, config: dict[str, Any], env: dict[str, Any]) -> bool:
        """Create the directory, or check that an existing one holds the same study and config.

        Returns True when the directory already held this run (a resume).
        """
        record = {"study": study_name, "config": config}
        if self.config_path.exists():
            old = self.read_config()
            if old.get("study") != study_name:
                raise RunDirError(
                    f"{self.run_dir} holds a run of study {old.get('study')!r}, not {study_name!r}; "
                    "choose another --out directory"
                )
            if old.get("config") != config:
                diffs = sorted(
                    k for k in set(config) | set(old.get("config", {}))
                    if config.get(k) != old.get("config", {}).get(k)
                )
                detail = ", ".join(f"{k}: {old['config'].get(k)!r} -> {config.get(k)!r}" for k in diffs)
                raise RunDirError(
                    f"{self.run_dir} was created with a different config ({detail}); resume with the same "
                    "settings or choose another --out directory"
                )
            self._remove_stale_temp_files()
            return True
        if self.run_dir.exists() and any(self.run_dir.iterdir()):
            raise RunDirError(f"{self.run_dir} exists, is not empty and is not a normlab run directory")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.run_dir / ENV_FILE, env)
        atomic_write_json(self.config_path, record)  # last: its presence marks a run directory
        return False

    def _remove_stale_temp_files(self) -> None:
        """Temp files of a write that a kill interrupted (cell directories are wiped on rerun anyway)."""
        for d in (self.run_dir, self.run_dir / "figures"):
            if d.is_dir():
                for p in d.glob(".*.tmp"):
                    p.unlink(missing_ok=True)

    # -- cells ----------------------------------------------------------------------------------
    def cell_dir(self, cell: Cell) -> Path:
        return self.run_dir / CELLS_DIR / cell.key

    def is_done(self, cell: Cell) -> bool:
        return (self.cell_dir(cell) / DONE_FILE).is_file()

    def prepare_cell(self, cell: Cell) -> Path:
        """An empty directory for a cell about to run (leftovers of an interrupted attempt are wiped)."""
        d = self.cell_dir(cell)
        if d.exists():
            shutil.rmtree(d)
        d.mkdir(parents=True)
        return d

    def write_cell(self, cell: Cell, result: CellResult, seconds: float | None = None) -> None:
        """Store a cell's tables, then its DONE marker (so a half-written cell is never 'done')."""
        d = self.cell_dir(cell)
        atomic_write_parquet(d / "metrics.parquet", result.metrics)
        if result.probe_scalars is not None and len(result.probe_scalars):
            atomic_write_parquet(d / "probe_scalars.parquet", result.probe_scalars)
        if result.probe_histograms is not None and len(result.probe_histograms):
            atomic_write_parquet(d / "probe_histograms.parquet", result.probe_histograms)
        for name, df in result.extra.items():
            if name in ("metrics", "probe_scalars", "probe_histograms") or not name.replace("_", "").isalnum():
                raise ValueError(f"CellResult.extra: table name {name!r} is reserved or not alphanumeric/_")
            atomic_write_parquet(d / f"{name}.parquet", df)
        atomic_write_json(d / DONE_FILE, {**cell_to_json(cell), "seconds": seconds})

    def done_cells(self) -> list[Cell]:
        """Cells with a DONE marker, in a stable order (sorted by key)."""
        root = self.run_dir / CELLS_DIR
        if not root.is_dir():
            return []
        out = []
        for d in sorted(root.iterdir()):
            marker = d / DONE_FILE
            if marker.is_file():
                out.append(cell_from_json(json.loads(marker.read_text())))
        return out

    def read_tables(self, cells: list[Cell] | None = None) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame,
                                                                    dict[str, pd.DataFrame]]:
        """Metrics, probe scalars, probe histograms and extra tables of done cells, concatenated.

        The engine adds ``arm`` and one column per ``Cell.params`` key to every table.
        """
        cells = self.done_cells() if cells is None else [c for c in cells if self.is_done(c)]
        metrics, scalars, hists, extra = [], [], [], {}
        for cell in cells:
            d = self.cell_dir(cell)
            for path in sorted(d.glob("*.parquet")):
                df = pd.read_parquet(path)
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
