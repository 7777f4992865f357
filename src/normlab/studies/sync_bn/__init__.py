"""sync-bn (Wu & He 2018's images per GPU, on 2 CPU ranks): what does SyncBatchNorm buy at a small per-rank
batch?

The batch-size study's small CNN and data, trained data-parallel: every cell runs on ``ranks`` (2) gloo
processes of this machine with ``DistributedDataParallel``, each rank training on ``b`` images of a global
batch of ``ranks x b``. Three arms at several ``b``: **BatchNorm** with per-rank statistics over ``b``
images (what per-GPU BN does), **SyncBatchNorm** with statistics over all ``ranks x b`` (normlab's, gloo/CPU),
and **GroupNorm** (no batch statistics). At one ``b`` the arms share the global batch, lr, data order and
initial weights, so BN vs SyncBN isolates the statistics batch: Wu & He's attribution of BN's small-batch
degradation. Exact checks tie the distributed step to the one-process lab (SyncBN = BN over the global
batch; per-rank BN = ghost-batch BN over blocks of ``b``).

Wu & He's ResNet-50 ImageNet errors are cited reference data (STUDIES.md, batch-size), drawn beside the
measurements; no post sentence is owned here (post 003's batch-size sentences belong to batch-size).
"""

from normlab.studies.sync_bn.config import Config
from normlab.studies.sync_bn.study import SyncBN

__all__ = ["Config", "SyncBN"]
