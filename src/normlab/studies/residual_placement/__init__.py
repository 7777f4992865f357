"""residual-placement (seed 003): Post-LN, Pre-LN, Sandwich-LN and DeepNorm in a char-level transformer.

Seed 003 describes where LayerNorm goes around a transformer's residual and what each choice does at
depth. normlab trains a small decoder-only transformer (:mod:`normlab.models.transformer`) as a character
language model on Shakespeare (:mod:`normlab.data.corpus`), sweeping depth x placement x norm (LayerNorm
vs RMSNorm) x learning-rate warmup (none vs linear), several seeds per cell.

Per seed ``s``: ``torch.manual_seed(s)`` builds the model (Xavier init; DeepNet's beta for DeepNorm), and
a generator seeded with ``s`` draws the training batches, so every arm of a seed sees the same data
(comparisons across arms are paired by seed). Adam with no weight decay and no gradient clipping (clipping
would hide the instability being measured).

What each run records (metric, with what ``step`` means):

* ``train_loss`` (step), ``val_loss`` (last step: mean over fixed validation batches from held-out plays);
* ``diverged`` (1/0): the final validation loss is not finite or not better than the unigram model (the
  training-text character frequencies) by ``learned_margin`` nats, i.e. the run learned nothing from
  context; ``unigram_loss`` is stored too;
* ``init_grad_ffn`` and ``init_grad_block`` (step = layer 1..L): gradient norms at initialization, of the
  FFN output weight and of all block parameters (Xiong et al. 2020, Fig. 3);
* ``update_rms`` (step = 1..K): RMS change of the model's last hidden state on a fixed batch after each of
  the first K updates, relative to init (DeepNet's ``||ΔF||``, Wang et al. 2022, Fig. 3);
* ``stream_rms``, ``stream_maxabs`` (step = layer 0..L): the residual stream after training (value
  explosion, CogView's reason for Sandwich-LN);
* ``ms_per_step``; and in the ``norm-cost`` cell, forward+backward time of each norm at the model's
  activation shape, interleaved (``norm_us/<impl>-<norm>``, one value per repetition).

The package: ``config`` (the config and the arm tables), ``model`` (the training of one seed and the
norm timing), ``claims`` (the claims table and the report notes), ``figures`` and ``study`` (the
:class:`ResidualPlacement` study that wires them).
"""

from normlab.studies.residual_placement.config import NORM_COST_ARM, NORMS, PLACEMENTS, Arm, Config, arms
from normlab.studies.residual_placement.model import norm_cost, train_ensemble
from normlab.studies.residual_placement.study import ResidualPlacement

__all__ = ["NORMS", "NORM_COST_ARM", "PLACEMENTS", "Arm", "Config", "ResidualPlacement", "arms", "norm_cost",
           "train_ensemble"]
