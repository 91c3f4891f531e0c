"""The private APIs of other libraries that raygrid uses, each behind a probe.

Every name here is looked up once, at first use; if a new version of the library moved or
changed it, the feature that needs it falls back (with a warning where the user would notice)
instead of breaking. Nothing else in raygrid imports a private name of another library.
"""
from __future__ import annotations

import functools
import warnings
from typing import Any


@functools.cache
def _visual_block_class() -> Any:
    """scikit-learn's ``_VisualBlock`` (its HTML diagrams), or None if it moved."""
    try:
        from sklearn.utils._repr_html.estimator import _VisualBlock
    except ImportError:
        return None
    return _VisualBlock


def search_visual_block(search: Any) -> Any:
    """The HTML diagram of a search, as scikit-learn draws its own: the best estimator once
    refitted, else the estimator. Raises if the class moved: scikit-learn then draws its
    default diagram."""
    block = _visual_block_class()
    if block is None:
        raise NotImplementedError("scikit-learn's _VisualBlock moved")
    key = "best_estimator_" if hasattr(search, "best_estimator_") else "estimator"
    estimator = getattr(search, key)
    return block("parallel", [estimator], names=[f"{key}: {type(estimator).__name__}"],
                 name_details=[str(estimator)])


# -- scikit-learn's callbacks (sklearn.callback, scikit-learn >= 1.9) ---------------------------
try:
    from sklearn.callback import CallbackSupportMixin, with_callbacks
except ImportError:  # an older scikit-learn: searches take no callbacks
    class CallbackSupportMixin:  # type: ignore[no-redef]
        pass

    def with_callbacks(method):  # type: ignore[no-redef]
        return method


def root_callback_context(estimator: Any, max_subtasks: int) -> Any:
    """The root context of ``estimator``'s callbacks for one fit (their ``setup`` hooks run),
    or None when it has none or scikit-learn's estimator-side callback API moved."""
    if not getattr(estimator, "_skl_callbacks", None):
        return None
    init = getattr(estimator, "_init_callback_context", None)
    if init is None:
        warnings.warn("raygrid: this scikit-learn's callback API is not the one raygrid knows; "
                      "the search's callbacks are not called.", RuntimeWarning, stacklevel=3)
        return None
    return init(max_subtasks=max_subtasks)


# -- warnings about other libraries' versions, each once per process ---------------------------
_warned: set[str] = set()


def warn_once(key: str, message: str, category: type[Warning] = RuntimeWarning,
              stacklevel: int = 1) -> None:
    """``warnings.warn(message, category, stacklevel)`` from the caller, the first time ``key``
    is seen in this process only (a fallback or fix that applies to every later fit too)."""
    if key not in _warned:
        _warned.add(key)
        warnings.warn(message, category, stacklevel=stacklevel + 1)


# -- scikeras wrappers and scikit-learn scorers ------------------------------------------------
# Used by raygrid/keras (scikeras' training step, TensorFlow's op-determinism switch) and
# raygrid/engine/scoring.py (whether a scikit-learn scorer takes sample_weight).


#: The parameters of scikeras' private training step, ``BaseWrapper._fit_keras_model``
#: (scikeras 0.13): what ``fit`` and ``partial_fit`` call once the model is built and compiled.
SCIKERAS_TRAINING_STEP = ("self", "X", "y", "sample_weight", "warm_start", "epochs",
                          "initial_epoch", "kwargs")


@functools.cache
def _scikeras_training_step() -> Any:
    """The signature of scikeras' ``BaseWrapper._fit_keras_model`` when it is the one raygrid
    knows (:data:`SCIKERAS_TRAINING_STEP`, extra keywords last); else None."""
    import inspect

    try:
        from scikeras.wrappers import BaseWrapper
    except ImportError:
        return None
    method = getattr(BaseWrapper, "_fit_keras_model", None)
    if not callable(method):
        return None
    try:
        signature = inspect.signature(method)
    except (TypeError, ValueError):
        return None
    params = signature.parameters
    if (tuple(params) != SCIKERAS_TRAINING_STEP
            or params["kwargs"].kind is not inspect.Parameter.VAR_KEYWORD):
        return None
    return signature


