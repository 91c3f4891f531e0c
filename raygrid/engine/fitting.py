"""Fit and score one trial. This module runs on the workers: it uses only public scikit-learn API."""
from __future__ import annotations

import contextlib
import os
import pickle
import socket
import sys
import time
import traceback
import warnings
from dataclasses import dataclass, field
from numbers import Number
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from sklearn import config_context, get_config
from sklearn.base import clone

from raygrid.engine.plan import Trial


@dataclass
class Payload:
    """Everything a worker needs that is the same for every trial of a search (shared once)."""

    estimator: Any
    X: Any
    y: Any
    splits: Sequence[tuple[np.ndarray, np.ndarray]]
    scorer: Callable  # single scorer (returns a number) or multimetric scorer (returns a dict)
    metrics: tuple[str, ...] | None  # ("score",) or the scorer names; None: whatever a callable returns
    fit_params: Mapping[str, Any] = field(default_factory=dict)
    # Passed to the scorer, split like fit_params (scikit-learn forwards fit's sample_weight).
    score_params: Mapping[str, Any] = field(default_factory=dict)
    return_train_score: bool = False
    error_score: Any = np.nan
    return_estimator: bool = False
    keras: bool = False
    pairwise: bool = False
    # scikit-learn's global configuration on the driver (sklearn.get_config()), in force on the
    # workers during every fit, as joblib's workers get it in scikit-learn.
    sklearn_config: Mapping[str, Any] = field(default_factory=get_config)


@dataclass
class FitResult:
    """The outcome of one trial: small, scores not models (unless ``return_estimator``)."""

    candidate: int
    fold: int
    test_scores: dict[str, float]
    train_scores: dict[str, float] | None
    fit_time: float
    score_time: float
    n_test_samples: int
    error: str | None = None  # traceback text of a failed fit
    exception: BaseException | None = None  # the original exception, when it pickles
    system_failure: bool = False  # a worker or node died; the fit never finished
    node: str = "local"
    pid: int = 0
    seed: int | None = None
    estimator: Any = None
    cached: bool = False
    engine: str = "standard"  # "fused" when raygrid.engine.fused trained it with others in one program
    warnings: list | None = None  # distinct (category, message) pairs the fit raised

    def reissue_warnings(self) -> None:
        """Raise the fit's warnings again where this is called (the driver, for Ray fits)."""
        for category, message in self.warnings or ():
            warnings.warn(message, category, stacklevel=2)

    @property
    def failed(self) -> bool:
        return self.error is not None


def take(data: Any, indices: np.ndarray) -> Any:
    """Rows ``indices`` of arrays, DataFrames/Series, sparse matrices or lists, by position."""
    if data is None:
        return None
    if hasattr(data, "iloc"):
        return data.iloc[indices]
    if hasattr(data, "shape"):
        if hasattr(data, "tocsr") and getattr(data, "format", "csr") not in ("csr", "csc", "lil"):
            data = data.tocsr()
        return data[indices]
    return [data[i] for i in indices]


def num_samples(data: Any) -> int:
    if hasattr(data, "shape") and len(getattr(data, "shape", ())) > 0:
        return int(data.shape[0])
    return len(data)


def split_fit_params(fit_params: Mapping[str, Any], n_samples: int, indices: np.ndarray) -> dict:
    """Index sample-aligned fit parameters (e.g. ``sample_weight``) to the training rows."""
    out = {}
    for key, value in fit_params.items():
        if (
            value is not None
            and not isinstance(value, (str, bytes, dict))
            and hasattr(value, "__len__")
            and not np.isscalar(value)
            and num_samples(value) == n_samples
        ):
            out[key] = take(value, indices)
        else:
            out[key] = value
    return out


def location() -> tuple[str, int]:
    try:
        import ray

        if ray.is_initialized():
            return ray.get_runtime_context().get_node_id(), os.getpid()
    except Exception:  # noqa: BLE001 - Ray absent or not running: the fit ran in this process
        pass
    return "local:" + socket.gethostname(), os.getpid()


def _assigned_cpus() -> int | None:
    try:
        import ray

        if ray.is_initialized():
            cpus = ray.get_runtime_context().get_assigned_resources().get("CPU")
            return max(1, int(round(cpus))) if cpus else None
    except Exception:  # noqa: BLE001
        pass
    return None


