"""TuneSearchCV and TuneGridSearchCV: tune-sklearn's interface on Ray Tune's Tuner API.

A tune-sklearn user changes one line, ``from raygrid.tune import TuneSearchCV``. One Tune trial
trains one candidate on every cross-validation fold, in increments (Keras epochs, ``partial_fit``
passes, warm-start steps), and reports the mean CV score as it goes; a scheduler (ASHA with
``early_stopping=True``) stops weak candidates. The fitted search has the same ``cv_results_``,
``best_*``, ``results_`` (one row per fold, at the last increment a candidate reached) and
``summary_`` as raygrid's other searches, plus ``history_`` (every report) and ``fit_seconds_``.

How it keeps the overhead down (each Tune report costs a round trip to the driver, each scoring a
predict on every fold):

- with raygrid's ASHA, trials score and report only at ASHA's rungs and at their own budget;
- Keras candidates equal but for ``epochs`` share one trial (``share_epochs``): the run trained to
  25 epochs is scored at epochs 5 and 10 for the 5- and 10-epoch candidates;
- schedulers that pause trials (MedianStoppingRule, HyperBand) get a checkpoint of the folds with
  every report, so a resumed trial goes on where it stopped instead of starting again.

Ray Tune is imported when ``fit`` runs, never on ``import raygrid``.
"""
from __future__ import annotations

import contextlib
import inspect
import logging
import math
import numbers
import os
import pickle
import shutil
import sys
import tempfile
import time
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
from sklearn.base import clone, is_classifier
from sklearn.model_selection import ParameterGrid, ParameterSampler
from sklearn.pipeline import Pipeline

from raygrid.fitting import (FitResult, Payload, fit_and_score, fold_data, pickles, score,
                             set_error_scores, system_failure)
from raygrid.plan import Trial, fit_seed, params_key
from raygrid.runner import reraise
from raygrid.search import BaseSearch, SearchRun, validate_candidates

SEARCH_OPTIMIZATIONS = ("random", "bayesian", "hyperopt", "optuna")
OBJECTIVE = "objective"  # the key every trial reports and Tune optimises (the refit metric's mean)
BUDGET = "budget"  # units trained so far: epochs (Keras), passes or warm-start steps (scikit-learn)
_FOLDS = "raygrid_folds"
_MEMBERS = "raygrid_candidates"


# ---------------------------------------------------------------------------------------------
# Early stopping specification
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ASHA:
    """Asynchronous successive halving (Ray's ``ASHAScheduler``) with reports only at its rungs.

    ``grace_period`` and ``max_t`` are in budget units (epochs for Keras models, increments for
    scikit-learn ones); rungs sit at ``grace_period * reduction_factor**k``. Because raygrid builds
    the scheduler it knows the rungs, so trials score their folds only there (and at the end),
    not after every unit. ``early_stopping=True`` means ``ASHA()``.
    """

    grace_period: int = 1
    reduction_factor: float = 3
    max_t: int | None = None

    def rungs(self, max_t: int) -> list[int]:
        """The budgets at which ASHA compares trials (the same formula as Ray's scheduler)."""
        n = int(np.log(max_t / self.grace_period) / np.log(self.reduction_factor) + 1)
        return [int(round(self.grace_period * self.reduction_factor**k)) for k in range(max(n, 0))]


_ASHA_NAMES = ("asha", "ashascheduler", "asynchyperband", "asynchyperbandscheduler")
_OTHER_SCHEDULERS = ("hyperband", "hyperbandscheduler", "medianstoppingrule", "median")


def _scheduler_spec(early_stopping: Any) -> Any:
    """None, an ``ASHA`` spec, a scheduler name, or a Ray ``TrialScheduler`` object."""
    if early_stopping is None or early_stopping is False:
        return None
    if early_stopping is True:
        return ASHA()
    if isinstance(early_stopping, ASHA):
        return early_stopping
    if isinstance(early_stopping, str):
        key = early_stopping.lower().replace("_", "")
        if key in _ASHA_NAMES:
            return ASHA()
        if key in _OTHER_SCHEDULERS:
            return key
        raise ValueError(
            f"early_stopping={early_stopping!r} is not a scheduler raygrid knows. Use True or "
            "'ASHAScheduler' (asynchronous successive halving), 'HyperBandScheduler', "
            "'MedianStoppingRule', raygrid.tune.ASHA(...), or a ray.tune.schedulers object."
        )
    try:
        from ray.tune.schedulers import TrialScheduler
    except ImportError:  # pragma: no cover - ray[tune] is a dependency of this module
        TrialScheduler = ()  # type: ignore[assignment]
    if isinstance(early_stopping, TrialScheduler):
        return early_stopping
    raise ValueError(
        f"early_stopping must be a bool, a scheduler name, raygrid.tune.ASHA or a Ray Tune "
        f"TrialScheduler, got {early_stopping!r}"
    )


# ---------------------------------------------------------------------------------------------
# How a candidate trains in increments
# ---------------------------------------------------------------------------------------------
def _final_step(estimator: Any) -> Any:
    return estimator.steps[-1][1] if isinstance(estimator, Pipeline) else estimator


def _is_keras(estimator: Any) -> bool:
    return any(cls.__module__.startswith("scikeras") for cls in type(estimator).__mro__)


def incremental_kind(estimator: Any) -> str | None:
    """How ``estimator`` (or a Pipeline's last step) can train in increments, if at all.

    ``"keras"``: a scikeras model, trained for some epochs at a time (``warm_start`` keeps the model
    between ``fit`` calls); ``"partial_fit"``; ``"max_iter"`` / ``"n_estimators"``: ``warm_start``
    estimators whose iterations or trees grow between ``fit`` calls; ``None``: none of these.
    """
    est = _final_step(estimator)
    if _is_keras(est):
        return "keras"
    if hasattr(est, "partial_fit"):
        return "partial_fit"
    params = est.get_params(deep=False) if hasattr(est, "get_params") else {}
    if "warm_start" in params:
        if "max_iter" in params:
            return "max_iter"
        if "n_estimators" in params:
            return "n_estimators"
    return None


def _keras_epochs(estimator: Any) -> int:
    est = _final_step(estimator)
    epochs = getattr(est, "fit__epochs", None) or getattr(est, "epochs", 1)
    return max(1, int(epochs))


@dataclass
class TrialSpec:
    """What every trial needs besides the data: how to train, when to report, which candidate."""

    kind: str  # "plain", "keras", "partial_fit", "max_iter", "n_estimators"
    max_iters: int
    rungs: list[int] | None  # ASHA rungs: report only there (and at the end); None: every unit
    every_unit: bool  # report after every unit (a scheduler or a stopper watches every report)
    objective_metric: str | None  # the metric whose mean Tune optimises (None: the first one)
    mode: str
    random_state: int | None
    classes: Any = None
    candidates: list[dict] | None = None  # grid / random search: every candidate, known up front
    budgets: list[int] | None = None  # each candidate's full budget (grid / random search)
    groups: list[list[int]] | None = None  # the config is {"trial": g}: candidates trained together
    decoders: dict[str, list] = field(default_factory=dict)  # adaptive search: choice index -> value
    keras_backend: str | None = None
    num_cpus: float = 1
    checkpoint: bool = False  # the scheduler may pause trials: save the folds at every report

    # -- driver and worker ------------------------------------------------------------------------
    def members(self, config: Mapping[str, Any]) -> list[tuple[int | None, int | None]]:
        """(candidate, budget) of every candidate a trial trains, smallest budget first."""
        if self.groups is None:
            return [(None, None)]
        return [(c, self.budgets[c]) for c in self.groups[int(config["trial"])]]

    def params_of(self, config: Mapping[str, Any]) -> dict:
        """What the trial trains: its candidate's parameters (the largest budget of a group)."""
        if self.groups is not None:
            return dict(self.candidates[self.groups[int(config["trial"])][-1]])
        params = {}
        for key, value in config.items():
            if key in self.decoders:
                value = self.decoders[key][int(value)]
            elif isinstance(value, np.generic):
                value = value.item()
            params[key] = value
        return params

    def budget_of(self, estimator: Any) -> int:
        if self.kind == "plain":
            return 1
        if self.kind == "keras":
            return _keras_epochs(estimator)
        return self.max_iters

    def report_points(self, budget: int, member_budgets: Sequence[int] = ()) -> list[int]:
        """Where a trial scores its folds and reports: ASHA's rungs (or every unit when another
        scheduler or a stopper watches), each member candidate's budget, and the end."""
        if self.kind == "plain":
            return [1]
        points = {budget, *(b for b in member_budgets if b)}
        if self.rungs is not None:
            points.update(r for r in self.rungs if r < budget)
        elif self.every_unit:
            points.update(range(1, budget + 1))
        return sorted(points)


