"""ln-distribution (post 001): what LayerNorm does to a sample, and what it does not do to a batch.

The seed pushes one sample ``[2, 3, 5, 1, 4]`` through ``LayerNorm(5)`` and ``randn(100, 100)`` through
``Linear(100, 50) -> LayerNorm(50)`` (``torch.manual_seed(0)``), then draws a 2x3 figure. LayerNorm
standardizes each *row* (sample) over its features:

.. math::  y_{ij} = \\frac{h_{ij} - \\mu_i}{\\sqrt{\\sigma_i^2 + \\epsilon}}, \\quad
           \\mu_i = \\tfrac1F \\sum_j h_{ij}, \\quad \\sigma_i^2 = \\tfrac1F \\sum_j (h_{ij} - \\mu_i)^2

so each row gets mean 0 and *biased* variance ``σ²/(σ²+ε) ≈ 1``. The seed checks with ``Tensor.var()``,
which is unbiased (divides by ``F - 1``) and reads ``F/(F-1)`` (1.25 for ``F = 5``), not 1.

Arms (every seed ``s`` runs ``torch.manual_seed(s)`` then builds the model and data in the post's order,
so seed 0 is the post's own run and all arms of a seed see the same pre-norm activations):

* ``single-sample``: the post's 5-value sample (deterministic).
* ``layernorm``: ``Linear(100, 50) -> LayerNorm(50)``, the post's model.
* ``batchnorm`` (control): the same Linear and data, ``BatchNorm1d(50)`` instead: it standardizes each
  *column* (feature) over the batch, so it shows what "equalizing per-feature variance" looks like.
* ``layernorm/lognormal`` (control): ``LayerNorm(50)`` on strongly skewed rows (``exp(randn)``): LN is an
  affine map of each row, so it cannot change a row's shape; this tests the post's remark that after LN
  "a single sample is pulled into a normal distribution".
"""

from normlab.studies.ln_distribution.config import SOURCE, Config
from normlab.studies.ln_distribution.study import LnDistribution

__all__ = ["SOURCE", "Config", "LnDistribution"]
