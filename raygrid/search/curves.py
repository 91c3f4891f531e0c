"""learning_curve and validation_curve with scikit-learn's signatures: every (training size or
parameter value, fold) fit one trial of one plan, on Ray."""
from __future__ import annotations

import warnings

import numpy as np
from sklearn.base import is_classifier
from sklearn.utils import check_random_state

from raygrid.engine.fitting import FitTask
from raygrid.engine.plan import Trial, build_trials, fit_seed, params_key
from raygrid.engine.runner import reraise
from raygrid.keras import with_stock_tags_fixed
from raygrid.outputs.results import warn_or_raise_about_failures
from raygrid.search.prepare import RunOptions, prepare_run, run_plan
from raygrid.search.routing import route_function


def absolute_train_sizes(train_sizes, n_max: int) -> np.ndarray:
    """``train_sizes`` as numbers of samples (fractions of ``n_max`` when floats), checked and
    made unique, with scikit-learn's errors and warning."""
    sizes = np.asarray(train_sizes)
    n_ticks = sizes.shape[0]
    low, high = np.min(sizes), np.max(sizes)
    if np.issubdtype(sizes.dtype, np.floating):
        if low <= 0.0 or high > 1.0:
            raise ValueError(
                "train_sizes has been interpreted as fractions of the maximum number of training "
                f"samples and must be within (0, 1], but is within [{low:f}, {high:f}].")
        sizes = np.clip((sizes * n_max).astype(dtype=int, copy=False), 1, n_max)
    elif low <= 0 or high > n_max:
        raise ValueError(
            "train_sizes has been interpreted as absolute numbers of training samples and must "
            f"be within (0, {n_max}], but is within [{low}, {high}].")
    sizes = np.unique(sizes)
    if n_ticks > sizes.shape[0]:
        warnings.warn(
            "Removed duplicate entries from 'train_sizes'. Number of ticks will be less than the "
            f"size of 'train_sizes': {sizes.shape[0]} instead of {n_ticks}.", RuntimeWarning)
    return sizes


def check_one_metric(scoring, owner: str) -> None:
    if isinstance(scoring, (list, tuple, set, dict)):
        raise ValueError(f"{owner} takes one metric (a name, a callable or None), got "
                         f"{scoring!r}; use cross_validate for several")


def _options(backend, address, ray_remote_args, max_retries, n_jobs, engine, storage, cache,
             fit_timeout):
    return RunOptions(backend=backend, address=address, ray_remote_args=ray_remote_args,
                      max_retries=max_retries, n_jobs=n_jobs, engine=engine, storage=storage,
                      cache=cache, fit_timeout=fit_timeout)


def _table(run, candidates: int, side: str, error_score, start=None) -> np.ndarray:
    """(candidates, folds) array of one score (or ``fit_time``/``score_time``) of the results;
    a failed fit's score is ``error_score``."""
    start = start or [0] * candidates

    def value(r):
        if side in ("fit_time", "score_time"):
            return getattr(r, side)
        scores = list(((r.train_scores if side == "train" else r.test_scores) or {}).values())
        return scores[0] if scores else error_score

    return np.array([[value(run.results[(c, start[c] + f)]) for f in range(run.n_splits)]
                     for c in range(candidates)])


