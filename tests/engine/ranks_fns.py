"""Functions the launcher tests run on spawned ranks (spawn imports them by name, so they live at the top level
of an importable module; test folders are on sys.path)."""

from __future__ import annotations

import os
import time

import torch
import torch.distributed as dist


def sum_of_ranks(rank: int, world_size: int, offset: float) -> tuple[int, float, int, int]:
    t = torch.tensor([rank + offset])
    dist.all_reduce(t)
    return rank, float(t), dist.get_world_size(), torch.get_num_threads()


def rank_one_raises(rank: int, world_size: int) -> None:
    if rank == 1:
        raise ValueError("rank one's own failure")
    dist.barrier()  # rank 0 waits here for rank 1, which never comes: its error is a consequence


def rank_zero_dies(rank: int, world_size: int) -> None:
    if rank == 0:
        os._exit(3)
    dist.barrier()


def rank_one_hangs(rank: int, world_size: int) -> int:
    if rank == 1:
        time.sleep(600)
    return rank


def tensor_result(rank: int, world_size: int) -> torch.Tensor:
    return torch.full((1000,), float(rank))
