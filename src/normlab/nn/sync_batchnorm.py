r"""SyncBatchNorm: batch norm whose statistics are those of the batch over every rank of a process group.

torch's ``torch.nn.SyncBatchNorm`` raises on CPU tensors ("expected input tensor to be on GPU"), so a
gloo/CPU job cannot use it. :class:`SyncBatchNorm` has torch's constructor, ``process_group``,
``convert_sync_batchnorm`` and state_dict keys, and:

* **CPU input in a process group of more than one rank, training**: normlab's
  :class:`_SyncBatchNormFunction` (below; its docstring states the math). Forward and backward equal those
  of one BatchNorm over the concatenated batch of all ranks, running statistics included, with unequal
  per-rank batch sizes, a rank with an empty batch (N = 0) included.
* **Input on another device (CUDA, ...)**, training in a group of more than one rank: torch's own autograd
  function and kernels (``torch.nn.modules._functions.SyncBatchNorm``, what ``torch.nn.SyncBatchNorm``
  runs; NCCL on CUDA). That branch is one call and is not tested here (the test machines have no GPU).
* **Not in a process group, a group of one rank, or eval mode**: exactly normlab's
  :class:`~normlab.nn.BatchNorm2d` (same code path: checked inputs, recentering of large means); eval
  never synchronizes (the running statistics normalize), as in torch.

The class subclasses torch's ``_BatchNorm`` (as ``torch.nn.SyncBatchNorm`` does), **not**
``torch.nn.SyncBatchNorm`` itself: DistributedDataParallel refuses any instance of that class in a CPU
module ("SyncBatchNorm layers only work with GPU modules"), which would rule out the gloo/CPU case this
class exists for. Code asking ``isinstance(m, torch.nn.SyncBatchNorm)`` therefore says no; asking
``isinstance(m, torch.nn.modules.batchnorm._BatchNorm)`` says yes.

Eager only: TorchScript (``torch.jit.script``) is not supported, ``torch.compile`` is not tested, and
neither is double backward (the backward is ``once_differentiable``).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn as tnn
from torch.nn.modules._functions import SyncBatchNorm as _TorchSyncBatchNormFunction

from normlab.nn._fx import is_fx_proxy
from normlab.nn._validate import NormValueError, check_channels, check_floating, check_values_per_channel
from normlab.nn.batchnorm import MomentumConvention, _CheckedBatchNorm

_F64 = torch.float64


def _acc_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype the statistics and the normalization are computed in: float64 for float64, else float32."""
    return _F64 if x.dtype == _F64 else torch.float32


def _first_values(input: torch.Tensor, acc: torch.dtype) -> torch.Tensor:
    """Each channel's first value in this rank's batch, (C,) in ``acc``, detached (zeros for an empty batch)."""
    if input.numel() == 0:
        return torch.zeros(input.shape[1], dtype=acc, device=input.device)
    return input[(0, slice(None), *[0] * (input.dim() - 2))].detach().to(acc)


def _channel_view(t: torch.Tensor, ndim: int) -> torch.Tensor:
    """A (C,) tensor as (1, C, 1, ...) to broadcast against an (N, C, *) input of ``ndim`` dims."""
    return t.view(1, -1, *[1] * (ndim - 2))