def learning_curve(
    estimator,
    X,
    y,
    *,
    groups=None,
    train_sizes=np.linspace(0.1, 1.0, 5),
    cv=None,
    scoring=None,
    exploit_incremental_learning=False,
    n_jobs=None,
    pre_dispatch="all",
    verbose=0,
    shuffle=False,
    random_state=None,
    error_score=np.nan,
    return_times=False,
    params=None,
    backend="auto",
    ray_remote_args=None,
    address=None,
    max_retries=3,
    storage=None,
    cache=True,
    engine="auto",
    fit_timeout=None,
):
    """Training and test scores for training sets of several sizes; scikit-learn's result,
    every (size, fold) fit on Ray.

    Returns ``train_sizes_abs, train_scores, test_scores`` (scores of shape (n_sizes,
    n_folds)), and ``fit_times, score_times`` with ``return_times``. With
    ``exploit_incremental_learning`` each (size, fold) trial calls ``partial_fit`` on the
    partitions up to its size, so the sizes run in parallel (scikit-learn runs them one after
    another in one fit per fold); its results are scikit-learn's, and a failing
    ``partial_fit`` raises, as there. An integer ``random_state`` (the shuffling's) also
    seeds the fits of Keras models. The raygrid keywords are those of
    :func:`raygrid.cross_validate`; Keras models fuse across sizes and folds (``engine``).
    """
    check_one_metric(scoring, "learning_curve")
    if exploit_incremental_learning and not hasattr(estimator, "partial_fit"):
        raise ValueError("An estimator must support the partial_fit interface to exploit "
                         "incremental learning")
    sizes = []

    def split_sets(X, y, split_params, splits):
        sizes.extend(absolute_train_sizes(train_sizes, len(splits[0][0])))
        if verbose > 0:
            print("[learning_curve] Training set sizes: " + str(np.asarray(sizes)))
        if shuffle:
            rng = check_random_state(random_state)
            splits = [(rng.permutation(train), test) for train, test in splits]
        return [[(train[:n], test) for train, test in splits] for n in sizes]

    def task():  # incremental fits: partial_fit on each size's partition (sizes known by now)
        if not exploit_incremental_learning:
            return FitTask()
        classes = np.unique(y) if is_classifier(with_stock_tags_fixed(estimator)) else None
        return FitTask(partial_fit=tuple(int(n) for n in sizes), classes=classes)

    run = prepare_run(
        estimator, X, y, cv=cv, scoring=scoring, refit=False, error_score=error_score,
        route=lambda est, scoring_: route_function(
            "learning_curve", est, scoring_.scorer, cv, groups, params, partial_fit=True,
            incremental=exploit_incremental_learning),
        options=_options(backend, address, ray_remote_args, max_retries, n_jobs, engine,
                         storage, cache, fit_timeout),
        kind="learning_curve", return_train_score=True, random_state=random_state,
        split_sets=split_sets, task=task,
    )
    key = params_key({})
    trials = [Trial(i, start + f, {}, fit_seed(run.seed_state, key, start + f))
              for f in range(run.n_splits) for i, start in enumerate(run.set_starts)]
    run_plan(run, trials, title="learning_curve", verbose=verbose)

    ordered = [run.results[(t.candidate, t.fold)] for t in trials]  # scikit-learn's order
    if exploit_incremental_learning:
        failed = next((r for r in ordered if r.failed), None)
        if failed is not None:  # scikit-learn's incremental fits raise whatever error_score
            reraise(failed)
    else:
        warn_or_raise_about_failures(ordered, error_score)
    n = len(sizes)
    out = [np.asarray(sizes)] + [_table(run, n, side, error_score, run.set_starts)
                                 for side in ("train", "test")]
    if return_times:
        out += [_table(run, n, side, error_score, run.set_starts)
                for side in ("fit_time", "score_time")]
    return tuple(out)


def validation_curve(
    estimator,
    X,
    y,
    *,
    param_name,
    param_range,
    groups=None,
    cv=None,
    scoring=None,
    n_jobs=None,
    pre_dispatch="all",
    verbose=0,
    error_score=np.nan,
    params=None,
    backend="auto",
    ray_remote_args=None,
    address=None,
    max_retries=3,
    random_state=None,
    storage=None,
    cache=True,
    engine="auto",
    fit_timeout=None,
):
    """Training and test scores for each value of one parameter; scikit-learn's result, every
    (value, fold) fit on Ray.

    Returns ``train_scores, test_scores`` of shape (n_values, n_folds). As in scikit-learn, a
    failed fit scores ``error_score`` (with ``"raise"``, its exception is raised). The raygrid
    keywords are those of :func:`raygrid.cross_validate`; a Keras model's curve over
    ``epochs``, ``batch_size`` or a model parameter fuses like a grid (``engine``).
    """
    check_one_metric(scoring, "validation_curve")
    run = prepare_run(
        estimator, X, y, cv=cv, scoring=scoring, refit=False, error_score=error_score,
        route=lambda est, scoring_: route_function("validation_curve", est, scoring_.scorer, cv,
                                                   groups, params),
        options=_options(backend, address, ray_remote_args, max_retries, n_jobs, engine,
                         storage, cache, fit_timeout),
        kind="validation_curve", return_train_score=True, random_state=random_state,
    )
    candidates = [{param_name: value} for value in param_range]
    trials = build_trials(candidates, run.n_splits, random_state=run.seed_state)
    run_plan(run, trials, title="validation_curve", verbose=verbose)
    return (_table(run, len(candidates), "train", error_score),
            _table(run, len(candidates), "test", error_score))
