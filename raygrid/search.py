"""GridSearchCV and RandomizedSearchCV with scikit-learn's interface, every fit a Ray task."""
from __future__ import annotations

import contextlib
import dataclasses
import numbers
import sys
import time
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
from sklearn.base import BaseEstimator, MetaEstimatorMixin, clone
from sklearn.model_selection import ParameterGrid, ParameterSampler
from sklearn.utils import get_tags
from sklearn.utils.metaestimators import available_if
from sklearn.utils.validation import check_is_fitted

from raygrid.executors import BACKENDS, get_executor
from raygrid.fitting import FitResult, Payload
from raygrid.keras import uses_keras, with_stock_tags_fixed
from raygrid.plan import build_trials, fit_seed, params_key, split_data
from raygrid.progress import SearchProgress
from raygrid.results import cv_results, results_frame, summary_frame, warn_or_raise_about_failures
from raygrid.runner import execute, reuse
from raygrid.scoring import Scoring, check_refit, resolve_scoring, search_score_params


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
        for key in sorted(keys):
            try:
                probe.set_params(**{key: params[key]})
            except ValueError:
                raise ValueError(
                    f"Invalid parameter {key!r} in {what} for estimator "
                    f"{type(estimator).__name__}. Valid parameters are: {valid}."
                ) from None


def _search_estimator_has(attr: str):
    def check(self) -> bool:
        est = getattr(self, "best_estimator_", self.estimator)
        getattr(est, attr)
        return True

    return check


