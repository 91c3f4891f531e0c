"""Successive halving with scikit-learn's interface: every rung's (candidate x fold) fits as Ray tasks.

``HalvingGridSearchCV`` and ``HalvingRandomSearchCV`` take the parameters of scikit-learn's
(``sklearn.model_selection.HalvingGridSearchCV`` / ``HalvingRandomSearchCV``, 1.9) and give the
same ``cv_results_`` and ``best_*``. The search runs in *rungs* (iterations): all candidates get a
small budget, the best ``1 / factor`` of them go on with ``factor`` times the budget, and so on.
The budget (``resource``) is the number of training samples or any estimator parameter
(``"epochs"`` of a Keras model, ``"max_iter"``, ``"n_estimators"``...).

The rung schedule (budget and number of candidates per rung) depends only on counts, so it is
computed before any fit, with every check on the parameters; for ``resource="n_samples"`` so are
the subsampled splits of every rung (sklearn's rule: each fold's train and test indices resampled
without replacement with ``random_state``). Each rung is one call of the search's
``evaluate_candidates``: its fits run in parallel, the next rung starts when they are all done.
"""
from __future__ import annotations

from math import ceil, floor, log
from numbers import Integral, Real
from typing import Any, Mapping

import numpy as np
from sklearn.base import is_classifier
from sklearn.model_selection import ParameterGrid, ParameterSampler, check_cv
from sklearn.utils import resample
from sklearn.utils.multiclass import check_classification_targets

from raygrid.engine.fitting import num_samples
from raygrid.search.base import RAYGRID_PARAMS_DOC, BaseSearch