def _fit_context(payload: Payload, estimator: Any, seed: int | None):
    if not payload.keras:
        return contextlib.nullcontext()
    from raygrid.keras import fit_context

    # The fitted estimator is thrown away after scoring unless it is returned: only then may its
    # Keras model go back to the pool for the next fit.
    return fit_context(estimator, seed=seed, num_cpus=_assigned_cpus(),
                       reuse_models=not payload.return_estimator)


@contextlib.contextmanager
def _propagated(context: Any, estimator: Any):
    """``estimator`` fits inside its evaluation's callback context (None: no callbacks), so
    scikit-learn's auto-propagated callbacks see its inner tasks (see raygrid.search.callbacks).
    scikit-learn's warning that an estimator takes no callbacks was given on the driver."""
    if context is None:
        yield
        return
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not support callbacks.*")
        with context.propagate_callback_context(estimator):
            yield


def score(estimator, X, y, payload: Payload, params: Mapping[str, Any]) -> dict[str, float]:
    """Score one side as scikit-learn's ``_score`` does.

    A scorer that raises gives ``error_score`` for its metrics and a UserWarning (unless
    ``error_score="raise"``); a multimetric scorer built with ``raise_exc=False`` reports a failing
    metric as its traceback text, and only that metric gets ``error_score``.
    """
    try:
        if y is None:  # unsupervised: a callable scorer may take (estimator, X) alone
            scores = payload.scorer(estimator, X, **params)
        else:
            scores = payload.scorer(estimator, X, y, **params)
    except Exception:  # noqa: BLE001 - scoring failures follow error_score too
        if payload.error_score == "raise":
            raise
        _warn_scoring_failed(payload.error_score, traceback.format_exc())
        return {m: payload.error_score for m in payload.metrics or ()}
    if not isinstance(scores, Mapping):
        scores = {"score": scores}
    out = {}
    for name in payload.metrics or scores:
        value = scores[name]
        if isinstance(value, str) and payload.error_score != "raise":
            _warn_scoring_failed(payload.error_score, value)
            value = payload.error_score
        if hasattr(value, "item"):
            value = value.item()
        if not isinstance(value, Number):
            raise ValueError(
                f"scoring must return a number, got {value!r} ({type(value)}) instead "
                f"(scorer={name})"
            )
        out[name] = float(value)
    return out


def _warn_scoring_failed(error_score: Any, details: str) -> None:
    warnings.warn(
        "Scoring failed. The score on this train-test partition for these parameters "
        f"will be set to {error_score}. Details: \n{details}",
        UserWarning,
    )


def pickles(exc: BaseException) -> BaseException | None:
    """``exc`` if it survives the trip to the driver, else None (the traceback text still does).

    Exception classes defined in ``__main__`` or a notebook reach the workers by value, so they
    are checked with cloudpickle (what Ray uses), not plain pickle.
    """
    dumps, loads = pickle.dumps, pickle.loads
    if "ray" in sys.modules:  # on a Ray worker; never import Ray just for this
        from ray import cloudpickle

        dumps = cloudpickle.dumps
    try:
        loads(dumps(exc))
        return exc
    except Exception:  # noqa: BLE001
        return None


@dataclass
class FoldData:
    """One split's rows of the data, fit parameters and score parameters."""

    X_train: Any
    y_train: Any
    X_test: Any
    y_test: Any
    fit_params: dict
    score_train: dict
    score_test: dict
    n_test: int


def fold_data(payload: Payload, fold: int) -> FoldData:
    """Split ``fold`` of the payload: its training and test rows, and the sample-aligned fit and
    score parameters indexed to them (a pairwise X keeps only the training columns)."""
    train, test = payload.splits[fold]
    X, y = payload.X, payload.y
    X_train, X_test = take(X, train), take(X, test)
    if payload.pairwise:
        # A precomputed kernel or distance matrix: the columns are the training samples too.
        X_train, X_test = X_train[:, train], X_test[:, train]
    n = num_samples(X)
    return FoldData(
        X_train=X_train, y_train=take(y, train), X_test=X_test, y_test=take(y, test),
        fit_params=split_fit_params(payload.fit_params, n, train),
        score_train=split_fit_params(payload.score_params, n, train),
        score_test=split_fit_params(payload.score_params, n, test), n_test=len(test),
    )


