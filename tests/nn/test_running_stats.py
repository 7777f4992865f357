"""BatchNorm/InstanceNorm running statistics against the float64 reference, and the Keras convention."""

from __future__ import annotations

import pytest
import torch

import normlab.nn as N
from normlab.nn import reference as R


def _batches(n, shape, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=gen) * (i + 1) + i for i in range(n)]


@pytest.mark.parametrize("momentum", [0.1, 0.5, None])
def test_batchnorm_running_stats_follow_the_reference_update(momentum):
    bn = N.BatchNorm2d(3, momentum=momentum)
    mean, var = torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64)
    for step, x in enumerate(_batches(5, (4, 3, 2, 2)), start=1):
        bn(x)
        mean, var = R.running_stats_update(mean, var, x, momentum, num_batches_tracked=step)
    assert int(bn.num_batches_tracked) == 5
    torch.testing.assert_close(bn.running_mean.double(), mean, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(bn.running_var.double(), var, rtol=1e-5, atol=1e-5)
    bn.eval()
    x = _batches(1, (4, 3, 2, 2), seed=9)[0]
    torch.testing.assert_close(bn(x).double(), R.batch_norm_eval(x, bn.running_mean, bn.running_var, bn.weight,
                                                                 bn.bias, bn.eps), rtol=1e-5, atol=1e-5)


def test_momentum_none_is_the_cumulative_average_of_batch_statistics():
    bn = N.BatchNorm1d(2, momentum=None)
    batches = _batches(4, (6, 2))
    for x in batches:
        bn(x)
    torch.testing.assert_close(bn.running_mean, torch.stack([x.mean(0) for x in batches]).mean(0))
    torch.testing.assert_close(bn.running_var, torch.stack([x.var(0) for x in batches]).mean(0))


@pytest.mark.parametrize("cls", [N.BatchNorm1d, N.BatchNorm2d, N.BatchNorm3d])
def test_keras_momentum_099_equals_torch_001(cls):
    shape = {N.BatchNorm1d: (5, 3), N.BatchNorm2d: (5, 3, 2, 2), N.BatchNorm3d: (5, 3, 2, 2, 2)}[cls]
    keras = cls(3, momentum=0.99, momentum_convention="keras")
    torch_bn = getattr(torch.nn, cls.__name__)(3, momentum=0.01)
    assert keras.momentum == 0.01 and keras.keras_momentum == 0.99
    for x in _batches(3, shape):
        torch.testing.assert_close(keras(x), torch_bn(x), rtol=0, atol=0)
    for name, buf in torch_bn.named_buffers():
        assert torch.equal(dict(keras.named_buffers())[name], buf), name
    assert "momentum_convention='keras'" in repr(keras)


def test_keras_convention_is_one_minus_torch():
    assert N.to_torch_momentum(0.9, "keras") == 0.1
    assert N.to_torch_momentum(0.9, "torch") == 0.9
    assert N.to_torch_momentum(None, "keras") is None


def test_untracked_batchnorm_uses_batch_statistics_in_eval():
    bn = N.BatchNorm2d(3, track_running_stats=False).eval()
    x = _batches(1, (4, 3, 2, 2))[0]
    assert bn.running_mean is None
    torch.testing.assert_close(bn(x).double(), R.batch_norm(x, bn.weight, bn.bias, bn.eps), rtol=1e-5, atol=1e-5)


def test_instancenorm_running_stats_follow_the_reference_update():
    norm = N.InstanceNorm1d(3, momentum=0.2, track_running_stats=True)
    mean, var = torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64)
    for x in _batches(3, (4, 3, 6)):
        norm(x)
        mean, var = R.instance_running_stats_update(mean, var, x, 0.2)
    torch.testing.assert_close(norm.running_mean.double(), mean, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(norm.running_var.double(), var, rtol=1e-5, atol=1e-5)
    norm.eval()
    x = _batches(1, (4, 3, 6), seed=5)[0]
    torch.testing.assert_close(norm(x).double(), R.batch_norm_eval(x, norm.running_mean, norm.running_var,
                                                                   eps=norm.eps), rtol=1e-5, atol=1e-5)


def test_large_mean_batch_updates_running_stats_exactly():
    """The recentered path must update the running statistics as an exact computation would."""
    gen = torch.Generator().manual_seed(0)
    x = 1e4 + 1e-2 * torch.randn(16, 3, generator=gen)
    bn = N.BatchNorm1d(3, momentum=0.5)
    bn(x)
    mean, var = R.running_stats_update(torch.zeros(3), torch.ones(3), x, 0.5, 1)
    torch.testing.assert_close(bn.running_mean.double(), mean, rtol=1e-6, atol=0)
    torch.testing.assert_close(bn.running_var.double(), var, rtol=1e-4, atol=0)
