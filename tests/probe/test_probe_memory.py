"""The probe's memory: a model too large to defer costs at most 3 copies of its trainable parameters.

Measured in a fresh interpreter (peak RSS, ``ru_maxrss``) so that nothing else in the test session counts:
the peak after the probe's steps minus the peak after the same number of plain steps, over the
parameters' bytes (the probe itself holds two flat copies: gradients and weights before the step). It
guards against per-element int64 indexes (segment ids: 8 bytes per 4-byte value, for every region of the
step vector), which would put this far above 3.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

MEASURE = r"""
import json, resource, sys
import torch
from torch import nn
from normlab.probe import Probe, ReductionPolicy

torch.set_num_threads(1)
torch.manual_seed(0)
width, depth, histograms = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "1"

def peak():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux

def steps(model, optimizer, x, n=3):
    for _ in range(n):
        model(x).square().mean().backward()
        optimizer.step()
        optimizer.zero_grad()

def run(width, depth):
    model = nn.Sequential(*[nn.Linear(width, width) for _ in range(depth)])
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    x = torch.randn(8, width)
    steps(model, optimizer, x)
    return model, optimizer, x

# Warm-up: a small model through the large models' code path, so the first use of each kernel (code
# pages, allocator pools: a fixed cost) is not counted as the large model's.
small = run(64, 2)
with Probe(small[0], small[1], histograms=histograms, policy=ReductionPolicy(ring_elements=0, split_above_elements=0)):
    steps(*small)
del small

model, optimizer, x = run(width, depth)
plain = peak()
with Probe(model, optimizer, histograms=histograms):
    steps(model, optimizer, x)
weights = sum(p.numel() * p.element_size() for p in model.parameters())
print(json.dumps({"growth": (peak() - plain) / weights, "weight_bytes": weights}))
"""


def measure(width: int, depth: int, histograms: bool) -> dict:
    # glibc's malloc raises its mmap threshold (up to 32 MB) after a large block is freed, and keeps the
    # later blocks of that size in its heap, so peak RSS then also depends on allocation order; a fixed
    # threshold returns every freed block of 64 KiB or more at once: RSS follows what is alive.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p), "MALLOC_MMAP_THRESHOLD_": "65536"}
    done = subprocess.run([sys.executable, "-c", MEASURE, str(width), str(depth), str(int(histograms))],
                          capture_output=True, text=True, env=env, timeout=120, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ru_maxrss is in KiB on Linux only")
def test_peak_memory_is_at_most_three_copies_of_the_parameters():
    # with histograms: everything the default probe allocates, plus the binning (one interpreter: ~5 s)
    result = measure(width=1024, depth=6, histograms=True)  # 6.3M parameters, 25 MB
    assert result["weight_bytes"] > 20e6
    # histograms add (segments x bins) int64 counts per recorded step: kilobytes here
    assert result["growth"] <= 3.0, result