class BaseSearch(MetaEstimatorMixin, BaseEstimator):
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
        backend="ray",
        ray_remote_args=None,
        address=None,
        max_retries=3,
        storage=None,
        cache=True,
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

    # -- the candidate hook ------------------------------------------------------------------
    def _run_search(self, evaluate_candidates) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _split_sets(self, X, y, groups, splits) -> list:
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

    def _fit_seed_state(self) -> int | None:
        rs = getattr(self, "random_state", None)
        return int(rs) if isinstance(rs, numbers.Integral) else None

    # -- fit -----------------------------------------------------------------------------------
    def fit(self, X, y=None, **params):
        """Run every (candidate, fold) fit, then refit the best candidate on all of ``X, y``.

        ``groups`` (for group-aware splitters) and fit parameters go in ``params``, as in
        scikit-learn; sample-aligned fit parameters are split with the data.
        """
        started = time.perf_counter()
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.error_score != "raise" and not isinstance(self.error_score, numbers.Number):
            raise ValueError(f"error_score must be 'raise' or a number, got {self.error_score!r}")
        estimator = with_stock_tags_fixed(self.estimator)
        groups = params.pop("groups", None)
        X, y, splits = split_data(estimator, X, y, groups, self.cv)
        scoring = resolve_scoring(estimator, self.scoring, self.refit, self.error_score)
        n_splits = len(splits)
        # Every split set the search may use, one after another: a trial's ``fold`` indexes this
        # table (the cv's own splits alone unless a subclass adds sets, see ``_split_sets``).
        split_sets = self._split_sets(X, y, groups, splits)
        table = [pair for split_set in split_sets for pair in split_set]
        set_starts = np.cumsum([0] + [len(s) for s in split_sets[:-1]]).tolist()
        if any(len(s) != n_splits for s in split_sets):
            raise ValueError(f"every split set must have the cv's {n_splits} folds")

        payload = Payload(
            estimator=estimator, X=X, y=y, splits=table, scorer=scoring.scorer,
            metrics=scoring.metrics, fit_params=params,
            score_params=search_score_params(scoring, params, self),
            return_train_score=self.return_train_score, error_score=self.error_score,
            keras=uses_keras(estimator),
            pairwise=bool(getattr(get_tags(estimator).input_tags, "pairwise", False)),
        )
        executor = get_executor(self.backend, **self._executor_options())
        engine = getattr(self, "engine", "standard")
        if engine != "standard":  # Keras models: fusable trials train together on JAX workers
            from raygrid.fused import wrap

            executor = wrap(executor, engine, payload)
        store = self._open_store(payload, table)
        candidates: list[dict] = []
        first_split: list[int] = []  # per candidate: where its split set starts in ``table``
        extra: dict[str, list] = {}  # more cv_results_ keys, one value per candidate
        results: dict[tuple[int, int], FitResult] = {}  # by (candidate, index in ``table``)
        shared = None
        progress = SearchProgress(0, n_splits, _progress_metric(scoring, self.refit), self.verbose,
                                  title=type(self).__name__)
        seed_state = self._fit_seed_state()

        def by_fold() -> dict[tuple[int, int], FitResult]:
            """``results`` keyed by (candidate, fold of the cv), as aggregation wants them."""
            if not any(first_split):
                return results
            return {(c, i - first_split[c]): dataclasses.replace(r, fold=i - first_split[c])
                    for (c, i), r in results.items()}

        def aggregate(scoring: Scoring, warn: bool) -> dict:
            cv = self._aggregate(candidates, n_splits, by_fold(), scoring, warn=warn)
            if not extra:
                return cv
            return {**{k: np.asarray(v) for k, v in extra.items()}, **cv}

        def evaluate_candidates(new_candidates: Iterable[Mapping[str, Any]], split_set: int = 0,
                                more_results: Mapping[str, Sequence] | None = None) -> dict:
            """Fit ``new_candidates`` on every fold of split set ``split_set``; ``cv_results_`` so far.

            ``more_results`` (one value per new candidate for each key) become extra
            ``cv_results_`` keys, placed first, as in scikit-learn's ``evaluate_candidates``.
            """
            nonlocal shared
            new = [dict(p) for p in new_candidates]
            validate_candidates(estimator, new, self._space_name)
            start = set_starts[split_set]
            trials = build_trials(new, n_splits, first_candidate=len(candidates),
                                  random_state=seed_state)
            if start:
                trials = [dataclasses.replace(t, fold=start + t.fold) for t in trials]
            for key, values in (more_results or {}).items():
                if len(values) != len(new) or len(extra.setdefault(key, [])) != len(candidates):
                    raise ValueError(f"more_results[{key!r}] needs one value per candidate")
                extra[key].extend(values)
            candidates.extend(new)
            first_split.extend([start] * len(new))
            progress.total += len(trials)
            if hasattr(executor, "assign"):  # the fused engine's seeds and engine, before the store
                trials = executor.assign(trials)
            todo = reuse(store, trials, results, progress)
            if todo:
                if shared is None:
                    shared = executor.share(payload)
                execute(executor, shared, payload, todo, results, progress, store=store)
            return aggregate(scoring, warn=False)

        with _closing_store(store):
            with progress:
                self._run_search(evaluate_candidates)
        if not candidates:
            raise ValueError(f"{self._space_name} yields no candidates")

        fits = by_fold()
        all_results = [fits[k] for k in sorted(fits)]
        warn_or_raise_about_failures(all_results, self.error_score)
        scoring = _learn_metrics(scoring, all_results, self.refit)
        cv = aggregate(scoring, warn=True)
        self.multimetric_ = scoring.multimetric
        refit_metric = self.refit if scoring.multimetric else "score"
        if self.refit or not self.multimetric_:
            self.best_index_ = self._select_best_index(self.refit, refit_metric, cv)
            if not callable(self.refit):
                self.best_score_ = cv[f"mean_test_{refit_metric}"][self.best_index_]
            self.best_params_ = cv["params"][self.best_index_]
        if self.refit:
            self.best_estimator_ = clone(estimator).set_params(**clone(self.best_params_, safe=False))
            start = time.time()
            fit_params = dict(params)
            with _refit_context(payload, self.best_estimator_,
                                fit_seed(seed_state, params_key(self.best_params_), n_splits)):
                if y is not None:
                    self.best_estimator_.fit(X, y, **fit_params)
                else:
                    self.best_estimator_.fit(X, **fit_params)
            self.refit_time_ = time.time() - start
            if hasattr(self.best_estimator_, "feature_names_in_"):
                self.feature_names_in_ = self.best_estimator_.feature_names_in_
        self.scorer_ = scoring.scorers
        self.cv_results_ = cv
        self.n_splits_ = n_splits
        self.results_ = results_frame(candidates, fits, scoring.metrics or ("score",),
                                      return_train_score=self.return_train_score,
                                      error_score=self.error_score)
        if len(self.results_):
            self.results_["engine"] = [fits[k].engine for k in sorted(fits)]
        self.n_fused_ = sum(fits[k].engine == "fused" for k in fits)
        rank_metric = refit_metric if isinstance(refit_metric, str) and refit_metric in (
            scoring.metrics or ()) else (scoring.metrics or ("score",))[0]
        self.summary_ = summary_frame(cv, self.results_, rank_metric)
        self.wall_time_ = time.perf_counter() - started
        return self

    @property
    def _space_name(self) -> str:
        return "param_grid"

    def _open_store(self, payload: Payload, splits):
        """The fit store of ``storage`` (None without one): resume and cache, see store.py."""
        if self.storage is None:
            return None
        from raygrid.store import open_session

        return open_session(
            self.storage, cache=self.cache, estimator=payload.estimator, X=payload.X, y=payload.y,
            splits=splits, fit_params=payload.fit_params, scoring=self.scoring,
            error_score=self.error_score, return_train_score=self.return_train_score,
            keras=payload.keras, kind=type(self).__name__,
        )

    def _executor_options(self) -> dict:
        if self.backend != "ray":
            return {}
        return dict(address=self.address, ray_remote_args=self.ray_remote_args,
                    max_retries=self.max_retries, n_jobs=self.n_jobs)

    def _aggregate(self, candidates, n_splits, results, scoring: Scoring, warn: bool) -> dict:
        import warnings

        metrics = scoring.metrics or _metrics_seen(results.values()) or ("score",)
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
            raise AttributeError(
                f"This {type(self).__name__} instance was initialized with `refit=False`. "
                f"{method} is available only after refitting on the best parameters. You can "
                "refit an estimator manually using the `best_params_` attribute"
            )
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

    def score(self, X, y=None, **params):
        """The refit metric of the best estimator on ``X, y`` (as scikit-learn's search)."""
        self._check_refit("score")
        if isinstance(self.scorer_, dict):
            scorer = self.scorer_[self.refit] if self.multimetric_ else self.scorer_
            return scorer(self.best_estimator_, X, y, **params)
        score = self.scorer_(self.best_estimator_, X, y, **params)
        return score[self.refit] if self.multimetric_ else score

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


