"""The rank launcher (normlab.engine.ranks): results in rank order from a real gloo group, one thread per
rank, and every failure (a rank raising, dying, hanging) one RanksError naming the rank, in bounded time."""

from __future__ import annotations

import multiprocessing
import threading
import time

import pytest
import torch
from ranks_fns import rank_one_hangs, rank_one_raises, rank_zero_dies, sum_of_ranks, tensor_result

from normlab.engine import ranks as ranks_module
from normlab.engine.ranks import RanksError, run_ranks


def test_results_come_back_in_rank_order_from_one_group():
    got = run_ranks(sum_of_ranks, 2, (10.0,), timeout=120)
    assert got == [(0, 21.0, 2, 1), (1, 21.0, 2, 1)]  # all_reduce of 10 + 11; one torch thread per rank


def test_tensors_come_back_by_value():
    got = run_ranks(tensor_result, 2, timeout=120)
    assert [float(t.sum()) for t in got] == [0.0, 1000.0]


def test_a_rank_that_raises_is_named_with_its_own_error_not_the_other_ranks_consequence():
    with pytest.raises(RanksError, match=r"rank 1 raised ValueError: rank one's own failure") as info:
        run_ranks(rank_one_raises, 2, timeout=120)
    assert "\n" not in str(info.value)  # one line; the rank's traceback is chained under it
    assert "Traceback" in str(info.value.__cause__)


def test_a_rank_that_dies_is_named_with_its_exit_code():
    with pytest.raises(RanksError, match=r"rank 0 exited with code 3 before returning a result \(it exited "
                                         r"without reporting.*see its stderr"):
        run_ranks(rank_zero_dies, 2, timeout=120)


def test_a_function_that_cannot_pickle_is_one_ranks_error_before_any_rank_starts():
    with pytest.raises(RanksError, match=r"fn and args must pickle"):
        run_ranks(lambda rank, world_size: rank, 2)


def test_a_hanging_rank_fails_the_call_after_the_timeout_and_is_killed():
    t0 = time.monotonic()
    with pytest.raises(RanksError, match=r"not done after 8 s \(rank 1 still running\); killed"):
        run_ranks(rank_one_hangs, 2, timeout=8)
    assert time.monotonic() - t0 < 40
    assert not [p for p in multiprocessing.active_children() if p.name.startswith("normlab-rank")]


def test_two_launches_at_once_get_their_own_groups():
    results: dict[int, list] = {}

    def launch(offset: int) -> None:
        results[offset] = run_ranks(sum_of_ranks, 2, (float(offset),), timeout=120)

    threads = [threading.Thread(target=launch, args=(k,)) for k in (100, 200)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [r[1] for r in results[100]] == [201.0, 201.0] and [r[1] for r in results[200]] == [401.0, 401.0]


def test_a_daemonic_caller_gets_a_clear_error(monkeypatch):
    class Daemonic:
        daemon = True

    monkeypatch.setattr(ranks_module.multiprocessing, "current_process", lambda: Daemonic())
    with pytest.raises(RanksError, match=r"daemonic .* may not start rank processes"):
        run_ranks(sum_of_ranks, 2, (0.0,))


@pytest.mark.parametrize("kwargs", [{"world_size": 0}, {"timeout": 0}, {"collective_timeout": -1}])
def test_bad_arguments_are_value_errors(kwargs):
    with pytest.raises(ValueError, match="run_ranks: "):
        run_ranks(sum_of_ranks, **{"world_size": 2, **kwargs})


def test_torch_is_left_with_the_callers_threads():
    before = torch.get_num_threads()
    run_ranks(sum_of_ranks, 2, (0.0,), timeout=120)
    assert torch.get_num_threads() == before
