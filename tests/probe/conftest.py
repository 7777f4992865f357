"""Probe tests run with one intra-op thread: the machine is shared."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    """The test machine is shared: one intra-op thread keeps timings and contention sane."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