class _SyncBatchNormFunction(torch.autograd.Function):
    r"""Training batch norm over the union of every rank's batch (CPU, any backend with all_gather/all_reduce).

    **Forward.** Each rank ``r`` has ``n_r`` values per channel (``n_r = N_r * H * W ...``; ``n_r = 0`` for an
    empty batch) and computes its per-channel mean :math:`\mu_r` and sum of squared deviations
    :math:`M2_r = \sum (x - \mu_r)^2` in float32 (float64 for float64 input), from the values shifted
    by the channel's first value :math:`s_r` on this rank: :math:`x - s_r` is exact where
    :math:`|\mu| \gg \sigma` (Sterbenz), its mean is of the order of :math:`\sigma`, so
    :math:`\mu_r = s_r + \mathrm{mean}(x - s_r)` in float64 keeps float32 precision relative to
    :math:`\sigma` rather than to :math:`|\mu|` (normlab's recentering, see
    :mod:`normlab.nn.functional`; a float32 mean of 1e4 is 1e-3 off, 0.1 of a std of 1e-2). The triples
    :math:`(n_r, \mu_r, M2_r)` are all-gathered (one collective, ``3 C`` float64 per rank) and combined in
    float64 with Chan et al.'s parallel formula, in its exact all-at-once form:

    .. math::
        n = \sum_r n_r, \qquad \mu = \tfrac1n \sum_r n_r \mu_r, \qquad
        M2 = \sum_r \big( M2_r + n_r (\mu_r - \mu)^2 \big)

    (no one-pass :math:`E[x^2] - E[x]^2`, which cancels catastrophically when :math:`|\mu| \gg \sigma`).
    The output is :math:`y = \gamma \hat x + \beta` with :math:`\hat x = ((x - s_r) - (\mu - s_r))\,r`
    (:math:`\mu - s_r` rounded once, from float64),
    :math:`r = (M2/n + \epsilon)^{-1/2}` (the biased variance, as BatchNorm). The running statistics are
    updated as BatchNorm's with the global batch: ``running_mean = (1 - m) running_mean + m mu`` and
    ``running_var = (1 - m) running_var + m M2 / (n - 1)`` (unbiased), in float64, identical on every rank.
    ``n <= 1`` raises ``NormValueError`` on every rank (each sees the same ``n``, so none is left waiting).

    **Backward.** The loss is the sum of every rank's loss, and ``mu`` and ``r`` depend on all ranks' inputs,
    so with :math:`g = dL/dy` and :math:`h = g\gamma` (see :mod:`normlab.nn.reference` for the one-rank
    derivation) the input gradient needs sums over the *global* batch:

    .. math::
        dx = r \Big( h - \tfrac1n \textstyle\sum_{\text{all}} h
                     - \hat x \, \tfrac1n \textstyle\sum_{\text{all}} h \hat x \Big)
           = \gamma r \Big( g - \tfrac1n S_g - \hat x \, \tfrac1n S_{g\hat x} \Big)

    where :math:`S_g = \sum g` and :math:`S_{g\hat x} = \sum g \hat x` per channel are all-reduced (one
    collective, ``2 C`` float64). ``weight`` and ``bias`` receive this rank's share, :math:`\sum_{\text{local}}
    g \hat x` and :math:`\sum_{\text{local}} g`: the full gradient is their sum over ranks, which
    DistributedDataParallel's all-reduce of parameter gradients forms (as with torch's SyncBatchNorm).

    Every rank must call forward and backward alike (the collectives pair up): backward all-reduces when
    the input needs a gradient, as torch's does.
    """

    @staticmethod
    def forward(ctx, input, weight, bias, running_mean, running_var, eps, momentum, group, world_size):
        acc = _acc_dtype(input)
        channels, ndim = input.shape[1], input.dim()
        dims = [0, *range(2, ndim)]
        n_local = input.numel() // channels if channels else 0
        shift = _first_values(input, acc)
        shifted = input.to(acc) - _channel_view(shift, ndim)
        if n_local > 0:
            var_local, mean_shifted = torch.var_mean(shifted, dim=dims, correction=0)
            mean_local = shift.to(_F64) + mean_shifted.to(_F64)
            local = torch.stack([torch.full_like(mean_local, n_local), mean_local, var_local.to(_F64) * n_local])
        else:  # an empty batch contributes nothing (and var_mean of nothing is NaN)
            local = torch.zeros(3, channels, dtype=_F64, device=input.device)
        gathered = [torch.empty_like(local) for _ in range(world_size)]
        dist.all_gather(gathered, local, group=group)
        counts, means, m2s = torch.stack(gathered).unbind(1)  # each (world_size, C)
        n = int(counts[:, 0].sum().item())
        if n <= 1:
            raise NormValueError(
                f"SyncBatchNorm: training mode needs more than 1 value per channel over all ranks to estimate "
                f"the batch variance, got {n} (this rank's input has shape {tuple(input.shape)})"
            )
        mean = (counts * means).sum(0) / n
        m2 = (m2s + counts * (means - mean) ** 2).sum(0)
        invstd = torch.rsqrt(m2 / n + eps)
        if running_mean is not None:
            with torch.no_grad():
                running_mean.copy_(running_mean.to(_F64) * (1.0 - momentum) + mean * momentum)
                running_var.copy_(running_var.to(_F64) * (1.0 - momentum) + m2 / (n - 1) * momentum)
        center, invstd_acc = (mean - shift.to(_F64)).to(acc), invstd.to(acc)  # mean - shift: small, exact enough
        y = (shifted - _channel_view(center, ndim)) * _channel_view(invstd_acc, ndim)
        if weight is not None:
            y = y * _channel_view(weight.to(acc), ndim)
        if bias is not None:
            y = y + _channel_view(bias.to(acc), ndim)
        ctx.save_for_backward(input, weight, shift, center, invstd_acc)
        ctx.group, ctx.n = group, n
        ctx.bias_dtype = None if bias is None else bias.dtype
        return y.to(input.dtype)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_output):
        input, weight, shift, center, invstd = ctx.saved_tensors
        acc, ndim = _acc_dtype(input), input.dim()
        dims = [0, *range(2, ndim)]
        g = grad_output.to(acc)
        shifted = input.to(acc) - _channel_view(shift, ndim)
        x_hat = (shifted - _channel_view(center, ndim)) * _channel_view(invstd, ndim)
        sum_g = g.sum(dims)  # 0 for an empty batch
        sum_g_xhat = (g * x_hat).sum(dims)
        grad_input = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            sums = torch.stack([sum_g, sum_g_xhat]).to(_F64)
            dist.all_reduce(sums, group=ctx.group)
            mean_g, mean_g_xhat = (sums / ctx.n).to(acc)
            scale = invstd if weight is None else invstd * weight.to(acc)
            grad_input = (g - _channel_view(mean_g, ndim) - x_hat * _channel_view(mean_g_xhat, ndim))
            grad_input = (grad_input * _channel_view(scale, ndim)).to(input.dtype)
        if weight is not None and ctx.needs_input_grad[1]:
            grad_weight = sum_g_xhat.to(weight.dtype)
        if ctx.bias_dtype is not None and ctx.needs_input_grad[2]:
            grad_bias = sum_g.to(ctx.bias_dtype)
        return grad_input, grad_weight, grad_bias, None, None, None, None, None, None


