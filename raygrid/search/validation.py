"""cross_validate and cross_val_score with scikit-learn's signatures, every fold a Ray task."""
from __future__ import annotations

import numpy as np

from raygrid.engine.plan import build_trials
from raygrid.outputs.results import metrics_seen, warn_or_raise_about_failures
from raygrid.search.prepare import RunOptions, prepare_run, run_plan
from raygrid.search.routing import route_cross_validate


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
    fit_timeout=None,
    engine="auto",
):
    """Evaluate metric(s) by cross-validation; the same result as scikit-learn's, fits on Ray.

    Returns scikit-learn's dict: ``fit_time``, ``score_time``, ``test_<metric>`` (``test_score``
    for one metric), ``train_<metric>`` with ``return_train_score``, ``estimator`` with
    ``return_estimator`` and ``indices`` with ``return_indices``. The raygrid keywords
    (``backend``, ``ray_remote_args``, ``address``, ``max_retries``, ``random_state``,
    ``storage``, ``cache``, ``fit_timeout``, ``engine``) are those of :class:`raygrid.GridSearchCV`; with
    ``return_estimator=True`` stored fits are recorded but not reused (the store keeps no models).
    """
    options = RunOptions(backend=backend, address=address, ray_remote_args=ray_remote_args,
                         max_retries=max_retries, n_jobs=n_jobs, engine=engine,
                         storage=storage, cache=cache, fit_timeout=fit_timeout)
    run = prepare_run(
        estimator, X, y, cv=cv, scoring=scoring, refit=False, error_score=error_score,
        route=lambda est, scoring_: route_cross_validate(est, scoring_.scorer, cv, groups, params),
        options=options, kind="cross_validate", return_train_score=return_train_score,
        return_estimator=return_estimator, random_state=random_state,
    )
    trials = build_trials([{}], run.n_splits, random_state=run.seed_state)
    run_plan(run, trials, title="cross_validate", verbose=verbose)

    ordered = [run.results[(0, f)] for f in range(run.n_splits)]
    warn_or_raise_about_failures(ordered, error_score)
    metrics = run.scoring.metrics or metrics_seen(ordered) or ("score",)
    fallback = np.nan if error_score == "raise" else error_score
    ret = {
        "fit_time": np.array([r.fit_time for r in ordered]),
        "score_time": np.array([r.score_time for r in ordered]),
    }
    if return_estimator:
        ret["estimator"] = [r.estimator for r in ordered]
    if return_indices:
        # tuples of arrays, as scikit-learn returns them
        ret["indices"] = {"train": tuple(tr for tr, _ in run.table),
                          "test": tuple(te for _, te in run.table)}
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
    fit_timeout=None,
    engine="auto",
):
    """Array of scores of the estimator for each run of the cross-validation (one metric)."""
    if isinstance(scoring, (list, tuple, set, dict)):
        raise ValueError("cross_val_score takes one metric; use cross_validate for several")
    scores = cross_validate(
        estimator, X, y, groups=groups, scoring=scoring, cv=cv, n_jobs=n_jobs, verbose=verbose,
        params=params, pre_dispatch=pre_dispatch, error_score=error_score, backend=backend,
        ray_remote_args=ray_remote_args, address=address, max_retries=max_retries,
        random_state=random_state, storage=storage, cache=cache, fit_timeout=fit_timeout, engine=engine,
    )
    return scores["test_score"]
