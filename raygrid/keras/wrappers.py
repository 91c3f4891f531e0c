"""scikeras' ``KerasClassifier``/``KerasRegressor`` with scikit-learn >= 1.7 tags, and the swap of
scikeras' stock classes for them (``with_stock_tags_fixed``).

The two classes need scikeras (and so Keras and a backend): ``make_classes`` creates them on
first use, which is when scikeras is imported. Their home is ``raygrid.keras`` (``__module__``),
whose module ``__getattr__`` makes them on first access: that is the name pickles and saved
models (``best_model.joblib``) refer to, and what Ray workers import to load them.
"""
from __future__ import annotations

import contextlib
import os
import sys
import threading
from typing import Any

from raygrid._compat import scikeras_training_hooks, warn_once
from raygrid.keras.detect import keras_backend, keras_paths
from raygrid.keras.hygiene import keep_op_determinism
from raygrid.keras.pool import model_pool

#: The module the classes belong to (their pickles name it).
HOME = "raygrid.keras"
CLASS_NAMES = ("KerasClassifier", "KerasRegressor")
INSTALL_HINT = (
    "raygrid's Keras support needs scikeras and a Keras backend: "
    "pip install 'raygrid[keras]' (scikeras + TensorFlow), or scikeras with jax/torch "
    "and KERAS_BACKEND set accordingly."
)

# ``steps_per_execution="auto"`` resolves to this many training steps per compiled call.
AUTO_STEPS_PER_EXECUTION = 64

#: Set to ``sklearn`` (or ``keep``) to leave scikeras' stock classes as scikit-learn sees them.
STOCK_TAGS_ENV = "RAYGRID_STOCK_SCIKERAS_TAGS"


def _stock_class(obj: Any) -> str | None:
    """``"KerasClassifier"``/``"KerasRegressor"`` for scikeras' own classes (not subclasses)."""
    klass = type(obj)
    if klass.__module__ == "scikeras.wrappers" and klass.__name__ in CLASS_NAMES:
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
    klass = make_classes()[name]
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
    if os.environ.get(STOCK_TAGS_ENV, "").strip().lower() in ("sklearn", "keep"):
        return estimator
    paths = keras_paths(estimator)
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
    warn_once(
        "scikeras-stock-tags",
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
# The tag-fixed classes (created on first use)
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
    from raygrid.keras.quiet import native_noise_filtered

    quiet = native_noise_filtered() if "keras" not in sys.modules else contextlib.nullcontext()
    try:
        with quiet:  # this process's first Keras import: TensorFlow's C++ start-up lines held back
            import scikeras.wrappers as wrappers
    except ImportError as exc:
        raise ImportError(INSTALL_HINT) from exc
    finally:
        if block_tf and sys.modules.get("tensorflow", 0) is None:
            del sys.modules["tensorflow"]
    return wrappers


def make_classes() -> dict[str, type]:
    """``{"KerasClassifier": ..., "KerasRegressor": ...}``, created (and scikeras imported) once."""
    with _classes_lock:
        if _classes:
            return _classes
        wrappers = _import_scikeras_wrappers()
        from sklearn.utils import ClassifierTags, RegressorTags

        hooks = scikeras_training_hooks()

        class _StepsPerExecutionMixin(*hooks):
            """Run ``steps_per_execution`` training steps per compiled call, in ``fit`` only
            (and, inside ``fit_context(reuse_models=True)``, train on a pooled model).

            Keras' ``steps_per_execution`` is set at compile time and then applies to fit,
            evaluate and predict. Here it applies to training alone: fitted weights are the
            same as with one step per call, while predictions keep Keras' one-step path (on
            TensorFlow a multi-step predict is slower to trace and may differ in the last
            bit of float32). Both need raygrid's hook into scikeras' training step
            (``raygrid._compat.scikeras_training_hooks``); without it, fits train as scikeras
            does, with a warning once.
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

            def _check_training_hook(self) -> None:
                steps = self._resolved_steps_per_execution()  # a bad value fails here
                if not hooks and (steps != 1 or model_pool.active()):
                    warn_once("scikeras-training-step", (
                        "raygrid: this scikeras' training step (BaseWrapper._fit_keras_model) "
                        "is not the one raygrid knows, so raygrid leaves it alone: "
                        "steps_per_execution is not applied (one training step per call) and "
                        "fit_context(reuse_models=True) builds a new model for every fit. Fitted "
                        "models are unchanged; only slower."), stacklevel=3)

            def fit(self, X, y, *args, **kwargs):
                self._check_training_hook()
                with keep_op_determinism():
                    return super().fit(X, y, *args, **kwargs)

            def partial_fit(self, X, y, *args, **kwargs):
                self._check_training_hook()
                with keep_op_determinism():
                    return super().partial_fit(X, y, *args, **kwargs)

            def around_training(self, train, call: dict[str, Any]):
                """scikeras' training step ``train()``, on a pooled model for a fresh fit and
                with ``steps_per_execution`` steps per call; ``call`` holds its arguments."""
                if (not call.get("warm_start") and not call.get("initial_epoch")
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
                    return train()
                if getattr(model, "_raygrid_train_steps", None) != steps:
                    model.train_function = None  # traced for another value: trace again
                model.steps_per_execution = steps
                before = (model.test_function, model.predict_function)
                try:
                    return train()
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
            klass.__module__ = HOME
            klass.__qualname__ = klass.__name__
        _classes["KerasClassifier"] = KerasClassifier
        _classes["KerasRegressor"] = KerasRegressor
        return _classes
