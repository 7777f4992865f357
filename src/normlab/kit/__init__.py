"""The study author's kit: what studies share above the engine.

:mod:`~normlab.kit.ensemble` (seeds trained as one vectorized model), :mod:`~normlab.kit.flat_params`
(an ensemble's parameters in one matrix), :mod:`~normlab.kit.stats` (intervals and tests over seeds, and the
claim helpers that turn them into verdicts), :mod:`~normlab.kit.tables` (long-table builders) and
:mod:`~normlab.kit.plots` (the plotting helpers the figures share).
"""
