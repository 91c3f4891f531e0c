"""Successive halving: raygrid's HalvingGridSearchCV / HalvingRandomSearchCV against scikit-learn's.

scikit-learn's own halving searches are the oracle: with the same ``random_state`` they must give
the same ``cv_results_`` (every key but the ``*_time`` ones, floats compared exactly), the same
``best_*`` and the same rung schedule, on both executors, for ``resource="n_samples"`` (rungs of
subsampled folds) and for an estimator parameter as the resource.
"""
from __future__ import annotations

import sys

import numpy as np
import pytest
import ray.cloudpickle
from scipy.stats import randint
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.datasets import make_classification
from sklearn.experimental import enable_halving_search_cv  # noqa: F401
from sklearn.linear_model import SGDClassifier
from sklearn.model_selection import KFold
from sklearn.model_selection import HalvingGridSearchCV as SkHalvingGrid
from sklearn.model_selection import HalvingRandomSearchCV as SkHalvingRandom
from sklearn.tree import DecisionTreeClassifier
from threadpoolctl import threadpool_limits

import raygrid
from raygrid.cli.status import status
from raygrid.search.halving import halving_schedule
from parity_helpers import assert_cv_results_equal

# Ray workers cannot import this test module by name: ship its classes and functions by value.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

X, Y = make_classification(n_samples=400, n_features=6, n_informative=4, random_state=0)

FITTED = ("best_index_", "best_params_", "best_score_", "n_splits_", "multimetric_",
          "n_resources_", "n_candidates_", "n_remaining_candidates_", "max_resources_",
          "min_resources_", "n_iterations_", "n_possible_iterations_", "n_required_iterations_")


@pytest.fixture(autouse=True)
def one_blas_thread():
    with threadpool_limits(limits=1):
        yield


def assert_same_search(ours, theirs) -> None:
    """cv_results_ equal on every non-time key (same keys, same order, same dtypes); same fit."""
    assert_cv_results_equal(ours.cv_results_, theirs.cv_results_)
    for attr in FITTED:
        assert getattr(ours, attr) == getattr(theirs, attr), attr
    assert repr(ours.best_estimator_) == repr(theirs.best_estimator_)
    np.testing.assert_array_equal(ours.predict(X), theirs.predict(X), strict=True)


def both(sk_cls, rg_cls, estimator, space, backend, **kw):
    theirs = sk_cls(estimator, space, **kw).fit(X, Y)
    ours = rg_cls(estimator, space, backend=backend, **kw).fit(X, Y)
    assert_same_search(ours, theirs)
    return ours, theirs


TREE_GRID = {"max_depth": [1, 2, 3, None], "min_samples_leaf": [1, 5, 10]}
TREE_SPACE = {"max_depth": randint(1, 8), "min_samples_leaf": randint(1, 20),
              "criterion": ["gini", "entropy"]}


# -- resource="n_samples": every rung subsamples every fold's train and test indices -----------
def test_grid_n_samples_matches_sklearn(backend):
    ours, _ = both(SkHalvingGrid, raygrid.HalvingGridSearchCV, DecisionTreeClassifier(random_state=0),
                   TREE_GRID, backend, cv=3, random_state=0)
    assert ours.n_resources_ == [44, 132, 396] and ours.n_candidates_ == [12, 4, 2]
    # Each fit saw its rung's subsample: test folds grow with the rung, the last is the best's.
    n_test = ours.results_.groupby("iter")["n_test_samples"].max()
    assert list(n_test) == sorted(n_test) and n_test.iloc[0] < n_test.iloc[-1] <= 134
    assert list(ours.results_.columns[:4]) == ["candidate", "fold", "iter", "n_resources"]
    assert ours.summary_.index[0] == ours.best_index_


