"""residual-placement (posts 003, 002): Post-LN, Pre-LN, Sandwich-LN and DeepNorm in a char-level transformer.

Post 003 describes where LayerNorm goes around a transformer's residual and what each choice does at
depth; posts 002 and 003 say LayerNorm, not BatchNorm, is what NLP uses. normlab trains a small
decoder-only transformer (:mod:`normlab.models.transformer`) as a character language model on Shakespeare
(:mod:`normlab.data.corpus`): a depth x learning-rate stability map of every placement (LayerNorm, no
warmup), warmup arms in the stress cell (deepest depth, highest rate), RMSNorm arms and a BatchNorm arm.

Per seed ``s``: the initial weights are ``CharTransformer``'s under ``torch.manual_seed(s)`` (Xavier init;
DeepNet's beta for DeepNorm) and a generator seeded with ``s`` draws the training batches, so every cell
of a seed sees the same data: the seed is the unit of every statistic. The seeds of a cell train together
as one vectorized ensemble (:mod:`.ensemble`). Adam, no weight decay, no gradient clipping.

What each run records (metric, with what ``step`` means):

* ``train_loss`` (step), ``val_loss`` (last step: mean over fixed validation batches from held-out plays);
* ``blew_up`` (a non-finite loss, or a logged training loss more than ``blowup_margin`` above its first),
  ``plateau`` (final validation loss not ``learned_margin`` below the unigram model's), ``diverged``
  (either); ``start_train_loss``, ``peak_train_loss``, ``unigram_loss``;
* ``init_grad_ffn`` and ``init_grad_block`` (step = layer 1..L): gradient norms at initialization
  (Xiong et al. 2020, Fig. 3);
* ``update_rms`` (step = 1..K): RMS change of the model's last hidden state on a fixed batch since init
  (DeepNet's ``||ΔF||``); ``weight_update_rel`` (step = 1..K): ``||θ - θ_0|| / ||θ_0||`` of the blocks;
* ``stream_rms``, ``stream_maxabs`` (step = layer 0..L): the residual stream after training;
* ``ms_per_step`` (thread CPU time per member); and in the ``norm-cost`` cell, forward+backward time of
  each norm at the model's activation shape, interleaved (``norm_us/<impl>-<norm>``).

The package: ``config`` (the config and the arms), ``ensemble`` (the vectorized model and optimizer),
``model`` (training one arm for all seeds, the norm timing), ``claims``, ``sentences`` (the posts' claim
sentences), ``figures`` and ``study`` (the :class:`ResidualPlacement` study that wires them).
"""

from normlab.studies.residual_placement.config import NORM_COST_ARM, NORMS, PLACEMENTS, Arm, Config, arms
from normlab.studies.residual_placement.model import norm_cost, train_ensemble
from normlab.studies.residual_placement.study import ResidualPlacement

__all__ = ["NORMS", "NORM_COST_ARM", "PLACEMENTS", "Arm", "Config", "ResidualPlacement", "arms", "norm_cost",
           "train_ensemble"]
