"""Keras support: scikeras wrappers with correct scikit-learn tags, and worker hygiene.

Two halves with different import costs:

* ``uses_keras``, ``keras_backend`` and ``fit_context`` are cheap. Importing them (or this
  package) imports neither scikeras nor Keras nor TensorFlow, so the fit-and-score code can
  import them unconditionally.
* ``KerasClassifier``, ``KerasRegressor``, ``build_mlp`` and ``seed_classifier`` need
  scikeras (and therefore Keras and a backend). The two classes are created on first access
  (``from raygrid.keras import KerasClassifier``), which is when scikeras is imported; they
  belong to this module, which is the name their pickles carry.

Keras 3 is multi-backend. ``KERAS_BACKEND`` is honoured everywhere: with ``jax`` or ``torch``
nothing here imports TensorFlow. (scikeras itself tries ``import tensorflow`` for its seeding
helper; that attempt is suppressed when the backend is not TensorFlow, and scikeras then seeds
through Python's and NumPy's generators, which Keras 3 draws its default seeds from.)

The modules: ``detect`` (what an estimator is, which backend), ``hygiene`` (``fit_context``),
``pool`` (models kept for the next fit), ``wrappers`` (the tag-fixed classes and
``with_stock_tags_fixed``), ``seed`` (the seed study's model) and ``quiet`` (native start-up
chatter held back).
"""
from __future__ import annotations

import importlib

from raygrid.keras.detect import is_scikeras_wrapper, keras_backend, uses_keras

#: Names defined in the package's modules, imported on first use: ``raygrid.keras.quiet`` and
#: ``detect`` stay cheap to import (the ``raygrid`` command imports them before any work).
_LAZY = {
    "fit_context": "raygrid.keras.hygiene",
    "setup_log": "raygrid.keras.hygiene",
    "model_pool": "raygrid.keras.pool",
    "build_mlp": "raygrid.keras.seed",
    "seed_classifier": "raygrid.keras.seed",
    "with_stock_tags_fixed": "raygrid.keras.wrappers",
}
_CLASS_NAMES = ("KerasClassifier", "KerasRegressor")

__all__ = [
    "KerasClassifier",
    "KerasRegressor",
    "build_mlp",
    "fit_context",
    "is_scikeras_wrapper",
    "keras_backend",
    "model_pool",
    "seed_classifier",
    "setup_log",
    "uses_keras",
    "with_stock_tags_fixed",
]


def __getattr__(name: str):
    if name in _CLASS_NAMES:
        from raygrid.keras.wrappers import make_classes

        value = make_classes()[name]
    elif name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
