"""What code written for tune-sklearn 0.5.0 relies on, and raygrid.tune keeps: only the import
changes (``from raygrid.tune import TuneSearchCV`` for ``from tune_sklearn import ...``).

Each test restores one behaviour of tune-sklearn's classes (its ``cv_results_`` keys, stoppers that
see every increment, ``max_iters`` without early stopping, ``fit(..., tune_params=...)``, a time
budget that runs out, ``error_score="raise"``, precomputed kernels, Searcher objects with their
own space, RandomState seeds, hyperopt expressions, ``best_params``).
"""
import time

import numpy as np
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.datasets import make_classification
from sklearn.linear_model import SGDClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from raygrid import GridSearchCV, cross_val_score
from raygrid.tune import TuneGridSearchCV, TuneSearchCV


@pytest.fixture(scope="module")
def Xy():
    return make_classification(n_samples=60, n_features=8, n_informative=3, random_state=0)


class PlateauClassifier(ClassifierMixin, BaseEstimator):
    """Trains by partial_fit; its score rises by 0.1 a call until ``converge_after`` calls, then
    stays put (so a plateau stopper has something to see)."""

    def __init__(self, foo_param=1.0, converge_after=4):
        self.foo_param = foo_param
        self.converge_after = converge_after

    def partial_fit(self, X, y, classes=None):
        self.calls_ = getattr(self, "calls_", 0) + 1
        self.classes_ = np.unique(y) if classes is None else np.asarray(classes)
        return self

    def fit(self, X, y):
        self.calls_ = 0
        return self.partial_fit(X, y)

    def predict(self, X):
        return np.full(len(X), self.classes_[0])

    def score(self, X, y, sample_weight=None):
        return min(self.calls_, self.converge_after) / 10 + self.foo_param / 1000


class SleepClassifier(ClassifierMixin, BaseEstimator):
    """Sleeps ``foo_param`` seconds in every fit."""

    def __init__(self, foo_param=1.0):
        self.foo_param = foo_param

    def fit(self, X, y):
        time.sleep(self.foo_param)
        self.classes_ = np.unique(y)
        return self

    def predict(self, X):
        return np.full(len(X), self.classes_[0])


# -- 1. cv_results_ has tune-sklearn's training_iteration and time_total_s ------------------------
def test_cv_results_has_training_iteration_and_time_total_s(ray_local, Xy):
    X, y = Xy
    search = TuneSearchCV(PlateauClassifier(converge_after=20), {"foo_param": [2.0, 3.0, 4.0]},
                          cv=2, max_iters=6, early_stopping=True).fit(X, y)
    iters = search.cv_results_["training_iteration"]
    assert len(iters) == 3 and all(1 <= i <= 6 for i in iters)
    assert max(iters) == 6  # the best candidate trained its whole budget
    assert list(iters) == [search.summary_.loc[c, "budget"] for c in range(3)]
    seconds = search.cv_results_["time_total_s"]
    assert np.isfinite(seconds).all() and (seconds > 0).all()


# -- 2. a stopper sees every increment, with ASHA as well ----------------------------------------
def test_plateau_stopper_sees_every_increment_under_asha(ray_local, Xy):
    from ray.tune.stopper import TrialPlateauStopper

    X, y = Xy
    search = TuneSearchCV(PlateauClassifier(converge_after=4), {"foo_param": [2.0, 3.0, 4.0]},
                          cv=2, max_iters=20, early_stopping=True,
                          stopper=TrialPlateauStopper(metric="objective")).fit(X, y)
    # It converges after 4 increments; the stopper needs 4 more reports to see the plateau.
    assert all(i <= 8 for i in search.cv_results_["training_iteration"])
    for _, reports in search.history_.groupby("trial_id"):
        budgets = list(reports["budget"])
        assert budgets == list(range(1, len(budgets) + 1))  # every increment, none skipped


# -- 3. max_iters > 1 without early stopping: a warning, and one increment -----------------------
@pytest.mark.parametrize("estimator", [SVC(), SGDClassifier(random_state=0)],
                         ids=["not-incremental", "partial_fit"])
def test_max_iters_without_early_stopping_warns_and_trains_once(ray_local, Xy, estimator):
    X, y = Xy
    param = "C" if isinstance(estimator, SVC) else "alpha"
    with pytest.warns(UserWarning, match="max_iters is set > 1"):
        search = TuneGridSearchCV(estimator, {param: [0.1, 1.0]}, cv=2, max_iters=5).fit(X, y)
    assert list(search.cv_results_["training_iteration"]) == [1, 1]


def test_early_stopping_with_one_increment_warns(ray_local, Xy):
    X, y = Xy
    with pytest.warns(UserWarning, match="max_iters = 1"):
        TuneGridSearchCV(SGDClassifier(), {"alpha": [0.1]}, cv=2, early_stopping=True,
                         max_iters=1).fit(X, y)


