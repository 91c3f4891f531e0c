"""Worker hygiene around every fit of a Keras model: ``fit_context``.

Caps the backend's CPU threads and turns on GPU memory growth (once per process), seeds every
scikeras model inside the estimator, keeps TensorFlow's op determinism as it was, optionally lends
a pooled model (``raygrid.keras.pool``), and clears Keras' session afterwards. Importing this
imports neither scikeras nor Keras nor TensorFlow.
"""
from __future__ import annotations

import contextlib
import gc
import os
import sys
import threading
import time
from typing import Any, Iterator

from raygrid._compat import tf_disable_op_determinism, tf_op_determinism_enabled
from raygrid.keras.detect import keras_backend, keras_paths
from raygrid.keras.pool import model_pool
from raygrid.keras.quiet import native_noise_filtered

_runtime_started = False  # whether a Keras fit ran in this process (its runtime's start logged)

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
    enabled = None
    if sys.modules.get("tensorflow") is not None:
        enabled = tf_op_determinism_enabled()
    if enabled is None:  # TensorFlow not imported yet (or it no longer says): its switch
        return os.environ.get("TF_DETERMINISTIC_OPS", "").lower() in ("1", "true")
    return enabled


@contextlib.contextmanager
def keep_op_determinism() -> Iterator[None]:
    """Leave TensorFlow's op determinism as it was before a seeded scikeras fit.

    scikeras' seeding sets ``TF_DETERMINISTIC_OPS=1`` and only then asks TensorFlow whether
    determinism was already on, so it never turns it off again: every later unseeded fit in the
    process then fails with "Random ops require a seed to be set when determinism is enabled".
    (scikeras itself restores the state through the same TensorFlow call, reached here through
    ``raygrid._compat``.)
    """
    before = _op_determinism_enabled()
    try:
        yield
    finally:
        if not before and keras_backend() == "tensorflow" and sys.modules.get("tensorflow"):
            try:
                tf_disable_op_determinism()
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
    paths = keras_paths(estimator)
    if not paths:
        yield estimator
        return

    global _runtime_started
    # The process's first Keras fit starts the backend's runtime (and the GPU query below), which
    # logs from C++ (TensorFlow: "failed call to cuInit" without a GPU): held back, the fit's
    # other stderr kept.
    quiet = contextlib.ExitStack()
    if not _runtime_started:
        quiet.enter_context(native_noise_filtered())
        _runtime_started = True
    with quiet:
        yield from _fit(estimator, paths, seed, num_cpus, reuse_models)


def _fit(estimator: Any, paths, seed: int | None, num_cpus: float | None,
         reuse_models: bool) -> Iterator[Any]:
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
