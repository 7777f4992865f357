"""The probe under DistributedDataParallel, on 2 gloo ranks (CPU, loopback) against a single-process oracle.

Each rank trains a DDP model (SyncBatchNorm, so that the model is the single-process model exactly) on its
slice of one batch; the slices change size every step, one rank gets an empty slice once. The oracle is
the same model with a Probe in one process on the whole batch. The DDP probe's tables, on every rank,
must equal the oracle's: gradients, weights, updates, running statistics once; module outputs pooled over
ranks (mean, std, rms, absmax, zero_frac of the concatenated batch); activation histograms summed; the
loss the mean over ranks. Only rank 0 writes (save, TensorBoard).
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.distributed as dist
from torch import nn

import normlab.nn as N
from dist_ranks import run_ranks
from normlab.probe import Probe, ReductionPolicy

F64 = torch.float64
SPLITS = [(5, 3), (8, 0), (2, 6), (4, 4), (1, 7)]  # rows of the batch of 8 on rank 0 and rank 1, per step
POLICIES = {"default": None, "hook": ReductionPolicy(ring_elements=0, reduce_in_hooks=True)}
KEYS = ["step", "member", "name", "kind", "stat"]


def _table(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    frame = frame.astype({"name": str, "kind": str})
    if "stat" in frame:
        frame = frame.astype({"stat": str})
    return frame.sort_values(keys).reset_index(drop=True)


def _run(rank: int, world_size: int, out: Path, policy_name: str) -> None:
    torch.manual_seed(0)
    # no bias before the BatchNorm: its gradient would be float64 roundoff, whose signs (histograms) and
    # update ratio (log10 of roundoff over roundoff) differ between any two ways of summing
    oracle = nn.Sequential(nn.Linear(4, 8, bias=False), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3), nn.LayerNorm(3)).double()
    model = N.SyncBatchNorm.convert_sync_batchnorm(copy.deepcopy(oracle))
    ddp = nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.1, momentum=0.9)
    opt_oracle = torch.optim.SGD(oracle.parameters(), lr=0.1, momentum=0.9)
    policy = POLICIES[policy_name]
    kwargs = {"histograms": True, "flush_every": 2, **({"policy": policy} if policy else {})}
    here = out / policy_name / f"rank{rank}"
    probe = Probe(ddp, opt, logdir=here / "tb", **kwargs)
    probe_oracle = Probe(oracle, opt_oracle, **kwargs)
    assert probe.model is ddp
    gen = torch.Generator().manual_seed(1)
    for split in SPLITS:
        total = sum(split)
        x = torch.randn(total, 4, generator=gen, dtype=F64) * 2 + 1
        y = torch.randn(total, 3, generator=gen, dtype=F64)
        loss = ((oracle(x) - y) ** 2).sum() / total
        probe_oracle.record_loss(loss)
        loss.backward()
        opt_oracle.step()
        opt_oracle.zero_grad()
        start, stop = sum(split[:rank]), sum(split[: rank + 1])
        # DDP averages over ranks: world_size * (this rank's share of the sum) / total is the batch mean
        local = ((ddp(x[start:stop]) - y[start:stop]) ** 2).sum() / total * world_size
        probe.record_loss(local)
        local.backward()
        opt.step()
        opt.zero_grad()

    got, want = _table(probe.scalars(), KEYS), _table(probe_oracle.scalars(), KEYS)
    pd.testing.assert_frame_equal(got[KEYS], want[KEYS])  # the same records: names as in one process
    bad = ~np.isclose(got["value"], want["value"], rtol=1e-9, atol=1e-12)
    assert not bad.any(), pd.concat([got[bad], want[bad]["value"].rename("oracle")], axis=1).to_string()
    hist_keys = ["step", "member", "name", "kind", "bin_lo"]
    got_h, want_h = _table(probe.histograms(), hist_keys), _table(probe_oracle.histograms(), hist_keys)
    pd.testing.assert_frame_equal(got_h[hist_keys], want_h[hist_keys])
    differ = got_h["count"] != want_h["count"]
    assert not differ.any(), pd.concat([got_h[differ], want_h[differ]["count"].rename("oracle")], axis=1).to_string()
    assert set(got["kind"]) >= {"activation", "norm_in", "norm_out", "grad", "weight", "update", "global"}

    probe.save(here / "saved")
    probe.close()
    probe_oracle.close()
    dist.barrier()
    if rank == 0:
        assert (here / "saved" / "scalars.parquet").exists() and (here / "saved" / "histograms.parquet").exists()
        assert any((here / "tb").iterdir())
        saved = _table(pd.read_parquet(here / "saved" / "scalars.parquet"), KEYS)
        np.testing.assert_allclose(saved["value"], want["value"], rtol=1e-9, atol=1e-12)
    else:
        assert not (here / "saved").exists() and not (here / "tb").exists()  # only rank 0 writes


def _explicit_group(rank: int, world_size: int) -> None:
    """``process_group=`` pools the outputs of any model (here no DDP, no optimizer: ``probe.step()``)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 2), nn.Tanh()).double()
    probe = Probe(model, process_group=dist.group.WORLD, flush_every=64)
    oracle = Probe(copy.deepcopy(model), process_group=None)
    x = torch.randn(7, 3, generator=torch.Generator().manual_seed(2), dtype=F64)
    with torch.enable_grad():
        model(x[:2] if rank == 0 else x[2:])
        oracle.model(x)
    probe.step()
    oracle.step()
    outputs = ["activation"]
    got, want = (_table(p.scalars(), KEYS) for p in (probe, oracle))
    got, want = (t[t["kind"].isin(outputs)].reset_index(drop=True) for t in (got, want))
    pd.testing.assert_frame_equal(got[KEYS], want[KEYS])
    np.testing.assert_allclose(got["value"], want["value"], rtol=1e-12, atol=1e-14)
    probe.close()


def _both_policies(rank: int, world_size: int, out: str) -> None:
    for name in POLICIES:
        _run(rank, world_size, Path(out), name)
    _explicit_group(rank, world_size)


def test_probe_under_ddp_on_two_gloo_ranks_equals_the_single_process_probe(tmp_path):
    run_ranks(_both_policies, world_size=2, args=(str(tmp_path),))


def test_process_group_argument_is_checked():
    model = nn.Linear(2, 2)
    with pytest.raises(ValueError, match="process_group must be 'auto', None or a process group"):
        Probe(model, process_group="world")
    with pytest.raises(RuntimeError, match=r"torch\.distributed is not initialized"):
        Probe(model, process_group=object())
    Probe(model, process_group=None).close()  # not distributed: nothing pooled
