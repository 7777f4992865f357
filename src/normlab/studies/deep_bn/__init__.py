"""deep-bn (post 004): a 100-layer ReLU MLP at initialization, three inits, with and without BatchNorm.

The seed runs a 100-layer network under several initializations with and without BN and concludes that
"whatever the init, with BN the output std stays at a very stable value" (its code is omitted). normlab
uses the usual setup of the course the seed follows: ``depth x [Linear(256, 256, bias=False) -> BN ->
ReLU]``, batch 16 of ``randn`` inputs, BN in training mode (batch statistics), and prints the std of
every layer's output like the seed does.

It also runs the backward pass, which the seed does not look at. Yang et al. 2019 ("A Mean Field Theory
of Batch Normalization") show that at initialization BN makes gradients *explode* with depth in plain
(non-residual) nets: for ReLU the squared gradient norm grows by ``π/(π-1)`` per layer in the large-batch
limit, so the norm grows by ``sqrt(π/(π-1)) ≈ 1.21`` per layer going from the output toward the input.
The backward pass starts from a random Gaussian readout ``L = <g, out>`` (any fixed readout works; this one
has no preferred direction).

Per seed ``s``: ``torch.manual_seed(s)``, build the layers (torch's default init draws here), apply the
arm's init, then draw ``x`` and ``g``. Arms: ``{plain, bn}/{default, normal, kaiming}``; control
``bn/kaiming/batch=B`` repeats BN + Kaiming at a larger batch, since Yang's rate is a large-batch limit.

Overflow is data, not a crash: when activations become inf/NaN at layer ``k`` the cell records
``overflow_layer = k``, keeps the finite layers, and skips the backward pass for that seed.
"""

from normlab.studies.deep_bn.claims import factors
from normlab.studies.deep_bn.config import YANG_RELU_RATE, Config
from normlab.studies.deep_bn.figures import no_data_reason
from normlab.studies.deep_bn.model import build, run_seed
from normlab.studies.deep_bn.study import DeepBn

__all__ = ["YANG_RELU_RATE", "Config", "DeepBn", "build", "factors", "no_data_reason", "run_seed"]
