"""Normalization layers that are drop-in for torch.nn (same names, arguments, state_dict keys).

Swap ``torch.nn.X`` for ``normlab.nn.X``: the classes subclass torch's (``isinstance`` holds), load torch
checkpoints with ``strict=True`` and compute the same numbers, after checking their inputs with errors
that name the argument (``NormValueError``/``NormTypeError``, which are also ``RuntimeError``: torch's
kernels raise that). ``normlab.nn.functional`` has the functional twins; ``normlab.nn.reference`` the
slow float64 math, forward and hand-derived backward, for reading and for tests.
"""

from normlab.nn import functional, reference, residual, surgery
from normlab.nn._validate import NormTypeError, NormValueError
from normlab.nn.batchnorm import BatchNorm1d, BatchNorm2d, BatchNorm3d, to_torch_momentum
from normlab.nn.frozen import FrozenBatchNorm2d
from normlab.nn.groupnorm import GroupNorm, InstanceNorm1d, InstanceNorm2d, InstanceNorm3d
from normlab.nn.layernorm import LayerNorm, LayerNorm2d, RMSNorm, RMSNorm2d
from normlab.nn.registry import NORM_NAMES, create_norm, get_norm_layer
from normlab.nn.residual import Placement, Residual, deepnorm_constants
from normlab.nn.sync_batchnorm import SyncBatchNorm

__all__ = [
    "NORM_NAMES",
    "BatchNorm1d",
    "BatchNorm2d",
    "BatchNorm3d",
    "FrozenBatchNorm2d",
    "GroupNorm",
    "InstanceNorm1d",
    "InstanceNorm2d",
    "InstanceNorm3d",
    "LayerNorm",
    "LayerNorm2d",
    "NormTypeError",
    "NormValueError",
    "Placement",
    "RMSNorm",
    "RMSNorm2d",
    "Residual",
    "SyncBatchNorm",
    "create_norm",
    "deepnorm_constants",
    "functional",
    "get_norm_layer",
    "reference",
    "residual",
    "surgery",
    "to_torch_momentum",
]