def test_random_n_samples_exhaust_matches_sklearn(backend):
    ours, _ = both(SkHalvingRandom, raygrid.HalvingRandomSearchCV,
                   DecisionTreeClassifier(random_state=0), TREE_SPACE, backend, cv=3,
                   random_state=0)
    assert ours.n_iterations_ == 4 and ours.n_candidates_ == [33, 11, 4, 2]


# -- an estimator parameter as the resource --------------------------------------------------
def test_grid_max_iter_resource_matches_sklearn(backend):
    sgd = SGDClassifier(tol=None, random_state=0)
    grid = {"alpha": [1e-4, 1e-3, 1e-2, 1e-1], "loss": ["hinge", "log_loss"]}
    ours, _ = both(SkHalvingGrid, raygrid.HalvingGridSearchCV, sgd, grid, backend, cv=3,
                   resource="max_iter", max_resources=27, random_state=0)
    assert ours.n_resources_ == [9, 27]
    assert list(ours.cv_results_["param_max_iter"]) == [9] * 8 + [27] * 3
    assert ours.best_estimator_.max_iter == 27


def test_random_max_depth_aggressive_elimination_matches_sklearn(backend):
    space = {"min_samples_leaf": randint(1, 30), "criterion": ["gini", "entropy"]}
    ours, _ = both(SkHalvingRandom, raygrid.HalvingRandomSearchCV,
                   DecisionTreeClassifier(random_state=0), space, backend, cv=3,
                   resource="max_depth", n_candidates=10, max_resources=8, min_resources=2,
                   factor=2, aggressive_elimination=True, random_state=0)
    assert ours.n_resources_ == [2, 2, 4, 8] and ours.n_candidates_ == [10, 5, 3, 2]


def test_schedule_is_computed_from_counts_alone():
    schedule = halving_schedule(12, factor=3, min_resources=12, max_resources=400, exhaust=True,
                                aggressive_elimination=False)
    assert schedule["n_resources"] == [44, 132, 396] and schedule["n_candidates"] == [12, 4, 2]
    assert schedule["min_resources"] == 44 and schedule["n_iterations"] == 3


def test_signatures_and_defaults_are_sklearns():
    import inspect

    for ours, theirs in ((raygrid.HalvingGridSearchCV, SkHalvingGrid),
                         (raygrid.HalvingRandomSearchCV, SkHalvingRandom)):
        mine = inspect.signature(ours).parameters
        sk = inspect.signature(theirs).parameters
        assert list(mine)[:len(sk)] == list(sk)
        for name, param in sk.items():
            if param.default is not inspect.Parameter.empty:
                assert mine[name].default is param.default or mine[name].default == param.default
        assert list(mine)[len(sk):] == ["backend", "ray_remote_args", "address", "max_retries",
                                        "storage", "cache", "fit_timeout"]
    assert {"HalvingGridSearchCV", "HalvingRandomSearchCV"} <= set(raygrid.__all__)


def test_store_keeps_each_rung_apart_and_resumes(tmp_path):
    """Rungs of n_samples fit the same candidates on other rows: never reused across rungs."""
    kw = dict(cv=3, random_state=0)
    theirs = SkHalvingGrid(DecisionTreeClassifier(random_state=0), TREE_GRID, **kw).fit(X, Y)
    first = raygrid.HalvingGridSearchCV(DecisionTreeClassifier(random_state=0), TREE_GRID,
                                        backend="serial", storage=tmp_path, **kw).fit(X, Y)
    assert_same_search(first, theirs)
    assert not first.results_["cached"].any()
    # The store counts the cv's folds, not one per rung's split set.
    assert {(s["kind"], s["n_splits"]) for s in status(tmp_path)["searches"]} == {
        ("HalvingGridSearchCV", 3)}
    again = raygrid.HalvingGridSearchCV(DecisionTreeClassifier(random_state=0), TREE_GRID,
                                        backend="serial", storage=tmp_path, **kw).fit(X, Y)
    assert again.results_["cached"].all()
    assert_same_search(again, theirs)


