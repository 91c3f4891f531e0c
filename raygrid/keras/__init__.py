"""Keras support: scikeras wrappers with correct scikit-learn tags, and worker hygiene.

Two halves with different import costs:

* ``uses_keras`` and ``fit_context`` are cheap. Importing them imports neither scikeras nor
  Keras nor TensorFlow, so the fit-and-score code can import them unconditionally.
* ``KerasClassifier``, ``KerasRegressor``, ``build_mlp`` and ``seed_classifier`` need
  scikeras (and therefore Keras and a backend). The two classes are created on first access
  (``from raygrid.keras import KerasClassifier``), which is when scikeras is imported.

Keras 3 is multi-backend. ``KERAS_BACKEND`` is honoured everywhere: with ``jax`` or ``torch``
nothing here imports TensorFlow. (scikeras itself tries ``import tensorflow`` for its seeding
helper; that attempt is suppressed when the backend is not TensorFlow, and scikeras then seeds
through Python's and NumPy's generators, which Keras 3 draws its default seeds from.)
"""
from __future__ import annotations

import contextlib
import gc
import json
import os
import sys
import threading
import time
from typing import Any, Iterator, Sequence

__all__ = [
    "KerasClassifier",
    "KerasRegressor",
    "build_mlp",
    "fit_context",
    "keras_backend",
    "model_pool",
    "seed_classifier",
    "uses_keras",
    "with_stock_tags_fixed",
]

_LAZY_CLASSES = ("KerasClassifier", "KerasRegressor")
_INSTALL_HINT = (
    "raygrid's Keras support needs scikeras and a Keras backend: "
    "pip install 'raygrid[keras]' (scikeras + TensorFlow), or scikeras with jax/torch "
    "and KERAS_BACKEND set accordingly."
)

# ``steps_per_execution="auto"`` resolves to this many training steps per compiled call.
AUTO_STEPS_PER_EXECUTION = 64


# --------------------------------------------------------------------------------------
# Cheap helpers (no heavy imports)
# --------------------------------------------------------------------------------------
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


def _keras_paths(estimator: Any) -> list[str]:
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
    return bool(_keras_paths(estimator))


#: Set to ``sklearn`` (or ``keep``) to leave scikeras' stock classes as scikit-learn sees them.
STOCK_TAGS_ENV = "RAYGRID_STOCK_SCIKERAS_TAGS"
_stock_warned = False


def _stock_class(obj: Any) -> str | None:
    """``"KerasClassifier"``/``"KerasRegressor"`` for scikeras' own classes (not subclasses)."""
    klass = type(obj)
    if klass.__module__ == "scikeras.wrappers" and klass.__name__ in _LAZY_CLASSES:
        return klass.__name__
    return None


def _retagged(obj: Any) -> Any:
    """raygrid's tag-fixed class with ``obj``'s parameters, when ``obj`` is a stock scikeras
    wrapper that scikit-learn does not recognise as what it is; else None."""
    name = _stock_class(obj)
    if name is None:
        return None
    from sklearn.base import is_classifier, is_regressor

    if (is_classifier(obj) if name == "KerasClassifier" else is_regressor(obj)):
        return None  # a scikeras release with correct tags: nothing to fix
    klass = _make_classes()[name]
    # steps_per_execution=None: one step per call, exactly what the stock class does.
    return klass(**obj.get_params(deep=False), steps_per_execution=None)


