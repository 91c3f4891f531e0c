"""GridSearchCV and RandomizedSearchCV: scikit-learn's two searches on :class:`BaseSearch`."""
from __future__ import annotations

import numbers

import numpy as np
from sklearn.model_selection import ParameterGrid, ParameterSampler

from raygrid.search.base import RAYGRID_PARAMS_DOC, BaseSearch

ENGINE_DOC = """    engine : {"auto", "fused", "standard"}, default="auto"
        How scikeras (Keras) models train. "auto" and "fused" train fusable fits many at a time
        (raygrid.engine.fused): fits of one model structure, loss and batch size become lanes of one
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
        + RAYGRID_PARAMS_DOC
        + ENGINE_DOC
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
        super().__init__(
            estimator, scoring=scoring, n_jobs=n_jobs, refit=refit, cv=cv, verbose=verbose,
            pre_dispatch=pre_dispatch, error_score=error_score,
            return_train_score=return_train_score, backend=backend,
            ray_remote_args=ray_remote_args, address=address, max_retries=max_retries,
            storage=storage, cache=cache, fit_timeout=fit_timeout,
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
        + RAYGRID_PARAMS_DOC
        + ENGINE_DOC
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
        backend="auto",
        ray_remote_args=None,
        address=None,
        max_retries=3,
        storage=None,
        cache=True,
        fit_timeout=None,
        engine="auto",
    ):
        super().__init__(
            estimator, scoring=scoring, n_jobs=n_jobs, refit=refit, cv=cv, verbose=verbose,
            pre_dispatch=pre_dispatch, error_score=error_score,
            return_train_score=return_train_score, backend=backend,
            ray_remote_args=ray_remote_args, address=address, max_retries=max_retries,
            storage=storage, cache=cache, fit_timeout=fit_timeout,
        )
        self.param_distributions = param_distributions
        self.n_iter = n_iter
        self.random_state = random_state
        self.engine = engine

    @property
    def _space_name(self) -> str:
        return "param_distributions"

    def _run_search(self, evaluate_candidates):
        n_iter = self.n_iter
        if isinstance(n_iter, bool) or not isinstance(n_iter, numbers.Integral) or n_iter < 1:
            raise ValueError(f"n_iter must be an integer >= 1 (how many candidates to draw from "
                             f"param_distributions), got {n_iter!r}")
        evaluate_candidates(
            ParameterSampler(self.param_distributions, self.n_iter, random_state=self.random_state)
        )