@contextlib.contextmanager
def _closing_store(store):
    """Close the store after the fits; on Ctrl-C or SIGTERM say how to resume (one line)."""
    if store is None:
        yield
        return
    try:
        yield
    except KeyboardInterrupt:
        from raygrid.store import resume_hint

        print(resume_hint(store), file=sys.stderr, flush=True)
        raise
    else:
        store.finish()
    finally:
        store.close()


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


def _metrics_seen(results: Iterable[FitResult]) -> tuple[str, ...] | None:
    for r in results:
        if not r.failed and r.test_scores:
            return tuple(r.test_scores)
    return None


def _learn_metrics(scoring: Scoring, results: Sequence[FitResult], refit: Any) -> Scoring:
    """A callable scorer may return a dict: its keys become the metrics (scikit-learn does this)."""
    if scoring.metrics is not None:
        return scoring
    seen = _metrics_seen(results) or ("score",)
    multimetric = seen != ("score",)
    if multimetric:
        check_refit(refit, seen)
    return Scoring(scoring.scorer, seen, scoring.scorers, multimetric)


_RAYGRID_PARAMS_DOC = """
    backend : {"ray", "serial"}, default="ray"
        Where fits run: Ray tasks, or one after another in this process.
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
        A directory for the fit store (``fits.sqlite``): every finished fit is written there at
        once, keyed by a fingerprint of everything that decides it (estimator and parameters,
        data, split, fold, scoring, library versions). Rerunning the same search with the same
        ``storage`` runs only the missing fits (resume after Ctrl-C or a crash); an extended grid
        runs only the new candidates. None keeps nothing.
    cache : bool, default=True
        With ``storage``, reuse stored fits with the same fingerprint (system failures are always
        rerun; failed fits are rerun when ``error_score="raise"``). False reruns every fit and
        still records it.
"""


