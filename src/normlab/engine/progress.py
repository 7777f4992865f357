"""Progress for long work: rich bars on a terminal, a few plain lines otherwise, or nothing."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TextIO


class Progress:
    """Silent base: the runner calls these hooks; subclasses display them."""

    def start(self, total_cells: int, study: str) -> None: ...

    def start_cell(self, index: int, label: str, skipped: bool = False) -> None: ...

    def update(self, done: int, total: int) -> None: ...

    def end_cell(self, seconds: float) -> None: ...

    def message(self, text: str) -> None: ...

    def waiting(self, running: int, done: int, total: int, seconds: float) -> None:
        """No cell finished (or reported a step) for a while: ``running`` cells are still going, ``done`` of
        ``total`` are stored, ``seconds`` since the run began."""

    def close(self) -> None: ...


class PlainProgress(Progress):
    """One line per cell, plus a line at each quarter of a long cell (for logs and pipes)."""

    def __init__(self, stream: TextIO | None = None):
        self.stream = stream or sys.stderr
        self.total = 0
        self.index = 0
        self.label = ""
        self._last_quarter = -1

    def _print(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def start(self, total_cells: int, study: str) -> None:
        self.total = total_cells
        self._print(f"{study}: {total_cells} cells")

    def start_cell(self, index: int, label: str, skipped: bool = False) -> None:
        self.index, self.label, self._last_quarter = index, label, -1
        if skipped:
            self._print(f"[{index + 1}/{self.total}] {label}: done earlier, skipped")

    def update(self, done: int, total: int) -> None:
        quarter = int(4 * done / max(total, 1))
        if 0 < quarter < 4 and quarter != self._last_quarter:
            self._last_quarter = quarter
            self._print(f"[{self.index + 1}/{self.total}] {self.label}: {done}/{total}")

    def end_cell(self, seconds: float) -> None:
        self._print(f"[{self.index + 1}/{self.total}] {self.label}: done in {seconds:.1f}s")

    def message(self, text: str) -> None:
        self._print(text)

    def waiting(self, running: int, done: int, total: int, seconds: float) -> None:
        minutes, secs = divmod(int(seconds), 60)
        self._print(f"... {running} cell(s) running, {done}/{total} done, {minutes}m{secs:02d}s elapsed")


class RichProgress(Progress):
    """An overall bar over cells and a bar for the steps of the current cell."""

    def __init__(self) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
        from rich.progress import Progress as RP

        self._rp = RP(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            transient=False,
        )
        self._overall: Any = None
        self._cell: Any = None

    def start(self, total_cells: int, study: str) -> None:
        self._rp.start()
        self._overall = self._rp.add_task(f"{study}", total=total_cells)
        self._cell = self._rp.add_task("", total=1, visible=False)

    def start_cell(self, index: int, label: str, skipped: bool = False) -> None:
        self._rp.update(self._cell, description=f"  {label}", completed=0, total=1, visible=not skipped)
        if skipped:
            self._rp.advance(self._overall)

    def update(self, done: int, total: int) -> None:
        self._rp.update(self._cell, completed=done, total=total)

    def end_cell(self, seconds: float) -> None:
        self._rp.advance(self._overall)

    def message(self, text: str) -> None:
        self._rp.console.print(text)

    def close(self) -> None:
        self._rp.stop()


def make_progress(mode: str = "auto") -> Progress:
    """``"auto"``: rich on a terminal, plain lines otherwise; ``"plain"``, ``"rich"`` or ``"none"``."""
    if mode == "none":
        return Progress()
    if mode == "plain":
        return PlainProgress()
    if mode == "rich" or (mode == "auto" and sys.stderr.isatty()):
        return RichProgress()
    if mode == "auto":
        return PlainProgress()
    raise ValueError(f"progress mode: expected 'auto', 'plain', 'rich' or 'none', got {mode!r}")


class Heartbeat:
    """Calls ``beat()`` from a daemon thread whenever ``every`` seconds pass without a :meth:`touch` (a cell
    run in this process that reports no steps: the run says it is alive). A context manager."""

    def __init__(self, every: float, beat: Callable[[], None]):
        self.every, self._beat = every, beat
        self._last = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="normlab-heartbeat", daemon=True)

    def touch(self) -> None:
        self._last = time.monotonic()

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            if time.monotonic() - self._last >= self.every:
                self._beat()
                self.touch()

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


class Timer:
    def __enter__(self) -> Timer:
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.t0