def with_stock_tags_fixed(estimator: Any) -> Any:
    """``estimator`` with scikeras' stock ``KerasClassifier``/``KerasRegressor`` (at the top level
    or as a nested parameter, e.g. a Pipeline's last step) replaced by raygrid's subclasses.

    With scikit-learn >= 1.7, scikeras 0.13's stock classes are not tagged as a classifier /
    regressor (``is_classifier`` is False), so scikit-learn silently uses unstratified ``KFold``
    for an integer ``cv`` and classifier scorers such as ``roc_auc`` return NaN. raygrid treats
    them as the estimators they are, with the same parameters and the same training (one step
    per call), and warns once per process. ``RAYGRID_STOCK_SCIKERAS_TAGS=sklearn`` keeps
    scikit-learn's behaviour. Other estimators come back unchanged (never copied).
    """
    global _stock_warned
    if os.environ.get(STOCK_TAGS_ENV, "").strip().lower() in ("sklearn", "keep"):
        return estimator
    paths = [p for p in _keras_paths(estimator)]
    if not paths:
        return estimator
    params = estimator.get_params(deep=True) if paths != [""] else {}
    fixed = {p: _retagged(estimator if p == "" else params[p]) for p in paths}
    fixed = {p: est for p, est in fixed.items() if est is not None}
    if not fixed:
        return estimator
    if "" in fixed:
        out = fixed.pop("")
    else:
        from sklearn.base import clone

        out = clone(estimator)
    if fixed:
        out.set_params(**fixed)
    if not _stock_warned:
        _stock_warned = True
        import warnings

        warnings.warn(
            "scikeras' stock KerasClassifier/KerasRegressor is not tagged as a classifier/"
            "regressor with scikit-learn >= 1.7 (scikeras 0.13 does not implement scikit-learn's "
            "__sklearn_tags__ for them): scikit-learn would use unstratified KFold for an integer "
            "cv and classifier scorers such as roc_auc would return NaN. raygrid treats the model "
            "as what it is (raygrid.keras's tag-fixed class, same parameters and training). Set "
            f"{STOCK_TAGS_ENV}=sklearn to keep scikit-learn's behaviour.",
            UserWarning, stacklevel=3,
        )
    return out


# --------------------------------------------------------------------------------------
# Worker hygiene
# --------------------------------------------------------------------------------------
_setup_lock = threading.Lock()
_threads_done: bool = False
_gpu_done: bool = False
#: What the process-wide setup did, for diagnostics (e.g. {"threads": ..., "gpu": ...}).
setup_log: dict[str, Any] = {}


def _cpu_count(num_cpus: Any) -> int | None:
    if num_cpus is None:
        return None
    try:
        n = int(round(float(num_cpus)))
    except (TypeError, ValueError):
        raise TypeError(f"num_cpus must be a number or None, got {num_cpus!r}") from None
    return max(1, n)


def _cap_threads(backend: str, n: int) -> None:
    global _threads_done
    if _threads_done:
        return
    if backend == "tensorflow":
        if "tensorflow" not in sys.modules:
            os.environ["TF_NUM_INTRAOP_THREADS"] = str(n)
            os.environ["TF_NUM_INTEROP_THREADS"] = str(n)
            setup_log["threads"] = f"env {n}"
        else:
            import tensorflow as tf

            try:
                tf.config.threading.set_intra_op_parallelism_threads(n)
                tf.config.threading.set_inter_op_parallelism_threads(n)
                setup_log["threads"] = f"tf.config {n}"
            except RuntimeError as exc:  # runtime already initialised: it keeps its pools
                setup_log["threads"] = f"unchanged ({exc})"
    elif backend == "torch":
        import torch

        torch.set_num_threads(n)
        try:
            torch.set_num_interop_threads(n)
        except RuntimeError:  # only settable before the first parallel work
            pass
        setup_log["threads"] = f"torch {n}"
    else:
        # JAX/XLA sizes its CPU thread pool when its backend starts; nothing safe to do here.
        setup_log["threads"] = f"unchanged ({backend})"
    _threads_done = True


def _gpu_memory_growth(backend: str) -> None:
    global _gpu_done
    if _gpu_done:
        return
    if backend == "tensorflow":
        if "tensorflow" not in sys.modules:
            os.environ.setdefault("TF_FORCE_GPU_ALLOW_GROWTH", "true")
            setup_log["gpu"] = "env TF_FORCE_GPU_ALLOW_GROWTH"
        else:
            import tensorflow as tf

            done = []
            for gpu in tf.config.list_physical_devices("GPU"):
                try:
                    tf.config.experimental.set_memory_growth(gpu, True)
                    done.append(gpu.name)
                except (RuntimeError, ValueError):  # already initialised
                    pass
            setup_log["gpu"] = f"memory growth on {done}"
    elif backend == "jax" and "jax" not in sys.modules:
        # Several fits may share one GPU: do not let the first grab most of its memory.
        os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
        setup_log["gpu"] = "env XLA_PYTHON_CLIENT_PREALLOCATE=false"
    _gpu_done = True


#: A full garbage collection after every fit costs ~0.25 s in a worker holding TensorFlow, a
#: quarter of a small Keras fit; collecting at most this often keeps memory flat for a fraction.
GC_EVERY_S = 10.0
_last_gc = time.monotonic()


