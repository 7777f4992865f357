r"""bn-running-stats (posts 002, 004): how BatchNorm's running statistics are updated, and what they cost.

In training BatchNorm normalizes with the batch's mean and *biased* variance; in evaluation with the
running estimates, updated once per training step (torch's convention, ``m`` = ``momentum``)

.. math::  \hat\mu \leftarrow (1-m)\,\hat\mu + m\,\mu_B, \qquad
           \hat\sigma^2 \leftarrow (1-m)\,\hat\sigma^2 + m\,\tfrac{B}{B-1}\sigma_B^2

from ``(0, 1)``. Keras writes the same update with the weight of the *old* value (0.99 = 1 - 0.01);
``momentum=None`` is the cumulative average ``m_t = 1/t``.

Arms:

* ``walkthrough``: post 004's ``BatchNorm1d(5, momentum=0.3)`` on a batch of 3 where feature ``i`` is the
  constant ``i + 1``, for several iterations (the seed prints two).
* ``layer-facts``: torch's default momentum and update rule measured by running the layer (post 002 says
  "PyTorch's momentum is 0.9"); unbiased running variance vs biased normalizing variance.
* ``conventions``: ``torch.nn.BatchNorm1d(momentum=m)``, ``normlab.nn.BatchNorm1d(momentum=m)`` and
  ``normlab.nn.BatchNorm1d(momentum=1-m, momentum_convention="keras")`` on the same random batches.
* ``converge/m=...`` x ``batch_size``: running statistics of a fixed, skewed population (the "training
  set", exact mean and variance known) against steps, per momentum and batch size; all seeds at once
  (one layer with ``seeds x features`` channels: each seed owns a block of channels and its own batches).
* ``gap/m=...`` x ``steps``: a small CNN with BatchNorm trained briefly or longer on real images; test
  accuracy with batch statistics (train mode), running statistics (eval) and recalibrated running
  statistics (exact population statistics of the training data).

The cells' measurements are in ``model.py``; the claims and figures, computed from the stored tables
only, in ``claims.py`` and ``figures.py``.
"""

from normlab.studies.bn_running_stats.config import Config
from normlab.studies.bn_running_stats.model import population
from normlab.studies.bn_running_stats.study import BnRunningStats

__all__ = ["BnRunningStats", "Config", "population"]