def _is_epochs_key(key: str) -> bool:
    return key.split("__")[-1] == "epochs"


def group_by_epochs(candidates: Sequence[Mapping[str, Any]], budgets: Sequence[int]) -> list[list[int]]:
    """Candidates equal but for their epochs, as groups ordered by budget (smallest first).

    One Keras run trained to the largest epochs passes through every smaller one, so a group is
    one trial: the 5-epoch candidate is scored at epoch 5 of the 25-epoch run.
    """
    groups: dict[str, list[int]] = {}
    for i, params in enumerate(candidates):
        key = repr(sorted((k, repr(v)) for k, v in params.items() if not _is_epochs_key(k)))
        groups.setdefault(key, []).append(i)
    return [sorted(g, key=lambda i: (budgets[i], i)) for g in groups.values()]


def _plan_kind(estimator, scheduler, max_iters, pipeline_auto_early_stop) -> str:
    wants_increments = scheduler is not None or max_iters > 1
    if not wants_increments:
        return "plain"
    kind = incremental_kind(estimator)
    what = "early_stopping" if scheduler is not None else f"max_iters={max_iters}"
    if kind is None:
        raise ValueError(
            f"{what} needs an estimator that trains in increments: one with partial_fit, with "
            "warm_start and max_iter or n_estimators, or a scikeras Keras model. "
            f"{type(_final_step(estimator)).__name__} has none of these; drop {what} "
            "(max_iters=1, early_stopping=None) to run a plain cross-validated search."
        )
    if isinstance(estimator, Pipeline) and not pipeline_auto_early_stop:
        raise ValueError(
            f"{what} with a Pipeline needs pipeline_auto_early_stop=True (the transformers are "
            "fitted once per fold and the last step trains in increments)."
        )
    if kind != "keras" and max_iters <= 1:
        warnings.warn(
            "early_stopping is set but max_iters=1: each candidate trains in a single increment, "
            "so nothing can be stopped early. Set max_iters > 1 to train in increments.",
            UserWarning,
        )
        return "plain"
    return kind


# ---------------------------------------------------------------------------------------------
# Search spaces
# ---------------------------------------------------------------------------------------------
def _tuple_range(name: str, value: tuple) -> tuple[Any, Any, bool, bool]:
    """tune-sklearn's ``(low, high)`` / ``(low, high, "uniform" | "log-uniform")`` ranges."""
    if len(value) not in (2, 3):
        raise ValueError(
            f"Parameter {name!r}: a range is (low, high) or (low, high, 'uniform'|'log-uniform'), "
            f"got {value!r}"
        )
    low, high = value[0], value[1]
    prior = value[2] if len(value) == 3 else "uniform"
    if prior not in ("uniform", "log-uniform"):
        raise ValueError(f"Parameter {name!r}: the prior must be 'uniform' or 'log-uniform', "
                         f"got {prior!r}")
    if not all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in (low, high)):
        raise ValueError(f"Parameter {name!r}: range bounds must be numbers, got {value!r}")
    if not low < high:
        raise ValueError(f"Parameter {name!r}: the range needs low < high, got {value!r}")
    log = prior == "log-uniform"
    if log and low <= 0:
        raise ValueError(f"Parameter {name!r}: a log-uniform range needs low > 0, got {value!r}")
    is_int = all(isinstance(v, numbers.Integral) for v in (low, high))
    return low, high, log, is_int


def _is_domain(value: Any) -> bool:
    try:
        from ray.tune.search.sample import Domain
    except ImportError:  # pragma: no cover
        return False
    return isinstance(value, Domain)


def _grid_values(name: str, value: Any) -> Any:
    """``tune.grid_search([...])`` inside a param grid is the plain list."""
    if isinstance(value, Mapping) and set(value) == {"grid_search"}:
        return list(value["grid_search"])
    return value


class _DomainDistribution:
    """A Ray Tune domain with scipy's ``rvs`` interface, so sklearn's ParameterSampler can draw it."""

    def __init__(self, domain):
        self.domain = domain

    def rvs(self, random_state=None):
        rng = random_state if random_state is not None else np.random.default_rng()
        if isinstance(rng, np.random.RandomState):
            rng = np.random.default_rng(rng.randint(2**31 - 1))
        value = self.domain.sample(random_state=rng)
        return value.item() if isinstance(value, np.generic) else value

    def __repr__(self) -> str:
        return repr(self.domain)


def _sampler_dists(name: str, value: Any) -> Any:
    """One parameter of a random search, in what sklearn's ParameterSampler takes."""
    from scipy import stats

    value = _grid_values(name, value)
    if isinstance(value, tuple):
        low, high, log, is_int = _tuple_range(name, value)
        if is_int:
            return stats.randint(low, high + 1) if not log else _LogInt(low, high)
        return stats.loguniform(low, high) if log else stats.uniform(low, high - low)
    if _is_domain(value):
        return _DomainDistribution(value)
    if hasattr(value, "rvs") or (isinstance(value, Sequence) and not isinstance(value, str)):
        return value
    raise ValueError(
        f"Parameter {name!r}: random search takes a list, a (low, high[, prior]) range, a scipy "
        f"distribution or a ray.tune domain, got {value!r}"
    )


class _LogInt:
    """Integers from ``low`` to ``high`` (inclusive), log-uniformly."""

    def __init__(self, low: int, high: int):
        self.low, self.high = low, high

    def rvs(self, random_state=None):
        rng = random_state if random_state is not None else np.random.RandomState()
        value = math.exp(rng.uniform(math.log(self.low), math.log(self.high + 1)))
        return int(min(self.high, max(self.low, math.floor(value))))


def _tune_domain(name: str, value: Any, optimizer: str, decoders: dict) -> Any:
    """One parameter of an adaptive (bayesian / hyperopt / optuna) search as a Ray Tune domain."""
    from ray import tune

    value = _grid_values(name, value)
    if _is_domain(value):
        return value
    if isinstance(value, tuple):
        low, high, log, is_int = _tuple_range(name, value)
        if is_int:
            return tune.lograndint(low, high + 1) if log else tune.randint(low, high + 1)
        return tune.loguniform(low, high) if log else tune.uniform(low, high)
    if isinstance(value, Sequence) and not isinstance(value, str):
        values = list(value)
        if not values:
            raise ValueError(f"Parameter {name!r} has an empty list of values")
        decoders[name] = values
        return tune.choice(list(range(len(values))))
    if hasattr(value, "rvs") and hasattr(value, "dist"):
        family = getattr(value.dist, "name", "")
        low, high = value.support()
        if family == "uniform":
            return tune.uniform(float(low), float(high))
        if family in ("loguniform", "reciprocal"):
            return tune.loguniform(float(low), float(high))
        if family == "randint":
            return tune.randint(int(low), int(high) + 1)
        raise ValueError(
            f"Parameter {name!r}: search_optimization={optimizer!r} cannot take a scipy "
            f"{family!r} distribution (only uniform, loguniform and randint convert); give a "
            "(low, high[, 'log-uniform']) range, a list, or a ray.tune domain"
        )
    raise ValueError(
        f"Parameter {name!r}: search_optimization={optimizer!r} takes a list (categorical), a "
        f"(low, high[, 'log-uniform']) range, a scipy uniform/loguniform/randint or a ray.tune "
        f"domain, got {value!r}"
    )


def _check_bayesian(space: Mapping[str, Any], decoders: Mapping[str, list]) -> None:
    from ray.tune.search.sample import Float

    bad = [k for k, v in space.items() if k in decoders or not isinstance(v, Float)]
    if bad:
        raise ValueError(
            "search_optimization='bayesian' (Ray's BayesOptSearch) takes only continuous float "
            f"ranges such as (1e-4, 1e-1); {bad} {'is' if len(bad) == 1 else 'are'} categorical or "
            "integer. Use search_optimization='optuna' or 'hyperopt' for mixed spaces."
        )


