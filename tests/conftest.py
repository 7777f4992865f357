"""Suite-wide settings.

Every test runs with one intra-op torch thread: the suite runs as two xdist workers on a 2-core machine,
and the models under test are small, where a second thread only spin-waits (10x slowdowns were measured).
"""

import os

import pytest
import torch
from hypothesis import settings


@pytest.fixture(autouse=True)
def _one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# In CI (CI=true) hypothesis draws the same examples every run, so a landing is never decided by a lucky or
# unlucky draw; local runs keep exploring new examples (and keep their failure database).
if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
    settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
    settings.load_profile("ci")
