"""Run a function on a few torch.distributed ranks spawned on this machine (gloo over loopback).

:func:`run_ranks` starts ``world_size`` processes, each running ``fn(rank, world_size, *args)`` inside an
initialized gloo process group, and returns what each rank returned, in rank order. It is what a study
uses to train one cell data-parallel (``DistributedDataParallel``, ``SyncBatchNorm``) and what the tests
use to check distributed layers.

* **No port to guess.** The calling process hosts the group's ``TCPStore`` on port 0 of the loopback
  address: the operating system picks a free port and the store keeps it bound for the whole run, so two
  cells starting at once (``--jobs N``) can never be handed the same port (a probe-then-release search
  can: another process may take the port between the probe and the bind). Gloo's own connections between
  ranks use ports the operating system assigns in the same way.
* **Every wait is bounded.** Each collective times out after ``collective_timeout`` seconds, and the caller
  kills every rank still running when ``timeout`` passes. A rank that raises, exits without a result, or
  hangs fails the call with one :class:`RanksError` naming the rank and what happened; the other ranks
  are killed at once (they would otherwise wait for the failed one until their collectives time out).
* **Ranks never outlive the caller.** Each rank watches a pipe whose write end only the caller holds and
  exits when it closes (the caller died, even by ``kill -9``).
* **One thread per rank** by default: ranks share the machine's cores, and a second intra-op thread per
  rank only spin-waits.

Ranks are *spawned* (a fork of a process running torch's thread pools can deadlock), so ``fn`` must be
defined at the top level of an importable module, and ``args`` and the results must pickle. A daemonic
process (a Dask worker under its nanny, ``multiprocessing.Pool`` workers) may not start processes: the call
then raises :class:`RanksError` saying so. The spawned workers of ``normlab run --jobs N`` are not daemonic.
"""

from __future__ import annotations

import datetime
import multiprocessing
import os
import pickle
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection, wait
from typing import Any

import torch
import torch.distributed as dist

LOOPBACK = "127.0.0.1"
FAILURE_GRACE = 2.0  # seconds the other ranks get to report after a first failure (to find its cause)
ORPHAN_EXIT_CODE = 70  # a rank whose caller died exits with this (EX_SOFTWARE) without cleanup


class RanksError(RuntimeError):
    """A rank raised, died, or did not finish in time (the message says which and what); or ranks could
    not be started from this process."""


def _exit_when_caller_dies(caller_alive: Connection) -> None:
    """Block on the caller's pipe; end-of-file means the caller died (nothing is ever sent)."""
    try:
        caller_alive.recv_bytes()
    except (EOFError, OSError):
        pass
    os._exit(ORPHAN_EXIT_CODE)


def _rank_main(rank: int, world_size: int, port: int, collective_timeout: float, threads: int,
               fn: Callable[..., Any], args: tuple, results: Connection, caller_alive: Connection) -> None:
    threading.Thread(target=_exit_when_caller_dies, args=(caller_alive,), name="normlab-caller-watch",
                     daemon=True).start()
    os.environ["GLOO_SOCKET_IFNAME"] = "lo"  # loopback only, whatever interfaces the machine has
    torch.set_num_threads(threads)
    in_group = False
    try:
        store = dist.TCPStore(LOOPBACK, port, world_size, is_master=False,
                              timeout=datetime.timedelta(seconds=collective_timeout))
        dist.init_process_group("gloo", store=store, rank=rank, world_size=world_size,
                                timeout=datetime.timedelta(seconds=collective_timeout))
        in_group = True
        _send(results, ("ok", fn(rank, world_size, *args)))
    except BaseException as e:  # every failure goes back to the caller as one message
        # Sent before leaving the group: the other ranks fail only once this rank's connections close, so
        # the cause is always stamped earlier than its consequences (the caller reports the earliest).
        _send(results, ("error", time.time(), f"{type(e).__name__}: {e}".strip(), traceback.format_exc()))
    finally:
        if in_group:
            dist.destroy_process_group()
        results.close()


def _send(results: Connection, message: tuple) -> None:
    """Plain pickle, not multiprocessing's: that one passes a tensor as a handle to shared memory, which
    dies with this process; the caller needs the values themselves."""
    results.send_bytes(pickle.dumps(message))


def _name(fn: Callable[..., Any]) -> str:
    return getattr(fn, "__qualname__", None) or repr(fn)