def _searcher(optimizer: Any, random_state: Any, search_kwargs: Mapping[str, Any] | None):
    kwargs = dict(search_kwargs or {})
    seed = int(random_state) if isinstance(random_state, numbers.Integral) else None
    if not isinstance(optimizer, str):
        return optimizer  # a Ray Tune Searcher object, used as given
    hint = "pip install 'raygrid[tune]' (or: pip install {})"
    if optimizer == "optuna":
        try:
            from ray.tune.search.optuna import OptunaSearch
            import optuna  # noqa: F401
        except ImportError as exc:
            raise ImportError("search_optimization='optuna' needs optuna: "
                              + hint.format("optuna")) from exc
        if seed is not None:
            kwargs.setdefault("seed", seed)
        return OptunaSearch(**kwargs)
    if optimizer == "hyperopt":
        try:
            from ray.tune.search.hyperopt import HyperOptSearch
            import hyperopt  # noqa: F401
        except ImportError as exc:
            raise ImportError("search_optimization='hyperopt' needs hyperopt: "
                              + hint.format("hyperopt")) from exc
        if seed is not None:
            kwargs.setdefault("random_state_seed", seed)
        return HyperOptSearch(**kwargs)
    if optimizer == "bayesian":
        try:
            from ray.tune.search.bayesopt import BayesOptSearch
            import bayes_opt  # noqa: F401
        except ImportError as exc:
            raise ImportError(
                "search_optimization='bayesian' needs bayesian-optimization: "
                + hint.format("'bayesian-optimization==1.4.3'")
            ) from exc
        if seed is not None:
            kwargs.setdefault("random_state", seed)
        return BayesOptSearch(**kwargs)
    raise ValueError(f"search_optimization must be one of {SEARCH_OPTIMIZATIONS}, got {optimizer!r}")


# ---------------------------------------------------------------------------------------------
# The trial: every fold of one candidate, trained in increments (runs in a Tune actor)
# ---------------------------------------------------------------------------------------------
def _accepts(method, name: str) -> bool:
    """Whether ``method`` takes ``name``; ``inspect.signature`` follows ``__wrapped__``, so it sees
    through scikit-learn's fit-context decorator (``getfullargspec`` sees only ``*args, **kwargs``)."""
    try:
        params = inspect.signature(method).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def _names(method, name: str) -> bool:
    """Whether ``method`` has a parameter called ``name`` (not merely ``**kwargs``)."""
    try:
        return name in inspect.signature(method).parameters
    except (TypeError, ValueError):
        return False


def _only_accepted(method, kwargs: Mapping[str, Any]) -> dict:
    return {k: v for k, v in kwargs.items() if _accepts(method, k)}


class _Fold:
    """One fold of one candidate: its estimator, its data, and what it has trained so far."""

    def __init__(self, payload: Payload, spec: TrialSpec, params: dict, fold: int, seed):
        self.payload, self.spec, self.fold, self.seed = payload, spec, fold, seed
        data = fold_data(payload, fold)
        self.X_train, self.y_train, self.X_test, self.y_test = (
            data.X_train, data.y_train, data.X_test, data.y_test)
        self.n_test = data.n_test
        self.fit_params = data.fit_params
        self.score_test, self.score_train = data.score_test, data.score_train
        self.estimator = clone(payload.estimator).set_params(**clone(params, safe=False))
        self.done = 0  # budget units trained
        self.fit_time = 0.0
        self.score_time = 0.0
        self.test_scores: dict[str, float] = {}
        self.train_scores: dict[str, float] | None = None
        self.error: str | None = None
        self.exception: BaseException | None = None
        self.train_loss: float | None = None  # the learner's last training loss, if it keeps one
        self._Xt = None  # the Pipeline's transformed training rows (fitted once)

    # -- training ------------------------------------------------------------------------------
    def _learner_and_data(self):
        est = self.estimator
        if not isinstance(est, Pipeline):
            return est, self.X_train, self.fit_params
        last_name = est.steps[-1][0]
        last_params = {k.split("__", 1)[1]: v for k, v in self.fit_params.items()
                       if k.startswith(last_name + "__")}
        if self._Xt is None and self.done > 0:  # restored from a checkpoint: the head is fitted
            self._Xt = est[:-1].transform(self.X_train)
        if self._Xt is None:
            head = est[:-1]
            head_params = {k: v for k, v in self.fit_params.items()
                           if not k.startswith(last_name + "__")}
            self._Xt = head.fit_transform(self.X_train, self.y_train, **head_params)
        return est.steps[-1][1], self._Xt, last_params

    def advance_to(self, point: int, budget: int) -> None:
        if self.error is not None or point <= self.done:
            return
        start = time.perf_counter()
        try:
            self._seed(point)
            self._train(point, budget)
            self.train_loss = _last_loss(_final_step(self.estimator))
            self.done = point
            self.fit_time += time.perf_counter() - start
        except Exception as exc:  # noqa: BLE001 - errors are data; error_score decides
            self.fit_time += time.perf_counter() - start
            self._fail(exc)
            return
        start = time.perf_counter()
        try:  # raygrid's scoring: a failing scorer gives error_score, as in every search
            p = self.payload
            self.test_scores = score(self.estimator, self.X_test, self.y_test, p, self.score_test)
            if p.return_train_score:
                self.train_scores = score(self.estimator, self.X_train, self.y_train, p,
                                          self.score_train)
        except Exception as exc:  # noqa: BLE001 - error_score="raise": the fold's error
            self._fail(exc)
        self.score_time += time.perf_counter() - start

    def _seed(self, point: int) -> None:
        """Keras: the fold's seed (raygrid's rule) for its first increment, then one derived
        from it and the increment, so a trial resumed from a checkpoint trains the same."""
        if self.seed is None or self.spec.kind != "keras" or not self.payload.keras:
            return
        import keras

        seed = self.seed if self.done == 0 else int(
            np.random.SeedSequence([int(self.seed), int(point)]).generate_state(1)[0] & 0x7FFFFFFF)
        keras.utils.set_random_seed(seed)

    def _train(self, point: int, budget: int) -> None:
        kind = self.spec.kind
        learner, X, fit_params = self._learner_and_data()
        step = point - self.done
        if kind == "keras":
            # warm_start keeps the model between fit calls, but scikeras' KerasClassifier.fit
            # resets classes_ to None on every call and derives it again only when it builds a
            # new model: put it back, or the warm model can no longer predict. (partial_fit keeps
            # both but trains one epoch per call.)
            if self.done == 0:
                learner.set_params(warm_start=True)
            classes = getattr(learner, "classes_", None)
            learner.fit(X, self.y_train, epochs=step, initial_epoch=self.done, **fit_params)
            if classes is not None and getattr(learner, "classes_", None) is None:
                learner.classes_ = classes
        elif kind == "partial_fit":
            kwargs = _only_accepted(learner.partial_fit, fit_params)
            if self.done == 0 and self.spec.classes is not None and _names(learner.partial_fit,
                                                                           "classes"):
                kwargs["classes"] = self.spec.classes
            for _ in range(step):
                learner.partial_fit(X, self.y_train, **kwargs)
                kwargs.pop("classes", None)
        else:
            self._warm_start_fit(learner, X, fit_params, point, budget)

    def _warm_start_fit(self, learner, X, fit_params, point: int, budget: int) -> None:
        from sklearn.exceptions import ConvergenceWarning

        key = self.spec.kind  # "max_iter" or "n_estimators"
        if self.done == 0:
            self._total = int(learner.get_params()[key])
        total = self._total
        with warnings.catch_warnings():
            if point < budget:
                warnings.simplefilter("ignore", ConvergenceWarning)
            if key == "n_estimators":
                n = max(1, int(math.ceil(total * point / budget)))
                learner.set_params(warm_start=True, n_estimators=n)
                learner.fit(X, self.y_train, **fit_params)
            else:
                done_iters = int(math.ceil(total * self.done / budget))
                n = max(1, int(math.ceil(total * point / budget)) - done_iters)
                learner.set_params(warm_start=True, max_iter=n)
                learner.fit(X, self.y_train, **fit_params)

    def _fail(self, exc: BaseException) -> None:
        self.error = traceback.format_exc()
        self.exception = pickles(exc)  # one that does not pickle travels as its text alone
        set_error_scores(self, self.payload)

    _STATE = ("estimator", "done", "fit_time", "score_time", "test_scores", "train_scores",
              "error", "exception", "train_loss", "_total")

    def state(self) -> dict:
        return {k: getattr(self, k) for k in self._STATE if hasattr(self, k)}

    def restore(self, state: Mapping[str, Any]) -> None:
        for k, v in state.items():
            setattr(self, k, v)

    def record(self, node: str, pid: int) -> dict:
        return _record(FitResult(
            0, self.fold, dict(self.test_scores), self.train_scores, self.fit_time,
            self.score_time, self.n_test, error=self.error, exception=self.exception, node=node,
            pid=pid, seed=self.seed), self.done)


