"""BaseSearch: the fit steps every search class shares (prepare, run, finish), with
scikit-learn's interface; GridSearchCV and RandomizedSearchCV are in raygrid.search.grid."""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import numbers
import time
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
from sklearn.base import BaseEstimator, MetaEstimatorMixin, clone
from sklearn.utils import get_tags
from sklearn.utils.metaestimators import available_if
from sklearn.utils.validation import check_is_fitted

from raygrid._compat import CallbackSupportMixin, search_visual_block, with_callbacks
from raygrid.engine.fitting import FitResult, Payload
from raygrid.engine.plan import build_trials, fit_seed, params_key
from raygrid.engine.runner import closing_store
from raygrid.engine.scoring import Scoring, check_refit, resolve_scoring, search_score_params
from raygrid.outputs.progress import SearchProgress
from raygrid.outputs.results import (cv_results, metrics_seen, results_frame, summary_frame,
                                     warn_or_raise_about_failures)
from raygrid.search.callbacks import SearchCallbacks
from raygrid.search.prepare import RunOptions, SearchRun, prepare_run, run_trials
from raygrid.search.routing import check_score_params, route_search, routing_enabled, search_router


def validate_candidates(estimator: Any, candidates: Sequence[Mapping[str, Any]], what: str) -> None:
    """Check every parameter name on the driver before any fit is dispatched."""
    if not candidates:
        raise ValueError(f"{what} yields no candidates: give at least one parameter setting")
    seen: set[frozenset] = set()
    for params in candidates:
        keys = frozenset(params)
        if keys in seen:
            continue
        seen.add(keys)
        probe = clone(estimator)
        valid = sorted(probe.get_params(deep=True))
        rejected: list[str] = []  # valid names whose value set_params refused
        for key in sorted(keys):
            if any(key.startswith(name + "__") for name in rejected):
                continue  # below a value refused: that fit's own error says why
            try:
                # Cloned: an estimator in the grid must never be changed by the probe.
                probe.set_params(**{key: clone(params[key], safe=False)})
            except ValueError:
                if key in probe.get_params(deep=True):
                    # The name is valid and the value was refused (an estimator that checks
                    # values in set_params): that fit's error row, as for any later candidate.
                    rejected.append(key)
                    continue
                raise ValueError(
                    f"Invalid parameter {key!r} in {what} for estimator "
                    f"{type(estimator).__name__}. Valid parameters are: {valid}."
                ) from None


def _search_estimator_has(attr: str):
    """Whether the search offers ``attr``: only after a refit, and only if the estimator has it
    (an AttributeError that explains why otherwise, as scikit-learn's)."""
    def check(self) -> bool:
        if not self.refit:
            raise AttributeError(_refit_false_message(self, attr))
        est = getattr(self, "best_estimator_", self.estimator)
        getattr(est, attr)
        return True

    return check


def _refit_false_message(search: Any, attr: str) -> str:
    return (f"This {type(search).__name__} instance was initialized with `refit=False`. {attr} "
            "is available only after refitting on the best parameters. You can refit an "
            "estimator manually using the `best_params_` attribute")


