"""Run a function on a few torch.distributed ranks spawned on this machine (gloo, loopback only).

Imported by name (``from dist_ranks import run_ranks``): test folders have no __init__.py. The function
must be defined at the top level of an importable module (spawn pickles it by name); it runs as
``fn(rank, world_size, *args)`` inside an initialized gloo process group and makes its own assertions:
an exception on any rank fails the caller with that rank's traceback. Every wait is bounded: the process
group's collectives time out, and the caller kills the ranks it started when ``timeout`` passes.
"""

from __future__ import annotations

import datetime
import os
import socket
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """A TCP port free on the loopback address now (bound to port 0, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def _entry(rank: int, fn, world_size: int, port: int, collective_timeout: float, args: tuple) -> None:
    os.environ["MASTER_ADDR"] = LOOPBACK
    os.environ["MASTER_PORT"] = str(port)
    os.environ["GLOO_SOCKET_IFNAME"] = "lo"
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://{LOOPBACK}:{port}", rank=rank, world_size=world_size,
                            timeout=datetime.timedelta(seconds=collective_timeout))
    try:
        fn(rank, world_size, *args)
    finally:
        dist.destroy_process_group()


def run_ranks(fn, world_size: int = 2, args: tuple = (), timeout: float = 90.0,
              collective_timeout: float = 30.0) -> None:
    """Run ``fn(rank, world_size, *args)`` on ``world_size`` spawned gloo ranks; raise what a rank raised,
    or TimeoutError (after killing the ranks) if they are not done within ``timeout`` seconds."""
    context = mp.start_processes(_entry, args=(fn, world_size, free_port(), collective_timeout, args),
                                 nprocs=world_size, join=False, start_method="spawn")
    deadline = time.monotonic() + timeout
    while not context.join(timeout=1.0):  # raises ProcessRaisedException/ProcessExitedException on failure
        if time.monotonic() > deadline:
            for process in context.processes:
                if process.is_alive():
                    process.kill()
            for process in context.processes:
                process.join(5.0)
            raise TimeoutError(f"run_ranks: {fn.__name__} on {world_size} ranks not done after {timeout} s")