def _record(result: FitResult, budget: int) -> dict:
    """A fold's result as a trial reports it to Tune (plain values; the candidate is the
    driver's to number)."""
    return dict(fold=result.fold, test=dict(result.test_scores), train=result.train_scores,
                fit_time=result.fit_time, score_time=result.score_time,
                n_test=result.n_test_samples, error=result.error, exception=result.exception,
                node=result.node, pid=result.pid, seed=result.seed, budget=budget,
                warnings=result.warnings)


def _fit_result(c: int, rec: Mapping[str, Any]) -> FitResult:
    return FitResult(c, rec["fold"], dict(rec["test"]),
                     dict(rec["train"]) if rec.get("train") is not None else None,
                     rec["fit_time"], rec["score_time"], rec["n_test"], error=rec["error"],
                     exception=rec.get("exception"), node=rec["node"], pid=rec["pid"],
                     seed=rec["seed"], warnings=rec.get("warnings"))


def _prepare_worker_env(spec: TrialSpec) -> None:
    """Before TensorFlow loads in this actor: cap its threads to the trial's CPUs, quiet its logs."""
    if "tensorflow" in sys.modules:
        return
    threads = str(max(1, int(spec.num_cpus or 1)))
    os.environ["TF_NUM_INTRAOP_THREADS"] = threads
    os.environ["TF_NUM_INTEROP_THREADS"] = threads
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if spec.keras_backend:
        os.environ["KERAS_BACKEND"] = spec.keras_backend


def _last_loss(learner: Any) -> float | None:
    """The last training loss a learner keeps (scikeras ``history_``, scikit-learn ``loss_``)."""
    history = getattr(learner, "history_", None)
    loss = None
    if isinstance(history, Mapping) and history.get("loss"):
        loss = history["loss"][-1]
    elif isinstance(getattr(learner, "loss_", None), numbers.Real):
        loss = learner.loss_
    try:
        loss = float(loss)
    except (TypeError, ValueError):
        return None
    return loss if math.isfinite(loss) else None


TIE_BREAK = 1e-6  # weight of the training loss in the objective: far below any score difference


def _objective(folds: Sequence[Any], spec: TrialSpec) -> tuple[float, dict[str, float]]:
    """The mean CV score Tune optimises, and every metric's mean.

    Scores tie often early on (every candidate that still predicts the majority class has the same
    accuracy), and ASHA keeps every trial tied with its cutoff. So ties are broken by the mean
    training loss, weighted by TIE_BREAK: too small to reorder different scores, enough to let
    ASHA stop two thirds of a tied rung. ``cv_results_`` holds the plain scores.
    """
    metrics = list(folds[0].test_scores) if folds and folds[0].test_scores else []
    means = {}
    for m in metrics:
        values = [f.test_scores.get(m, np.nan) for f in folds]
        means[m] = float(np.mean(values))
    key = spec.objective_metric if spec.objective_metric in means else (metrics[0] if metrics else None)
    objective = means[key] if key is not None else float("nan")
    losses = [getattr(f, "train_loss", None) for f in folds]
    if math.isfinite(objective) and all(loss is not None for loss in losses):
        sign = -1.0 if spec.mode == "max" else 1.0
        objective += sign * TIE_BREAK * float(np.mean(losses))
    return objective, means


def run_candidate(config: dict, shared: list) -> None:
    """The Tune function trainable: every fold of one candidate, reporting after each increment."""
    import ray
    from ray import tune

    # A stopped trial's thread must end before Tune reuses this actor for the next trial; Tune
    # waits 2 s by default, too little for a Keras trial on a busy machine (the next trial then
    # fails instead of starting a fresh actor). Tune reads this in the actor at every reuse.
    os.environ["TUNE_FUNCTION_THREAD_TIMEOUT_S"] = "120"
    _add_driver_paths(shared[2])  # before anything of the driver's is unpickled here
    spec: TrialSpec = ray.get(shared[1])
    _prepare_worker_env(spec)
    payload: Payload = ray.get(shared[0])
    params = spec.params_of(config)
    # raygrid's seeding rule: (random_state, the candidate's parameter values, fold).
    seeds = [fit_seed(spec.random_state, params_key(params), f) for f in range(len(payload.splits))]
    if spec.kind == "plain":  # one fit per fold, exactly as raygrid's other searches fit them
        results = [fit_and_score(payload, Trial(0, f, params, seed)) for f, seed in enumerate(seeds)]
        objective, means = _objective(results, spec)
        records = [_record(r, 1) for r in results]
        tune.report({OBJECTIVE: objective, BUDGET: 1, "max_budget": 1,
                     **{f"mean_test_{m}": v for m, v in means.items()},
                     "n_failed_folds": sum(r.failed for r in results), _FOLDS: records,
                     _MEMBERS: {}})
        return
    members = spec.members(config)
    node, pid = ray.get_runtime_context().get_node_id(), os.getpid()
    folds = [_Fold(payload, spec, params, f, seed) for f, seed in enumerate(seeds)]
    budget = members[-1][1] or spec.budget_of(folds[0].estimator)
    member_budgets = [b for _, b in members if b]
    snapshots: dict[str, list] = {}  # a member's fold records at its own budget
    start = 0
    checkpoint = tune.get_checkpoint() if spec.checkpoint else None
    if checkpoint is not None:  # a paused trial resumes where it stopped
        with checkpoint.as_directory() as path:
            with open(os.path.join(path, "folds.pkl"), "rb") as fh:
                saved = pickle.load(fh)
            for fold, state in zip(folds, saved["folds"]):
                fold.restore(state)
            snapshots.update(saved["snapshots"])
        start = min(f.done for f in folds if f.error is None) if any(
            f.error is None for f in folds) else budget
    try:
        for point in spec.report_points(budget, member_budgets):
            if point <= start:
                continue
            for fold in folds:
                fold.advance_to(point, budget)
            objective, means = _objective(folds, spec)
            failed = [f for f in folds if f.error is not None]
            records = [f.record(node, pid) for f in folds]
            for c, b in members:
                if c is not None and b == point:
                    snapshots[str(c)] = records
            report = {OBJECTIVE: objective, BUDGET: point, "max_budget": budget,
                      **{f"mean_test_{m}": v for m, v in means.items()},
                      "n_failed_folds": len(failed), _FOLDS: records, _MEMBERS: dict(snapshots)}
            if spec.checkpoint:
                _report_with_checkpoint(report, folds, snapshots)
            else:
                tune.report(report)
            if len(failed) == len(folds) or (failed and payload.error_score == "raise"):
                break
    finally:
        if payload.keras:
            _clear_keras()


def _add_driver_paths(paths: Sequence[str]) -> None:
    """The driver's own ``sys.path`` entries (see ``raygrid.executors.ray.driver_paths``) first on
    this trial's path, so classes defined next to the driver's code unpickle here."""
    missing = [p for p in paths if p not in sys.path]
    sys.path[:0] = missing