class BaseSearch(CallbackSupportMixin, MetaEstimatorMixin, BaseEstimator):
    """What GridSearchCV and RandomizedSearchCV share; subclasses define ``_run_search``."""

    def __init__(
        self,
        estimator,
        *,
        scoring=None,
        n_jobs=None,
        refit=True,
        cv=None,
        verbose=0,
        pre_dispatch="2*n_jobs",
        error_score=np.nan,
        return_train_score=False,
        backend="auto",
        ray_remote_args=None,
        address=None,
        max_retries=3,
        storage=None,
        cache=True,
        fit_timeout=None,
    ):
        self.estimator = estimator
        self.scoring = scoring
        self.n_jobs = n_jobs
        self.refit = refit
        self.cv = cv
        self.verbose = verbose
        self.pre_dispatch = pre_dispatch
        self.error_score = error_score
        self.return_train_score = return_train_score
        self.backend = backend
        self.ray_remote_args = ray_remote_args
        self.address = address
        self.max_retries = max_retries
        self.storage = storage
        self.cache = cache
        self.fit_timeout = fit_timeout

    # -- the candidate hook ------------------------------------------------------------------
    def _run_search(self, evaluate_candidates) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _split_sets(self, X, y, split_params, splits) -> list:
        """The split sets ``evaluate_candidates(..., split_set=i)`` may use (default: the cv's alone).

        Called once in ``fit``, after the data is checked and the cv splits computed, before any
        fit: a subclass validates here what needs the data and may add sets of (train, test)
        index pairs, one pair per fold (successive halving's ``n_samples`` rungs). Every set
        travels to the workers with the data, once per search, and each set's indices are part
        of the stored fits' fingerprints.
        """
        return [splits]

    @staticmethod
    def _select_best_index(refit, refit_metric, results) -> int:
        """``best_index_`` from ``cv_results_``: a callable ``refit``'s choice, else rank 1."""
        if callable(refit):
            best_index = refit(results)
            if not isinstance(best_index, numbers.Integral):
                raise TypeError("best_index_ returned is not an integer")
            if best_index < 0 or best_index >= len(results["params"]):
                raise IndexError("best_index_ index out of range")
            return best_index
        return results[f"rank_test_{refit_metric}"].argmin()

    #: Whether each ``evaluate_candidates`` call is a task of its own for callbacks (a rung).
    _rungs = False

    # -- fit: prepare, run, finish ------------------------------------------------------------
    @with_callbacks
    def fit(self, X, y=None, **params):
        """Run every (candidate, fold) fit, then refit the best candidate on all of ``X, y``.

        ``groups`` (for group-aware splitters) and fit parameters go in ``params``, as in
        scikit-learn; sample-aligned fit parameters are split with the data. Three steps:
        ``_prepare`` (checks, scoring, splits, the payload, executor and store), ``_run``
        (candidates to fit results through the executor seam), ``_finish`` (failures,
        ``cv_results_``, the best candidate, the refit, the frames).
        """
        started = time.perf_counter()
        run = self._prepare(X, y, params)
        with closing_store(run.store):
            with run.progress, run.callbacks.searching(rungs=self._rungs):
                self._run(run)
        if run.candidates:
            self._finish(run)
        else:
            self._finish_empty(run)
        self.wall_time_ = time.perf_counter() - started
        return self

    def _prepare(self, X, y, params) -> SearchRun:
        """Everything decided before any fit (see :func:`raygrid.search.prepare.prepare_run`),
        then the search's callbacks and progress."""
        def route(estimator, scoring):
            routed = route_search(self, params)
            if not routing_enabled():  # scikit-learn's rule: sample_weight to the scorers
                routed.score = search_score_params(scoring, routed.fit, self)
            return routed

        run = prepare_run(
            self.estimator, X, y, cv=self.cv, scoring=self.scoring, refit=self.refit,
            error_score=self.error_score, route=route, options=self._run_options(),
            kind=type(self).__name__, return_train_score=self.return_train_score,
            random_state=getattr(self, "random_state", None), split_sets=self._split_sets,
        )
        run.callbacks = SearchCallbacks(self, run.X, run.y, run.fit_params)
        run.callbacks.begin()
        run.progress = SearchProgress(0, run.n_splits, _progress_metric(run.scoring, self.refit),
                                      self.verbose, title=type(self).__name__)
        return run

    def _run(self, run: SearchRun) -> None:
        """Candidates to fit results: ``_run_search`` calls ``evaluate_candidates``."""
        self._run_search(functools.partial(self._evaluate_candidates, run))

    def _evaluate_candidates(self, run: SearchRun, new_candidates: Iterable[Mapping[str, Any]],
                             split_set: int = 0,
                             more_results: Mapping[str, Sequence] | None = None) -> dict:
        """Fit ``new_candidates`` on every fold of split set ``split_set``; ``cv_results_`` so far.

        ``more_results`` (one value per new candidate for each key) become extra
        ``cv_results_`` keys, placed first, as in scikit-learn's ``evaluate_candidates``.
        """
        new = [dict(p) for p in new_candidates]
        validate_candidates(run.payload.estimator, new, self._space_name)
        start = run.set_starts[split_set]
        trials = build_trials(new, run.n_splits, first_candidate=len(run.candidates),
                              random_state=run.seed_state)
        if start:
            trials = [dataclasses.replace(t, fold=start + t.fold) for t in trials]
        for key, values in (more_results or {}).items():
            if len(values) != len(new) or len(run.extra.setdefault(key, [])) != len(run.candidates):
                raise ValueError(f"more_results[{key!r}] needs one value per candidate")
            run.extra[key].extend(values)
        run.candidates.extend(new)
        run.first_split.extend([start] * len(new))
        run.progress.total += len(trials)
        run.progress.announce(len(new))
        with run.callbacks.batch(len(trials)) as parent:
            on_result = None
            if parent is not None:
                contexts = run.callbacks.evaluations(parent, trials, run.table)
                trials = [dataclasses.replace(t, callback_ctx=contexts[(t.candidate, t.fold)][0])
                          for t in trials]
                on_result = functools.partial(run.callbacks.evaluated, contexts)
            run_trials(run, trials, on_result)
        return self._cv_results(run, run.scoring, warn=False)

    def _cv_results(self, run: SearchRun, scoring: Scoring, warn: bool) -> dict:
        cv = self._aggregate(run.candidates, run.n_splits, run.by_fold(), scoring, warn=warn)
        if not run.extra:
            return cv
        return {**{k: np.asarray(v) for k, v in run.extra.items()}, **cv}

    def _finish_empty(self, run: SearchRun) -> None:
        """The run step gave no candidate (a subclass may finish anyway, with a warning)."""
        raise ValueError(f"{self._space_name} yields no candidates")

    def _finish(self, run: SearchRun) -> None:
        """Failures (``error_score``), ``cv_results_``, the best candidate, the refit on all of
        the data, ``results_`` and ``summary_``: the same for every search class."""
        fits = run.by_fold()
        all_results = [fits[k] for k in sorted(fits)]
        warn_or_raise_about_failures(all_results, self.error_score)
        scoring = _learn_metrics(run.scoring, all_results, self.refit)
        cv = self._cv_results(run, scoring, warn=True)
        self.multimetric_ = scoring.multimetric
        refit_metric = self.refit if scoring.multimetric else "score"
        if self.refit or not self.multimetric_:
            self.best_index_ = self._select_best_index(self.refit, refit_metric, cv)
            if not callable(self.refit):
                self.best_score_ = cv[f"mean_test_{refit_metric}"][self.best_index_]
            self.best_params_ = cv["params"][self.best_index_]
        if self.refit:
            self._refit(run)
        self.scorer_ = scoring.scorers
        self.cv_results_ = cv
        self.n_splits_ = run.n_splits
        self.results_ = results_frame(run.candidates, fits, scoring.metrics or ("score",),
                                      return_train_score=self.return_train_score,
                                      error_score=self.error_score)
        if len(self.results_):
            self.results_["engine"] = [fits[k].engine for k in sorted(fits)]
        self.n_fused_ = sum(fits[k].engine == "fused" for k in fits)
        # The fused groups this search trained (lanes, timings, the workers' Keras backend).
        self.fused_groups_ = list(getattr(run.executor, "groups", None) or [])
        rank_metric = refit_metric if isinstance(refit_metric, str) and refit_metric in (
            scoring.metrics or ()) else (scoring.metrics or ("score",))[0]
        self.summary_ = summary_frame(cv, self.results_, rank_metric)
        self._finish_frames(run)
        run.callbacks.end()

    def _finish_frames(self, run: SearchRun) -> None:
        """A subclass's own columns and frames, once ``results_`` and ``summary_`` exist."""

    def _refit(self, run: SearchRun) -> None:
        """The best candidate fitted on all of the data (Keras: with the fits' hygiene and a
        seed of its own, the fold after the last)."""
        self.best_estimator_ = clone(run.payload.estimator).set_params(
            **clone(self.best_params_, safe=False))
        seed = fit_seed(run.seed_state, params_key(self.best_params_), run.n_splits)
        start = time.time()
        with _refit_context(run.payload, self.best_estimator_, seed), \
                run.callbacks.refitting(self.best_estimator_):
            if run.y is not None:
                self.best_estimator_.fit(run.X, run.y, **run.fit_params)
            else:
                self.best_estimator_.fit(run.X, **run.fit_params)
        self.refit_time_ = time.time() - start
        if hasattr(self.best_estimator_, "feature_names_in_"):
            self.feature_names_in_ = self.best_estimator_.feature_names_in_

    @property
    def _space_name(self) -> str:
        return "param_grid"

    def _run_options(self) -> RunOptions:
        """Where and how the fits run and where they are kept (the raygrid keywords)."""
        return RunOptions(backend=self.backend, address=self.address,
                          ray_remote_args=self.ray_remote_args, max_retries=self.max_retries,
                          n_jobs=self.n_jobs, engine=getattr(self, "engine", "standard"),
                          storage=self.storage, cache=self.cache, fit_timeout=self.fit_timeout)

    def _aggregate(self, candidates, n_splits, results, scoring: Scoring, warn: bool) -> dict:
        import warnings

        metrics = scoring.metrics or metrics_seen(results.values()) or ("score",)
        with warnings.catch_warnings():
            if not warn:
                warnings.simplefilter("ignore")
            missing = [(c, f) for c in range(len(candidates)) for f in range(n_splits)
                       if (c, f) not in results]
            if missing:
                raise RuntimeError(f"{len(missing)} fits have no result, e.g. {missing[:3]}")
            return cv_results(candidates, n_splits, results, metrics,
                              return_train_score=self.return_train_score,
                              error_score=self.error_score)

    # -- delegation to the refitted best estimator (scikit-learn's behaviour) -----------------
    def _check_refit(self, method: str) -> None:
        if not self.refit:
            raise AttributeError(_refit_false_message(self, method))
        check_is_fitted(self)

    @property
    def classes_(self):
        self._check_refit("classes_")
        return self.best_estimator_.classes_

    @property
    def n_features_in_(self):
        check_is_fitted(self)
        return self.best_estimator_.n_features_in_

    @available_if(_search_estimator_has("predict"))
    def predict(self, X):
        self._check_refit("predict")
        return self.best_estimator_.predict(X)

    @available_if(_search_estimator_has("predict_proba"))
    def predict_proba(self, X):
        self._check_refit("predict_proba")
        return self.best_estimator_.predict_proba(X)

    @available_if(_search_estimator_has("predict_log_proba"))
    def predict_log_proba(self, X):
        self._check_refit("predict_log_proba")
        return self.best_estimator_.predict_log_proba(X)

    @available_if(_search_estimator_has("decision_function"))
    def decision_function(self, X):
        self._check_refit("decision_function")
        return self.best_estimator_.decision_function(X)

    @available_if(_search_estimator_has("score_samples"))
    def score_samples(self, X):
        self._check_refit("score_samples")
        return self.best_estimator_.score_samples(X)

    @available_if(_search_estimator_has("transform"))
    def transform(self, X):
        self._check_refit("transform")
        return self.best_estimator_.transform(X)

    @available_if(_search_estimator_has("inverse_transform"))
    def inverse_transform(self, X):
        self._check_refit("inverse_transform")
        return self.best_estimator_.inverse_transform(X)

    def get_metadata_routing(self):
        """scikit-learn's metadata routing of a search: fit parameters to the estimator, score
        parameters to the scorers, split parameters to the cv."""
        scorer = resolve_scoring(self.estimator, self.scoring, self.refit, self.error_score).scorer
        return search_router(self, self.estimator, scorer, self.cv)

    def score(self, X, y=None, **params):
        """The refit metric of the best estimator on ``X, y`` (as scikit-learn's search)."""
        self._check_refit("score")
        params = check_score_params(self, params)
        if isinstance(self.scorer_, dict):
            scorer = self.scorer_[self.refit] if self.multimetric_ else self.scorer_
            return scorer(self.best_estimator_, X, y, **params)
        score = self.scorer_(self.best_estimator_, X, y, **params)
        return score[self.refit] if self.multimetric_ else score

    def _sk_visual_block_(self):
        """scikit-learn's HTML diagram: the best estimator once refitted, else the estimator."""
        return search_visual_block(self)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        sub = get_tags(self.estimator)
        tags.estimator_type = sub.estimator_type
        tags.classifier_tags = sub.classifier_tags
        tags.regressor_tags = sub.regressor_tags
        tags.input_tags.pairwise = sub.input_tags.pairwise
        tags.input_tags.sparse = sub.input_tags.sparse
        tags.array_api_support = sub.array_api_support
        return tags