def fit_and_score(payload: Payload, trial: Trial, where: tuple[str, int] | None = None) -> FitResult:
    """Clone the template, set the trial's parameters, fit on the training rows, score both sides."""
    node, pid = where or location()
    data = fold_data(payload, trial.fold)
    X_train, y_train, X_test, y_test = data.X_train, data.y_train, data.X_test, data.y_test
    fit_params, score_train, score_test = data.fit_params, data.score_train, data.score_test
    estimator = None
    result = FitResult(
        trial.candidate, trial.fold, {}, None, 0.0, 0.0, data.n_test, node=node, pid=pid,
        seed=trial.seed,
    )
    start = time.perf_counter()
    with config_context(**payload.sklearn_config), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # every warning comes back; the driver's filters decide
        try:
            # A value the estimator rejects is this fit's error, not its batch's.
            estimator = clone(payload.estimator).set_params(**clone(dict(trial.params), safe=False))
            with _fit_context(payload, estimator, trial.seed):
                with _propagated(trial.callback_ctx, estimator):
                    estimator.fit(X_train, y_train, **fit_params)
                result.fit_time = time.perf_counter() - start
                start = time.perf_counter()
                result.test_scores = score(estimator, X_test, y_test, payload, score_test)
                result.score_time = time.perf_counter() - start
                if payload.return_train_score:
                    result.train_scores = score(estimator, X_train, y_train, payload, score_train)
        except Exception as exc:  # noqa: BLE001 - errors are data; error_score decides on the driver
            if not result.fit_time:
                result.fit_time = time.perf_counter() - start
            result.score_time = 0.0
            result.error = traceback.format_exc()
            result.exception = pickles(exc)
            set_error_scores(result, payload)
    if caught:
        result.warnings = list(dict.fromkeys((w.category, str(w.message)) for w in caught))
    if payload.return_estimator:
        result.estimator = estimator
    return result


def set_error_scores(result: Any, payload: Payload) -> None:
    """A failed fit's scores: ``error_score`` (NaN with "raise") for every metric, both sides."""
    value = np.nan if payload.error_score == "raise" else payload.error_score
    result.test_scores = {m: value for m in payload.metrics or ()}
    if payload.return_train_score:
        result.train_scores = {m: value for m in payload.metrics or ()}


def run_trials(payload: Payload, trials: Sequence[Trial]) -> list[FitResult]:
    """Run a batch of trials one after another in this process (what one Ray task does)."""
    where = location()
    return [fit_and_score(payload, trial, where) for trial in trials]


def system_failure(trial: Trial, error: BaseException | str, payload_metrics: Sequence[str],
                   return_train_score: bool, error_score: Any) -> FitResult:
    """A row for a fit that never finished because its worker or node died (after retries)."""
    text = error if isinstance(error, str) else "".join(
        traceback.format_exception(type(error), error, error.__traceback__)
    )
    value = np.nan if error_score == "raise" else error_score
    return FitResult(
        trial.candidate,
        trial.fold,
        {m: value for m in payload_metrics or ()},
        {m: value for m in payload_metrics or ()} if return_train_score else None,
        0.0,
        0.0,
        0,
        error=text,
        system_failure=True,
        node="unknown",
        seed=trial.seed,
    )


class FitTimeout(TimeoutError):
    """A fit ran longer than ``fit_timeout`` seconds and was stopped."""


def timeout_message(seconds: float, how: str = "its process killed") -> str:
    return f"the fit ran longer than fit_timeout={seconds:g} s and was stopped ({how})"


def timeout_failure(trial: Trial, seconds: float, payload_metrics: Sequence[str],
                    return_train_score: bool, error_score: Any) -> FitResult:
    """The row of a fit stopped at its time limit: that fit's failure (``error_score`` applies;
    with ``error_score="raise"`` the search raises :class:`FitTimeout`), not a system failure."""
    exc = FitTimeout(timeout_message(seconds))
    result = system_failure(trial, f"{type(exc).__name__}: {exc}", payload_metrics,
                            return_train_score, error_score)
    result.system_failure = False
    result.exception = exc
    result.fit_time = float(seconds)
    return result


__all__ = ["Payload", "FitResult", "FitTimeout", "timeout_failure", "timeout_message", "FoldData", "fit_and_score", "fold_data", "location", "pickles",
           "run_trials", "score", "set_error_scores", "split_fit_params", "system_failure", "take"]