def _report_with_checkpoint(report: dict, folds: Sequence[_Fold], snapshots: dict) -> None:
    from ray import tune

    path = tempfile.mkdtemp(prefix="raygrid-ckpt-")
    try:
        with open(os.path.join(path, "folds.pkl"), "wb") as fh:
            pickle.dump({"folds": [f.state() for f in folds], "snapshots": snapshots}, fh)
        tune.report(report, checkpoint=tune.Checkpoint.from_directory(path))
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _clear_keras() -> None:
    try:
        import keras

        keras.backend.clear_session()
    except Exception:  # noqa: BLE001 - best effort
        pass


# ---------------------------------------------------------------------------------------------
# Driver side: stoppers and callbacks
# ---------------------------------------------------------------------------------------------
def _make_stoppers(user_stopper: Any, raise_on_error: bool):
    from ray.tune import Stopper
    from ray.tune.stopper import CombinedStopper, FunctionStopper

    class StopOnError(Stopper):
        """With error_score='raise', the first failed fit stops the whole search."""

        def __init__(self):
            self.failed = False

        def __call__(self, trial_id, result):
            if raise_on_error and result.get("n_failed_folds"):
                self.failed = True
            return False

        def stop_all(self):
            return self.failed

    class StopAt(Stopper):
        def __init__(self, limits):
            self.limits = dict(limits)

        def __call__(self, trial_id, result):
            return any(k in result and result[k] >= v for k, v in self.limits.items())

        def stop_all(self):
            return False

    stoppers = [StopOnError()]
    if user_stopper is None:
        pass
    elif isinstance(user_stopper, Stopper):
        stoppers.append(user_stopper)
    elif isinstance(user_stopper, Mapping):
        stoppers.append(StopAt(user_stopper))
    elif callable(user_stopper):
        stoppers.append(FunctionStopper(user_stopper))
    else:
        raise ValueError("stopper must be a ray.tune.Stopper, a dict or a callable, got "
                         f"{user_stopper!r}")
    return CombinedStopper(*stoppers)


def _history_callback(history: list):
    from ray.tune import Callback

    class History(Callback):
        def on_trial_result(self, iteration, trials, trial, result, **info):
            history.append({
                "trial_id": trial.trial_id,
                "config": dict(trial.config),
                BUDGET: result.get(BUDGET),
                OBJECTIVE: result.get(OBJECTIVE),
                "time_total_s": result.get("time_total_s"),
                **{k: v for k, v in result.items() if k.startswith("mean_test_")},
                "fit_time": sum(f["fit_time"] for f in result.get(_FOLDS, [])),
                "score_time": sum(f["score_time"] for f in result.get(_FOLDS, [])),
            })

    return History()


@contextlib.contextmanager
def _environ(values: Mapping[str, str]):
    """Set environment variables that Ray Tune reads while it runs, and restore them after."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class _DropMissingMetrics(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Failed to fetch metrics")


@contextlib.contextmanager
def _quiet_missing_metrics():
    """Without logger callbacks Tune warns that it found no result files; raygrid needs none."""
    log = logging.getLogger("ray.tune.analysis.experiment_analysis")
    flt = _DropMissingMetrics()
    log.addFilter(flt)
    try:
        yield
    finally:
        log.removeFilter(flt)


def _logger_callbacks(loggers: Any) -> list:
    """Tune's result loggers: none by default (raygrid keeps what it needs in memory)."""
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback, TBXLoggerCallback

    if loggers is None:
        return []
    known = {"csv": CSVLoggerCallback, "json": JsonLoggerCallback, "tensorboard": TBXLoggerCallback}
    out = []
    for item in loggers if isinstance(loggers, (list, tuple)) else [loggers]:
        if isinstance(item, str):
            if item.lower() not in known:
                raise ValueError(f"Unknown logger {item!r}; raygrid knows {sorted(known)} or takes "
                                 "ray.tune.Callback objects")
            out.append(known[item.lower()]())
        else:
            out.append(item)
    return out


