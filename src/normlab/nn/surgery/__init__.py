"""Model surgery for normalization layers: convert, freeze, fold, recalibrate (any ``nn.Module`` tree).

- :func:`convert_norms` swaps one norm kind for another (BatchNorm2d -> GroupNorm, LayerNorm -> RMSNorm,
  torch.nn <-> normlab.nn), carrying affine parameters and running statistics where they mean the same.
- :func:`freeze_batchnorm` / :func:`unfreeze_batchnorm` fix BatchNorm statistics and affine parameters
  for fine-tuning, robust to ``model.train()``.
- :func:`fold_batchnorm` folds eval-mode BatchNorm into the preceding Conv/ConvTranspose/Linear.
- :func:`recalibrate_batchnorm` re-estimates running statistics exactly over a dataset.
"""

from normlab.nn.surgery._families import ForeignNorm, is_norm_class, register_norm_class
from normlab.nn.surgery.convert import ConversionError, ConversionReport, Replacement, convert_norms
from normlab.nn.surgery.fold import FoldReport, fold_batchnorm
from normlab.nn.surgery.freeze import FreezeReport, FrozenBatchNorm, freeze_batchnorm, unfreeze_batchnorm
from normlab.nn.surgery.recalibrate import PooledMoments, RecalibrationReport, recalibrate_batchnorm

__all__ = [
    "ConversionError",
    "ConversionReport",
    "FoldReport",
    "ForeignNorm",
    "FreezeReport",
    "FrozenBatchNorm",
    "PooledMoments",
    "RecalibrationReport",
    "Replacement",
    "convert_norms",
    "fold_batchnorm",
    "freeze_batchnorm",
    "is_norm_class",
    "recalibrate_batchnorm",
    "register_norm_class",
    "unfreeze_batchnorm",
]
