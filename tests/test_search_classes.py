"""The same scoring, failure and seeding behaviour through every search class and the fused
engine: one place decides each (raygrid.search.base's fit steps, raygrid.search.prepare), so
they all agree."""
import contextlib
import dataclasses
import re
from typing import Any, Callable

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
N_TEST = len(Y) // 3  # rows in each test fold of cv=3
GRID = {"t": [-1.0, -0.3, 0.0, 0.3, 1.0]}
#: The fused engine's Ray workers run Keras on JAX; the standard engine's (its reference and the
#: fits it takes over from the fused engine) do so too with this, so equal seeds give equal fits.
KERAS_ON_JAX = {"runtime_env": {"env_vars": {"KERAS_BACKEND": "jax"}}}


@dataclasses.dataclass(frozen=True)
class Case:
    """What a search class is tried on: its estimator and grid (``failing``: with a candidate
    that cannot be fitted), the grid's parameter, and that candidate's value and error."""

    make: Callable[[bool], tuple]
    param: str
    bad: Any
    error: type
    message: str


THRESHOLD = Case(lambda failing: (Threshold(bad=1.0 if failing else None), GRID),
                 "t", 1.0, ArithmeticError, "t=1.0 cannot be fitted")


def _keras(failing: bool) -> tuple:
    from raygrid.keras import seed_classifier

    activations = ["relu", "tanh"] + (["no_such_activation"] if failing else [])
    return (seed_classifier(epochs=1, batch_size=16, model__hidden=(4,)),
            {"model__activation": activations})


#: A tiny Keras model (one epoch, 4 hidden units, 80 training rows a fold); an unknown
#: activation cannot be built, on either engine.
KERAS = Case(_keras, "model__activation", "no_such_activation", ValueError,
             "Could not interpret activation function identifier: no_such_activation")


def _search(kind, failing=False, **kwargs):
    case = KERAS if kind == "fused" else THRESHOLD
    estimator, grid = case.make(failing)
    if kind == "grid":
        return raygrid.GridSearchCV(estimator, grid, cv=3, **kwargs)
    if kind == "random":
        return raygrid.RandomizedSearchCV(estimator, grid, n_iter=5, cv=3, **kwargs)
    if kind == "halving":
        return raygrid.HalvingGridSearchCV(estimator, grid, cv=3, factor=2, **kwargs)
    if kind == "tune":
        kwargs.pop("backend", None)
        return raygrid.TuneGridSearchCV(estimator, grid, cv=3, **kwargs)
    if kind == "fused":
        kwargs.setdefault("engine", "fused")
        return raygrid.GridSearchCV(estimator, grid, cv=3, ray_remote_args=KERAS_ON_JAX, **kwargs)
    raise AssertionError(kind)


#: Every case below applies to every kind; "fused" is GridSearchCV(engine="fused") on a tiny
#: Keras model (KERAS), the others search THRESHOLD.
KINDS = ["grid", "random", "halving", "tune", pytest.param("fused", marks=pytest.mark.keras)]


def _trained_fused(search):
    """Every fit that did not fail was trained by the fused engine."""
    fits = search.results_
    assert (fits.loc[fits["error"].isna(), "engine"] == "fused").all()


@pytest.mark.parametrize("kind", KINDS)
def test_scoring_and_the_best_candidate(kind, ray_local):
    if kind == "halving":  # one metric only, as scikit-learn's successive halving
        scoring, refit, metric = "balanced_accuracy", True, "score"
    else:
        scoring, refit, metric = {"acc": "accuracy", "bal": "balanced_accuracy"}, "acc", "acc"
    search = _search(kind, scoring=scoring, refit=refit, random_state=0).fit(X, Y)
    cv = search.cv_results_
    assert {f"mean_test_{metric}", f"rank_test_{metric}"} <= set(cv)
    assert search.best_score_ == cv[f"mean_test_{metric}"][search.best_index_]
    assert search.best_params_ == cv["params"][search.best_index_]
    assert search.summary_.index[0] == search.best_index_
    assert search.predict(X).shape == Y.shape
    if kind == "fused":  # the standard engine's scores, up to one test row a fold (test_fused)
        _trained_fused(search)
        standard = _search(kind, engine="standard", scoring=scoring, refit=False,
                           random_state=0).fit(X, Y)
        assert set(standard.results_["engine"]) == {"standard"}
        assert cv["params"] == standard.cv_results_["params"]
        for i in range(3):
            np.testing.assert_allclose(cv[f"split{i}_test_acc"],
                                       standard.cv_results_[f"split{i}_test_acc"],
                                       rtol=0, atol=1 / N_TEST + 1e-9)


def _left_to_the_standard_engine(kind):
    """The fused engine cannot build the failing candidate's model: it says so and leaves its
    fits to the standard engine, whose failure rows every search class shares."""
    if kind != "fused":
        return contextlib.nullcontext()
    return pytest.warns(UserWarning, match="the model could not be built for fusion")


@pytest.mark.parametrize("kind", KINDS)
def test_a_failing_fit_is_a_row_and_error_score_decides(kind, ray_local):
    case = KERAS if kind == "fused" else THRESHOLD
    with _left_to_the_standard_engine(kind), \
            pytest.warns(FitFailedWarning, match=case.error.__name__):
        search = _search(kind, failing=True, error_score=0.0, random_state=0).fit(X, Y)
    failed = search.results_[search.results_["error"].notna()]
    assert len(failed) and set(failed[f"param_{case.param}"]) == {case.bad}
    assert failed["error"].str.contains(case.message).all()
    bad = [i for i, p in enumerate(search.cv_results_["params"]) if p[case.param] == case.bad]
    assert all(search.cv_results_["split0_test_score"][i] == 0.0 for i in bad)
    if kind == "fused":  # the others trained fused; the failing one was left to the standard
        _trained_fused(search)
    with _left_to_the_standard_engine(kind), pytest.raises(case.error, match=case.message):
        _search(kind, failing=True, error_score="raise", random_state=0).fit(X, Y)


@pytest.mark.parametrize("kind", KINDS)
def test_fit_seeds_come_from_random_state_parameters_and_fold(kind, ray_local):
    search = _search(kind, random_state=7).fit(X, Y)
    rows = search.results_
    params = search.cv_results_["params"]
    expected = [fit_seed(7, params_key(params[c]), f) for c, f in zip(rows["candidate"], rows["fold"])]
    assert list(rows["seed"]) == expected
    if kind == "fused":  # each candidate is a lane of its own, trained with its own fits' seeds
        _trained_fused(search)


@pytest.mark.parametrize("kind", KINDS)
def test_every_fit_is_reported_through_the_search_progress(kind, ray_local, capsys):
    """scikit-learn's ``[CV] END`` line for each fit (verbose=2), from the search's progress."""
    param = (KERAS if kind == "fused" else THRESHOLD).param
    search = _search(kind, verbose=2, random_state=0).fit(X, Y)
    out = capsys.readouterr().out.splitlines()
    reported = sorted(re.search(rf"{param}=(\S+);", line).group(1)
                      for line in out if line.startswith("[CV] END"))
    assert reported == sorted(str(v) for v in search.results_[f"param_{param}"])
