r"""``freeze_batchnorm`` / ``unfreeze_batchnorm``: fix BatchNorm statistics and affine for fine-tuning.

How: each BatchNorm is *replaced* by a :class:`FrozenBatchNorm` that always computes the eval-mode

.. math::
    y = \frac{x - \hat\mu}{\sqrt{\hat\sigma^2 + \epsilon}} \cdot \gamma + \beta

with every tensor a buffer. Why replacement rather than a flag, a hook or an overridden ``train``:

- ``Module.train()`` sets ``training`` on every child, so any flag-based freeze is undone by the next
  ``model.train()``; a per-instance ``train`` override is invisible in the repr, breaks ``torch.jit`` and
  leaves ``m.training`` lying. FrozenBatchNorm has no training code path at all, so ``train()`` is harmless.
- gamma and beta become buffers: they leave ``model.parameters()``, so a new optimizer never sees them,
  weight decay cannot move them and autograd computes no gradient for them, while the gradient with
  respect to the *input* still flows.
- The buffers keep BatchNorm's names (``weight``, ``bias``, ``running_mean``, ``running_var``,
  ``num_batches_tracked``), so ``state_dict`` keys are unchanged: a checkpoint saved frozen loads into the
  unfrozen model and the reverse.
- The original module object is kept (outside the module tree, so it is not in ``state_dict`` or
  ``parameters()``). Unfreezing copies the current buffer values back *into it* and puts it back: its
  class, hooks, ``requires_grad`` flags and the Parameter objects an optimizer may hold are as before.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.modules.batchnorm import _BatchNorm

from normlab.nn.surgery._tree import find_modules, replace_module, short_repr

_STATE = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


class FrozenBatchNorm(nn.Module):
    r"""A BatchNorm with fixed statistics and affine, made by :func:`freeze_batchnorm` (see the module doc).

    Unlike ``normlab.nn.FrozenBatchNorm2d`` (a layer you build), this one remembers the BatchNorm it
    replaced, so :func:`unfreeze_batchnorm` can put that exact module back.

    Args:
        original: a BatchNorm (any ``_BatchNorm``: 1d/2d/3d, SyncBatchNorm, normlab's) with running stats.

    Shape:
        - Input: (N, C, *), as the original.
        - Output: same shape as the input.
    """

    _version = 2  # BatchNorm's state_dict version, so the checkpoints look alike

    def __init__(self, original: _BatchNorm) -> None:
        super().__init__()
        if original.running_mean is None:
            raise ValueError(f"FrozenBatchNorm: {short_repr(original)} tracks no running statistics to freeze")
        for name in _STATE:
            value = getattr(original, name, None)
            self.register_buffer(name, None if value is None else value.detach().clone())
        self.num_features = original.num_features
        self.eps = original.eps
        # In __dict__, not as a submodule: kept for unfreezing but out of state_dict() and parameters().
        self.__dict__["original"] = original
        self.train(original.training)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if input.dim() < 2 or input.shape[1] != self.num_features:
            raise ValueError(
                f"FrozenBatchNorm: expected input of shape (N, {self.num_features}, *), got {tuple(input.shape)}"
            )
        return F.batch_norm(input, self.running_mean, self.running_var, self.weight, self.bias,
                            training=False, momentum=0.0, eps=self.eps)

    def thaw(self) -> _BatchNorm:
        """The original BatchNorm with this module's current values, device, dtype and train/eval mode."""
        original = self.__dict__["original"]
        original.to(device=self.running_mean.device, dtype=self.running_mean.dtype)
        with torch.no_grad():
            for name in _STATE:
                value = getattr(self, name)
                if value is not None:
                    getattr(original, name).copy_(value)
        # The mode follows this module, which followed every model.train()/eval() while frozen.
        original.train(self.training)
        return original

    def extra_repr(self) -> str:
        return f"frozen {short_repr(self.__dict__['original'])}"


@dataclass
class FreezeReport:
    """Qualified names of the BatchNorms frozen (or unfrozen), and those skipped with the reason."""

    action: str
    changed: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.changed)

    def __iter__(self) -> Iterator[str]:
        return iter(self.changed)

    def __str__(self) -> str:
        lines = [f"{self.action}: {len(self.changed)} BatchNorm(s)"]
        lines += [f"  {name}" for name in self.changed]
        lines += [f"  skipped {name}: {why}" for name, why in self.skipped]
        return "\n".join(lines)


def freeze_batchnorm(model: nn.Module) -> FreezeReport:
    """Replace, in place, every BatchNorm of ``model`` by a :class:`FrozenBatchNorm`.

    The frozen layers normalize with their running statistics in train and eval mode alike, and their
    gamma/beta get no gradient. Build the optimizer *after* freezing (frozen affine is no longer in
    ``model.parameters()``). BatchNorms without running statistics are skipped and reported.

    Returns:
        A :class:`FreezeReport` naming the frozen layers and the skipped ones with the reason.

    Example::

        >>> report = freeze_batchnorm(model); model.train()   # still frozen
        >>> unfreeze_batchnorm(model)                          # exactly the original BatchNorms back
    """
    report = FreezeReport("freeze_batchnorm")
    for match in find_modules(model, lambda m: isinstance(m, _BatchNorm), "freeze_batchnorm"):
        if match.module.running_mean is None:
            report.skipped.append((match.name, "track_running_stats=False: no statistics to freeze"))
            continue
        frozen = FrozenBatchNorm(match.module)
        for param in match.module.parameters(recurse=False):
            param.grad = None  # so an optimizer built earlier cannot step it with a stale gradient
        for name in match.names:
            replace_module(model, name, frozen)
        report.changed.extend(match.names)
    return report


def unfreeze_batchnorm(model: nn.Module) -> FreezeReport:
    """Undo :func:`freeze_batchnorm`: put back each original BatchNorm, with the frozen layer's values."""
    report = FreezeReport("unfreeze_batchnorm")
    for match in find_modules(model, lambda m: isinstance(m, FrozenBatchNorm), "unfreeze_batchnorm"):
        original = match.module.thaw()
        for name in match.names:
            replace_module(model, name, original)
        report.changed.extend(match.names)
    return report
