"""Fit and score one trial. This module runs on the workers: it uses only public scikit-learn API."""
from __future__ import annotations

import contextlib
import os
import pickle
import socket
import time
import traceback
import warnings
from dataclasses import dataclass, field
from numbers import Number
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from sklearn.base import clone

from raygrid.plan import Trial


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
    return_train_score: bool = False
    error_score: Any = np.nan
    return_estimator: bool = False
    keras: bool = False
    pairwise: bool = False


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


def _where() -> tuple[str, int]:
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

    return fit_context(estimator, seed=seed, num_cpus=_assigned_cpus())


def _score(estimator, X, y, payload: Payload) -> dict[str, float]:
    scores = payload.scorer(estimator, X, y)
    if not isinstance(scores, Mapping):
        scores = {"score": scores}
    out = {}
    for name in payload.metrics or scores:
        value = scores[name]
        if hasattr(value, "item"):
            value = value.item()
        if not isinstance(value, Number):
            raise ValueError(
                f"scoring must return a number, got {value!r} ({type(value)}) instead "
                f"(scorer={name})"
            )
        out[name] = float(value)
    return out


def _pickles(exc: BaseException) -> BaseException | None:
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:  # noqa: BLE001
        return None


def fit_and_score(payload: Payload, trial: Trial, where: tuple[str, int] | None = None) -> FitResult:
    """Clone the template, set the trial's parameters, fit on the training rows, score both sides."""
    node, pid = where or _where()
    train, test = payload.splits[trial.fold]
    X, y = payload.X, payload.y
    X_train, y_train = take(X, train), take(y, train)
    if payload.pairwise:
        X_test = take(X, test)[:, train]
    else:
        X_test = take(X, test)
    y_test = take(y, test)
    fit_params = split_fit_params(payload.fit_params, num_samples(X), train)
    estimator = clone(payload.estimator).set_params(**clone(dict(trial.params), safe=False))

    result = FitResult(
        trial.candidate, trial.fold, {}, None, 0.0, 0.0, len(test), node=node, pid=pid, seed=trial.seed
    )
    start = time.perf_counter()
    try:
        with _fit_context(payload, estimator, trial.seed):
            estimator.fit(X_train, y_train, **fit_params)
            result.fit_time = time.perf_counter() - start
            start = time.perf_counter()
            scorer_error = None
            try:
                result.test_scores = _score(estimator, X_test, y_test, payload)
                if payload.return_train_score:
                    result.train_scores = _score(estimator, X_train, y_train, payload)
            except Exception as exc:  # noqa: BLE001 - scoring failures follow error_score too
                if payload.error_score == "raise":
                    raise
                scorer_error = traceback.format_exc()
                _set_error_scores(result, payload)
            result.score_time = time.perf_counter() - start
        if scorer_error is not None:
            warnings.warn(
                "Scoring failed. The score on this train-test partition for these parameters "
                f"will be set to {payload.error_score}. Details: \n{scorer_error}",
                UserWarning,
            )
    except Exception as exc:  # noqa: BLE001 - errors are data; error_score decides on the driver
        if not result.fit_time:
            result.fit_time = time.perf_counter() - start
        result.score_time = 0.0
        result.error = traceback.format_exc()
        result.exception = _pickles(exc)
        _set_error_scores(result, payload)
    if payload.return_estimator:
        result.estimator = estimator
    return result


def _set_error_scores(result: FitResult, payload: Payload) -> None:
    value = np.nan if payload.error_score == "raise" else payload.error_score
    result.test_scores = {m: value for m in payload.metrics or ()}
    if payload.return_train_score:
        result.train_scores = {m: value for m in payload.metrics or ()}


def run_trials(payload: Payload, trials: Sequence[Trial]) -> list[FitResult]:
    """Run a batch of trials one after another in this process (what one Ray task does)."""
    where = _where()
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


__all__ = ["Payload", "FitResult", "fit_and_score", "run_trials", "take", "system_failure"]