# ---------------------------------------------------------------------------------------------
# The sklearn-facing searches
# ---------------------------------------------------------------------------------------------
class TuneBaseSearch(BaseSearch):
    """What TuneSearchCV and TuneGridSearchCV share: raygrid's fit steps, with Ray Tune trials
    (one per candidate, every fold) as the run step."""

    # Tune runs on Ray, each trial's resources given by resources_per_trial: not parameters.
    backend = "ray"
    ray_remote_args = None

    def __init__(
        self,
        estimator,
        early_stopping=None,
        scoring=None,
        n_jobs=None,
        cv=None,
        refit=True,
        verbose=0,
        error_score=np.nan,
        return_train_score=False,
        local_dir=None,
        name=None,
        max_iters=1,
        use_gpu=False,
        loggers=None,
        pipeline_auto_early_stop=True,
        stopper=None,
        time_budget_s=None,
        sk_n_jobs=None,
        mode=None,
        resources_per_trial=None,
        address=None,
        random_state=None,
        share_epochs=True,
        max_retries=3,
        storage=None,
    ):
        self.estimator = estimator
        self.early_stopping = early_stopping
        self.scoring = scoring
        self.n_jobs = n_jobs
        self.cv = cv
        self.refit = refit
        self.verbose = verbose
        self.error_score = error_score
        self.return_train_score = return_train_score
        self.local_dir = local_dir
        self.name = name
        self.max_iters = max_iters
        self.use_gpu = use_gpu
        self.loggers = loggers
        self.pipeline_auto_early_stop = pipeline_auto_early_stop
        self.stopper = stopper
        self.time_budget_s = time_budget_s
        self.sk_n_jobs = sk_n_jobs
        self.mode = mode
        self.resources_per_trial = resources_per_trial
        self.address = address
        self.random_state = random_state
        self.share_epochs = share_epochs
        self.max_retries = max_retries
        self.storage = storage

    # -- subclasses ------------------------------------------------------------------------------
    def _space(self, estimator, spec: TrialSpec) -> tuple[dict, Any, int]:
        """(param_space, search_alg, num_samples); fills spec.candidates or spec.decoders."""
        raise NotImplementedError  # pragma: no cover

    def _run_search(self, evaluate_candidates):  # pragma: no cover - Tune drives the search
        raise NotImplementedError("Tune searches run their trials in _run")

    # -- raygrid's fit steps: Tune's own checks, the run step, its frames -------------------------
    def _prepare(self, X, y, params) -> SearchRun:
        if self.mode not in (None, "max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', got {self.mode!r}")
        if self.sk_n_jobs not in (None, 1):
            raise ValueError("sk_n_jobs is not supported: folds of a candidate run one after "
                             "another inside its trial; use n_jobs for parallel trials")
        if not isinstance(self.max_iters, numbers.Integral) or self.max_iters < 1:
            raise ValueError(f"max_iters must be a positive integer, got {self.max_iters!r}")
        if self.storage is not None and Path(self.storage).expanduser().is_file():
            raise ValueError(f"storage={str(self.storage)!r} is a file, not a directory")
        return super()._prepare(X, y, params)

    def _open_store(self, payload: Payload, splits):
        """None: Tune keeps its experiment under ``storage`` itself (see ``_experiment_name``)."""
        return None

    def _run(self, run: SearchRun) -> None:
        """One Tune trial per candidate (or per group sharing epochs) trains every fold; their
        fold results become ``run.results``, keyed by (candidate, fold)."""
        estimator, payload = self.estimator, run.payload
        scheduler = _scheduler_spec(self.early_stopping)
        kind = _plan_kind(estimator, scheduler, int(self.max_iters), self.pipeline_auto_early_stop)
        resources = self._resources()
        spec = TrialSpec(
            kind=kind, max_iters=max(1, int(self.max_iters)), rungs=None,
            every_unit=(scheduler is not None and not isinstance(scheduler, ASHA))
            or self.stopper is not None,
            objective_metric=(self.refit if isinstance(self.refit, str) else run.scoring.metrics[0])
            if run.scoring.multimetric else "score",
            mode=self.mode or "max", random_state=run.seed_state,
            classes=np.unique(run.y) if (kind == "partial_fit" and is_classifier(estimator)
                                         and run.y is not None) else None,
            keras_backend=os.environ.get("KERAS_BACKEND"), num_cpus=resources.get("cpu", 1),
        )
        param_space, search_alg, n_samples = self._space(estimator, spec)
        if spec.candidates is not None:
            spec.budgets = [spec.budget_of(clone(estimator).set_params(**clone(p, safe=False)))
                            if kind == "keras" else spec.budget_of(estimator)
                            for p in spec.candidates]
            if kind == "keras" and self.share_epochs:
                spec.groups = group_by_epochs(spec.candidates, spec.budgets)
            else:
                spec.groups = [[i] for i in range(len(spec.candidates))]
            from ray import tune

            param_space = {"trial": tune.grid_search(list(range(len(spec.groups))))}
        tune_scheduler = self._build_scheduler(scheduler, spec, estimator)
        n_candidates = len(spec.candidates) if spec.candidates is not None else n_samples
        run.progress.total += n_candidates * run.n_splits
        run.progress.announce(n_candidates)
        grid, history = self._run_tune(payload, spec, param_space, search_alg, tune_scheduler,
                                       n_samples, resources)
        collected = _collect(grid, spec, payload, run.n_splits)
        if not collected.candidates:
            raise RuntimeError("No Tune trial reported a result (time_budget_s too short?)")
        run.candidates.extend(collected.candidates)
        run.first_split.extend([0] * len(collected.candidates))
        for key in sorted(collected.results):
            result = collected.results[key]
            run.results[key] = result
            run.progress.add(result, params=collected.candidates[key[0]])
            result.reissue_warnings()
        if self.error_score == "raise":
            for key in sorted(run.results):
                if run.results[key].failed:
                    reraise(run.results[key])
        if collected.skipped:
            warnings.warn(f"{collected.skipped} Tune trial(s) reported no result (time_budget_s "
                          "or a stopper ended them first); their candidates are left out of "
                          "cv_results_.", UserWarning)
        run.notes.update(collected=collected, history=history)

    def _cv_results(self, run: SearchRun, scoring, warn: bool) -> dict:
        cv = super()._cv_results(run, scoring, warn)
        if self.mode == "min":
            _rank_ascending(cv)
        return cv

    def _finish_frames(self, run: SearchRun) -> None:
        """Each candidate's budget reached and trial, every report (``history_``), and the
        training and scoring seconds of every trial."""
        collected = run.notes["collected"]
        budgets = collected.budgets
        if len(self.results_):
            self.results_[BUDGET] = [budgets[c][0] for c in self.results_["candidate"]]
        self.summary_[BUDGET] = [budgets[c][0] for c in self.summary_.index]
        self.summary_["max_budget"] = [budgets[c][1] for c in self.summary_.index]
        self.summary_["stopped_early"] = self.summary_[BUDGET] < self.summary_["max_budget"]
        self.summary_["trial"] = [collected.trial_of[c] for c in self.summary_.index]
        self.history_ = _history_frame(run.notes["history"], collected.members_of)
        self.fit_seconds_ = collected.fit_seconds
        self.score_seconds_ = collected.score_seconds

    #: Parameters that do not change a search's results: a stored experiment is resumed whatever
    #: they are.
    _NOT_IDENTITY = ("verbose", "n_jobs", "storage", "local_dir", "name", "loggers", "address",
                     "max_retries")

    def _experiment_name(self, payload: Payload) -> str | None:
        """The experiment's folder under ``storage``: named by a digest of everything that
        decides the search's results, so only the same search resumes it (None: not resumable)."""
        from raygrid.store import Fingerprinter, _Unhashable, digest

        fingerprinter = Fingerprinter(
            estimator=payload.estimator, X=payload.X, y=payload.y, splits=payload.splits,
            fit_params=payload.fit_params, scoring=self.scoring, error_score=self.error_score,
            return_train_score=self.return_train_score, keras=payload.keras)
        why = "the data, fit parameters or scoring"
        if fingerprinter.reusable:
            settings = {k: v for k, v in self.get_params(deep=False).items()
                        if k not in self._NOT_IDENTITY}
            folds = [(np.asarray(tr), np.asarray(te)) for tr, te in payload.splits]
            try:
                return f"{type(self).__name__}-{digest(fingerprinter.key, settings, folds)[:16]}"
            except _Unhashable as exc:
                why = f"its settings ({exc})"
        warnings.warn(f"raygrid cannot fingerprint this Tune search ({why}): it runs afresh "
                      "and cannot be resumed from storage.", UserWarning)
        return None

    def _resources(self) -> dict:
        resources = dict(self.resources_per_trial or {"cpu": 1})
        resources.setdefault("cpu", 1)
        if self.use_gpu and not resources.get("gpu"):
            resources["gpu"] = 1
        return resources

    def _build_scheduler(self, scheduler, spec: TrialSpec, estimator):
        if scheduler is None:
            return None
        from ray.tune.schedulers import ASHAScheduler, HyperBandScheduler, MedianStoppingRule

        max_budget = self._max_budget(spec, estimator)
        if isinstance(scheduler, ASHA):
            max_t = scheduler.max_t or max_budget
            if scheduler.grace_period > max_t:
                raise ValueError(f"ASHA grace_period={scheduler.grace_period} exceeds the largest "
                                 f"budget {max_t}")
            spec.rungs = scheduler.rungs(max_t)
            return ASHAScheduler(time_attr=BUDGET, max_t=max_t, grace_period=scheduler.grace_period,
                                 reduction_factor=scheduler.reduction_factor, brackets=1)
        from ray.tune.schedulers import AsyncHyperBandScheduler, FIFOScheduler

        if scheduler in ("hyperband", "hyperbandscheduler"):
            scheduler = HyperBandScheduler(time_attr=BUDGET, max_t=max_budget)
        elif scheduler in ("medianstoppingrule", "median"):
            scheduler = MedianStoppingRule(time_attr=BUDGET, grace_period=1)
        # Schedulers other than ASHA and FIFO may pause a trial and resume it later: each report
        # then carries a checkpoint of the folds, so a resumed trial goes on where it stopped.
        # (MedianStoppingRule and HyperBand derive from FIFOScheduler, hence the exact type.)
        spec.checkpoint = not (isinstance(scheduler, AsyncHyperBandScheduler)
                               or type(scheduler) is FIFOScheduler)
        return scheduler

    def _max_budget(self, spec: TrialSpec, estimator) -> int:
        if spec.kind != "keras":
            return spec.max_iters if spec.kind != "plain" else 1
        if spec.budgets is not None:
            return max(spec.budgets)
        values = [v for k, v in spec.decoders.items() if _is_epochs_key(k)]
        if values:
            return max(int(v) for vs in values for v in vs)
        return _keras_epochs(estimator)

    def _run_tune(self, payload, spec, param_space, search_alg, scheduler, num_samples_, resources):
        import ray
        from ray import tune

        from raygrid.executors.ray import connect, driver_paths

        connect(self.address)
        shared = [ray.put(payload), ray.put(spec), driver_paths()]
        trainable = tune.with_resources(tune.with_parameters(run_candidate, shared=shared),
                                        resources)
        n_jobs = self.n_jobs if self.n_jobs is not None and self.n_jobs > 0 else None
        tune_config = tune.TuneConfig(
            metric=OBJECTIVE, mode=self.mode or "max", search_alg=search_alg,
            scheduler=scheduler, num_samples=num_samples_, max_concurrent_trials=n_jobs,
            time_budget_s=self.time_budget_s, reuse_actors=True,
        )
        history: list = []
        root = self.storage if self.storage is not None else self.local_dir
        temporary = root is None
        root = tempfile.mkdtemp(prefix="raygrid-tune-") if temporary else \
            os.path.abspath(os.path.expanduser(str(root)))
        name = self.name or f"{type(self).__name__}-{time.strftime('%Y%m%d-%H%M%S')}"
        stored = self._experiment_name(payload) if self.storage is not None else None
        if stored is not None:
            name = stored
        run_config = tune.RunConfig(
            name=name, storage_path=root, verbose=int(min(max(self.verbose, 0), 3)),
            stop=_make_stoppers(self.stopper, self.error_score == "raise"),
            callbacks=[_history_callback(history), *_logger_callbacks(self.loggers)],
            # A trial whose actor or node dies runs again (fold errors are data, not failures).
            failure_config=tune.FailureConfig(max_failures=self.max_retries),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
        )
        env = {"TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1"}
        if self.verbose <= 0:
            env["RAY_AIR_NEW_OUTPUT"] = "0"  # the new output prints a header even when silent
        try:
            with _environ(env), _quiet_missing_metrics(), warnings.catch_warnings():
                warnings.filterwarnings("ignore", module=r"ray\.tune.*")
                path = os.path.join(root, name)
                if stored is not None and tune.Tuner.can_restore(path):
                    # The same search ran here before: finished trials are kept, the rest run.
                    tuner = tune.Tuner.restore(path, trainable=trainable, param_space=param_space,
                                               resume_unfinished=True, restart_errored=True)
                else:
                    tuner = tune.Tuner(trainable, param_space=param_space,
                                       tune_config=tune_config, run_config=run_config)
                grid = tuner.fit()
                if stored is not None and not history:
                    # A restored experiment keeps the callbacks it was made with (in the process
                    # that made it): read its reports back from what Tune stored.
                    history.extend(_stored_history(grid))
        finally:
            if temporary:
                shutil.rmtree(root, ignore_errors=True)
        return grid, history


