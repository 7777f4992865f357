"""The public names promised by the issues are importable from where the docs say."""

import torch

import normlab.nn as nn
import normlab.nn.functional as F
from normlab.nn.fused import dropout_add_norm as fused_dropout_add_norm


def test_functional_reexports_the_fused_dropout_add_norm():
    assert F.dropout_add_norm is fused_dropout_add_norm
    x, r = torch.randn(3, 8), torch.randn(3, 8)
    got = F.dropout_add_norm(x, r, None, None, p=0.0, training=False, eps=1e-5)
    torch.testing.assert_close(got, torch.nn.functional.layer_norm(r + x, (8,), eps=1e-5))


def test_nn_exports_placements_and_surgery():
    assert nn.deepnorm_constants("decoder", 6) == nn.residual.deepnorm_constants("decoder", 6)
    assert callable(nn.surgery.convert_norms) and callable(nn.surgery.fold_batchnorm)
    assert nn.Placement("pre") is nn.Placement.PRE
