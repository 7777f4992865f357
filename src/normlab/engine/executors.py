"""Where a run's cells are computed: the executor (``run_study(executor=, address=)``, ``normlab run --executor``).

- ``local`` (the default): the calling process, or ``jobs`` local worker processes
  (:mod:`normlab.engine.parallel`) that write cells into the run directory themselves.
- ``dask``: workers of a Dask distributed cluster, either one started here (a ``LocalCluster`` of ``jobs``
  worker processes on the loopback interface) or an existing one at ``address`` (``tcp://host:8786``).
  A worker only *computes* a cell (:func:`normlab.engine.cell.compute_cell_away`: seeded from the cell's
  key, in a temporary directory whose files it ships back) and returns its tables and seconds; the driver
  (the process holding the run directory's lock) stores each cell as it arrives, atomically, ``DONE`` last.
  So workers need no shared filesystem, a dead driver leaves no half-stored cell (its workers only
  compute), and resume works as for ``local``: cells with an intact ``DONE`` are skipped.

A worker lost mid-cell (killed, out of memory, its machine gone) is Dask's to handle: the scheduler runs the
cell again on another worker, up to ``distributed.scheduler.allowed-failures`` times (Dask's default 3);
past that the run stops with :class:`ExecutorError` naming the cell, the cells already stored stay done,
and a rerun with the same ``--out`` resumes. Dask is an optional dependency (``pip install normlab[dask]``).
"""

from __future__ import annotations

import contextlib
import logging
import pickle
import socket
import sys
import uuid
import warnings
from collections.abc import Iterator
from concurrent.futures import CancelledError
from typing import Any
from urllib.parse import urlsplit

from normlab.engine.cell import ComputedCell, compute_cell_away
from normlab.engine.spec import Cell, Study

EXECUTORS = ("local", "dask")
DASK_DEFAULT_PORT = 8786  # a scheduler's port when an address names none
CONNECT_TIMEOUT_S = 10.0  # reaching the scheduler at --address, and waiting for its first worker
CLOSE_TIMEOUT_S = 10.0


class ExecutorError(RuntimeError):
    """The executor cannot run the cells as asked (unknown, not installed, unreachable, workers lost)."""


def check_executor(executor: str, address: str | None, study: Study | None = None) -> None:
    """A one-line :class:`ExecutorError` for an unknown executor, an address it cannot use, a missing package,
    or a ``study`` whose cells start processes (``Study.starts_processes``) on Dask's daemonic workers;
    nothing is started."""
    if executor not in EXECUTORS:
        raise ExecutorError(f"executor: expected one of {', '.join(EXECUTORS)}, got {executor!r}")
    if executor == "dask" and study is not None and getattr(study, "starts_processes", False):
        raise ExecutorError(f"executor: study {study.name!r} starts processes in its cells (torch.distributed "
                            "ranks), which Dask's daemonic workers may not; use the local executor (--jobs N)")
    if address is not None and executor != "dask":
        raise ExecutorError(f"address: only the dask executor connects to a cluster (got executor {executor!r})")
    if executor == "dask":
        _import_distributed()
        if address is not None:
            _check_reachable(address)


def _check_reachable(address: str) -> None:
    """For a ``tcp://`` or ``tls://`` scheduler (or ``host:port``, which Dask reads as tcp), open and close one
    TCP connection, so that a typo or a stopped scheduler is reported before the run directory exists. Other
    schemes Dask knows (``ucx://``, ``ws://``...) are left to Dask's own connection check."""
    parts = urlsplit(address if "://" in address else f"tcp://{address}")
    if parts.scheme not in ("tcp", "tls"):
        return
    try:
        host, port = parts.hostname, parts.port or DASK_DEFAULT_PORT
    except ValueError:  # a port that is not a number
        host = port = None
    if not host or port is None:
        raise ExecutorError(f"address: expected tcp://HOST:PORT (a Dask scheduler), got {address!r}")
    try:
        socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as e:
        raise ExecutorError(f"executor dask: cannot reach the Dask scheduler at {address} within "
                            f"{CONNECT_TIMEOUT_S:g} s ({_first_line(e)})") from None