def _clear_session() -> None:
    """Reset Keras' global state after a fit; a full ``gc.collect`` at most every GC_EVERY_S."""
    global _last_gc
    keras = sys.modules.get("keras")
    if keras is None:
        return
    try:
        keras.backend.clear_session(free_memory=False)
        now = time.monotonic()
        if now - _last_gc >= GC_EVERY_S:
            gc.collect()
            _last_gc = now
    except Exception:  # never let cleanup hide the fit's own outcome
        pass


def _op_determinism_enabled() -> bool:
    if "tensorflow" not in sys.modules or sys.modules["tensorflow"] is None:
        return os.environ.get("TF_DETERMINISTIC_OPS", "").lower() in ("1", "true")
    from tensorflow.python.framework import config

    return bool(config.is_op_determinism_enabled())


@contextlib.contextmanager
def keep_op_determinism() -> Iterator[None]:
    """Leave TensorFlow's op determinism as it was before a seeded scikeras fit.

    scikeras' seeding sets ``TF_DETERMINISTIC_OPS=1`` and only then asks TensorFlow whether
    determinism was already on, so it never turns it off again: every later unseeded fit in the
    process then fails with "Random ops require a seed to be set when determinism is enabled".
    (scikeras itself restores the state through the same TensorFlow call used here.)
    """
    before = _op_determinism_enabled()
    try:
        yield
    finally:
        if not before and keras_backend() == "tensorflow" and sys.modules.get("tensorflow"):
            try:
                from tensorflow.python.framework import config

                if config.is_op_determinism_enabled():
                    config.disable_op_determinism()
            except Exception:  # noqa: BLE001 - best effort; never hide the fit's outcome
                pass


@contextlib.contextmanager
def fit_context(estimator: Any, seed: int | None = None, num_cpus: float | None = None,
                reuse_models: bool = False) -> Iterator[Any]:
    """Run one fit of ``estimator`` with Keras worker hygiene.

    Wrap every fit (and the scoring that follows it, if wanted) of an estimator that is or
    contains a scikeras model::

        with fit_context(est, seed=fit_seed, num_cpus=1):
            est.fit(X_train, y_train)
            score = scorer(est, X_test, y_test)

    * caps the backend's CPU threads to ``num_cpus`` (TensorFlow intra/inter-op pools, or
      torch's), once per process; ``None`` leaves them alone;
    * turns on GPU memory growth (TensorFlow), once per process;
    * sets ``random_state=seed`` on every scikeras model inside ``estimator`` (top level, a
      Pipeline step, or any nested parameter) when ``seed`` is not None;
    * with ``reuse_models=True`` (TensorFlow backend), trains on a model kept from an earlier fit
      in this process with the same layers, loss and optimizer, given this fit's freshly
      initialised weights and optimizer state: the fitted weights are the same, bit for bit, but
      TensorFlow does not trace the training and prediction functions again (about half a
      second a fit). Only for estimators that are thrown away after the block: the model goes
      back to the pool when the block ends (see ``model_pool``);
    * calls ``keras.backend.clear_session()`` afterwards, even if the fit fails (with a full
      garbage collection at most every ``GC_EVERY_S`` seconds).

    For an estimator without Keras this does nothing. Yields ``estimator``.
    """
    paths = _keras_paths(estimator)
    if not paths:
        yield estimator
        return

    backend = keras_backend()
    n = _cpu_count(num_cpus)
    with _setup_lock:
        if n is not None:
            _cap_threads(backend, n)
        _gpu_memory_growth(backend)

    if seed is not None:
        seed = int(seed)
        for path in paths:
            if path == "":
                estimator.set_params(random_state=seed)
            else:
                estimator.set_params(**{f"{path}__random_state": seed})
    scope = model_pool.scope() if reuse_models else contextlib.nullcontext()
    try:
        with keep_op_determinism(), scope:
            yield estimator
    finally:
        _clear_session()


# --------------------------------------------------------------------------------------
# Trained models kept for the next fit of the same structure (TensorFlow)
# --------------------------------------------------------------------------------------
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


# --------------------------------------------------------------------------------------
# scikeras wrappers with scikit-learn >= 1.7 tags (created on first access)
# --------------------------------------------------------------------------------------
_classes: dict[str, type] = {}
_classes_lock = threading.RLock()


