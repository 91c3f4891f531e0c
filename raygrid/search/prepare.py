"""What every search class and ``cross_validate`` decide before any fit, and the one way their
trials run: the inputs checked, scoring, routed parameters, the splits (computed once), the
payload the workers share, the executor, the fit store and the fits' seeds."""
from __future__ import annotations

import dataclasses
import numbers
from typing import Any, Callable, Sequence

import numpy as np
from sklearn.utils import get_tags

from raygrid.engine.codecheck import CodeCheck
from raygrid.engine.executors import BACKENDS, choose_backend, get_executor
from raygrid.engine.fitting import FitTask, Payload
from raygrid.engine.plan import split_data
from raygrid.engine.runner import closing_store, execute, reuse, share
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
            keras=payload.keras, kind=kind, reuse=reuse, task=payload.task,
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
    code_check: Any = None  # a CodeCheck of the workers' code, one for every round of fits
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


def check_pairwise(X: Any) -> None:
    """scikit-learn's checks of a precomputed kernel or affinity matrix (a pairwise estimator's
    ``X``), made once before any fit: a list cannot be split by rows and columns, and a matrix
    that is not square does not hold every sample against every other."""
    if not hasattr(X, "shape"):
        raise ValueError("Precomputed kernels or affinity matrices have to be passed as arrays "
                         f"or sparse matrices. Got {type(X).__name__}.")
    if len(X.shape) != 2 or X.shape[0] != X.shape[1]:
        raise ValueError(f"X should be a square kernel matrix, got shape {tuple(X.shape)}")


def prepare_run(
    estimator: Any, X: Any, y: Any, *, cv: Any, scoring: Any, refit: Any, error_score: Any,
    route: Callable[[Any, Scoring], Routed], options: RunOptions, kind: str,
    return_train_score: bool = False, return_estimator: bool = False, random_state: Any = None,
    split_sets: Callable[[Any, Any, dict, list], list] | None = None,
    task: FitTask | Callable[[], FitTask] = FitTask(),
) -> SearchRun:
    """Everything decided before any fit, the same for every search and ``cross_validate``.

    ``route(estimator, scoring)`` gives the parameters of fit, split and score (scikit-learn's
    routing differs between a search and ``cross_validate``). ``split_sets(X, y,
    split_params, splits)`` gives every split set the run may use, the cv's own first (default:
    the cv's alone); a trial's ``fold`` indexes them all, one set after another. A split may
    carry a third item, the rows of y that its X rows pair with (a permuted target; see
    ``FitTask.target_rows``). ``kind`` names the run in the fit store. ``scoring`` may be a
    resolved :class:`Scoring` (no scorer at all, for ``cross_val_predict``); ``task`` says what
    a fit does besides fit-then-score (a callable: asked once the split sets are made).
    """
    if options.backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {options.backend!r}")
    check_error_score(error_score)
    estimator = with_stock_tags_fixed(estimator)
    resolved = (scoring if isinstance(scoring, Scoring)
                else resolve_scoring(estimator, scoring, refit, error_score))
    routed = route(estimator, resolved)
    pairwise = bool(getattr(get_tags(estimator).input_tags, "pairwise", False))
    if pairwise:
        check_pairwise(X)
    X, y, splits = split_data(estimator, X, y, routed.split.get("groups"), cv, routed.split)
    n_splits = len(splits)
    sets = [splits] if split_sets is None else split_sets(X, y, routed.split, splits)
    if any(len(s) != n_splits for s in sets):
        raise ValueError(f"every split set must have the cv's {n_splits} folds")
    if callable(task):  # a task that depends on the split sets (learning_curve's sizes)
        task = task()
    table = [tuple(split[:2]) for split_set in sets for split in split_set]
    target_rows = [split[2] if len(split) > 2 else None
                   for split_set in sets for split in split_set]
    if any(rows is not None for rows in target_rows):
        task = dataclasses.replace(task, target_rows=target_rows)
    payload = Payload(
        estimator=estimator, X=X, y=y, splits=table, scorer=resolved.scorer,
        metrics=resolved.metrics, fit_params=routed.fit, score_params=routed.score,
        return_train_score=return_train_score, error_score=error_score,
        return_estimator=return_estimator, keras=uses_keras(estimator),
        pairwise=pairwise, task=task,
    )
    executor = options.open_executor(payload)
    store = options.open_store(payload, scoring=None if isinstance(scoring, Scoring) else scoring,
                               n_splits=n_splits, kind=kind,
                               reuse=not return_estimator and task.predict is None)
    return SearchRun(
        X=X, y=y, fit_params=routed.fit, n_splits=n_splits, table=table,
        set_starts=np.cumsum([0] + [len(s) for s in sets[:-1]]).tolist(),
        scoring=resolved, payload=payload, executor=executor, store=store,
        seed_state=seed_state(random_state), code_check=CodeCheck(estimator),
    )


def run_trials(run: SearchRun, trials: Sequence, on_result=None) -> None:
    """Stored results first (resume, cache), the rest through the executor seam, into
    ``run.results``."""
    if hasattr(run.executor, "assign"):  # the fused engine's seeds and engine, before the store
        before = dict(run.executor.reasons)
        trials = run.executor.assign(trials)
        if run.progress is not None:
            run.progress.fusion(sum(t.engine == "fused" for t in trials), len(trials),
                                {why: n - before.get(why, 0) for why, n in
                                 run.executor.reasons.items() if n > before.get(why, 0)})
    todo = reuse(run.store, trials, run.results, run.progress, on_result)
    if todo:
        if run.shared is None:
            run.shared = share(run.executor, run.payload, run.progress)
        execute(run.executor, run.shared, run.payload, todo, run.results, run.progress,
                store=run.store, on_result=on_result, check=run.code_check)


def run_plan(run: SearchRun, trials: Sequence, *, title: str, verbose: int = 0) -> None:
    """Run ``trials`` (a model_selection function's whole plan) with a progress line titled
    ``title``, the fit store closed afterwards."""
    run.progress = SearchProgress(len(trials), run.n_splits, None, verbose, title=title)
    with closing_store(run.store), run.progress:
        run_trials(run, trials)