def run_ranks(fn: Callable[..., Any], world_size: int = 2, args: Sequence[Any] = (), *, timeout: float = 600.0,
              collective_timeout: float = 60.0, threads: int = 1) -> list[Any]:
    """Run ``fn(rank, world_size, *args)`` on ``world_size`` spawned gloo ranks; return their results in
    rank order.

    Raises :class:`RanksError` (after killing every rank still running) if a rank raises (its exception
    type and message; the traceback follows as the error's ``__cause__`` text), exits without a result
    (its exit code: killed, out of memory), or the ranks are not all done within ``timeout`` seconds.
    """
    what = f"run_ranks({_name(fn)}, world_size={world_size})"
    if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
        raise ValueError(f"run_ranks: world_size must be a positive int, got {world_size!r}")
    if not timeout > 0 or not collective_timeout > 0:
        raise ValueError(f"run_ranks: timeouts must be positive, got {timeout!r} and {collective_timeout!r}")
    if multiprocessing.current_process().daemon:
        raise RanksError(f"{what}: this process is daemonic (a Dask worker or a multiprocessing.Pool worker) and "
                         "may not start rank processes; run with the local executor (normlab run --jobs N)")
    try:  # spawned ranks receive fn and args by pickle: say so here, not as a bare PicklingError
        pickle.dumps((fn, tuple(args)))
    except Exception as e:  # any pickling failure means the same thing
        raise RanksError(f"{what}: fn and args must pickle (a function at the top level of an importable module, "
                         f"plain arguments): {type(e).__name__}: {e}") from None
    # Port 0: the operating system picks a free port, and the store holds it until the ranks are done.
    store = dist.TCPStore(LOOPBACK, 0, world_size, is_master=True, wait_for_workers=False,
                          timeout=datetime.timedelta(seconds=collective_timeout))
    context = multiprocessing.get_context("spawn")
    caller_alive, keep_open = context.Pipe(duplex=False)  # the ranks read; only this process can write
    processes, pipes = [], []
    try:
        for rank in range(world_size):
            mine, theirs = context.Pipe(duplex=False)
            process = context.Process(
                target=_rank_main, name=f"normlab-rank-{rank}", daemon=True,
                args=(rank, world_size, store.port, collective_timeout, threads, fn, tuple(args), theirs,
                      caller_alive))
            process.start()
            theirs.close()  # the rank holds its end: end-of-file here means the rank is gone
            processes.append(process)
            pipes.append(mine)
        return _collect(what, processes, pipes, time.monotonic() + timeout, timeout)
    finally:
        for process in processes:
            if process.is_alive():
                process.kill()
        for process in processes:
            process.join(5.0)
        for pipe in pipes:
            pipe.close()
        keep_open.close()
        caller_alive.close()
        del store


def _collect(what: str, processes: list, pipes: list[Connection], deadline: float, timeout: float) -> list[Any]:
    results: dict[int, Any] = {}
    failures: dict[int, tuple[float, str, str]] = {}  # rank -> (when, message, traceback)
    waiting = dict(enumerate(pipes))
    while waiting:
        left = deadline - time.monotonic()
        if left <= 0:
            if failures:
                break
            ranks = ", ".join(str(r) for r in sorted(waiting))
            raise RanksError(f"{what}: not done after {timeout:g} s (rank {ranks} still running); killed the ranks")
        for pipe in wait(list(waiting.values()), timeout=left):
            rank = next(r for r, p in waiting.items() if p is pipe)
            del waiting[rank]
            try:
                message = pickle.loads(pipe.recv_bytes())
            except (EOFError, OSError):  # the rank closed its end without a result: it died
                processes[rank].join(5.0)
                # A death has no stamp of its own; it counts as earlier than any error it provoked.
                failures[rank] = (-1.0, f"exited with code {processes[rank].exitcode} before returning a result "
                                        f"({_why_exited(processes[rank].exitcode)})", "")
                continue
            if message[0] == "error":
                failures[rank] = message[1:]
            else:
                results[rank] = message[1]
        if failures:  # give the other ranks a moment to report, then name the earliest failure
            deadline = min(deadline, time.monotonic() + FAILURE_GRACE)
    if failures:
        rank, (_, message, trace) = min(failures.items(), key=lambda item: item[1][0])
        verb = "" if message.startswith("exited") else "raised "
        cause = _RankTraceback(trace) if trace else None
        raise RanksError(f"{what}: rank {rank} {verb}{message}") from cause
    return [results[r] for r in range(len(pipes))]


def _why_exited(code: int | None) -> str:
    """What an exit code without a result says: a signal (killed, e.g. out of memory) or the rank's own exit
    (e.g. an error while it started, before it could report; its stderr says which)."""
    if code is not None and code < 0:
        return f"killed by signal {-code}, e.g. out of memory"
    return "it exited without reporting, e.g. an error while it started; see its stderr above"


class _RankTraceback(Exception):
    """The failed rank's traceback, as text (chained under the RanksError for whoever wants the detail)."""