def _import_scikeras_wrappers():
    """Import ``scikeras.wrappers`` without pulling in TensorFlow on other backends."""
    backend = keras_backend()
    block_tf = (
        backend != "tensorflow"
        and "tensorflow" not in sys.modules
        and "scikeras.wrappers" not in sys.modules
    )
    if block_tf:
        # scikeras' seeding helper does ``try: import tensorflow``; a None entry makes that
        # attempt fail fast, and scikeras falls back to seeding Python and NumPy.
        sys.modules["tensorflow"] = None  # type: ignore[assignment]
    try:
        import scikeras.wrappers as wrappers
    except ImportError as exc:
        raise ImportError(_INSTALL_HINT) from exc
    finally:
        if block_tf and sys.modules.get("tensorflow", 0) is None:
            del sys.modules["tensorflow"]
    return wrappers


def _make_classes() -> dict[str, type]:
    with _classes_lock:
        if _classes:
            return _classes
        wrappers = _import_scikeras_wrappers()
        from sklearn.utils import ClassifierTags, RegressorTags

        class _StepsPerExecutionMixin:
            """Run ``steps_per_execution`` training steps per compiled call, in ``fit`` only
            (and, inside ``fit_context(reuse_models=True)``, train on a pooled model).

            Keras' ``steps_per_execution`` is set at compile time and then applies to fit,
            evaluate and predict. Here it applies to training alone: fitted weights are the
            same as with one step per call, while predictions keep Keras' one-step path (on
            TensorFlow a multi-step predict is slower to trace and may differ in the last
            bit of float32).
            """

            def _resolved_steps_per_execution(self) -> int:
                value = getattr(self, "steps_per_execution", "auto")
                if value is None:
                    return 1
                if value == "auto":
                    if keras_backend() == "torch":  # Keras supports only 1 on torch
                        return 1
                    if getattr(self, "run_eagerly", False) or getattr(self, "callbacks", None):
                        # Batch-level callbacks would fire only once per execution.
                        return 1
                    return AUTO_STEPS_PER_EXECUTION
                if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                    raise ValueError(
                        f"steps_per_execution must be 'auto', None or a positive int, got {value!r}"
                    )
                return value

            def fit(self, X, y, *args, **kwargs):
                with keep_op_determinism():
                    return super().fit(X, y, *args, **kwargs)

            def partial_fit(self, X, y, *args, **kwargs):
                with keep_op_determinism():
                    return super().partial_fit(X, y, *args, **kwargs)

            def _fit_keras_model(self, *args, **kwargs):
                if (not kwargs.get("warm_start") and not kwargs.get("initial_epoch")
                        and not getattr(self, "warm_start", False)):
                    self.model_ = model_pool.model_for_fit(self.model_)
                model = self.model_
                steps = self._resolved_steps_per_execution()
                compiled = getattr(model, "steps_per_execution", 1)
                if (
                    steps == 1
                    or compiled != 1  # the model (or compile__steps_per_execution) chose its own
                    or "compile__steps_per_execution" in self.__dict__
                ):
                    return super()._fit_keras_model(*args, **kwargs)
                if getattr(model, "_raygrid_train_steps", None) != steps:
                    model.train_function = None  # traced for another value: trace again
                model.steps_per_execution = steps
                before = (model.test_function, model.predict_function)
                try:
                    return super()._fit_keras_model(*args, **kwargs)
                finally:
                    model._raygrid_train_steps = steps
                    model.steps_per_execution = compiled
                    # evaluate/predict functions built during fit (validation, callbacks)
                    # used the multi-step value: let them be rebuilt for one step.
                    if model.test_function is not before[0]:
                        model.test_function = None
                    if model.predict_function is not before[1]:
                        model.predict_function = None

        class KerasClassifier(_StepsPerExecutionMixin, wrappers.KerasClassifier):
            """scikeras' ``KerasClassifier`` that scikit-learn recognises as a classifier.

            With scikit-learn >= 1.7 the stock class is not tagged as a classifier, so an
            integer ``cv`` silently becomes unstratified ``KFold`` and probability scorers
            (``roc_auc``) return NaN. This subclass fixes the tags and otherwise accepts
            exactly scikeras' parameters (``model__*``, ``fit__*``, ``optimizer__*``, ...).

            ``steps_per_execution``: training steps per compiled call during ``fit``
            (``"auto"``: 64, or 1 on the torch backend, with ``run_eagerly`` or with
            ``callbacks``; an int forces a value; ``None`` means 1). It does not change the
            fitted weights, only how often control returns to Python.
            """

            def __init__(self, model=None, *, steps_per_execution="auto", **kwargs):
                super().__init__(model=model, **kwargs)
                self.steps_per_execution = steps_per_execution

            def __sklearn_tags__(self):
                tags = super().__sklearn_tags__()
                tags.estimator_type = "classifier"
                tags.classifier_tags = ClassifierTags()
                tags.regressor_tags = None
                tags.target_tags.required = True
                return tags

        class KerasRegressor(_StepsPerExecutionMixin, wrappers.KerasRegressor):
            """scikeras' ``KerasRegressor`` with scikit-learn >= 1.7 regressor tags.

            See ``KerasClassifier`` for ``steps_per_execution``.
            """

            def __init__(self, model=None, *, steps_per_execution="auto", **kwargs):
                super().__init__(model=model, **kwargs)
                self.steps_per_execution = steps_per_execution

            def __sklearn_tags__(self):
                tags = super().__sklearn_tags__()
                tags.estimator_type = "regressor"
                tags.regressor_tags = RegressorTags()
                tags.classifier_tags = None
                tags.target_tags.required = True
                return tags

        for klass in (KerasClassifier, KerasRegressor):
            klass.__module__ = __name__
            klass.__qualname__ = klass.__name__
        _StepsPerExecutionMixin.__module__ = __name__
        _StepsPerExecutionMixin.__qualname__ = "_StepsPerExecutionMixin"
        _classes["KerasClassifier"] = KerasClassifier
        _classes["KerasRegressor"] = KerasRegressor
        _classes["_StepsPerExecutionMixin"] = _StepsPerExecutionMixin
        globals().update(_classes)
        return _classes


