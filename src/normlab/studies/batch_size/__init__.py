"""batch-size (seed 003's BN/LN/IN/GN section; Wu & He 2018): which norms survive small batches.

A small CNN (:class:`normlab.models.cnn.SmallCNN`) trained on real images with BatchNorm, GroupNorm, LayerNorm
(GN with one group), InstanceNorm (GN with one channel per group) or no norm, at batch sizes 2 to 64.

Fair across batch sizes:

* every run sees the same number of training **examples** (``epochs`` passes over ``train_size``
  images), so a batch of 2 takes 32x the steps of a batch of 64;
* the learning rate follows the linear scaling rule (Goyal et al. 2017; the GN paper's ``0.1 N / 256``):
  ``lr = lr_per_32 * batch_size / 32``, SGD with momentum 0.9;
* every norm and batch size starts seed ``s`` from the same ``torch.manual_seed(s)`` initial weights.

BatchNorm is evaluated with its running statistics (momentum 0.1, as trained) and, as a control, after
recalibrating them to the training set's exact statistics: the difference separates "small batches
trained a worse network" from "small batches left noisy running estimates".

The GroupNorm paper's ResNet-50 ImageNet errors are *cited reference data* (Wu & He 2018, Figure 1 /
Table 2), drawn beside our measurements as the trend to compare with; they are not measured here.
"""

from normlab.studies.batch_size.config import GN_PAPER_ERROR, GN_PAPER_IMAGES_PER_GPU, Config
from normlab.studies.batch_size.study import BatchSize

__all__ = ["GN_PAPER_ERROR", "GN_PAPER_IMAGES_PER_GPU", "BatchSize", "Config"]
