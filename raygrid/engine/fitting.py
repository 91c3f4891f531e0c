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

from raygrid.engine.describe import code_identity
from raygrid.engine.plan import Trial
from raygrid.engine.predictions import predict_fold


@dataclass(frozen=True)
class FitTask:
    """What a fit does besides fit-then-score (scikit-learn's other model_selection functions).

    ``predict``: the method whose output on the test rows comes back in ``FitResult.predictions``
    instead of scores (cross_val_predict). ``partial_fit``: the training-set sizes at which
    ``partial_fit`` is called on the next rows (learning_curve's incremental learning): a fit
    on a training set of ``n`` rows calls it on every partition up to ``n``, with ``classes``
    when given. ``target_rows``: per split, the rows of y that X's rows are paired with (a
    permutation of y: permutation tests); None where y is not permuted.
    """

    predict: str | None = None
    partial_fit: tuple[int, ...] | None = None
    classes: Any = None
    target_rows: Sequence | None = None

    def describe(self) -> tuple:
        """What of the task changes a fit's result, for the fit store's identity."""
        return (self.predict, self.partial_fit,
                None if self.classes is None else list(np.asarray(self.classes).tolist()))


#: This process, as payloads name the driver's (a forked child runs the driver's code too).
PROCESS = os.urandom(8).hex()


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
    task: FitTask = field(default_factory=FitTask)
    # scikit-learn's global configuration on the driver (sklearn.get_config()), in force on the
    # workers during every fit, as joblib's workers get it in scikit-learn.
    sklearn_config: Mapping[str, Any] = field(default_factory=get_config)
    # The driver's process: fits run in any other report the identity of the code they ran.
    driver: str = field(default_factory=lambda: PROCESS)


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
    code: dict[str, str] | None = None  # identity of the user code a worker ran (code_identity)
    # Keras fits with EarlyStopping: the epochs the fit trained (its last epoch, counted from 1
    # as Keras prints "Epoch k/N"); None for other fits.
    stopped_epoch: int | None = None
    predictions: Any = None  # the test rows' predictions, when the task asks for them

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
    """The number of rows, as scikit-learn counts them: an object that only converts to an
    array (``__array__``) is converted first; one that is no array-like at all is a TypeError."""
    if not hasattr(data, "__len__") and not hasattr(data, "shape"):
        if not hasattr(data, "__array__"):
            raise TypeError(f"Expected sequence or array-like, got {type(data)}")
        data = np.asarray(data)
    if hasattr(data, "shape") and len(getattr(data, "shape", ())) > 0:
        return int(data.shape[0])
    return len(data)


def targets(payload: "Payload", fold: int, rows: np.ndarray) -> Any:
    """The targets paired with X's ``rows`` in split ``fold``: y's own rows, or the rows of the
    permuted y of a permutation test (``FitTask.target_rows``)."""
    permuted = payload.task.target_rows[fold] if payload.task.target_rows is not None else None
    return take(payload.y, rows if permuted is None else np.asarray(permuted)[rows])


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


def running_ray() -> Any:
    """Ray's module when this process is connected to Ray (a worker, or a driver that started
    it), else None; never imports Ray (half a second in a process that does not use it)."""
    ray = sys.modules.get("ray")
    return ray if ray is not None and ray.is_initialized() else None


def location() -> tuple[str, int]:
    try:
        ray = running_ray()
        if ray is not None:
            return ray.get_runtime_context().get_node_id(), os.getpid()
    except Exception:  # noqa: BLE001 - Ray absent or not running: the fit ran in this process
        pass
    return "local:" + socket.gethostname(), os.getpid()


def _assigned_cpus() -> int | None:
    try:
        ray = running_ray()
        if ray is not None:
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
    train: np.ndarray


def partial_fit_steps(estimator: Any, payload: Payload, data: FoldData) -> float:
    """``estimator.partial_fit`` on the training rows, one partition of ``FitTask.partial_fit``
    after another (scikit-learn's incremental learning curve); returns when the last began."""
    task, train = payload.task, data.train
    n = len(train)
    extra = {} if task.classes is None else {"classes": task.classes}
    start = time.perf_counter()
    for part in np.split(np.arange(n), [s for s in task.partial_fit if s < n]):
        start = time.perf_counter()
        rows = train[part]
        params = split_fit_params(payload.fit_params, num_samples(payload.X), rows)
        X_part = take(payload.X, rows)
        if payload.pairwise:  # a kernel: the partition's own columns, as scikit-learn splits it
            X_part = X_part[:, rows]
        if data.y_train is None:
            estimator.partial_fit(X_part, **extra, **params)
        else:
            estimator.partial_fit(X_part, take(data.y_train, part), **extra, **params)
    return start


def fold_data(payload: Payload, fold: int) -> FoldData:
    """Split ``fold`` of the payload: its training and test rows, and the sample-aligned fit and
    score parameters indexed to them (a pairwise X keeps only the training columns)."""
    train, test = payload.splits[fold]
    X = payload.X
    X_train, X_test = take(X, train), take(X, test)
    if payload.pairwise:
        # A precomputed kernel or distance matrix: the columns are the training samples too.
        X_train, X_test = X_train[:, train], X_test[:, train]
    n = num_samples(X)
    return FoldData(
        X_train=X_train, y_train=targets(payload, fold, train), X_test=X_test,
        y_test=targets(payload, fold, test),
        fit_params=split_fit_params(payload.fit_params, n, train),
        score_train=split_fit_params(payload.score_params, n, train),
        score_test=split_fit_params(payload.score_params, n, test), n_test=len(test),
        train=np.asarray(train),
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
            if payload.driver != PROCESS:
                result.code = code_identity(estimator, cache=True)
            with _fit_context(payload, estimator, trial.seed):
                with _propagated(trial.callback_ctx, estimator):
                    if payload.task.partial_fit is None:
                        estimator.fit(X_train, y_train, **fit_params)
                    else:  # the time of the last partial_fit, as scikit-learn reports it
                        start = partial_fit_steps(estimator, payload, data)
                result.fit_time = time.perf_counter() - start
                if payload.keras:
                    from raygrid.keras.detect import stopped_epoch

                    result.stopped_epoch = stopped_epoch(estimator)
                start = time.perf_counter()
                if payload.task.predict is not None:
                    result.predictions = predict_fold(estimator, X_test, payload.y,
                                                      payload.task.predict)
                else:
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


__all__ = ["Payload", "FitResult", "FitTask", "FitTimeout", "FoldData", "fit_and_score", "fold_data",
           "location", "pickles", "run_trials", "score", "set_error_scores", "split_fit_params",
           "system_failure", "take", "targets", "timeout_failure", "timeout_message"]
