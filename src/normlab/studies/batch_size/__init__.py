"""batch-size (post 003's BN/LN/IN/GN section; Wu & He 2018): does BatchNorm degrade as its statistics batch
shrinks, and do the per-sample norms not?

A small CNN (:class:`normlab.models.cnn.SmallCNN`) trained on real images with BatchNorm, GroupNorm, LayerNorm
(GN with one group), InstanceNorm (GN with one channel per group) or no norm, in two designs:

* **ghost batches** (judges the post's attribution): one optimiser batch, lr, step count and data order for
  every cell; BatchNorm computes its statistics over sub-batches of ``g`` images (:mod:`.ghost`), as per-GPU
  BatchNorm does. The other norms run at the smallest and the largest ``g`` as controls. Trained long enough
  that the reference cell's test accuracy has stopped improving (checked by a claim, drawn as curves).
* **the plain sweep** (kept, confounded): the batch itself varies with equal examples and linear lr scaling,
  so small batches take more steps at a smaller lr for every norm.

Seed ``s`` fixes the initial weights and the data order in every cell, so comparisons are paired by seed.
BatchNorm is also evaluated after recalibrating its running statistics to the training set (a control).

The GroupNorm paper's ResNet-50 ImageNet errors are *cited reference data* (Wu & He 2018, Figure 1 /
Table 2), drawn beside our measurements as the trend to compare with; they are not measured here.
"""

from normlab.studies.batch_size.config import GN_PAPER_ERROR, GN_PAPER_IMAGES_PER_GPU, Config
from normlab.studies.batch_size.study import BatchSize

__all__ = ["GN_PAPER_ERROR", "GN_PAPER_IMAGES_PER_GPU", "BatchSize", "Config"]