def _world_size(group) -> int:
    """The size of ``group`` (None: the default group), or 1 when torch.distributed is not initialized."""
    if not (dist.is_available() and dist.is_initialized()):
        return 1
    return dist.get_world_size(group if group is not None else dist.group.WORLD)


class SyncBatchNorm(_CheckedBatchNorm, tnn.modules.batchnorm._BatchNorm):
    r"""Batch Normalization synchronized across the ranks of a process group, on CPU too (drop-in for
    ``torch.nn.SyncBatchNorm``).

    In training, inside a process group of more than one rank, the mean and variance per channel (dim 1)
    are those of the concatenation of every rank's batch (over N and all further dims), and so are the
    gradients and the running statistics: the layer equals one :class:`~normlab.nn.BatchNorm2d` (or 1d/3d)
    applied to the whole batch. Ranks may hold different batch sizes, and a rank may hold an empty batch
    (N = 0; its output is empty, it still takes part in the collectives); the total must have more than one
    value per channel. Outside a process group, in a group of one rank, and in eval mode it is exactly
    normlab's BatchNorm. It is a ``_BatchNorm`` but not a ``torch.nn.SyncBatchNorm`` (DDP refuses those on
    CPU; see the module docstring). See :mod:`normlab.nn.sync_batchnorm` for which code runs where, and
    :class:`_SyncBatchNormFunction` for the math.

    Args:
        num_features, eps, momentum, affine, track_running_stats, device, dtype, bias: as
            :class:`~normlab.nn.BatchNorm2d` (and torch).
        process_group: the group whose ranks share statistics; ``None`` = the default (world) group.
        momentum_convention: ``"torch"`` (default) or ``"keras"``, as :class:`~normlab.nn.BatchNorm2d`.

    Shape:
        - Input: (N, C, *), at least 2D (N may be 0 on a rank).
        - Output: same shape as the input.

    Every rank must run the layer the same number of times (each training forward and backward is a
    collective); a wrapped model under ``DistributedDataParallel`` does. The parameter gradients are each
    rank's share (their sum over ranks is the full gradient), which DDP's gradient all-reduce combines.

    Example::

        >>> model = SyncBatchNorm.convert_sync_batchnorm(model)  # every BatchNorm*d becomes a SyncBatchNorm
        >>> model = torch.nn.parallel.DistributedDataParallel(model)  # gloo on CPU works
    """

    _layout = "(N, C, *)"

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        process_group=None,
        device=None,
        dtype=None,
        *,
        bias: bool = True,
        momentum_convention: MomentumConvention = "torch",
    ) -> None:
        torch_momentum = self._init_checks(num_features, eps, momentum, momentum_convention)
        tnn.modules.batchnorm._BatchNorm.__init__(self, num_features, eps, torch_momentum, affine,
                                                  track_running_stats, device, dtype, bias=bias)
        self.process_group = process_group
        self.momentum_convention = momentum_convention

    def _check_layout(self, input: torch.Tensor) -> None:
        where = type(self).__name__
        check_floating(input, where)
        if input.dim() < 2:
            raise NormValueError(f"{where}: expected an input of at least 2 dims (N, C, *), got {input.dim()}D "
                                 f"input of shape {tuple(input.shape)}")
        check_channels(input, self.num_features, "num_features", where)

    def _check_input_dim(self, input: torch.Tensor) -> None:  # the unsynchronized path (BatchNorm's checks)
        if is_fx_proxy(input):
            return
        self._check_layout(input)
        if self.training or self.running_mean is None:
            check_values_per_channel(input, type(self).__name__)

    def forward(self, input: torch.Tensor) -> torch.Tensor:  # eager only: no TorchScript branch
        if is_fx_proxy(input):
            return self._eager_forward(input)  # a call_module node (see normlab.nn._fx)
        self._check_layout(input)
        group = self.process_group
        world_size = _world_size(group) if self.training else 1
        if world_size <= 1:
            return self._eager_forward(input)  # normlab's BatchNorm, unchanged
        factor = 0.0 if self.momentum is None else self.momentum
        if self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:  # cumulative moving average
                factor = 1.0 / float(self.num_batches_tracked)
        running = self.track_running_stats and self.running_mean is not None
        # Off CPU: torch's own function and kernels (e.g. NCCL on CUDA); not tested here (no GPU).
        function = _SyncBatchNormFunction if input.device.type == "cpu" else _TorchSyncBatchNormFunction
        return function.apply(
            input, self.weight, self.bias,
            self.running_mean if running else None, self.running_var if running else None,
            self.eps, factor, group if group is not None else dist.group.WORLD, world_size,
        )

    @classmethod
    def convert_sync_batchnorm(cls, module: tnn.Module, process_group=None) -> tnn.Module:
        """Replace every BatchNorm (any ``torch.nn.modules.batchnorm._BatchNorm``: torch's and normlab's
        1d/2d/3d and SyncBatchNorm) in ``module`` by a normlab :class:`SyncBatchNorm` over ``process_group``.

        As torch's: the new layers *share* the old ones' parameters and buffers (an optimizer built before
        keeps working), keep the training flag and ``qconfig``; a BatchNorm given as ``module`` itself is
        returned as a new object, any other module is changed in place and returned. normlab's
        ``momentum_convention`` is kept.
        """
        out = module
        if isinstance(module, tnn.modules.batchnorm._BatchNorm):
            momentum = module.momentum
            convention = getattr(module, "momentum_convention", "torch")
            out = cls(module.num_features, module.eps, momentum, module.affine, module.track_running_stats,
                      process_group, bias=module.bias is not None)
            out.momentum_convention = convention  # momentum is already in torch's convention
            if module.affine:
                with torch.no_grad():
                    out.weight = module.weight
                    out.bias = module.bias
            out.running_mean = module.running_mean
            out.running_var = module.running_var
            out.num_batches_tracked = module.num_batches_tracked
            out.training = module.training
            if hasattr(module, "qconfig"):
                out.qconfig = module.qconfig
        for name, child in module.named_children():
            out.add_module(name, cls.convert_sync_batchnorm(child, process_group))
        return out