class ScikerasTrainingHook:
    """Mixin for a scikeras wrapper (before scikeras' class in the bases): scikeras' training
    step runs as ``self.around_training(train, call)``, where ``train()`` runs scikeras' own
    step and ``call`` holds its arguments by name (``warm_start``, ``initial_epoch``, ...).
    Only through :func:`scikeras_training_hooks`, which checks the step is the one known here."""

    def _fit_keras_model(self, *args: Any, **kwargs: Any) -> Any:
        call = _scikeras_training_step().bind(self, *args, **kwargs).arguments
        step = super()._fit_keras_model  # type: ignore[misc]
        return self.around_training(lambda: step(*args, **kwargs), call)  # type: ignore[attr-defined]


def scikeras_training_hooks() -> tuple[type, ...]:
    """``(ScikerasTrainingHook,)`` for a scikeras wrapper's bases, or ``()`` when this scikeras'
    ``BaseWrapper._fit_keras_model`` is missing or takes other parameters: raygrid then
    overrides nothing and the wrapper trains exactly as scikeras does (its caller warns that
    what the hook adds, e.g. ``steps_per_execution``, is not applied)."""
    return (ScikerasTrainingHook,) if _scikeras_training_step() is not None else ()


@functools.cache
def _tf_determinism_config() -> Any:
    """TensorFlow's internal ``tensorflow.python.framework.config`` (the module scikeras' seeding
    uses) when it still has ``is_op_determinism_enabled`` and ``disable_op_determinism``; else
    None. Call only once TensorFlow is imported."""
    try:
        from tensorflow.python.framework import config
    except ImportError:
        return None
    names = ("is_op_determinism_enabled", "disable_op_determinism")
    return config if all(callable(getattr(config, n, None)) for n in names) else None


def tf_op_determinism_enabled() -> bool | None:
    """Whether TensorFlow's op determinism is on; None when this TensorFlow no longer says."""
    config = _tf_determinism_config()
    return None if config is None else bool(config.is_op_determinism_enabled())


def tf_disable_op_determinism() -> None:
    """Turn TensorFlow's op determinism off (if on). When this TensorFlow's switch moved, leave
    it and warn once: later unseeded fits in the process may then fail."""
    config = _tf_determinism_config()
    if config is None:
        warn_once("tf-determinism", (
            "raygrid: this TensorFlow's op-determinism switch (tensorflow.python.framework.config)"
            " is not the one raygrid knows, so determinism turned on by a seeded scikeras fit stays"
            " on: later unseeded fits in this process may fail with 'Random ops require a seed'."
            " Seed every fit (random_state) to avoid it."), stacklevel=3)
        return
    if config.is_op_determinism_enabled():
        config.disable_op_determinism()


@functools.cache
def _scorers_say_sample_weight() -> bool:
    """Whether this scikit-learn's scorers still answer the private ``_accept_sample_weight()``
    (what scikit-learn's own searches ask with metadata routing off)."""
    from sklearn.metrics import get_scorer

    accept = getattr(get_scorer("accuracy"), "_accept_sample_weight", None)
    try:
        return callable(accept) and accept() is True
    except Exception:  # noqa: BLE001 - any change in it: do not rely on it
        return False


def scorer_accepts_sample_weight(scorer: Any) -> bool | None:
    """scikit-learn's own answer (metadata routing off) to whether its ``scorer`` takes
    ``sample_weight``; None for a scorer that is not scikit-learn's (a plain callable).

    When this scikit-learn's scorers no longer answer, every scikit-learn scorer counts as not
    taking it (the search's test scores are unweighted), with a warning once."""
    accept = getattr(scorer, "_accept_sample_weight", None)
    if not type(scorer).__module__.startswith("sklearn.") and not callable(accept):
        return None
    if not _scorers_say_sample_weight() or not callable(accept):
        warn_once("scorer-sample-weight", (
            "raygrid: this scikit-learn's scorers do not say whether they accept sample_weight "
            "(a private API raygrid uses moved): the search's test scores are not weighted."),
            stacklevel=3)
        return False
    return bool(accept())


# -- Keras models and scikeras wrappers, for the fused engine ----------------------------------
# Each probe returns what the fused engine needs, or None (False) where this version of the
# library moved it; the engine then leaves those fits to the standard engine with the reason
# (raygrid.engine.fused), or scores them without the shortcut, or warns.
def keras_forget_missing_tensorflow() -> bool:
    """Let Keras look for TensorFlow again once the fused engine stops keeping it out.

    Keras' lazy ``tensorflow`` module remembers a failed import in its private ``_available``;
    that answer is reset when it is "no". False when Keras is imported but its lazy module is
    not where raygrid knows it (a remembered "no" would then stay).
    """
    import sys

    if "keras" not in sys.modules:
        return True  # Keras never asked
    lazy = getattr(sys.modules.get("keras.src.utils.module_utils"), "tensorflow", None)
    if lazy is None or not hasattr(lazy, "_available"):
        return False
    if lazy._available is False:
        lazy._available = None
    return True