def halving_schedule(n_candidates: int, *, factor: float, min_resources: Any, max_resources: Any,
                     exhaust: bool, aggressive_elimination: bool) -> dict:
    """Rung budgets and candidate counts of successive halving, from counts alone.

    ``exhaust`` raises ``min_resources`` so that the last required rung uses as much of
    ``max_resources`` as possible (scikit-learn's ``min_resources="exhaust"``). Returns a dict of
    ``min_resources`` (after that), ``n_resources`` and ``n_candidates`` (one per rung),
    ``n_required_iterations``, ``n_possible_iterations`` and ``n_iterations``.
    """
    # Rungs needed until the last one holds fewer than `factor` candidates.
    n_required = 1 + floor(log(n_candidates, factor))
    if exhaust:
        min_resources = max(min_resources, max_resources // factor ** (n_required - 1))
    # Rungs that fit between min_resources and max_resources.
    n_possible = 1 + floor(log(max_resources // min_resources, factor))
    n_iterations = n_required if aggressive_elimination else min(n_possible, n_required)
    n_resources, counts = [], []
    remaining = n_candidates
    for itr in range(n_iterations):
        power = itr
        if aggressive_elimination:
            # Stay at the first budget while the extra rungs eliminate candidates, then grow.
            power = max(0, itr - n_required + n_possible)
        n_resources.append(min(int(factor ** power * min_resources), max_resources))
        counts.append(remaining)
        remaining = ceil(remaining / factor)
    return dict(min_resources=min_resources, n_resources=n_resources, n_candidates=counts,
                n_required_iterations=n_required, n_possible_iterations=n_possible,
                n_iterations=n_iterations)


def top_k(results: Mapping[str, Any], k: int, itr: int) -> list[dict]:
    """The ``k`` best candidates of rung ``itr`` by mean test score, worst first (as scikit-learn).

    NaN scores count as the worst; ties keep numpy's ``argsort`` order, which is what
    scikit-learn uses, so the same candidates go on to the next rung.
    """
    iteration = np.asarray(results["iter"])
    scores = np.asarray(results["mean_test_score"])
    params = np.asarray(results["params"])
    indices = np.flatnonzero(iteration == itr)
    rung_scores = scores[indices]
    order = np.roll(np.argsort(rung_scores), np.count_nonzero(np.isnan(rung_scores)))
    return list(params[indices][order[-k:]])


def _positive_int(value: Any) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool) and value > 0


class BaseSuccessiveHalving(BaseSearch):
    """What the two halving searches share; subclasses generate the first rung's candidates."""

    def __init__(
        self,
        estimator,
        *,
        scoring=None,
        n_jobs=None,
        refit=True,
        cv=5,
        verbose=0,
        random_state=None,
        error_score=np.nan,
        return_train_score=True,
        max_resources="auto",
        min_resources="exhaust",
        resource="n_samples",
        factor=3,
        aggressive_elimination=False,
        backend="auto",
        ray_remote_args=None,
        address=None,
        max_retries=3,
        storage=None,
        cache=True,
        fit_timeout=None,
    ):
        super().__init__(
            estimator, scoring=scoring, n_jobs=n_jobs, refit=refit, cv=cv, verbose=verbose,
            error_score=error_score, return_train_score=return_train_score, backend=backend,
            ray_remote_args=ray_remote_args, address=address, max_retries=max_retries,
            storage=storage, cache=cache, fit_timeout=fit_timeout,
        )
        self.random_state = random_state
        self.max_resources = max_resources
        self.min_resources = min_resources
        self.resource = resource
        self.factor = factor
        self.aggressive_elimination = aggressive_elimination

    def _generate_candidate_params(self):  # pragma: no cover - abstract
        raise NotImplementedError

    # -- checks that need no data --------------------------------------------------------------
    def _check_parameters(self) -> None:
        name = type(self).__name__
        if isinstance(self.scoring, (list, tuple, set, dict)):
            raise ValueError(f"{name} supports one metric only: scoring must be None, a metric "
                             f"name or a callable returning a number, got {self.scoring!r}")
        if not isinstance(self.factor, Real) or isinstance(self.factor, bool) or not self.factor > 1:
            raise ValueError(f"factor must be a number greater than 1, got {self.factor!r}")
        if not isinstance(self.resource, str):
            raise ValueError(f"resource must be 'n_samples' or the name of a parameter of the "
                             f"estimator, got {self.resource!r}")
        if not (_positive_int(self.max_resources) or self.max_resources == "auto"):
            raise ValueError(f"max_resources must be a positive int or 'auto', got "
                             f"{self.max_resources!r}")
        if not (_positive_int(self.min_resources) or self.min_resources in ("exhaust", "smallest")):
            raise ValueError(f"min_resources must be a positive int, 'exhaust' or 'smallest', got "
                             f"{self.min_resources!r}")
        if not isinstance(self.aggressive_elimination, (bool, np.bool_)):
            raise ValueError(f"aggressive_elimination must be True or False, got "
                             f"{self.aggressive_elimination!r}")
        if self.resource != "n_samples" and self.resource not in self.estimator.get_params():
            raise ValueError(
                f"Cannot use resource={self.resource} which is not supported by estimator "
                f"{type(self.estimator).__name__}: the resource is 'n_samples' or one of its "
                "parameters"
            )
        if self.max_resources == "auto" and self.resource != "n_samples":
            raise ValueError("resource can only be 'n_samples' when max_resources='auto': give "
                             f"max_resources, the largest {self.resource} a candidate may get")

    # -- the plan: checks that need the data, candidates, schedule, rung splits ---------------
    def _check_resources(self, X, y, groups) -> None:
        """``min_resources_`` and ``max_resources_`` from the data, before it is split (as
        scikit-learn: an empty X is named here, not by the splitter)."""
        n_splits = check_cv(self.cv, y, classifier=is_classifier(self.estimator)).get_n_splits(
            X, y, groups)
        self.min_resources_ = self.min_resources
        if self.min_resources_ in ("smallest", "exhaust"):
            if self.resource == "n_samples":
                # Two samples per fold (and per class for a classifier), as scikit-learn.
                self.min_resources_ = n_splits * 2
                if is_classifier(self.estimator):
                    y_array = np.asarray(y)
                    check_classification_targets(y_array)
                    self.min_resources_ *= np.unique(y_array).shape[0]
            else:
                self.min_resources_ = 1
        self.max_resources_ = self.max_resources
        if self.max_resources_ == "auto":
            self.max_resources_ = num_samples(X)
        if self.min_resources_ > self.max_resources_:
            raise ValueError(f"min_resources_={self.min_resources_} is greater than "
                             f"max_resources_={self.max_resources_}.")
        if self.min_resources_ == 0:
            raise ValueError(f"min_resources_={self.min_resources_}: you might have passed an "
                             "empty dataset X.")

    def _split_sets(self, X, y, split_params, splits) -> list:
        self._check_constant_splits(X, y, split_params, splits)
        candidates = [dict(c) for c in self._generate_candidate_params()]
        if not candidates:
            raise ValueError(f"{self._space_name} yields no candidates: give at least one "
                             "parameter setting")
        if self.resource != "n_samples" and any(self.resource in c for c in candidates):
            raise ValueError(f"Cannot use parameter {self.resource} as the resource since it is "
                             f"part of the searched parameters ({self._space_name}).")
        schedule = halving_schedule(
            len(candidates), factor=self.factor, min_resources=self.min_resources_,
            max_resources=self.max_resources_, exhaust=self.min_resources == "exhaust",
            aggressive_elimination=bool(self.aggressive_elimination))
        self.min_resources_ = schedule["min_resources"]
        self._plan = (candidates, schedule)
        if self.verbose:
            for key in ("n_iterations", "n_required_iterations", "n_possible_iterations"):
                print(f"{key}: {schedule[key]}")
            print(f"min_resources_: {self.min_resources_}")
            print(f"max_resources_: {self.max_resources_}")
            print(f"aggressive_elimination: {self.aggressive_elimination}")
            print(f"factor: {self.factor}")
        if self.resource != "n_samples":
            return [splits]
        # One split set per rung: every fold's train and test indices subsampled to the rung's
        # share of the data, exactly as scikit-learn's halving does it.
        n = num_samples(X)
        rungs = []
        for n_resources in schedule["n_resources"]:
            fraction = n_resources / n
            rungs.append([(self._subsample(train, fraction), self._subsample(test, fraction))
                          for train, test in splits])
        return rungs

    def _subsample(self, indices: np.ndarray, fraction: float) -> np.ndarray:
        return resample(indices, replace=False, random_state=self.random_state,
                        n_samples=int(fraction * len(indices)))

    def _check_constant_splits(self, X, y, split_params, splits) -> None:
        """Every rung must see the same folds: a cv that reshuffles on each call is an error."""
        splitter = check_cv(self.cv, y, classifier=is_classifier(self.estimator))
        random_state = getattr(splitter, "random_state", None)
        reshuffles = (hasattr(splitter, "random_state") and getattr(splitter, "shuffle", True)
                      and not isinstance(random_state, Integral))
        if not reshuffles:
            again = list(splitter.split(X, y, **split_params))
            reshuffles = len(again) != len(splits) or not all(
                np.array_equal(a, b) and np.array_equal(c, d)
                for (a, c), (b, d) in zip(again, splits))
        if reshuffles:
            raise ValueError(
                "The cv parameter must yield consistent folds across calls to split(). Set its "
                "random_state to an int, or set shuffle=False (or pass a list of (train, test) "
                "index pairs)."
            )

    # -- the rungs -------------------------------------------------------------------------------
    _rungs = True  # callbacks: each rung is a "halving-iteration" task

    def _run_search(self, evaluate_candidates) -> None:
        candidate_params, schedule = self._plan
        self.n_resources_ = []
        self.n_candidates_ = []
        for itr in range(schedule["n_iterations"]):
            n_candidates = len(candidate_params)
            n_resources = schedule["n_resources"][itr]
            self.n_resources_.append(n_resources)
            self.n_candidates_.append(n_candidates)
            if self.verbose:
                print("-" * 10)
                print(f"iter: {itr}")
                print(f"n_candidates: {n_candidates}")
                print(f"n_resources: {n_resources}")
            if self.resource == "n_samples":
                split_set = itr  # this rung's subsampled folds
            else:
                candidate_params = [{**c, self.resource: n_resources} for c in candidate_params]
                split_set = 0
            results = evaluate_candidates(
                candidate_params, split_set=split_set,
                more_results={"iter": [itr] * n_candidates, "n_resources": [n_resources] * n_candidates},
            )
            if "mean_test_score" not in results:
                raise ValueError(f"{type(self).__name__} supports one metric only: the scoring "
                                 "callable returned several (a dict)")
            candidate_params = top_k(results, ceil(n_candidates / self.factor), itr)
        self.n_remaining_candidates_ = len(candidate_params)
        self.n_required_iterations_ = schedule["n_required_iterations"]
        self.n_possible_iterations_ = schedule["n_possible_iterations"]
        self.n_iterations_ = schedule["n_iterations"]

    @staticmethod
    def _select_best_index(refit, refit_metric, results) -> int:
        """The best candidate of the last rung (the others saw a smaller budget)."""
        last = np.flatnonzero(results["iter"] == np.max(results["iter"]))
        scores = results["mean_test_score"][last]
        # All NaN: no way to choose, so the first one (as scikit-learn).
        return last[0 if np.isnan(scores).all() else np.nanargmax(scores)]

    # -- fit -------------------------------------------------------------------------------------
    def fit(self, X, y=None, **params):
        """Run the rungs (each rung's fits in parallel), then refit the best of the last rung.

        ``groups`` and fit parameters go in ``params``, as in scikit-learn.
        """
        self._check_parameters()
        self._check_resources(X, y, params.get("groups"))
        try:
            super().fit(X, y, **params)
        finally:
            self.__dict__.pop("_plan", None)
        self.best_score_ = self.cv_results_["mean_test_score"][self.best_index_]
        if len(self.results_):
            candidates = self.results_["candidate"].to_numpy()
            self.results_.insert(2, "iter", self.cv_results_["iter"][candidates])
            self.results_.insert(3, "n_resources", self.cv_results_["n_resources"][candidates])
        # Best first: the last rung by rank, then the earlier rungs.
        self.summary_ = self.summary_.sort_values(["iter", "rank_test_score"],
                                                  ascending=[False, True], kind="stable")
        return self

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.array_api_support = False
        return tags


_HALVING_DOC = """
    Same parameters, attributes and methods as scikit-learn's {sklearn} (1.9), plus raygrid's
    own keywords (last) and ``results_`` (one row per fit, with its ``iter`` and ``n_resources``)
    and ``summary_`` (one row per candidate, the last rung's best first).

    Successive halving runs in rungs: every candidate gets ``min_resources_`` of the
    ``resource``, the best ``1 / factor`` of them get ``factor`` times more, and so on up to
    ``max_resources``. Each rung's (candidate x fold) fits run in parallel as Ray tasks; the next
    rung starts when they are done. ``resource`` is ``"n_samples"`` (each rung subsamples every
    fold's train and test indices, as scikit-learn does) or any parameter of the estimator:
    ``"epochs"`` for a Keras model, ``"max_iter"``, ``"n_estimators"``... The schedule depends only
    on counts, so bad settings are errors before any fit: a resource the estimator does not have
    or that is also searched, ``max_resources="auto"`` with a resource other than ``n_samples``,
    ``min_resources`` above ``max_resources``, a cv whose folds change from call to call, several
    metrics. ``best_*`` come from the last rung, as in scikit-learn.

    Fitted attributes beyond GridSearchCV's: ``n_resources_`` and ``n_candidates_`` (per rung),
    ``n_remaining_candidates_``, ``max_resources_``, ``min_resources_``, ``n_iterations_``,
    ``n_possible_iterations_``, ``n_required_iterations_``; ``cv_results_`` has ``iter`` and
    ``n_resources``.

    random_state : int, RandomState instance or None, default=None
        Seeds the subsampling of ``resource="n_samples"`` (and the sampling of candidates of
        HalvingRandomSearchCV), as in scikit-learn. An int also seeds Keras fits per
        (candidate, fold), recorded in ``results_``.
    n_jobs : int, default=None
        At most this many fits in flight; None or -1 uses every slot of the cluster.
    storage : see below. A rerun with the same ``storage`` reuses every stored rung's fits, so
        an interrupted halving search resumes where it stopped.
"""


class HalvingGridSearchCV(BaseSuccessiveHalving):
    __doc__ = (
        """Successive halving over ``param_grid``: every rung's (candidate, fold) fits are Ray tasks.
"""
        + _HALVING_DOC.format(sklearn=":class:`sklearn.model_selection.HalvingGridSearchCV`")
        + RAYGRID_PARAMS_DOC
        + """
    Examples
    --------
    >>> from raygrid import HalvingGridSearchCV
    >>> from sklearn.ensemble import RandomForestClassifier
    >>> grid = {"max_depth": [3, None], "min_samples_split": [5, 10]}
    >>> search = HalvingGridSearchCV(RandomForestClassifier(random_state=0), grid,
    ...                              resource="n_estimators", max_resources=10,
    ...                              random_state=0).fit(X, y)  # doctest: +SKIP
"""
    )

    def __init__(
        self,
        estimator,
        param_grid,
        *,
        factor=3,
        resource="n_samples",
        max_resources="auto",
        min_resources="exhaust",
        aggressive_elimination=False,
        cv=5,
        scoring=None,
        refit=True,
        error_score=np.nan,
        return_train_score=True,
        random_state=None,
        n_jobs=None,
        verbose=0,
        backend="auto",
        ray_remote_args=None,
        address=None,
        max_retries=3,
        storage=None,
        cache=True,
        fit_timeout=None,
    ):
        super().__init__(
            estimator, scoring=scoring, n_jobs=n_jobs, refit=refit, cv=cv, verbose=verbose,
            random_state=random_state, error_score=error_score,
            return_train_score=return_train_score, max_resources=max_resources,
            min_resources=min_resources, resource=resource, factor=factor,
            aggressive_elimination=aggressive_elimination, backend=backend,
            ray_remote_args=ray_remote_args, address=address, max_retries=max_retries,
            storage=storage, cache=cache, fit_timeout=fit_timeout,
        )
        self.param_grid = param_grid

    def _generate_candidate_params(self):
        return ParameterGrid(self.param_grid)


class HalvingRandomSearchCV(BaseSuccessiveHalving):
    __doc__ = (
        """Successive halving over sampled candidates: every rung's (candidate, fold) fits are Ray tasks.

    ``n_candidates`` candidates are drawn from ``param_distributions`` (with the same
    ``random_state``, the same ones as scikit-learn); ``"exhaust"`` draws as many as let the last
    rung use ``max_resources``.
"""
        + _HALVING_DOC.format(sklearn=":class:`sklearn.model_selection.HalvingRandomSearchCV`")
        + RAYGRID_PARAMS_DOC
    )

    def __init__(
        self,
        estimator,
        param_distributions,
        *,
        n_candidates="exhaust",
        factor=3,
        resource="n_samples",
        max_resources="auto",
        min_resources="smallest",
        aggressive_elimination=False,
        cv=5,
        scoring=None,
        refit=True,
        error_score=np.nan,
        return_train_score=True,
        random_state=None,
        n_jobs=None,
        verbose=0,
        backend="auto",
        ray_remote_args=None,
        address=None,
        max_retries=3,
        storage=None,
        cache=True,
        fit_timeout=None,
    ):
        super().__init__(
            estimator, scoring=scoring, n_jobs=n_jobs, refit=refit, cv=cv, verbose=verbose,
            random_state=random_state, error_score=error_score,
            return_train_score=return_train_score, max_resources=max_resources,
            min_resources=min_resources, resource=resource, factor=factor,
            aggressive_elimination=aggressive_elimination, backend=backend,
            ray_remote_args=ray_remote_args, address=address, max_retries=max_retries,
            storage=storage, cache=cache, fit_timeout=fit_timeout,
        )
        self.param_distributions = param_distributions
        self.n_candidates = n_candidates

    @property
    def _space_name(self) -> str:
        return "param_distributions"

    def _check_parameters(self) -> None:
        super()._check_parameters()
        if not (_positive_int(self.n_candidates) or self.n_candidates == "exhaust"):
            raise ValueError(f"n_candidates must be a positive int or 'exhaust', got "
                             f"{self.n_candidates!r}")
        if self.min_resources == self.n_candidates == "exhaust":
            # Each needs the other: n_candidates='exhaust' is max_resources_ // min_resources_.
            raise ValueError("n_candidates and min_resources cannot be both set to 'exhaust'.")

    def _generate_candidate_params(self):
        n_candidates = self.n_candidates
        if n_candidates == "exhaust":
            # As many as let the last rung use as much of max_resources as possible.
            n_candidates = self.max_resources_ // self.min_resources_
        return ParameterSampler(self.param_distributions, n_candidates,
                                random_state=self.random_state)


__all__ = ["HalvingGridSearchCV", "HalvingRandomSearchCV", "halving_schedule", "top_k"]