def _import_distributed() -> Any:
    try:
        import distributed
    except ImportError as e:
        raise ExecutorError(f"executor dask: Dask distributed is not installed ({e}); "
                            "install it with `pip install normlab[dask]`") from None
    return distributed


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _pickle_study(study: Study, config: Any) -> bytes:
    """``(study, config)`` as bytes a worker can load: by reference for an importable study, by value
    (cloudpickle) for one from a file or ``__main__``, which the workers cannot import."""
    import cloudpickle

    from normlab.engine.parallel import _study_module_file

    module = _study_module_file(study)
    by_value = sys.modules[module[0]] if module is not None else None
    if by_value is not None:
        cloudpickle.register_pickle_by_value(by_value)
    try:
        return cloudpickle.dumps((study, config))
    except Exception as e:  # any pickling failure means the same thing here
        raise ValueError(f"executor dask: study {getattr(study, 'name', study)!r} and its config cannot be "
                         f"sent to workers ({e})") from None
    finally:
        if by_value is not None:
            cloudpickle.unregister_pickle_by_value(by_value)


def _compute_on_worker(payload: bytes, cell: Cell, device: str, tensorboard: bool, threads: int,
                       own_worker: bool) -> ComputedCell:
    """What a Dask worker runs: one cell, computed away from the run directory."""
    import torch

    from normlab.engine.memory import retain_freed_memory

    study, config = pickle.loads(payload)
    torch.set_num_threads(threads)  # the run's thread count (recorded in env.json): same numbers everywhere
    if own_worker:  # a worker of the local cluster runs cell after cell of the same sizes (engine/memory.py);
        retain_freed_memory()  # a cluster's own workers may serve others: their allocator is left alone
    return compute_cell_away(study, config, cell, device, tensorboard)


def run_cells_on_dask(study: Study, config: Any, pending: list[tuple[int, Cell]], *, jobs: int, threads: int,
                      device: str, tensorboard: bool, address: str | None) -> Iterator[tuple[int, Cell, ComputedCell]]:
    """Compute ``pending`` ``(index, cell)`` pairs on Dask workers; yield ``(index, cell, computed)`` in
    completion order, for the caller to store. The first failing cell cancels the others and raises its
    error; a cell whose workers kept dying raises :class:`ExecutorError`."""
    distributed = _import_distributed()
    from distributed.scheduler import KilledWorker

    payload = _pickle_study(study, config)
    cluster = None
    if address is None:
        with warnings.catch_warnings():  # its (dashboard-less) HTTP server takes another port if 8787 is busy
            warnings.filterwarnings("ignore", message="Port .* is already in use")
            cluster = distributed.LocalCluster(
                n_workers=min(jobs, len(pending)), threads_per_worker=1, processes=True, host="127.0.0.1",
                dashboard_address=None, memory_limit=0, silence_logs=logging.ERROR)
        where = "the local Dask cluster"
    else:
        where = f"the Dask scheduler at {address}"
    client = None
    try:
        try:
            client = distributed.Client(cluster if cluster is not None else address, timeout=CONNECT_TIMEOUT_S,
                                        set_as_default=False)
        except (OSError, TimeoutError, ValueError) as e:
            raise ExecutorError(f"executor dask: cannot reach {where} within {CONNECT_TIMEOUT_S:g} s "
                                f"({_first_line(e)})") from None
        try:
            client.wait_for_workers(1, timeout=CONNECT_TIMEOUT_S)
        except TimeoutError:
            raise ExecutorError(f"executor dask: {where} has no workers (waited {CONNECT_TIMEOUT_S:g} s)") from None
        futures = {client.submit(_compute_on_worker, payload, cell, str(device), tensorboard, threads,
                                 cluster is not None, key=f"normlab-cell-{cell.key}-{uuid.uuid4().hex[:8]}", pure=False): (i, cell)
                   for i, cell in pending}
        try:
            for future in distributed.as_completed(futures, loop=client.loop):
                i, cell = futures[future]
                try:
                    computed = future.result()  # re-raises the cell's own error
                except KilledWorker:
                    raise ExecutorError(
                        f"executor dask: the workers running cell {cell.arm!r} ({cell.key}) kept dying (killed, "
                        "out of memory, or their machine lost); rerun with the same --out to resume; done cells "
                        "are kept") from None
                except CancelledError as e:
                    raise ExecutorError(f"executor dask: {where} dropped cell {cell.arm!r} ({cell.key}) "
                                        f"({_first_line(e)}); rerun with the same --out to resume") from None
                yield i, cell, computed
        finally:
            with contextlib.suppress(Exception):  # a lost scheduler: the error being raised says more
                client.cancel([f for f in futures if not f.done()])
    finally:
        if client is not None:
            client.close(timeout=CLOSE_TIMEOUT_S)
        if cluster is not None:
            cluster.close(timeout=CLOSE_TIMEOUT_S)