# -- 4. fit(X, y, tune_params=...) reaches Tune ---------------------------------------------------
def test_tune_params_reach_tune_and_presets_overridden_warn(ray_local, Xy):
    from ray.tune import Callback

    class Seen(Callback):
        def __init__(self):
            self.results = []

        def on_trial_result(self, iteration, trials, trial, result, **info):
            self.results.append(result)

    X, y = Xy
    seen = Seen()
    search = TuneGridSearchCV(SGDClassifier(random_state=0), {"alpha": [1e-4, 1e-1]}, cv=2)
    with pytest.warns(UserWarning, match="overriden by tune_params: fail_fast"):
        search.fit(X, y, tune_params={"fail_fast": "raise", "callbacks": [seen]})
    assert len(search.cv_results_["params"]) == 2
    assert len(seen.results) == 2  # the user's callback ran beside raygrid's own
    # tune-sklearn's metric names are reported with raygrid's
    assert all(r["average_test_score"] == r["mean_test_score"] for r in seen.results)


@pytest.mark.parametrize("tune_params, match", [
    ({"config": {"alpha": 0.1}}, "param_grid"),
    ({"no_such_argument": 1}, "unknown tune.run argument"),
])
def test_tune_params_that_cannot_apply_are_refused(Xy, tune_params, match):
    X, y = Xy
    with pytest.raises(ValueError, match=match):
        TuneGridSearchCV(SGDClassifier(), {"alpha": [0.1]}, cv=2).fit(
            X, y, tune_params=tune_params)


# -- 5. a time budget that runs out before any report: a warning, not an error -------------------
def test_time_budget_out_before_any_report_warns_and_returns(ray_local, Xy):
    X, y = Xy
    search = TuneGridSearchCV(SleepClassifier(), {"foo_param": [3.0, 3.5]}, cv=2,
                              time_budget_s=1.0)
    with pytest.warns(UserWarning, match="No Tune trial reported a result"):
        assert search.fit(X, y) is search
    assert search.cv_results_ == {}
    assert not hasattr(search, "best_params_") and not hasattr(search, "best_estimator_")


# -- 6. error_score defaults to "raise" (test_tune.py::test_error_score runs it) -----------------
def test_error_score_default_is_tune_sklearns():
    assert TuneGridSearchCV(SVC(), {}).get_params()["error_score"] == "raise"
    assert TuneSearchCV(SVC(), {}).get_params()["error_score"] == "raise"
    assert "error_score" in TuneSearchCV.__doc__ and "tune-sklearn" in TuneSearchCV.__doc__


# -- 7. precomputed kernels: scikit-learn's errors on every search, either backend ----------------
def _precomputed_runs():
    grid = {"C": [0.1, 1.0]}
    return {
        "GridSearchCV-auto": lambda K, y: GridSearchCV(SVC(kernel="precomputed"), grid).fit(K, y),
        "GridSearchCV-ray": lambda K, y: GridSearchCV(SVC(kernel="precomputed"), grid,
                                                      backend="ray").fit(K, y),
        "cross_val_score": lambda K, y: cross_val_score(SVC(kernel="precomputed"), K, y),
        "TuneGridSearchCV": lambda K, y: TuneGridSearchCV(SVC(kernel="precomputed"), grid,
                                                          cv=2).fit(K, y),
    }


@pytest.mark.parametrize("run", list(_precomputed_runs()))
def test_precomputed_kernel_list_or_not_square_is_refused(Xy, run):
    X, y = Xy
    K = X @ X.T
    fit = _precomputed_runs()[run]
    with pytest.raises(ValueError, match=r"Precomputed kernels .* arrays or sparse matrices\. Got list"):
        fit(K.tolist(), y)
    with pytest.raises(ValueError, match="square kernel matrix"):
        fit(K[:, :40], y)


# -- 8. Searcher objects: their own space, tune-sklearn's metric name, a clear error -------------
def _hp_space():
    from hyperopt import hp

    return {"alpha": hp.uniform("alpha", 1e-4, 0.5), "epsilon": hp.uniform("epsilon", 0.01, 0.05),
            "penalty": hp.choice("penalty", ["elasticnet", "l1"])}


def _check_space_search(search):
    assert len(search.cv_results_["params"]) == 3
    params = search.best_estimator_.get_params()
    assert 1e-4 <= params["alpha"] <= 0.5 and 0.01 <= params["epsilon"] <= 0.05
    assert params["penalty"] in ("elasticnet", "l1")


def test_searcher_with_its_own_space(ray_local, Xy):
    from ray.tune.search.hyperopt import HyperOptSearch

    class CustomSearcher(HyperOptSearch):
        pass

    X, y = Xy
    searcher = CustomSearcher(space=_hp_space(), metric="average_test_score", mode="max",
                              random_state_seed=0)
    search = TuneSearchCV(SGDClassifier(random_state=0), {"alpha": (1e-4, 0.5)},
                          search_optimization=searcher, n_trials=3, cv=2).fit(X, y)
    _check_space_search(search)


