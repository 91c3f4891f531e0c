"""Compiled, already-traced Keras models kept for the next fit of the same structure (TensorFlow).

``model_pool`` is the process's pool (one per Ray worker process); ``fit_context(reuse_models=True)``
opens its ``scope()`` around one fit and its scoring, and raygrid's scikeras wrappers ask it for
the model each fresh fit should train (``model_for_fit``).
"""
from __future__ import annotations

import contextlib
import json
import os
import threading
from typing import Any, Iterator, Sequence

from raygrid.keras.detect import keras_backend

#: Set to "0" to build and trace a new model for every fit.
REUSE_ENV = "RAYGRID_KERAS_REUSE"


class ModelPool:
    """Compiled, already-traced Keras models, keyed by structure, for the next fit to train on.

    A TensorFlow Keras fit spends about half a second tracing its training function (and a fifth
    of a second its prediction function) for every new model, even one identical to the last.
    Within ``scope()`` (what ``fit_context(reuse_models=True)`` opens around one fit and its
    scoring), a scikeras fit whose freshly built and compiled model matches an idle pooled model
    (same layer configuration apart from initialisers, same compile configuration) copies its
    fresh weights and a freshly built optimizer's variables into the pooled model and trains that
    instead. Weights, optimizer slots, iteration counter and learning rate then start exactly
    where a new model would, and the random streams are untouched, so the fit is the same; only
    the tracing is skipped. When the scope ends without an error the model goes back to the pool.

    Only built-in Keras layers and models (``Sequential`` or functional) take part, only fresh
    fits (no ``warm_start``, ``partial_fit`` or ``initial_epoch``), only on the TensorFlow
    backend. At most ``max_models`` idle models are kept (least recently used dropped).
    """

    def __init__(self, max_models: int = 32):
        self.max_models = max_models
        self._idle: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._local = threading.local()
        self.hits = 0
        self.misses = 0

    @contextlib.contextmanager
    def scope(self) -> Iterator[None]:
        """Let fits in this block (this thread) train on pooled models; return them after."""
        outer = getattr(self._local, "taken", None)
        self._local.taken = taken = []
        ok = False
        try:
            yield
            ok = True
        finally:
            self._local.taken = outer
            if ok:
                for key, model in taken:
                    self._put(key, model)

    def active(self) -> bool:
        return getattr(self._local, "taken", None) is not None

    def clear(self) -> None:
        """Drop every idle model and reset the counters."""
        with self._lock:
            self._idle.clear()
            self.hits = self.misses = 0

    def __len__(self) -> int:
        return len(self._idle)

    def _put(self, key: str, model: Any) -> None:
        with self._lock:
            self._idle.pop(key, None)
            self._idle[key] = model
            while len(self._idle) > self.max_models:
                self._idle.pop(next(iter(self._idle)))

    def model_for_fit(self, fresh: Any) -> Any:
        """The model a fresh fit should train: a pooled one set to ``fresh``'s state, or ``fresh``."""
        if not self.active() or os.environ.get(REUSE_ENV, "1") == "0" or keras_backend() != "tensorflow":
            return fresh
        key = _structure_key(fresh)
        if key is None:
            return fresh
        _quiet_retracing_warning()
        with self._lock:
            pooled = self._idle.pop(key, None)
        model = fresh
        if pooled is not None and _take_state(pooled, fresh):
            model = pooled
            self.hits += 1
        else:
            self.misses += 1
        self._local.taken.append((key, model))
        return model


#: The process's pool (one per Ray worker process).
model_pool = ModelPool()


class _RetracingFilter:
    """Drops TensorFlow's "N out of the last M calls ... triggered tf.function retracing" warning.

    A pooled model's functions live across many fits, so TensorFlow counts every legitimate new
    trace (another batch size, another test-set size) against them and warns as if the user had
    a bug; a new model per fit would have traced each time without a word.
    """

    @staticmethod
    def filter(record) -> bool:
        return "triggered tf.function retracing" not in record.getMessage()