def __getattr__(name: str):
    if name in _LAZY_CLASSES or name == "_StepsPerExecutionMixin":
        return _make_classes()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY_CLASSES))


# --------------------------------------------------------------------------------------
# The seed study's model
# --------------------------------------------------------------------------------------
def build_mlp(meta: dict, hidden=(12, 8), activation: str = "relu", init: str = "glorot_uniform"):
    """The seed study's MLP, for scikeras' ``model=`` (uncompiled; scikeras compiles it).

    ``Input(n_features_in_)`` -> ``Dense(h, activation, kernel_initializer=init)`` for each
    ``h`` in ``hidden`` -> output: ``Dense(1, "sigmoid")`` for a binary target,
    ``Dense(n_classes_, "softmax")`` for more classes (use a sparse categorical loss then),
    a linear ``Dense(n_outputs)`` when ``meta`` comes from a regressor.
    """
    import keras

    n_features = meta["n_features_in_"]
    model = keras.Sequential(name="mlp")
    model.add(keras.Input(shape=(n_features,)))
    for units in hidden:
        model.add(keras.layers.Dense(int(units), activation=activation, kernel_initializer=init))
    n_classes = meta.get("n_classes_")
    if n_classes is None:  # regressor
        n_out = meta.get("n_outputs_expected_") or 1
        model.add(keras.layers.Dense(int(n_out)))
    elif n_classes <= 2:
        model.add(keras.layers.Dense(1, activation="sigmoid", kernel_initializer=init))
    else:
        model.add(keras.layers.Dense(int(n_classes), activation="softmax", kernel_initializer=init))
    return model


def seed_classifier(**kwargs):
    """The seed study's classifier: ``build_mlp`` under binary cross-entropy and Adam.

    Defaults: 12-8 ReLU hidden layers, Glorot-uniform init, 10 epochs of batch 32, silent.
    Any keyword overrides a default or adds a scikeras parameter, so the study's grid
    ``{"model__activation", "optimizer", "model__init", "batch_size", "epochs"}`` applies.
    """
    params = dict(
        model=build_mlp,
        loss="binary_crossentropy",
        optimizer="adam",
        metrics=None,
        epochs=10,
        batch_size=32,
        verbose=0,
        model__hidden=(12, 8),
        model__activation="relu",
        model__init="glorot_uniform",
    )
    params.update(kwargs)
    return _make_classes()["KerasClassifier"](**params)
