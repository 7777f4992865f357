"""SyncBatchNorm: on 2 gloo ranks (CPU, loopback) it is one torch.nn.BatchNorm over the concatenated batch;
outside a process group it is normlab's BatchNorm; torch's API (convert_sync_batchnorm, state_dict).

The oracle is torch.nn.BatchNorm{1,2,3}d in float64 on the whole batch, computed on every rank; each rank
runs SyncBatchNorm on its slice (unequal sizes, an empty slice included) and compares its slice of the
output and input gradient, the parameter gradients summed over ranks, and the running statistics.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.distributed as dist
from torch import nn

import normlab.nn as N
from dist_ranks import run_ranks
from normlab.nn.registry import class_facts
from normlab.nn.surgery import is_norm_class
from normlab.nn.surgery._families import family_of

F64 = torch.float64
TORCH_BN = {2: nn.BatchNorm1d, 3: nn.BatchNorm1d, 4: nn.BatchNorm2d, 5: nn.BatchNorm3d}
F32_TOL = {"rtol": 1e-5, "atol": 1e-5}  # float32 SyncBatchNorm against the float64 oracle
HALF = (torch.float16, torch.bfloat16)


# ----------------------------------------------------------------------------------- 2 gloo ranks

def _compare_to_oracle(rank, sizes, tail, *, seed, dtype=F64, channels_last=False, affine=True, track=True,
                       momentum=0.1, steps=2, loc=0.0, scale=1.0, group=None, tol=None):
    """One case: SyncBatchNorm on this rank's slice (``dtype`` input; a float32 layer for half inputs) vs
    the float64 torch BatchNorm on the whole batch, rounded to ``dtype`` first (the oracle sees the
    values the layer sees)."""
    channels = tail[0]
    gen = torch.Generator().manual_seed(seed)
    ndim = 2 + len(tail) - 1
    oracle = TORCH_BN[ndim](channels, momentum=momentum, affine=affine, track_running_stats=track, dtype=F64)
    sync = N.SyncBatchNorm(channels, momentum=momentum, affine=affine, track_running_stats=track,
                           process_group=group, dtype=torch.float32 if dtype in HALF else dtype)
    if affine:
        with torch.no_grad():
            for p in ("weight", "bias"):
                value = torch.randn(channels, generator=gen, dtype=F64)
                getattr(oracle, p).copy_(value)
                getattr(sync, p).copy_(value)
    start, stop = sum(sizes[:rank]), sum(sizes[: rank + 1])
    tol = tol or ({} if dtype == F64 else F32_TOL)
    for _ in range(steps):
        x = (torch.randn(sum(sizes), *tail, generator=gen, dtype=F64) * scale + loc).to(dtype).to(F64)
        target = torch.randn(x.shape, generator=gen, dtype=F64)
        x_full = x.clone().requires_grad_(True)
        y_full = oracle(x_full)
        (y_full * target).sum().backward()
        x_mine = x[start:stop].to(dtype)
        if channels_last:
            x_mine = x_mine.contiguous(memory_format=torch.channels_last)
        x_mine.requires_grad_(True)
        y_mine = sync(x_mine)
        (y_mine * target[start:stop].to(dtype)).sum().backward()
        assert y_mine.dtype == dtype and y_mine.shape == x_mine.shape
        if channels_last and x_mine.numel():
            assert y_mine.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(y_mine.double(), y_full[start:stop].detach(), **tol)
        torch.testing.assert_close(x_mine.grad.double(), x_full.grad[start:stop], **tol)
        if affine:
            for p in ("weight", "bias"):
                grad = getattr(sync, p).grad.double()
                dist.all_reduce(grad, group=group)  # each rank holds its share; the sum is the whole gradient
                torch.testing.assert_close(grad, getattr(oracle, p).grad, **tol)
                getattr(sync, p).grad = None
                getattr(oracle, p).grad = None
        if track:
            torch.testing.assert_close(sync.running_mean.double(), oracle.running_mean, **tol)
            torch.testing.assert_close(sync.running_var.double(), oracle.running_var, **tol)
            assert int(sync.num_batches_tracked) == int(oracle.num_batches_tracked)
        else:
            assert sync.running_mean is None
    if track:  # eval: the (identical) running statistics normalize, nothing is synchronized
        sync.eval()
        oracle.eval()
        x = torch.randn(sum(sizes), *tail, generator=gen, dtype=F64)
        x = x.to(dtype).to(F64)
        torch.testing.assert_close(sync(x[start:stop].to(dtype)).double(), oracle(x)[start:stop].detach(), **tol)


def _ddp_matches_one_process(rank, world_size):
    """convert_sync_batchnorm + DistributedDataParallel on CPU: every parameter's gradient (DDP averages
    over ranks) is the one-process gradient of the mean of the ranks' losses; the step and the running
    statistics match too."""
    sizes = (3, 5)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), N.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 1)).double()
    oracle = copy.deepcopy(model)
    sync_model = N.SyncBatchNorm.convert_sync_batchnorm(model)
    assert type(sync_model[1]) is N.SyncBatchNorm
    ddp = nn.parallel.DistributedDataParallel(sync_model)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.1)
    opt_oracle = torch.optim.SGD(oracle.parameters(), lr=0.1)
    gen = torch.Generator().manual_seed(1)
    start, stop = sum(sizes[:rank]), sum(sizes[: rank + 1])
    for _ in range(2):
        x = torch.randn(sum(sizes), 3, 6, 5, generator=gen, dtype=F64)
        target = torch.randn(sum(sizes), 2, 4, 3, generator=gen, dtype=F64)
        ((oracle(x) * target).sum() / world_size).backward()
        (ddp(x[start:stop]) * target[start:stop]).sum().backward()
        for (name, p), q in zip(sync_model.named_parameters(), oracle.parameters(), strict=True):
            torch.testing.assert_close(p.grad, q.grad, msg=lambda m, name=name: f"{name}: {m}")
        opt.step()
        opt_oracle.step()
        opt.zero_grad()
        opt_oracle.zero_grad()
    for p, q in zip(sync_model.parameters(), oracle.parameters(), strict=True):
        torch.testing.assert_close(p, q)
    torch.testing.assert_close(sync_model[1].running_var, oracle[1].running_var)
    torch.testing.assert_close(sync_model[1].running_mean, oracle[1].running_mean)


def _sync_cases(rank, world_size):
    assert world_size == 2
    pair = dist.new_group([0, 1])
    singles = [dist.new_group([0]), dist.new_group([1])]  # every rank creates every group
    _compare_to_oracle(rank, (3, 5), (4, 3, 2), seed=1, group=pair)  # BatchNorm2d, unequal sizes
    _compare_to_oracle(rank, (0, 6), (3,), seed=2, momentum=None)  # (N, C), an empty rank, cumulative average
    _compare_to_oracle(rank, (1, 1), (3,), seed=3)  # one value per channel per rank: 2 in all
    _compare_to_oracle(rank, (2, 3), (3, 5), seed=4, affine=False, track=False)  # (N, C, L)
    _compare_to_oracle(rank, (1, 2), (2, 2, 3, 2), seed=5, momentum=0.5)  # BatchNorm3d
    _compare_to_oracle(rank, (4, 2), (4, 3, 3), seed=6, dtype=torch.float32, channels_last=True)
    # |mean| / std = 1e7: a one-pass E[x^2] - E[x]^2 would lose ~14 of float64's 16 digits of the variance
    _compare_to_oracle(rank, (3, 2), (2, 4), seed=7, loc=1e4, scale=1e-3)
    # float32 with |mean| / std = 1e6: the float32 mean alone would be off by ~ulp(1e4) = 1e-3 = 0.1 std
    _compare_to_oracle(rank, (3, 4), (3, 5), seed=9, dtype=torch.float32, loc=1e4, scale=1e-2)
    # bfloat16 input, float32 layer: statistics in float32, output rounded to bfloat16
    _compare_to_oracle(rank, (2, 3), (3, 4), seed=10, dtype=torch.bfloat16, tol={"rtol": 1.6e-2, "atol": 2e-2})
    # a group of one rank: the local batch alone (BatchNorm)
    _compare_to_oracle(0, (4,), (3, 2, 2), seed=8 + rank, group=singles[rank])
    # too few values in all: every rank raises (none is left waiting in a collective)
    bn = N.SyncBatchNorm(3)
    with pytest.raises(N.NormValueError, match=r"more than 1 value per channel over all ranks .*, got 1 "):
        bn(torch.randn(1 - rank, 3))
    _ddp_matches_one_process(rank, world_size)


def test_sync_batchnorm_on_two_gloo_ranks_is_batchnorm_over_the_concatenated_batch():
    run_ranks(_sync_cases, world_size=2)


# ---------------------------------------------------------------------------------- one process

@pytest.mark.parametrize("shape", [(5, 3), (4, 3, 6), (4, 3, 2, 5), (2, 3, 2, 2, 3)])
@pytest.mark.parametrize("momentum", [0.1, None])
def test_without_a_process_group_it_is_normlab_batchnorm(shape, momentum):
    assert not dist.is_initialized()
    bn_cls = {2: N.BatchNorm1d, 3: N.BatchNorm1d, 4: N.BatchNorm2d, 5: N.BatchNorm3d}[len(shape)]
    sync, bn = N.SyncBatchNorm(3, momentum=momentum), bn_cls(3, momentum=momentum)
    gen = torch.Generator().manual_seed(0)
    for _ in range(2):
        x = (torch.randn(shape, generator=gen) * 3 + 2).requires_grad_(True)
        x2 = x.detach().clone().requires_grad_(True)
        y, y2 = sync(x), bn(x2)
        g = torch.randn(shape, generator=gen)
        y.backward(g)
        y2.backward(g)
        assert torch.equal(y, y2) and torch.equal(x.grad, x2.grad)
        assert torch.equal(sync.weight.grad, bn.weight.grad) and torch.equal(sync.bias.grad, bn.bias.grad)
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        assert torch.equal(getattr(sync, name), getattr(bn, name))
    sync.eval()
    bn.eval()
    assert torch.equal(sync(x.detach()), bn(x.detach()))


def test_torch_api_state_dict_and_checkpoints():
    sync = N.SyncBatchNorm(4, momentum=0.99, momentum_convention="keras", process_group=None)
    assert sync.momentum == 0.01 and sync.process_group is None
    # a _BatchNorm like torch's class, not an instance of it: DDP refuses those in CPU modules
    assert isinstance(sync, nn.modules.batchnorm._BatchNorm) and not isinstance(sync, nn.SyncBatchNorm)
    theirs = nn.SyncBatchNorm(4)
    assert list(sync.state_dict()) == list(theirs.state_dict())
    with torch.no_grad():
        theirs.running_mean.uniform_()
        theirs.weight.uniform_()
    sync.load_state_dict(theirs.state_dict(), strict=True)
    assert torch.equal(sync.running_mean, theirs.running_mean)
    assert list(N.SyncBatchNorm(4, affine=False, track_running_stats=False).state_dict()) == []
    assert class_facts(N.SyncBatchNorm).family == "batchnorm" and class_facts(N.SyncBatchNorm).channels_first
    assert is_norm_class(N.SyncBatchNorm) and family_of(N.SyncBatchNorm).kind == "batchnorm"
    assert type(N.create_norm("syncbatchnorm", 4)) is N.SyncBatchNorm


def test_convert_sync_batchnorm_shares_parameters_and_buffers_like_torch():
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4),
                          nn.Sequential(nn.Flatten(), N.BatchNorm1d(16, momentum=0.9, momentum_convention="keras")),
                          nn.LayerNorm(16))
    model[1].qconfig = "q"
    model.eval()
    old = [model[1], model[2][1]]
    group = object()  # stored, not used outside a process group
    converted = N.SyncBatchNorm.convert_sync_batchnorm(model, process_group=group)
    assert converted is model and type(model[3]) is nn.LayerNorm
    for before, after in zip(old, (model[1], model[2][1]), strict=True):
        assert type(after) is N.SyncBatchNorm and after.process_group is group and not after.training
        assert after.weight is before.weight and after.running_var is before.running_var
        assert after.num_batches_tracked is before.num_batches_tracked and after.momentum == before.momentum
    assert model[1].qconfig == "q" and model[2][1].momentum_convention == "keras"
    root = nn.BatchNorm1d(3, affine=False)
    new = N.SyncBatchNorm.convert_sync_batchnorm(root)
    assert new is not root and type(new) is N.SyncBatchNorm and new.weight is None
    assert new.running_mean is root.running_mean
    torch_model = nn.SyncBatchNorm.convert_sync_batchnorm(nn.Sequential(nn.BatchNorm2d(4)))
    assert list(torch_model.state_dict()) == list(N.SyncBatchNorm.convert_sync_batchnorm(
        nn.Sequential(nn.BatchNorm2d(4))).state_dict())


def test_bad_inputs_name_the_argument():
    sync = N.SyncBatchNorm(3)
    with pytest.raises(N.NormValueError, match="at least 2 dims"):
        sync(torch.randn(3))
    with pytest.raises(N.NormValueError, match="num_features=3"):
        sync(torch.randn(4, 2, 5))
    with pytest.raises(N.NormTypeError, match="floating dtype"):
        sync(torch.ones(4, 3, dtype=torch.long))
    with pytest.raises(N.NormValueError, match="more than 1 value per channel"):
        sync(torch.randn(1, 3))
    with pytest.raises(N.NormValueError, match="eps"):
        N.SyncBatchNorm(3, eps=0)