def _refit_context(payload: Payload, estimator: Any, seed: int | None):
    """Keras refits get the fits' hygiene and a seed of their own (the fold after the last)."""
    if not payload.keras:
        return contextlib.nullcontext()
    from raygrid.keras import fit_context

    return fit_context(estimator, seed=seed)


def _progress_metric(scoring: Scoring, refit: Any) -> str | None:
    if scoring.metrics is None:
        return None
    if scoring.multimetric:
        return refit if isinstance(refit, str) else scoring.metrics[0]
    return "score"


def _learn_metrics(scoring: Scoring, results: Sequence[FitResult], refit: Any) -> Scoring:
    """A callable scorer may return a dict: its keys become the metrics (scikit-learn does this)."""
    if scoring.metrics is not None:
        return scoring
    seen = metrics_seen(results) or ("score",)
    multimetric = seen != ("score",)
    if multimetric:
        check_refit(refit, seen)
    return Scoring(scoring.scorer, seen, scoring.scorers, multimetric)


RAYGRID_PARAMS_DOC = """
    backend : {"auto", "ray", "serial"}, default="auto"
        Where fits run: Ray tasks, or one after another in this process. "auto" runs them in this
        process while the whole search looks shorter than starting Ray (5 s; measured as the fits
        run) and on Ray after that, or at once when Ray is running, a cluster address is given or
        the estimator is Keras (see raygrid.engine.executors.auto). "ray" is always Ray.
    ray_remote_args : dict, default=None
        Resources per fit, passed to Ray's ``.options()``: ``{"num_cpus": 1}`` by default;
        ``{"num_cpus": 1, "num_gpus": 0.25}`` packs four fits on one GPU; also ``memory``,
        ``resources``, ``runtime_env``.
    address : str, default=None
        The Ray cluster to join (``"auto"``, ``"host:6379"``, ``"ray://host:10001"``); else
        ``RAY_ADDRESS``; else raygrid starts a local Ray and shuts it down at exit.
    max_retries : int, default=3
        How often Ray reruns a fit whose worker or node died. Exceptions raised by the estimator
        are never retried; they follow ``error_score``.
    storage : str or path, default=None
        A directory for the fit store (``fits.sqlite``): every finished fit is committed there
        within 0.2 s (a crash loses at most those), keyed by a fingerprint of everything that
        decides it (estimator classes' source or package versions, parameters, data, split,
        fold, scoring, library versions). Rerunning the same search with the same
        ``storage`` runs only the missing fits (resume after Ctrl-C or a crash); an extended grid
        runs only the new candidates. None keeps nothing.
    cache : bool or "all", default=True
        With ``storage``, reuse stored fits with the same fingerprint; failed fits and system
        failures run again. "all" reuses failed fits too (not with ``error_score="raise"``).
        False reruns every fit and still records it.
    fit_timeout : float, default=None
        Seconds one fit may run. A fit that runs longer is stopped (on Ray its worker is killed,
        ``ray.cancel(force=True)``; with ``backend="auto"`` its child process; with
        ``backend="serial"`` it is interrupted in this process) and is that fit's failure row,
        with the reason; ``error_score`` applies (``"raise"`` raises ``FitTimeout``). None: no
        limit.
"""
