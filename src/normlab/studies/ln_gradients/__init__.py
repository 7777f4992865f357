"""ln-gradients (post 000): does LayerNorm lower the loss and "prevent overfitting", as gradients suggest?

The seed trains a 5-Linear network with no activation function on 20 points of ``y = 2*x1 - x2**2 + 1``
(with ``x1 = x2 - 10``: the two inputs are collinear, so the target is a parabola in one variable) in
four arms: ``dropout``, ``dropout+ln``, ``ln``, ``none``; Adam(lr=0.01, weight_decay=0.01), MSELoss, full
batch, 1000 steps; it reads loss curves and TensorBoard gradient histograms of one run per arm.

normlab reruns the four arms exactly, with N seeds each trained as one vectorized ensemble, a held-out
set of the same function, and control arms:

* ``relu`` / ``relu+ln``: the network is linear except for LN, so "LN lowers the loss" may only mean
  "a nonlinearity lowers the loss". With ReLUs, does LN still help? And since a linear network cannot
  overfit 20 points of a parabola, the ReLU arms are where "LN prevents overfitting" can be tested.
* ``relu+dropout`` / ``relu+dropout+ln``: the post's dropout arms with ReLUs: does dropout (with or
  without LN) regularise a network that can overfit?
* ``none/std`` / ``ln/std``: inputs and targets standardized (the post's are unscaled: |y| up to 340).
* ``none/adamw`` / ``ln/adamw``: decoupled weight decay (AdamW) instead of Adam's L2 term.

``config`` holds the settings, the arms and the post's data; ``model`` the network and the training loop;
``claims`` the measures, claims and notes; ``figures`` the figures; ``study`` the :class:`LnGradients` study.
"""

from normlab.studies.ln_gradients.config import (
    ARMS,
    CONTROL_ARMS,
    SEED_ARMS,
    ArmSpec,
    Config,
    datasets,
    inputs,
    linear_floor,
    target,
)
from normlab.studies.ln_gradients.model import SeedModel, train_arm
from normlab.studies.ln_gradients.study import LnGradients

__all__ = [
    "ARMS",
    "CONTROL_ARMS",
    "SEED_ARMS",
    "ArmSpec",
    "Config",
    "LnGradients",
    "SeedModel",
    "datasets",
    "inputs",
    "linear_floor",
    "target",
    "train_arm",
]
