"""What every search class and ``cross_validate`` decide before any fit, and the one way their
trials run: the inputs checked, scoring, routed parameters, the splits (computed once), the
payload the workers share, the executor, the fit store and the fits' seeds."""
from __future__ import annotations

import dataclasses
import numbers
from typing import Any, Callable, Sequence

import numpy as np
from sklearn.utils import get_tags

from raygrid.engine.executors import BACKENDS, choose_backend, get_executor
from raygrid.engine.fitting import Payload
from raygrid.engine.plan import split_data
from raygrid.engine.runner import execute, reuse, share
from raygrid.engine.scoring import Scoring, resolve_scoring
from raygrid.keras import uses_keras, with_stock_tags_fixed
from raygrid.outputs.progress import SearchProgress
from raygrid.search.routing import Routed


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """Where and how the fits run and where they are kept: the raygrid keywords that every
    search class and ``cross_validate`` share (see ``RAYGRID_PARAMS_DOC``)."""

    backend: str = "auto"
    address: Any = None
    ray_remote_args: Any = None
    max_retries: Any = 3
    n_jobs: Any = None
    engine: str = "standard"
    storage: Any = None
    cache: Any = True
    fit_timeout: Any = None

    def open_executor(self, payload: Payload) -> Any:
        """The executor of ``backend`` (options checked for every backend); Keras models get
        the fused engine around it unless ``engine="standard"``."""
        options = dict(max_retries=self.max_retries, n_jobs=self.n_jobs,  # serial: checked only
                       fit_timeout=self.fit_timeout)
        if self.backend != "serial":
            options.update(address=self.address, ray_remote_args=self.ray_remote_args)
        executor = get_executor(
            choose_backend(self.backend, address=self.address, keras=payload.keras,
                           ray_remote_args=self.ray_remote_args), **options)
        if self.engine != "standard":  # Keras models: fusable trials train together on JAX
            from raygrid.engine.fused import wrap

            executor = wrap(executor, self.engine, payload)
        return executor

    def open_store(self, payload: Payload, *, scoring: Any, n_splits: int, kind: str,
                   reuse: bool = True) -> Any:
        """The fit store of ``storage`` (None without one): resume and cache, see store.py.

        ``payload.splits`` may hold several split sets one after another (successive halving's
        rungs); the store's summary counts the cv's ``n_splits`` folds.
        """
        if self.storage is None:
            return None
        from raygrid.engine.store import open_session

        session = open_session(
            self.storage, cache=self.cache, estimator=payload.estimator, X=payload.X,
            y=payload.y, splits=payload.splits, fit_params=payload.fit_params, scoring=scoring,
            error_score=payload.error_score, return_train_score=payload.return_train_score,
            keras=payload.keras, kind=kind, reuse=reuse,
        )
        session.n_splits = n_splits
        return session


@dataclasses.dataclass
class SearchRun:
    """One ``fit`` of a search (or one ``cross_validate``): what :func:`prepare_run` decides,
    the run step fills and the finish step reads."""

    X: Any
    y: Any
    fit_params: dict
    n_splits: int
    table: list  # every split set's (train, test) pairs, one set after another
    set_starts: list[int]  # where each split set starts in ``table``
    scoring: Scoring
    payload: Payload
    executor: Any
    store: Any
    seed_state: int | None
    progress: SearchProgress | None = None  # set by the caller, who knows how it reports
    callbacks: Any = None  # a search's SearchCallbacks
    candidates: list[dict] = dataclasses.field(default_factory=list)
    first_split: list[int] = dataclasses.field(default_factory=list)  # per candidate
    extra: dict[str, list] = dataclasses.field(default_factory=dict)  # more cv_results_ keys
    results: dict = dataclasses.field(default_factory=dict)  # by (candidate, index in table)
    shared: Any = None  # the executor's handle on the payload, once shared
    notes: dict = dataclasses.field(default_factory=dict)  # what a _run leaves for _finish_frames

    def by_fold(self) -> dict:
        """``results`` keyed by (candidate, fold of the cv), as aggregation wants them."""
        if not any(self.first_split):
            return self.results
        return {(c, i - self.first_split[c]): dataclasses.replace(r, fold=i - self.first_split[c])
                for (c, i), r in self.results.items()}


def seed_state(random_state: Any) -> int | None:
    """The search seed the fits' seeds derive from (with candidate and fold): an integer
    ``random_state``, else None."""
    return int(random_state) if isinstance(random_state, numbers.Integral) else None


def check_error_score(error_score: Any) -> None:
    if error_score != "raise" and not isinstance(error_score, numbers.Number):
        raise ValueError(f"error_score must be 'raise' or a number, got {error_score!r}")


def prepare_run(
    estimator: Any, X: Any, y: Any, *, cv: Any, scoring: Any, refit: Any, error_score: Any,
    route: Callable[[Any, Scoring], Routed], options: RunOptions, kind: str,
    return_train_score: bool = False, return_estimator: bool = False, random_state: Any = None,
    split_sets: Callable[[Any, Any, dict, list], list] | None = None,
) -> SearchRun:
    """Everything decided before any fit, the same for every search and ``cross_validate``.

    ``route(estimator, scoring)`` gives the parameters of fit, split and score (scikit-learn's
    routing differs between a search and ``cross_validate``). ``split_sets(X, y,
    split_params, splits)`` gives every split set the run may use, the cv's own first (default:
    the cv's alone); a trial's ``fold`` indexes them all, one set after another. ``kind``
    names the run in the fit store.
    """
    if options.backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {options.backend!r}")
    check_error_score(error_score)
    estimator = with_stock_tags_fixed(estimator)
    resolved = resolve_scoring(estimator, scoring, refit, error_score)
    routed = route(estimator, resolved)
    X, y, splits = split_data(estimator, X, y, routed.split.get("groups"), cv, routed.split)
    n_splits = len(splits)
    sets = [splits] if split_sets is None else split_sets(X, y, routed.split, splits)
    if any(len(s) != n_splits for s in sets):
        raise ValueError(f"every split set must have the cv's {n_splits} folds")
    table = [pair for split_set in sets for pair in split_set]
    payload = Payload(
        estimator=estimator, X=X, y=y, splits=table, scorer=resolved.scorer,
        metrics=resolved.metrics, fit_params=routed.fit, score_params=routed.score,
        return_train_score=return_train_score, error_score=error_score,
        return_estimator=return_estimator, keras=uses_keras(estimator),
        pairwise=bool(getattr(get_tags(estimator).input_tags, "pairwise", False)),
    )
    executor = options.open_executor(payload)
    store = options.open_store(payload, scoring=scoring, n_splits=n_splits, kind=kind,
                               reuse=not return_estimator)
    return SearchRun(
        X=X, y=y, fit_params=routed.fit, n_splits=n_splits, table=table,
        set_starts=np.cumsum([0] + [len(s) for s in sets[:-1]]).tolist(),
        scoring=resolved, payload=payload, executor=executor, store=store,
        seed_state=seed_state(random_state),
    )


def run_trials(run: SearchRun, trials: Sequence, on_result=None) -> None:
    """Stored results first (resume, cache), the rest through the executor seam, into
    ``run.results``."""
    if hasattr(run.executor, "assign"):  # the fused engine's seeds and engine, before the store
        trials = run.executor.assign(trials)
    todo = reuse(run.store, trials, run.results, run.progress, on_result)
    if todo:
        if run.shared is None:
            run.shared = share(run.executor, run.payload, run.progress)
        execute(run.executor, run.shared, run.payload, todo, run.results, run.progress,
                store=run.store, on_result=on_result)