_ENGINE_DOC = """    engine : {"auto", "fused", "standard"}, default="auto"
        How scikeras (Keras) models train. "auto" and "fused" train fusable fits many at a time
        (raygrid.fused): fits of one model structure, loss and batch size become lanes of one
        vectorised JAX program, run in Ray workers whose Keras backend is JAX whatever the
        driver's is (with ``backend="serial"``, only when this process runs Keras on JAX).
        Fits that cannot be fused run on the standard engine; "fused" warns about every such
        fit, "auto" only about models that failed to build or train fused (one line with the
        reason) and leaves single-lane groups to the standard engine. ``results_`` has an
        ``engine`` column and ``n_fused_`` counts the fits trained fused. Other estimators
        always run on the standard engine.
"""


class GridSearchCV(BaseSearch):
    __doc__ = (
        """Exhaustive search over ``param_grid``, every (candidate, fold) fit a Ray task.

    Same parameters, attributes and methods as :class:`sklearn.model_selection.GridSearchCV`,
    plus ``results_`` (one row per fit) and ``summary_`` (one row per candidate, ranked).

    random_state : int, default=None
        Seeds fits of estimators that take one from raygrid (Keras models): each fit gets a seed
        derived from (random_state, candidate, fold), recorded in ``results_``.
    n_jobs : int, default=None
        At most this many fits in flight; None or -1 uses every slot of the cluster.
    pre_dispatch : accepted for compatibility; Ray queues the tasks.
"""
        + _RAYGRID_PARAMS_DOC
        + _ENGINE_DOC
    )

    def __init__(
        self,
        estimator,
        param_grid,
        *,
        scoring=None,
        n_jobs=None,
        refit=True,
        cv=None,
        verbose=0,
        pre_dispatch="2*n_jobs",
        error_score=np.nan,
        return_train_score=False,
        backend="ray",
        ray_remote_args=None,
        address=None,
        max_retries=3,
        random_state=None,
        storage=None,
        cache=True,
        engine="auto",
    ):
        super().__init__(
            estimator, scoring=scoring, n_jobs=n_jobs, refit=refit, cv=cv, verbose=verbose,
            pre_dispatch=pre_dispatch, error_score=error_score,
            return_train_score=return_train_score, backend=backend,
            ray_remote_args=ray_remote_args, address=address, max_retries=max_retries,
            storage=storage, cache=cache,
        )
        self.param_grid = param_grid
        self.random_state = random_state
        self.engine = engine

    def _run_search(self, evaluate_candidates):
        evaluate_candidates(ParameterGrid(self.param_grid))


class RandomizedSearchCV(BaseSearch):
    __doc__ = (
        """Randomized search over ``param_distributions``, every (candidate, fold) fit a Ray task.

    Same parameters, attributes and methods as
    :class:`sklearn.model_selection.RandomizedSearchCV`: with the same ``random_state`` it draws
    the same candidates. An integer ``random_state`` also seeds Keras fits per (candidate, fold).
"""
        + _RAYGRID_PARAMS_DOC
        + _ENGINE_DOC
    )

    def __init__(
        self,
        estimator,
        param_distributions,
        *,
        n_iter=10,
        scoring=None,
        n_jobs=None,
        refit=True,
        cv=None,
        verbose=0,
        pre_dispatch="2*n_jobs",
        random_state=None,
        error_score=np.nan,
        return_train_score=False,
        backend="ray",
        ray_remote_args=None,
        address=None,
        max_retries=3,
        storage=None,
        cache=True,
        engine="auto",
    ):
        super().__init__(
            estimator, scoring=scoring, n_jobs=n_jobs, refit=refit, cv=cv, verbose=verbose,
            pre_dispatch=pre_dispatch, error_score=error_score,
            return_train_score=return_train_score, backend=backend,
            ray_remote_args=ray_remote_args, address=address, max_retries=max_retries,
            storage=storage, cache=cache,
        )
        self.param_distributions = param_distributions
        self.n_iter = n_iter
        self.random_state = random_state
        self.engine = engine

    @property
    def _space_name(self) -> str:
        return "param_distributions"

    def _run_search(self, evaluate_candidates):
        evaluate_candidates(
            ParameterSampler(self.param_distributions, self.n_iter, random_state=self.random_state)
        )
