"""overfitting (post 004): weight decay and dropout on a 10-point regression, and inverted dropout.

The seed fits ``y = 1.5x + noise`` with a wide MLP ``1→200→200→200→1`` (ReLU) on 10 points, full batch,
SGD(lr=0.01, momentum=0.9), 2000 steps, with ``weight_decay=1e-2`` vs none, and then the same MLP with
dropout vs none (that code is omitted in the seed; normlab uses the course's usual one: ``Dropout(0.5)``
after each hidden ReLU, before the next Linear, as the post's own notes say). It judges overfitting by eye
from one run and plots its test points at ``(test_y, test_y)`` (a bug: x should be ``test_x``).

normlab trains every arm over many seeds at once (a stacked ensemble: member ``i`` is exactly the model
``torch.manual_seed(seeds[i])`` would build). For a seed ``s`` all arms share the initial weights and the
data, so arms are compared seed by seed (paired tests). The data of seed ``s`` come from a generator
seeded with ``s``, in the post's order: 10 train points on ``linspace(-1, 1)`` with noise 0.5, the post's
own 10-point test set (same ``x`` as the training points, noise 0.3), then a held-out set of
``n_heldout`` uniform points (noise 0.3) that makes a test error worth the name. ``function_mse`` is the
error against the noise-free line ``1.5x`` on a grid. Train error is measured in eval mode (no dropout).

The inverted-dropout demo: ``x = ones(10000)``, ``Dropout(0.5) → Linear(10000, 1, bias=False)`` with weight
1. In training mode dropout keeps each unit with probability ``1-p`` and scales it by ``1/(1-p)``, so the
output is ``2·Binomial(10000, 0.5)``: mean 10000 (not 5000), sd 100. In eval mode it is exactly 10000.
"""

from normlab.studies.overfitting.config import Config
from normlab.studies.overfitting.model import dropout_demo, make_data, mlp, train_arm
from normlab.studies.overfitting.study import Overfitting

__all__ = ["Config", "Overfitting", "dropout_demo", "make_data", "mlp", "train_arm"]
