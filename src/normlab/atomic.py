"""Atomic file writes: every file normlab writes appears whole or not at all.

:func:`atomic_write` writes to a temporary file in the target's directory, flushes and fsyncs it, moves it
over the target with ``os.replace`` (atomic on POSIX) and fsyncs the directory, so that after a kill -9 or
a power cut a reader finds the previous file or the new one, never half of one. On any error, the
temporary file is removed and the previous file is left as it was.

A file that cannot be written (full disk, read-only file system, no permission, a parent that is a file)
raises :class:`WriteError`, an ``OSError`` whose message names the path and the cause, so the command line
can print it as one line.

This module sits below everything else in normlab (nn, probe, lab and report all write through it) and
imports only the standard library; pandas is used only through the frame handed to it.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

TEMP_SUFFIX = ".tmp"  # temporary files are ".<name>.<random>.tmp" beside their target

# Errors of the file system itself (not of the caller's code): inside the ``with`` body of atomic_write
# only these become a WriteError, so a bug in the code producing the data keeps its own traceback.
_WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO, errno.EROFS, errno.EACCES,
                           errno.EPERM})

_REASONS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EFBIG: "file too large for the file system",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EISDIR: "it is a directory",
}


class WriteError(OSError):
    """normlab could not write ``path``; ``cause`` is the original ``OSError`` (``errno`` is copied)."""

    def __init__(self, path: str | os.PathLike, cause: OSError):
        super().__init__(cause.errno, cause.strerror or str(cause), str(path))
        self.path = Path(path)
        self.cause = cause

    def __str__(self) -> str:
        return f"cannot write {self.path}: {describe_os_error(self.cause, self.path)}"

    def __reduce__(self):  # pickles back through __init__ (worker processes send their errors to the parent)
        return (type(self), (str(self.path), self.cause))


def describe_os_error(e: OSError, path: str | os.PathLike | None = None) -> str:
    """The cause of an ``OSError`` in words; for a file standing where a directory should be, which one."""
    if e.errno in (errno.ENOTDIR, errno.EEXIST):
        here = Path(e.filename if e.filename is not None else path or ".")
        culprit = next((p for p in (here, *here.parents) if p.exists() and not p.is_dir()), None)
        return f"{culprit} is a file, not a directory" if culprit is not None else os.strerror(e.errno)
    return _REASONS.get(e.errno, e.strerror or str(e))


def _default_file_mode() -> int:
    """0o666 minus the process umask: what ``open()`` would give (mkstemp alone gives 0o600)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


FILE_MODE = _default_file_mode()


def make_dirs(path: str | os.PathLike) -> Path:
    """``mkdir -p path``; a :class:`WriteError` naming ``path`` if that is impossible."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise WriteError(path, e) from e
    return path


def _fsync_dir(directory: Path) -> None:
    """Make the rename itself durable. Not every platform can open a directory: skip it there."""
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as e:
        if e.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb", *, encoding: str = "utf-8") -> Iterator[IO[Any]]:
    """A file object for ``path`` that replaces it only when the ``with`` block ends without an error.

    ``mode`` is ``"wb"`` or ``"w"`` (text, ``encoding``). Missing parent directories are created. The data
    is fsynced before the rename and the directory after it. If the block raises, or the write fails, the
    temporary file is removed and the previous ``path`` (if any) is untouched.
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_write: mode must be 'wb' or 'w', got {mode!r}")
    path = Path(path)
    make_dirs(path.parent)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    except OSError as e:
        raise WriteError(path, e) from e
    in_body = False
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": encoding})) as f:  # owns fd from here
            os.fchmod(f.fileno(), FILE_MODE)
            in_body = True
            yield f
            in_body = False
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
        _fsync_dir(path.parent)
    except BaseException as e:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        if isinstance(e, OSError) and not isinstance(e, WriteError) and (not in_body or e.errno in _WRITE_ERRNOS):
            raise WriteError(path, e) from e
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_write(path, "wb") as f:
        f.write(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_write(path, "w") as f:
        f.write(text)


def _json_default(o: Any) -> Any:
    if hasattr(o, "item"):  # numpy scalars
        return o.item()
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, (set, frozenset, tuple)):
        return list(o)
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """``obj`` as indented JSON (numpy scalars, paths, sets and tuples converted)."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def atomic_write_parquet(path: str | os.PathLike, frame: Any) -> None:
    """A pandas DataFrame as Parquet (no index), streamed into the temporary file."""
    with atomic_write(path, "wb") as f:
        frame.to_parquet(f, index=False)
