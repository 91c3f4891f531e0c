"""cross_validate and cross_val_score with scikit-learn's signatures, every fold a Ray task."""
from __future__ import annotations

import numpy as np
from sklearn.utils import get_tags

from raygrid.engine.executors import choose_backend, get_executor
from raygrid.engine.fitting import FitResult, Payload
from raygrid.engine.plan import build_trials, split_data
from raygrid.outputs.progress import SearchProgress
from raygrid.outputs.results import metrics_seen, warn_or_raise_about_failures
from raygrid.engine.runner import closing_store, execute, reuse, share
from raygrid.search.routing import route_cross_validate
from raygrid.engine.scoring import resolve_scoring
from raygrid.keras import uses_keras


def cross_validate(
    estimator,
    X,
    y=None,
    *,
    groups=None,
    scoring=None,
    cv=None,
    n_jobs=None,
    verbose=0,
    params=None,
    pre_dispatch="2*n_jobs",
    return_train_score=False,
    return_estimator=False,
    return_indices=False,
    error_score=np.nan,
    backend="auto",
    ray_remote_args=None,
    address=None,
    max_retries=3,
    random_state=None,
    storage=None,
    cache=True,
    engine="auto",
):
    """Evaluate metric(s) by cross-validation; the same result as scikit-learn's, fits on Ray.

    Returns scikit-learn's dict: ``fit_time``, ``score_time``, ``test_<metric>`` (``test_score``
    for one metric), ``train_<metric>`` with ``return_train_score``, ``estimator`` with
    ``return_estimator`` and ``indices`` with ``return_indices``. The raygrid keywords
    (``backend``, ``ray_remote_args``, ``address``, ``max_retries``, ``random_state``,
    ``storage``, ``cache``, ``engine``) are those of :class:`raygrid.GridSearchCV`; with
    ``return_estimator=True`` stored fits are recorded but not reused (the store keeps no models).
    """
    from raygrid.keras import with_stock_tags_fixed

    estimator = with_stock_tags_fixed(estimator)
    scoring_ = resolve_scoring(estimator, scoring, refit=False, error_score=error_score)
    routed = route_cross_validate(estimator, scoring_.scorer, cv, groups, params)
    X, y, splits = split_data(estimator, X, y, routed.split.get("groups"), cv, routed.split)
    payload = Payload(
        estimator=estimator, X=X, y=y, splits=splits, scorer=scoring_.scorer,
        metrics=scoring_.metrics, fit_params=routed.fit, score_params=routed.score,
        return_train_score=return_train_score, error_score=error_score,
        return_estimator=return_estimator, keras=uses_keras(estimator),
        pairwise=bool(getattr(get_tags(estimator).input_tags, "pairwise", False)),
    )
    options = dict(max_retries=max_retries, n_jobs=n_jobs)  # checked for every backend
    if backend != "serial":
        options = dict(address=address, ray_remote_args=ray_remote_args, max_retries=max_retries,
                       n_jobs=n_jobs)
    executor = get_executor(choose_backend(backend, address=address, keras=payload.keras),
                            **options)
    if engine != "standard":  # Keras models: the folds train together on a JAX worker
        from raygrid.engine.fused import wrap

        executor = wrap(executor, engine, payload)
    seed = int(random_state) if isinstance(random_state, (int, np.integer)) else None
    trials = build_trials([{}], len(splits), random_state=seed)
    if hasattr(executor, "assign"):
        trials = executor.assign(trials)
    results: dict[tuple[int, int], FitResult] = {}
    store = None
    if storage is not None:
        from raygrid.engine.store import open_session

        store = open_session(
            storage, cache=cache, estimator=estimator, X=X, y=y, splits=splits,
            fit_params=payload.fit_params, scoring=scoring, error_score=error_score,
            return_train_score=return_train_score, keras=payload.keras, kind="cross_validate",
            reuse=not return_estimator,
        )
    with closing_store(store), SearchProgress(len(trials), len(splits), None, verbose,
                                               title="cross_validate") as progress:
        todo = reuse(store, trials, results, progress)
        if todo:
            execute(executor, share(executor, payload, progress), payload, todo, results,
                    progress, store=store)

    ordered = [results[(0, f)] for f in range(len(splits))]
    warn_or_raise_about_failures(ordered, error_score)
    metrics = scoring_.metrics or metrics_seen(ordered) or ("score",)
    fallback = np.nan if error_score == "raise" else error_score
    ret = {
        "fit_time": np.array([r.fit_time for r in ordered]),
        "score_time": np.array([r.score_time for r in ordered]),
    }
    if return_estimator:
        ret["estimator"] = [r.estimator for r in ordered]
    if return_indices:
        # tuples of arrays, as scikit-learn returns them
        ret["indices"] = {"train": tuple(tr for tr, _ in splits),
                          "test": tuple(te for _, te in splits)}
    for m in metrics:
        ret[f"test_{m}"] = np.array([r.test_scores.get(m, fallback) for r in ordered])
        if return_train_score:
            ret[f"train_{m}"] = np.array([(r.train_scores or {}).get(m, fallback) for r in ordered])
    return ret


def cross_val_score(
    estimator,
    X,
    y=None,
    *,
    groups=None,
    scoring=None,
    cv=None,
    n_jobs=None,
    verbose=0,
    params=None,
    pre_dispatch="2*n_jobs",
    error_score=np.nan,
    backend="auto",
    ray_remote_args=None,
    address=None,
    max_retries=3,
    random_state=None,
    storage=None,
    cache=True,
    engine="auto",
):
    """Array of scores of the estimator for each run of the cross-validation (one metric)."""
    if isinstance(scoring, (list, tuple, set, dict)):
        raise ValueError("cross_val_score takes one metric; use cross_validate for several")
    scores = cross_validate(
        estimator, X, y, groups=groups, scoring=scoring, cv=cv, n_jobs=n_jobs, verbose=verbose,
        params=params, pre_dispatch=pre_dispatch, error_score=error_score, backend=backend,
        ray_remote_args=ray_remote_args, address=address, max_retries=max_retries,
        random_state=random_state, storage=storage, cache=cache, engine=engine,
    )
    return scores["test_score"]
