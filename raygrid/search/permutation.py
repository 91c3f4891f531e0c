"""permutation_test_score with scikit-learn's signature: the score on the data and on
``n_permutations`` permuted targets, every (permutation, fold) fit one trial of one plan."""
from __future__ import annotations

import numbers

import numpy as np
from sklearn.base import is_classifier
from sklearn.model_selection import check_cv
from sklearn.utils import check_random_state, indexable

from raygrid.engine.fitting import take
from raygrid.engine.plan import Trial, fit_seed, params_key
from raygrid.keras import with_stock_tags_fixed
from raygrid.search.curves import check_one_metric
from raygrid.search.prepare import RunOptions, prepare_run, run_plan
from raygrid.search.routing import check_groups_routing_disabled, route_function


def permuted_rows(n: int, groups, random_state) -> np.ndarray:
    """The rows of y that a permuted y takes, in order; within each group when ``groups`` is
    given. Draws from ``random_state`` exactly as scikit-learn does."""
    if groups is None:
        return random_state.permutation(n)
    indices = np.arange(len(groups))
    for group in np.unique(groups):
        this_mask = groups == group
        indices[this_mask] = random_state.permutation(indices[this_mask])
    return indices


def permutation_test_score(
    estimator,
    X,
    y,
    *,
    groups=None,
    cv=None,
    n_permutations=100,
    n_jobs=None,
    random_state=0,
    verbose=0,
    scoring=None,
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
    """The significance of a cross-validated score with permutations; scikit-learn's result,
    every fit of every permutation on Ray.

    Returns ``(score, permutation_scores, pvalue)``: the mean cross-validated score on the
    data, the mean on each of ``n_permutations`` copies of the data with y permuted (within
    ``groups`` when given; the splits are made again for each permuted y, as scikit-learn
    does), and ``(C + 1) / (n_permutations + 1)`` where C counts permutation scores at least
    ``score``. A failed fit raises its exception. An integer ``random_state`` also seeds the
    fits of Keras models. The other raygrid keywords are those of
    :func:`raygrid.cross_validate`; Keras models fuse across permutations (``engine``).
    """
    check_one_metric(scoring, "permutation_test_score")
    if (isinstance(n_permutations, bool) or not isinstance(n_permutations, numbers.Integral)
            or n_permutations < 1):
        raise ValueError("The 'n_permutations' parameter of permutation_test_score must be an "
                         f"int in the range [1, inf). Got {n_permutations!r} instead.")
    check_groups_routing_disabled(groups)
    X, y, groups = indexable(X, y, groups)
    splitter = check_cv(cv, y, classifier=is_classifier(with_stock_tags_fixed(estimator)))
    rng = check_random_state(random_state)

    def split_sets(X, y, split_params, splits):
        sets = [splits]
        for _ in range(n_permutations):
            rows = permuted_rows(len(y), groups, rng)
            y_permuted = take(y, rows)
            sets.append([(train, test, rows)
                         for train, test in splitter.split(X, y_permuted, **split_params)])
        return sets

    options = RunOptions(backend=backend, address=address, ray_remote_args=ray_remote_args,
                         max_retries=max_retries, n_jobs=n_jobs, engine=engine,
                         storage=storage, cache=cache, fit_timeout=fit_timeout)
    run = prepare_run(
        estimator, X, y, cv=splitter, scoring=scoring, refit=False, error_score="raise",
        route=lambda est, scoring_: route_function("permutation_test_score", est,
                                                   scoring_.scorer, splitter, groups, params),
        options=options, kind="permutation_test_score", random_state=random_state,
        split_sets=split_sets,
    )
    key = params_key({})
    trials = [Trial(p, start + f, {}, fit_seed(run.seed_state, key, start + f))
              for p, start in enumerate(run.set_starts) for f in range(run.n_splits)]
    run_plan(run, trials, title="permutation_test_score", verbose=verbose)

    means = [np.mean([_test_score(run.results[(p, start + f)]) for f in range(run.n_splits)])
             for p, start in enumerate(run.set_starts)]
    score, permutation_scores = means[0], np.array(means[1:])
    pvalue = (np.sum(permutation_scores >= score) + 1.0) / (n_permutations + 1)
    return score, permutation_scores, pvalue


def _test_score(result):
    (value,) = result.test_scores.values()
    return value
