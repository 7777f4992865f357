"""Models the studies train: a small CNN with the norm as data (:mod:`~normlab.models.cnn`) and a
character-level decoder-only transformer with residual placements (:mod:`~normlab.models.transformer`)."""
