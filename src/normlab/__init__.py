"""normlab: normalization and regularization in deep networks.

Subpackages: ``normlab.nn`` (drop-in norm layers, placements, surgery), ``normlab.probe``
(training instruments), ``normlab.lab`` and ``normlab.studies`` (experiments with many seeds).
"""

__version__ = "0.1.0"