@pytest.mark.parametrize("kwargs, match", [
    ({}, "its metric"),
    ({"metric": "average_test_score", "mode": "min"}, "its mode"),
])
def test_searcher_with_a_space_needs_the_searchs_metric_and_mode(Xy, kwargs, match):
    from ray.tune.search.hyperopt import HyperOptSearch

    X, y = Xy
    searcher = HyperOptSearch(space=_hp_space(), **kwargs)
    with pytest.raises(ValueError, match=match):
        TuneSearchCV(SGDClassifier(), {}, search_optimization=searcher, cv=2).fit(X, y)


def test_search_optimization_that_is_no_searcher_is_a_value_error(Xy):
    class NotASearcher:
        pass

    X, y = Xy
    with pytest.raises(ValueError, match="Search optimization must be one of"):
        TuneSearchCV(SGDClassifier(), {"alpha": (1e-4, 0.5)},
                     search_optimization=NotASearcher(), cv=2).fit(X, y)


# -- 9. a numpy RandomState seeds hyperopt and optuna ---------------------------------------------
@pytest.mark.parametrize("optimizer", ["hyperopt", "optuna"])
def test_random_state_instance_seeds_the_searcher(ray_local, Xy, optimizer):
    X, y = Xy
    pipe = Pipeline([("scale", StandardScaler()), ("classify", SGDClassifier(random_state=0))])
    space = {"classify__alpha": [1e-4, 1e-3, 1e-2, 1e-1, 1],
             "classify__epsilon": [0.01, 0.02, 0.03, 0.04, 0.05, 0.06]}

    def params():
        search = TuneSearchCV(pipe, dict(space), search_optimization=optimizer, n_trials=4,
                              cv=2, random_state=np.random.RandomState(1234)).fit(X, y)
        return search.cv_results_["params"]

    assert params() == params()


# -- 10. hyperopt expressions in param_distributions ----------------------------------------------
def test_hyperopt_expressions_in_param_distributions(ray_local, Xy):
    from hyperopt import hp

    X, y = Xy
    space = {**_hp_space(), "max_iter": hp.uniformint("max_iter", 5, 20),
             "tol": (1e-4, 1e-2, "log-uniform")}  # tune-sklearn's ranges mix with them
    search = TuneSearchCV(SGDClassifier(random_state=0), space, search_optimization="hyperopt",
                          n_trials=3, cv=2, random_state=0).fit(X, y)
    _check_space_search(search)
    for p in search.cv_results_["params"]:
        assert 5 <= p["max_iter"] <= 20 and int(p["max_iter"]) == p["max_iter"]
        assert 1e-4 <= p["tol"] <= 1e-2


def test_hyperopt_expressions_need_hyperopt(Xy):
    X, y = Xy
    with pytest.raises(ValueError, match="'alpha'"):
        TuneSearchCV(SGDClassifier(), {"alpha": _hp_space()["alpha"]},
                     search_optimization="optuna", cv=2).fit(X, y)


# -- 11. best_params and tune-sklearn's other names ----------------------------------------------
def test_best_params_without_underscore(ray_local, Xy):
    X, y = Xy
    search = TuneGridSearchCV(SGDClassifier(random_state=0), {"alpha": [1e-4, 1e-1]}, cv=2)
    assert not hasattr(search, "best_params")
    search.fit(X, y)
    assert search.best_params == search.best_params_
    assert search.best_index == search.best_index_
    assert search.best_score == search.best_score_
    assert search.best_estimator is search.best_estimator_


# -- the deliberate differences (README "Differences from tune-sklearn") -------------------------
def test_bad_settings_are_checked_in_fit_not_in_the_constructor(Xy):
    X, y = Xy
    search = TuneSearchCV(SGDClassifier(), {"alpha": [0.1]}, mode="this_is_an_invalid_mode")
    with pytest.raises(ValueError, match="mode must be 'max' or 'min'"):
        search.fit(X, y)


def test_every_fit_failing_is_scikit_learns_error(ray_local, Xy):
    X, y = Xy
    search = TuneSearchCV(SVC(), {"C": [-1.0, -2.0]}, n_trials=2, cv=2, error_score=np.nan,
                          refit=False)
    with pytest.raises(ValueError, match="All the 4 fits failed"):
        search.fit(X, y)


# -- docs/tune.md ---------------------------------------------------------------------------------
def test_docs_tune_python_blocks_run_as_written(ray_local):
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "tune.md").read_text()
    blocks = re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)
    assert blocks
    for i, code in enumerate(blocks):
        exec(compile(code, f"docs/tune.md python block {i}", "exec"), {"__name__": "docs_tune"})
