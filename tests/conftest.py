"""Suite-wide settings.

Every test runs with one intra-op torch thread: the suite runs as two xdist workers on a 2-core machine,
and the models under test are small, where a second thread only spin-waits (10x slowdowns were measured).
"""

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