@dataclass
class _Collected:
    candidates: list = field(default_factory=list)
    results: dict = field(default_factory=dict)
    budgets: dict = field(default_factory=dict)  # candidate -> (budget reached, full budget)
    trial_of: dict = field(default_factory=dict)  # candidate -> trial number
    members_of: dict = field(default_factory=dict)  # Tune trial id -> candidates
    fit_seconds: float = 0.0  # training seconds of every trial, each counted once
    score_seconds: float = 0.0  # scoring seconds of every trial (every report), each counted once
    skipped: int = 0  # trials that reported nothing (time budget, stopper)


def _collect(grid, spec: TrialSpec, payload: Payload, n_splits: int) -> _Collected:
    """Candidates, FitResults keyed by (candidate, fold), and (budget reached, budget) each."""
    trials = []
    skipped = 0
    for result in grid:
        config = result.config or {}
        metrics = result.metrics or {}
        if not config or not (metrics.get(_FOLDS) or result.error is not None):
            skipped += 1
            continue
        members = spec.members(config)
        order = members[0][0] if members[0][0] is not None else len(trials)
        trials.append((order, config, metrics, result.error))
    trials.sort(key=lambda t: t[0])
    entries = []
    out = _Collected(skipped=skipped)
    for t, (_, config, metrics, error) in enumerate(trials):
        folds = metrics.get(_FOLDS)
        snapshots = metrics.get(_MEMBERS) or {}
        for cid, budget in spec.members(config):
            records = (snapshots.get(str(cid)) if cid is not None else None) or folds
            params = spec.params_of(config) if cid is None else dict(spec.candidates[cid])
            budget = int(budget or metrics.get("max_budget") or 0)
            entries.append((cid if cid is not None else t, params, records, error, budget, t,
                            metrics.get("trial_id")))
        out.fit_seconds += float(sum(r["fit_time"] for r in folds or ()))
        out.score_seconds += float(sum(r["score_time"] for r in folds or ()))
    entries.sort(key=lambda e: e[0])  # candidates in the order of the grid / the trials
    for c, (_, params, records, error, budget, t, trial_id) in enumerate(entries):
        out.candidates.append(params)
        out.trial_of[c] = t
        out.members_of.setdefault(trial_id, []).append(c)
        if not records:  # the trial itself died (after Tune's retries): every fold a failure
            for f in range(n_splits):
                trial = Trial(c, f, params, fit_seed(spec.random_state, params_key(params), f))
                out.results[(c, f)] = system_failure(
                    trial, error if isinstance(error, BaseException) else str(error),
                    payload.metrics or ("score",), payload.return_train_score, payload.error_score)
            out.budgets[c] = (0, budget)
            continue
        for rec in records:
            out.results[(c, rec["fold"])] = _fit_result(c, rec)
        out.budgets[c] = (max(int(r.get("budget") or 0) for r in records), budget)
    return out


def _stored_history(grid) -> list[dict]:
    """The reports Tune stored for every trial of a result grid, as ``_history_callback`` records
    them: every report where Tune's loggers kept them, else (raygrid turns those loggers off
    unless ``loggers`` asks for them) each trial's last one. Training and scoring seconds are
    not kept per report: NaN."""
    rows = []
    for result in grid:
        frame = result.metrics_dataframe
        trial_id = (result.metrics or {}).get("trial_id")
        reports = [r for _, r in frame.iterrows()] if frame is not None and len(frame) else (
            [result.metrics] if result.metrics else [])
        for report in reports:
            rows.append({
                "trial_id": report.get("trial_id", trial_id),
                "config": dict(result.config or {}),
                BUDGET: report.get(BUDGET),
                OBJECTIVE: report.get(OBJECTIVE),
                "time_total_s": report.get("time_total_s"),
                **{k: v for k, v in report.items()
                   if isinstance(k, str) and k.startswith("mean_test_")},
                "fit_time": np.nan,
                "score_time": np.nan,
            })
    return rows


def _history_frame(history: list, members_of: Mapping[str, list]) -> pd.DataFrame:
    """Every report of every trial: its candidates, budget, objective and mean test scores."""
    if not history:
        return pd.DataFrame()
    frame = pd.DataFrame(history).drop(columns=["config"])
    frame.insert(0, "candidates", [members_of.get(t, []) for t in frame["trial_id"]])
    frame.insert(0, "candidate", [m[-1] if m else -1 for m in frame["candidates"]])
    return frame


def _rank_ascending(cv: dict) -> None:
    """mode='min': the smallest mean score ranks first."""
    from scipy.stats import rankdata

    for key in [k for k in cv if k.startswith("rank_test_")]:
        means = np.asarray(cv["mean_test_" + key[len("rank_test_"):]], dtype=float)
        if np.isnan(means).all():
            continue
        filled = np.nan_to_num(means, nan=np.nanmax(means) + 1)
        cv[key] = rankdata(filled, method="min").astype(np.int32)


_TUNE_PARAMS_DOC = """
    early_stopping : bool, str, raygrid.tune.ASHA or ray.tune.schedulers.TrialScheduler
        Stop weak candidates early. ``True`` / ``"ASHAScheduler"``: asynchronous successive
        halving whose trials score their folds only at its rungs; ``"HyperBandScheduler"``,
        ``"MedianStoppingRule"`` or a scheduler object: trials report after every unit. Needs an
        estimator that trains in increments: a scikeras Keras model (units are epochs, up to the
        model's ``epochs``), ``partial_fit`` (units are passes, up to ``max_iters``) or
        ``warm_start`` with ``max_iter`` / ``n_estimators`` (that budget split into ``max_iters``
        steps). A Pipeline's last step may be the incremental one (``pipeline_auto_early_stop``).
    max_iters : int, default=1
        Increments per candidate for scikit-learn estimators (see ``early_stopping``); Keras
        models use their own ``epochs`` as the budget.
    n_jobs : int, default=None
        At most this many trials at once; None or -1: as many as the resources allow.
    resources_per_trial : dict, default={"cpu": 1}
        Ray Tune resources of one trial (``{"cpu": 1, "gpu": 0.25}``); ``use_gpu=True`` adds a GPU.
    local_dir, name : where Tune keeps its experiment (Ray's ``storage_path`` and experiment
        name); a temporary folder, removed after ``fit``, when ``local_dir`` is not given.
    storage : str or path, default=None
        A directory that keeps the experiment, named by a digest of everything that decides
        the results (estimator, its classes' source, the space, data, cv, scoring, settings):
        running the same search again resumes it (finished trials are kept; unfinished and
        errored ones run); another search gets a folder of its own.
    max_retries : int, default=3
        How often a trial whose actor or node died runs again (Tune's ``max_failures``).
    loggers : list of "csv", "json", "tensorboard" or ray.tune.Callback objects.
    stopper : ray.tune.Stopper, dict or callable, passed to Tune.
    time_budget_s : seconds (or timedelta) for the whole search; trials cut off before their
        first report are left out of ``cv_results_``.
    mode : "max" (default) or "min": whether the best candidate has the highest or lowest score.
    random_state : int, seeds the sampling, the search algorithm and Keras fits (per candidate
        and fold).
    address : the Ray cluster to join; else ``RAY_ADDRESS``; else a local Ray.

    Attributes beyond scikit-learn's: ``results_`` (one row per fold at the last increment a
    candidate reached, with its ``budget``), ``summary_`` (one row per candidate, with
    ``budget``, ``max_budget`` and ``stopped_early``), ``history_`` (every report of every
    trial), ``fit_seconds_`` and ``score_seconds_`` (training and scoring seconds summed over
    every trial, fold and increment). In ``results_`` a candidate's ``fit_time`` is what it took
    to reach its budget; candidates sharing a trial (``share_epochs``) share those seconds, so the
    column can sum to more than ``fit_seconds_``.
"""