def keras_flat_layers(model: Any) -> list | None:
    """Every layer inside ``model``, nested ones too, in Keras' own order (the private
    ``Layer._flatten_layers``), or None if it moved."""
    flatten = getattr(model, "_flatten_layers", None)
    if flatten is None:
        return None
    try:
        return list(flatten(include_self=False, recursive=True))
    except TypeError:  # its signature changed
        return None


def keras_compile_config(model: Any) -> dict | None:
    """The arguments ``model.compile`` was called with (the private ``Model._compile_config``,
    which ``get_compile_config`` serialises), or None if it moved."""
    config = getattr(getattr(model, "_compile_config", None), "config", None)
    return config if isinstance(config, dict) else None


def keras_compile_built(model: Any) -> bool | None:
    """Whether the loss and metrics that ``model.compile`` set up are built (the private
    ``Model._compile_loss`` and ``_compile_metrics``; Keras' ``fit`` builds them on one batch
    first when not), or None if they moved."""
    if not (hasattr(model, "_compile_loss") and hasattr(model, "_compile_metrics")):
        return None
    return bool(getattr(model._compile_loss, "built", True)
                and getattr(model._compile_metrics, "built", True))


def keras_metric_direction(metric: Any) -> str | None:
    """Which way a Keras metric improves, ``"up"`` or ``"down"`` (the private ``_direction``
    that ``EarlyStopping(mode="auto")`` reads), or None when the metric does not say (Keras then
    refuses ``mode="auto"``) or Keras no longer keeps it there."""
    direction = getattr(metric, "_direction", None)
    return direction if direction in ("up", "down") else None


@functools.cache
def _keras_keeps_init_seed() -> bool:
    try:
        import keras

        return getattr(keras.initializers.RandomUniform(seed=7), "_init_seed", None) == 7
    except Exception:  # noqa: BLE001 - any change: unknown
        return False


def keras_initializer_seeded(initializer: Any) -> bool | None:
    """Whether the user gave ``initializer`` its own seed (the private ``_init_seed`` of Keras'
    random initializers; otherwise Keras drew one as the layer was created), or None if Keras no
    longer keeps it there."""
    if not _keras_keeps_init_seed():
        return None
    return getattr(initializer, "_init_seed", None) is not None


def sklearn_scorer_parts(scorer: Any) -> dict | None:
    """What a scikit-learn scorer computes, from its private classes and fields:
    ``{"passthrough": True}`` for the estimator's own ``score`` (``_PassthroughScorer``), else
    ``score_func``, ``kwargs``, ``sign`` and ``response_method`` of a ``_Scorer``; None for any
    other scorer or where scikit-learn changed them."""
    kind = type(scorer).__name__
    if kind == "_PassthroughScorer":
        return {"passthrough": True}
    if kind != "_Scorer":
        return None
    try:
        return {"passthrough": False, "score_func": scorer._score_func, "kwargs": scorer._kwargs,
                "sign": scorer._sign, "response_method": scorer._response_method}
    except AttributeError:
        return None


def scikeras_compile_kwargs(estimator: Any) -> dict | None:
    """The keyword arguments scikeras passes to ``model.compile`` for ``estimator``'s
    parameters (its private ``BaseWrapper._get_compile_kwargs``), or None if it moved."""
    method = getattr(estimator, "_get_compile_kwargs", None)
    if method is None:
        return None
    kwargs = method()
    return kwargs if isinstance(kwargs, dict) else None


def scikeras_compile(estimator: Any) -> bool:
    """Compile ``estimator.model_`` as scikeras' ``fit`` does, without fitting (its private
    ``BaseWrapper._ensure_compiled_model``); False if that moved (nothing is done)."""
    method = getattr(estimator, "_ensure_compiled_model", None)
    if method is None:
        return False
    method()
    return True


# -- Ray Tune's searchers -----------------------------------------------------------------------
def tune_searcher_space(searcher: Any) -> Any:
    """The search space a Ray Tune ``Searcher`` was created with (``HyperOptSearch(space=...)``;
    Ray keeps it in the private ``_space``), or None: created without one, or Ray moved it (the
    search's own space then goes to Tune, which keeps the searcher's and says so)."""
    space = getattr(searcher, "_space", None)
    return space if space else None