# -- bad input: clear errors before any fit ------------------------------------------------
class MustNotFit(ClassifierMixin, BaseEstimator):
    """Any fit is a bug in these tests: the search must stop before it."""

    def __init__(self, alpha=1.0, max_depth=1):
        self.alpha = alpha
        self.max_depth = max_depth

    def fit(self, X, y):
        raise AssertionError("a fit ran before the input was checked")


@pytest.mark.parametrize("cls, kw, message", [
    (raygrid.HalvingGridSearchCV, dict(resource="epochs", max_resources=9),
     "Cannot use resource=epochs"),
    (raygrid.HalvingGridSearchCV, dict(resource="alpha", max_resources=9),
     "part of the searched parameters"),
    (raygrid.HalvingGridSearchCV, dict(resource="max_depth"), "max_resources='auto'"),
    (raygrid.HalvingGridSearchCV, dict(resource="max_depth", min_resources=10, max_resources=5),
     "min_resources_=10 is greater than max_resources_=5"),
    (raygrid.HalvingGridSearchCV, dict(min_resources=500), "greater than max_resources_=400"),
    (raygrid.HalvingGridSearchCV, dict(cv=KFold(3, shuffle=True)), "consistent folds"),
    (raygrid.HalvingGridSearchCV, dict(scoring=["accuracy", "f1"]), "one metric"),
    (raygrid.HalvingGridSearchCV, dict(factor=1), "factor"),
    (raygrid.HalvingRandomSearchCV, dict(min_resources="exhaust"), "both set to 'exhaust'"),
])
def test_bad_input_is_an_error_before_any_fit(cls, kw, message):
    search = cls(MustNotFit(), {"alpha": [0.1, 1.0]}, backend="serial", error_score="raise", **kw)
    with pytest.raises(ValueError, match=message):
        search.fit(X, Y)


def test_cv_with_changing_folds_is_caught_by_comparing_two_calls():
    class Reshuffles(KFold):  # says shuffle=False, yet its folds change: only they tell
        def split(self, X, y=None, groups=None):
            rng = np.random.default_rng()
            for train, test in super().split(X, y, groups):
                yield rng.permutation(train), test

    search = raygrid.HalvingGridSearchCV(MustNotFit(), {"alpha": [0.1, 1.0]}, cv=Reshuffles(3),
                                         backend="serial", error_score="raise")
    with pytest.raises(ValueError, match="consistent folds"):
        search.fit(X, Y)


# -- Keras: epochs as the resource ------------------------------------------------------------
def epochs_trained(estimator, X, y):
    """A scorer that reports how many epochs the fitted Keras model trained."""
    return float(len(estimator.history_["loss"]))


@pytest.mark.keras
def test_keras_rungs_train_with_growing_epochs(ray_local):
    pytest.importorskip("scikeras")
    from raygrid.keras import seed_classifier

    rng = np.random.RandomState(0)
    Xk = rng.rand(64, 4)
    yk = (Xk[:, 0] > 0.5).astype(int)
    search = raygrid.HalvingGridSearchCV(
        seed_classifier(batch_size=16, model__hidden=(4,)), {"model__activation": ["relu", "tanh"]},
        resource="epochs", factor=2, max_resources=2, cv=2, scoring=epochs_trained,
        random_state=0, backend="ray",
    ).fit(Xk, yk)
    assert search.n_resources_ == [1, 2] and search.n_candidates_ == [2, 1]
    cv = search.cv_results_
    assert list(cv["iter"]) == [0, 0, 1] and list(cv["param_epochs"]) == [1, 1, 2]
    for split in ("split0_test_score", "split1_test_score"):  # each fit trained its rung's epochs
        assert list(cv[split]) == [1.0, 1.0, 2.0]
    assert search.best_index_ == 2 and search.best_params_["epochs"] == 2
    assert len(search.best_estimator_.history_["loss"]) == 2
    assert search.results_["seed"].notna().all()