class TuneGridSearchCV(TuneBaseSearch):
    __doc__ = (
        """Exhaustive search over ``param_grid`` on Ray Tune, one trial per candidate.

    Same interface as tune-sklearn's ``TuneGridSearchCV`` and scikit-learn's ``GridSearchCV``;
    ``param_grid`` is a dict of lists (or ``tune.grid_search``) or a list of such dicts.
"""
        + _TUNE_PARAMS_DOC
    )

    def __init__(
        self,
        estimator,
        param_grid,
        early_stopping=None,
        scoring=None,
        n_jobs=None,
        cv=None,
        refit=True,
        verbose=0,
        error_score=np.nan,
        return_train_score=False,
        local_dir=None,
        name=None,
        max_iters=1,
        use_gpu=False,
        loggers=None,
        pipeline_auto_early_stop=True,
        stopper=None,
        time_budget_s=None,
        sk_n_jobs=None,
        mode=None,
        resources_per_trial=None,
        address=None,
        random_state=None,
        share_epochs=True,
        max_retries=3,
        storage=None,
    ):
        super().__init__(
            estimator, early_stopping=early_stopping, scoring=scoring, n_jobs=n_jobs, cv=cv,
            refit=refit, verbose=verbose, error_score=error_score,
            return_train_score=return_train_score, local_dir=local_dir, name=name,
            max_iters=max_iters, use_gpu=use_gpu, loggers=loggers,
            pipeline_auto_early_stop=pipeline_auto_early_stop, stopper=stopper,
            time_budget_s=time_budget_s, sk_n_jobs=sk_n_jobs, mode=mode,
            resources_per_trial=resources_per_trial, address=address,
            random_state=random_state, share_epochs=share_epochs, max_retries=max_retries,
            storage=storage,
        )
        self.param_grid = param_grid

    def _space(self, estimator, spec):
        grid = self.param_grid
        grids = [grid] if isinstance(grid, Mapping) else list(grid)
        cleaned = []
        for g in grids:
            if not isinstance(g, Mapping):
                raise TypeError(f"param_grid must be a dict or a list of dicts, got {grid!r}")
            cleaned.append({k: _grid_values(k, v) for k, v in g.items()})
        candidates = [dict(p) for p in ParameterGrid(cleaned)]
        validate_candidates(estimator, candidates, "param_grid")
        spec.candidates = candidates
        return None, None, 1


class TuneSearchCV(TuneBaseSearch):
    __doc__ = (
        """Random or adaptive search over ``param_distributions`` on Ray Tune, one trial per candidate.

    Same interface as tune-sklearn's ``TuneSearchCV``. ``search_optimization``:

    - ``"random"``: scikit-learn's ``ParameterSampler`` draws ``n_trials`` candidates (the same
      ones as ``RandomizedSearchCV`` with the same ``random_state``); values are lists, scipy
      distributions, ``(low, high[, "uniform" | "log-uniform"])`` ranges or ray.tune domains; a
      list of dicts is allowed.
    - ``"bayesian"`` (Ray's ``BayesOptSearch``; continuous float ranges only), ``"hyperopt"``
      (``HyperOptSearch``) and ``"optuna"`` (``OptunaSearch``): a dict of lists (categorical),
      ranges, scipy uniform/loguniform/randint or ray.tune domains. Integer ranges include
      ``high``. A Ray Tune ``Searcher`` object is used as given. ``search_kwargs`` go to the
      searcher.
"""
        + _TUNE_PARAMS_DOC
    )

    def __init__(
        self,
        estimator,
        param_distributions,
        early_stopping=None,
        n_trials=10,
        scoring=None,
        n_jobs=None,
        refit=True,
        cv=None,
        verbose=0,
        random_state=None,
        error_score=np.nan,
        return_train_score=False,
        local_dir=None,
        name=None,
        max_iters=1,
        search_optimization="random",
        use_gpu=False,
        loggers=None,
        pipeline_auto_early_stop=True,
        stopper=None,
        time_budget_s=None,
        sk_n_jobs=None,
        mode=None,
        search_kwargs=None,
        resources_per_trial=None,
        address=None,
        share_epochs=True,
        max_retries=3,
        storage=None,
    ):
        super().__init__(
            estimator, early_stopping=early_stopping, scoring=scoring, n_jobs=n_jobs, cv=cv,
            refit=refit, verbose=verbose, error_score=error_score,
            return_train_score=return_train_score, local_dir=local_dir, name=name,
            max_iters=max_iters, use_gpu=use_gpu, loggers=loggers,
            pipeline_auto_early_stop=pipeline_auto_early_stop, stopper=stopper,
            time_budget_s=time_budget_s, sk_n_jobs=sk_n_jobs, mode=mode,
            resources_per_trial=resources_per_trial, address=address,
            random_state=random_state, share_epochs=share_epochs, max_retries=max_retries,
            storage=storage,
        )
        self.param_distributions = param_distributions
        self.n_trials = n_trials
        self.search_optimization = search_optimization
        self.search_kwargs = search_kwargs

    @property
    def _space_name(self) -> str:
        return "param_distributions"

    def _space(self, estimator, spec):
        from ray import tune

        if not isinstance(self.n_trials, numbers.Integral) or self.n_trials < 1:
            raise ValueError(f"n_trials must be a positive integer, got {self.n_trials!r}")
        optimizer = self.search_optimization
        if isinstance(optimizer, str):
            optimizer = optimizer.lower()
            if optimizer == "bohb":
                raise ValueError(
                    "search_optimization='bohb' is not supported (Ray 2.60's TuneBOHB needs the "
                    "unmaintained hpbandster); use 'optuna', 'hyperopt', 'bayesian' or 'random'."
                )
            if optimizer not in SEARCH_OPTIMIZATIONS:
                raise ValueError(f"search_optimization must be one of {SEARCH_OPTIMIZATIONS} or a "
                                 f"ray.tune Searcher, got {self.search_optimization!r}")
        dists = self.param_distributions
        if optimizer == "random":
            spaces = [dists] if isinstance(dists, Mapping) else list(dists)
            if not spaces or not all(isinstance(s, Mapping) for s in spaces):
                raise TypeError("param_distributions must be a dict or a list of dicts, got "
                                f"{dists!r}")
            converted = [{k: _sampler_dists(k, v) for k, v in s.items()} for s in spaces]
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*is smaller than n_iter.*")
                candidates = [dict(p) for p in ParameterSampler(
                    converted, self.n_trials, random_state=self.random_state)]
            validate_candidates(estimator, candidates, "param_distributions")
            spec.candidates = candidates
            return None, None, 1

        if not isinstance(dists, Mapping):
            raise ValueError(
                f"search_optimization={optimizer if isinstance(optimizer, str) else 'a Searcher'!r} "
                "takes one dict of parameter distributions, not a list of dicts (only "
                "search_optimization='random' samples from a list of dicts)."
            )
        decoders: dict[str, list] = {}
        space = {k: _tune_domain(k, v, str(optimizer), decoders) for k, v in dists.items()}
        if optimizer == "bayesian":
            _check_bayesian(space, decoders)
        spec.decoders = decoders
        rng = np.random.default_rng(0)
        probe = spec.params_of({k: d.sample(random_state=rng) for k, d in space.items()})
        validate_candidates(estimator, [probe], "param_distributions")
        search_alg = _searcher(optimizer, self.random_state, self.search_kwargs)
        return space, search_alg, int(self.n_trials)


__all__ = ["TuneSearchCV", "TuneGridSearchCV", "ASHA", "incremental_kind"]
