"""The same scoring, failure and seeding behaviour through every search class: one place
decides each (raygrid.search.base's fit steps), so every search class agrees."""
import re

import numpy as np
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import FitFailedWarning

import raygrid
from raygrid.engine.plan import fit_seed, params_key


class Threshold(ClassifierMixin, BaseEstimator):
    """Predicts 1 where feature 0 exceeds ``t``; fails to fit when ``t == bad``."""

    def __init__(self, t=0.0, bad=None):
        self.t = t
        self.bad = bad

    def fit(self, X, y):
        if self.bad is not None and self.t == self.bad:
            raise ArithmeticError(f"t={self.t} cannot be fitted")
        self.classes_ = np.array([0, 1])
        return self

    def predict(self, X):
        return (np.asarray(X)[:, 0] > self.t).astype(int)


X = np.random.RandomState(0).normal(size=(120, 2))
Y = (X[:, 0] + 0.3 * X[:, 1] > 0).astype(int)
GRID = {"t": [-1.0, -0.3, 0.0, 0.3, 1.0]}


def _search(kind, estimator, **kwargs):
    if kind == "grid":
        return raygrid.GridSearchCV(estimator, GRID, cv=3, **kwargs)
    if kind == "random":
        return raygrid.RandomizedSearchCV(estimator, GRID, n_iter=5, cv=3, **kwargs)
    if kind == "halving":
        return raygrid.HalvingGridSearchCV(estimator, GRID, cv=3, factor=2, **kwargs)
    if kind == "tune":
        kwargs.pop("backend", None)
        return raygrid.TuneGridSearchCV(estimator, GRID, cv=3, **kwargs)
    raise AssertionError(kind)


KINDS = ["grid", "random", "halving", "tune"]


@pytest.mark.parametrize("kind", KINDS)
def test_scoring_and_the_best_candidate(kind, ray_local):
    if kind == "halving":  # one metric only, as scikit-learn's successive halving
        scoring, refit, metric = "balanced_accuracy", True, "score"
    else:
        scoring, refit, metric = {"acc": "accuracy", "bal": "balanced_accuracy"}, "acc", "acc"
    search = _search(kind, Threshold(), scoring=scoring, refit=refit, random_state=0).fit(X, Y)
    cv = search.cv_results_
    assert {f"mean_test_{metric}", f"rank_test_{metric}"} <= set(cv)
    assert search.best_score_ == cv[f"mean_test_{metric}"][search.best_index_]
    assert search.best_params_ == cv["params"][search.best_index_]
    assert search.summary_.index[0] == search.best_index_
    assert search.predict(X).shape == Y.shape


@pytest.mark.parametrize("kind", KINDS)
def test_a_failing_fit_is_a_row_and_error_score_decides(kind, ray_local):
    with pytest.warns(FitFailedWarning, match="ArithmeticError"):
        search = _search(kind, Threshold(bad=1.0), error_score=0.0, random_state=0).fit(X, Y)
    failed = search.results_[search.results_["error"].notna()]
    assert len(failed) and set(failed["param_t"]) == {1.0}
    assert failed["error"].str.contains("t=1.0 cannot be fitted").all()
    bad = [i for i, p in enumerate(search.cv_results_["params"]) if p["t"] == 1.0]
    assert all(search.cv_results_["split0_test_score"][i] == 0.0 for i in bad)
    with pytest.raises(ArithmeticError, match="t=1.0 cannot be fitted"):
        _search(kind, Threshold(bad=1.0), error_score="raise", random_state=0).fit(X, Y)


@pytest.mark.parametrize("kind", KINDS)
def test_fit_seeds_come_from_random_state_parameters_and_fold(kind, ray_local):
    search = _search(kind, Threshold(), random_state=7).fit(X, Y)
    rows = search.results_
    params = search.cv_results_["params"]
    expected = [fit_seed(7, params_key(params[c]), f) for c, f in zip(rows["candidate"], rows["fold"])]
    assert list(rows["seed"]) == expected


@pytest.mark.parametrize("kind", KINDS)
def test_every_fit_is_reported_through_the_search_progress(kind, ray_local, capsys):
    """scikit-learn's ``[CV] END`` line for each fit (verbose=2), from the search's progress."""
    search = _search(kind, Threshold(), verbose=2, random_state=0).fit(X, Y)
    out = capsys.readouterr().out.splitlines()
    reported = sorted(float(re.search(r"t=(\S+);", line).group(1))
                      for line in out if line.startswith("[CV] END"))
    assert reported == sorted(search.results_["param_t"])
