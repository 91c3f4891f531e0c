"""What an estimator is, as far as Keras goes, and which Keras backend is in use.

Cheap: nothing here imports scikeras, Keras or TensorFlow; it reads class names, modules,
``get_params`` and the environment only.
"""
from __future__ import annotations

import json
import os
import sys
from typing import Any


def keras_backend() -> str:
    """The Keras backend in use, or the one Keras will pick when it is imported.

    Does not import Keras: when Keras is not imported yet, this reads ``KERAS_BACKEND``,
    then ``$KERAS_HOME/keras.json`` (default ``~/.keras/keras.json``), then falls back to
    Keras' own default, ``"tensorflow"``.
    """
    keras = sys.modules.get("keras")
    if keras is not None:
        try:
            return str(keras.backend.backend())
        except AttributeError:  # keras partially imported
            pass
    env = os.environ.get("KERAS_BACKEND")
    if env:
        return env
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    try:
        with open(os.path.join(home, "keras.json"), encoding="utf-8") as fh:
            backend = json.load(fh).get("backend")
        if backend:
            return str(backend)
    except (OSError, ValueError, AttributeError):
        pass
    return "tensorflow"


def is_scikeras_wrapper(obj: Any) -> bool:
    """True for instances of scikeras' BaseWrapper (or subclasses), without importing scikeras."""
    if isinstance(obj, type):
        return False
    for klass in type(obj).__mro__:
        if klass.__name__ == "BaseWrapper" and klass.__module__.startswith("scikeras"):
            return True
    return False


def keras_paths(estimator: Any) -> list[str]:
    """Parameter paths of every scikeras wrapper inside ``estimator`` ("" for the top level)."""
    paths = []
    if is_scikeras_wrapper(estimator):
        paths.append("")
    get_params = getattr(estimator, "get_params", None)
    if get_params is None or isinstance(estimator, type):
        return paths
    try:
        params = get_params(deep=True)
    except Exception:  # a half-built or exotic object: treat as opaque
        return paths
    for name, value in params.items():
        if is_scikeras_wrapper(value):
            paths.append(name)
    return paths


def uses_keras(estimator: Any) -> bool:
    """True when ``estimator`` is, or contains as a (nested) parameter, a scikeras model.

    Cheap: it looks at class names and modules only and never imports scikeras, Keras or
    TensorFlow.
    """
    return bool(keras_paths(estimator))


def _has_early_stopping(value: Any) -> bool:
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        return any(_has_early_stopping(v) for v in value)
    klass = value if isinstance(value, type) else type(value)
    return any(k.__name__ == "EarlyStopping" and k.__module__.split(".")[0] == "keras"
               for k in klass.__mro__)


def stopped_epoch(estimator: Any) -> int | None:
    """For a fitted scikeras model (or a pipeline ending in one) whose fit had a Keras
    ``EarlyStopping`` callback: the epochs the fit trained (``len(history_["loss"])``, the last
    epoch counted from 1), else None."""
    steps = getattr(estimator, "steps", None)
    if isinstance(steps, list) and steps:
        estimator = steps[-1][1]
    if not is_scikeras_wrapper(estimator):
        return None
    params = estimator.get_params(deep=False)
    if not any(_has_early_stopping(params.get(k)) for k in ("callbacks", "fit__callbacks")):
        return None
    history = getattr(estimator, "history_", None)
    return None if history is None else len(history.get("loss", ()))