_retracing_filter = _RetracingFilter()


def _quiet_retracing_warning() -> None:
    import logging

    logger = logging.getLogger("tensorflow")
    if _retracing_filter not in logger.filters:
        logger.addFilter(_retracing_filter)


def _builtin_keras(model: Any) -> bool:
    """A Sequential or functional model made only of Keras' own layers (config says it all)."""
    import keras

    if type(model) not in (keras.Sequential, keras.Model) and type(model).__name__ != "Functional":
        return False
    stack = list(getattr(model, "layers", []))
    while stack:
        layer = stack.pop()
        if not type(layer).__module__.startswith("keras."):
            return False
        stack.extend(getattr(layer, "layers", []) or [])
    return type(model).__module__.startswith("keras.")


def _strip_initializers(value: Any) -> Any:
    """Layer configs without initialiser entries: they decide the starting weights, which are
    copied over, not the traced computation."""
    if isinstance(value, dict):
        return {k: _strip_initializers(v) for k, v in value.items() if not k.endswith("_initializer")}
    if isinstance(value, (list, tuple)):
        return [_strip_initializers(v) for v in value]
    return value


def _canonical_names(config: Any) -> Any:
    """``config`` with the names in it (layers, model, optimizer) replaced by their order of appearance.

    Keras numbers default names from a process-wide counter ("dense_7"), so the same structure
    built twice is named differently; names never enter the traced computation. References to a
    name (a functional model's connections) are renamed alike, so the wiring still counts.
    """
    names: dict[str, str] = {}

    def collect(value: Any) -> None:
        if isinstance(value, dict):
            name = value.get("name")
            if isinstance(name, str) and name not in names:
                names[name] = f"#{len(names)}"
            for v in value.values():
                collect(v)
        elif isinstance(value, (list, tuple)):
            for v in value:
                collect(v)

    def rename(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: rename(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [rename(v) for v in value]
        if isinstance(value, str):
            return names.get(value, value)
        return value

    collect(config)
    return rename(config)


def _structure_key(model: Any) -> str | None:
    """What a traced training function depends on, as text; None when the model cannot be pooled."""
    optimizer = getattr(model, "optimizer", None)
    if (optimizer is None or getattr(optimizer, "built", True) or getattr(model, "train_function", None)
            is not None or not getattr(model, "compiled", False)):
        return None  # not a freshly built and compiled model
    try:
        if not _builtin_keras(model):
            return None
        text = json.dumps(_canonical_names({
            "model": _strip_initializers(model.get_config()),
            "compile": model.get_compile_config(),
            "optimizer": [type(optimizer).__module__, type(optimizer).__qualname__],
            "inputs": [[str(t.dtype), list(t.shape)] for t in model.inputs],
        }), sort_keys=True, default=repr)
    except Exception:  # noqa: BLE001 - anything unusual: build and trace as usual
        return None
    if " at 0x" in text:  # an object's identity in the config: no two fits would match anyway
        return None
    return text


def _same_layout(targets: Sequence[Any], sources: Sequence[Any]) -> bool:
    """Two lists of variables that pair up one to one, in shape and dtype."""
    return len(targets) == len(sources) and all(
        tuple(a.shape) == tuple(b.shape) and a.dtype == b.dtype for a, b in zip(targets, sources))


def _take_state(pooled: Any, fresh: Any) -> bool:
    """Give ``pooled`` the starting state of ``fresh``: weights, and a new optimizer's variables."""
    try:
        weights = (pooled.variables, fresh.variables)
        if not _same_layout(*weights):
            return False
        fresh.optimizer.build(pooled.trainable_variables)  # slots at initial values, lr, iterations
        slots = (pooled.optimizer.variables, fresh.optimizer.variables)
        if not _same_layout(*slots):
            return False
        for targets, sources in (weights, slots):
            for a, b in zip(targets, sources):
                a.assign(b.value)
        pooled.stop_training = False
        return True
    except Exception:  # noqa: BLE001 - fall back to the fresh model
        return False
