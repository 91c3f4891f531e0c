"""scikit-learn is the oracle: raygrid's searches and cross-validation give sklearn's results.

Every test runs on both executors (serial, in-process; and Ray tasks). Floats are compared
exactly: the same computation on the same rows must give bit-identical numbers. Only the
``*_time`` keys are allowed to differ.
"""
from __future__ import annotations

import re
import sys
import warnings

import numpy as np
import pandas as pd
import pytest
import ray.cloudpickle
import scipy.sparse as sp
from scipy.stats import loguniform, randint
from threadpoolctl import threadpool_limits
from sklearn import model_selection as skms
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.datasets import load_diabetes, load_iris
from sklearn.decomposition import PCA
from sklearn.exceptions import FitFailedWarning
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import balanced_accuracy_score, make_scorer
from sklearn.model_selection import GroupKFold, KFold, StratifiedKFold
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC
from sklearn.tree import DecisionTreeClassifier

import raygrid
from parity_helpers import assert_cv_results_equal

# Ray workers cannot import this test module by name: ship its classes and functions by value.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


@pytest.fixture(autouse=True)
def one_blas_thread():
    """Ray's workers run BLAS on one thread; so does the driver here (and on 2 busy cores that is
    also much faster)."""
    with threadpool_limits(limits=1):
        yield


# -- data -------------------------------------------------------------------------------------
_iris = load_iris()
X_IRIS, Y_IRIS = _iris.data, _iris.target
_diabetes = load_diabetes()
X_REG, Y_REG = _diabetes.data[:120], _diabetes.target[:120]
# Binary data for scorers that need two classes (f1, roc_auc).
X_BIN, Y_BIN = X_IRIS[50:], (Y_IRIS[50:] == 2).astype(int)
GROUPS = np.arange(len(Y_IRIS)) % 5


# -- doubles ----------------------------------------------------------------------------------
class FitBoom(RuntimeError):
    """What FailingClassifier raises: a user exception type the search must carry back as is."""


class FailingClassifier(ClassifierMixin, BaseEstimator):
    """Predicts by a threshold on feature 0; ``fit`` raises FitBoom when ``parameter == FAIL``."""

    FAIL = -1

    def __init__(self, parameter=0.0):
        self.parameter = parameter

    def fit(self, X, y, sample_weight=None):
        if self.parameter == self.FAIL:
            raise FitBoom("Failing classifier failed as required")
        X = np.asarray(X)
        self.classes_ = np.unique(y)
        self.n_features_in_ = X.shape[1]
        self.threshold_ = float(np.median(X[:, 0])) + self.parameter
        return self

    def predict(self, X):
        X = np.asarray(X)
        return np.where(X[:, 0] > self.threshold_, self.classes_[-1], self.classes_[0])


def custom_accuracy(estimator, X, y):
    """A plain callable scorer (est, X, y) -> float."""
    return float(np.mean(estimator.predict(X) == y))


def dict_scorer(estimator, X, y):
    """A callable scoring that returns several metrics at once."""
    pred = estimator.predict(X)
    return {"acc": float(np.mean(pred == y)), "err": float(np.mean(pred != y))}


def failing_scorer(estimator, X, y):
    raise FitBoom("scorer failed as required")


def best_low_complexity(cv_results):
    """A callable refit: the lowest C within one std of the best mean accuracy."""
    means = cv_results["mean_test_acc"]
    ok = np.flatnonzero(means >= means.max() - cv_results["std_test_acc"][means.argmax()])
    cs = np.asarray([cv_results["params"][i]["C"] for i in ok])
    return int(ok[cs.argmin()])


# -- comparison helpers -----------------------------------------------------------------------
def assert_search_equal(ours, theirs, X_test, y_test) -> None:
    assert_cv_results_equal(ours.cv_results_, theirs.cv_results_)
    for attr in ("best_index_", "best_params_", "best_score_", "n_splits_", "multimetric_"):
        assert hasattr(ours, attr) == hasattr(theirs, attr), attr
        if hasattr(theirs, attr):
            assert getattr(ours, attr) == getattr(theirs, attr), attr
    if hasattr(theirs, "feature_names_in_"):
        np.testing.assert_array_equal(ours.feature_names_in_, theirs.feature_names_in_)
    else:
        assert not hasattr(ours, "feature_names_in_")
    if not theirs.refit:
        return
    assert repr(ours.best_estimator_) == repr(theirs.best_estimator_)
    assert ours.n_features_in_ == theirs.n_features_in_
    for method in ("predict", "predict_proba", "decision_function", "transform"):
        assert hasattr(ours, method) == hasattr(theirs, method), method
        if hasattr(theirs, method):
            np.testing.assert_array_equal(getattr(ours, method)(X_test),
                                          getattr(theirs, method)(X_test), strict=True)
    if hasattr(theirs, "classes_"):
        np.testing.assert_array_equal(ours.classes_, theirs.classes_)
    assert _outcome(ours.score, X_test, y_test) == _outcome(theirs.score, X_test, y_test)


def _outcome(method, *args):
    try:
        return ("value", method(*args))
    except Exception as exc:  # noqa: BLE001 - the same failure is parity too
        return ("raises", type(exc))


def both(kind: str, estimator, space, backend, X, y, fit_params=None, **kw):
    """Fit sklearn's search and raygrid's on the same input; assert they agree; return both."""
    fit_params = fit_params or {}
    sk_cls = getattr(skms, kind)
    rg_cls = getattr(raygrid, kind)
    cv = kw.pop("cv", None)
    cv_theirs, cv_ours = (list(cv), list(cv)) if isinstance(cv, list) else (cv, cv)
    theirs = sk_cls(estimator, space, cv=cv_theirs, **kw).fit(X, y, **fit_params)
    ours = rg_cls(estimator, space, cv=cv_ours, backend=backend, **kw).fit(X, y, **fit_params)
    assert_search_equal(ours, theirs, X, y)
    return ours, theirs


# -- estimators x cv kinds --------------------------------------------------------------------
SVC_MASKED_GRID = [
    {"kernel": ["linear"], "C": [0.1, 1.0]},
    {"kernel": ["rbf"], "C": [1.0, 10.0], "gamma": [0.1, "scale"]},
    {"kernel": ["poly"], "degree": [2, 3]},
]

CASES = {
    "svc-masked-grid-int-cv": (SVC(), SVC_MASKED_GRID, dict(cv=3)),
    "logreg-kfold-shuffle": (
        LogisticRegression(max_iter=500), {"C": [0.01, 1.0, 100.0]},
        dict(cv=KFold(4, shuffle=True, random_state=0), return_train_score=True),
    ),
    "tree-stratified-shuffle": (
        DecisionTreeClassifier(random_state=0),
        {"max_depth": [1, 2, None], "criterion": ["gini", "entropy"]},
        dict(cv=StratifiedKFold(3, shuffle=True, random_state=0)),
    ),
    "knn-explicit-splits": (
        KNeighborsClassifier(), {"n_neighbors": [1, 5, 15], "weights": ["uniform", "distance"]},
        dict(cv=list(KFold(3, shuffle=True, random_state=1).split(X_IRIS))),
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_classifiers_match_sklearn(case, backend):
    estimator, grid, kw = CASES[case]
    both("GridSearchCV", estimator, grid, backend, X_IRIS, Y_IRIS, **kw)


def test_regressor_int_cv_is_kfold(backend):
    both("GridSearchCV", Ridge(), {"alpha": [0.01, 0.1, 1.0, 10.0]}, backend, X_REG, Y_REG,
         cv=4, return_train_score=True)


def test_unsupervised_transformer_without_y(backend):
    ours, _ = both("GridSearchCV", PCA(svd_solver="full"), {"n_components": [1, 2, 3]}, backend,
                   X_IRIS, None, cv=3, return_train_score=True)
    assert ours.transform(X_IRIS).shape == (150, ours.best_params_["n_components"])


def test_pipeline_with_group_kfold(backend):
    pipe = Pipeline([("scale", StandardScaler()), ("svc", SVC())])
    both("GridSearchCV", pipe, {"svc__C": [0.1, 1.0, 10.0]}, backend, X_IRIS, Y_IRIS,
         fit_params={"groups": GROUPS}, cv=GroupKFold(5))


def test_dataframe_input_keeps_feature_names(backend):
    X = pd.DataFrame(X_IRIS, columns=[f"f{i}" for i in range(4)])
    y = pd.Series(Y_IRIS, name="target")
    ours, _ = both("GridSearchCV", LogisticRegression(max_iter=500), {"C": [0.1, 1.0]}, backend,
                   X, y, cv=3)
    assert list(ours.feature_names_in_) == list(X.columns)
    assert list(ours.best_estimator_.feature_names_in_) == list(X.columns)


def test_sparse_input(backend):
    X = sp.csr_matrix(np.where(X_IRIS > 3, X_IRIS, 0.0))
    both("GridSearchCV", SVC(kernel="linear"), {"C": [0.1, 1.0, 10.0]}, backend, X, Y_IRIS,
         cv=3, return_train_score=True)


# -- scoring ----------------------------------------------------------------------------------
def test_multimetric_list_refit_by_name(backend):
    ours, _ = both("GridSearchCV", SVC(), {"C": [0.1, 1.0, 10.0], "gamma": [0.1, 1.0]}, backend,
                   X_BIN, Y_BIN, scoring=["accuracy", "f1", "roc_auc"], refit="f1", cv=3,
                   return_train_score=True)
    assert ours.multimetric_ is True


def test_multimetric_dict_with_callable_scorer(backend):
    scoring = {"acc": "accuracy", "bal": make_scorer(balanced_accuracy_score),
               "mine": custom_accuracy}
    both("GridSearchCV", SVC(), {"C": [0.1, 1.0, 10.0]}, backend, X_IRIS, Y_IRIS,
         scoring=scoring, refit="bal", cv=3)


def test_multimetric_callable_refit_has_no_best_score(backend):
    ours, _ = both("GridSearchCV", SVC(), {"C": [0.01, 0.1, 1.0, 10.0]}, backend, X_IRIS, Y_IRIS,
                   scoring={"acc": "accuracy", "bal": "balanced_accuracy"},
                   refit=best_low_complexity, cv=3)
    assert not hasattr(ours, "best_score_")
    assert ours.best_index_ == best_low_complexity(ours.cv_results_)


@pytest.mark.parametrize("scoring", [None, ["accuracy", "balanced_accuracy"]])
def test_refit_false(scoring, backend):
    ours, _ = both("GridSearchCV", SVC(), {"C": [0.1, 1.0]}, backend, X_IRIS, Y_IRIS,
                   scoring=scoring, refit=False, cv=3)
    assert not hasattr(ours, "best_estimator_")
    # As scikit-learn: the method is absent, and the cause says why.
    with pytest.raises(AttributeError, match="has no attribute 'predict'") as raised:
        ours.predict(X_IRIS)
    assert "refit=False" in str(raised.value.__cause__)


def test_callable_scoring_returning_a_dict(backend):
    ours, _ = both("GridSearchCV", SVC(), {"C": [0.1, 1.0, 10.0]}, backend, X_IRIS, Y_IRIS,
                   scoring=dict_scorer, refit="acc", cv=3, return_train_score=True)
    assert ours.multimetric_ is True
    assert "mean_test_err" in ours.cv_results_


def test_callable_scoring_returning_a_float(backend):
    both("GridSearchCV", SVC(), {"C": [0.1, 1.0, 10.0]}, backend, X_IRIS, Y_IRIS,
         scoring=custom_accuracy, cv=3)


def test_scoring_name(backend):
    both("GridSearchCV", LogisticRegression(max_iter=500), {"C": [0.1, 1.0]}, backend,
         X_BIN, Y_BIN, scoring="roc_auc", cv=3)


# -- failures ---------------------------------------------------------------------------------
def _failure_report(message: str):
    """The countable parts of a FitFailedWarning/ValueError text (tracebacks differ by design)."""
    head = message.split("Below are more details")[0]
    groups = [(int(n), err.strip().splitlines()[-1]) for n, err in re.findall(
        r"(\d+) fits failed with the following error:\n(.*?)(?=\n-{80}\n|\Z)", message, re.S)]
    return head, sorted(groups)


@pytest.mark.parametrize("error_score", [np.nan, 0.25])
def test_error_score_number_warns_grouped(error_score, backend):
    grid = {"parameter": [FailingClassifier.FAIL, 0.0, 0.5, 1.0]}
    with pytest.warns(FitFailedWarning) as sk_record:
        theirs = skms.GridSearchCV(FailingClassifier(), grid, cv=3, error_score=error_score,
                                   return_train_score=True).fit(X_IRIS, Y_IRIS)
    with pytest.warns(FitFailedWarning) as rg_record:
        ours = raygrid.GridSearchCV(FailingClassifier(), grid, cv=3, error_score=error_score,
                                    return_train_score=True, backend=backend).fit(X_IRIS, Y_IRIS)
    assert_search_equal(ours, theirs, X_IRIS, Y_IRIS)
    [sk_msg] = [str(w.message) for w in sk_record if w.category is FitFailedWarning]
    [rg_msg] = [str(w.message) for w in rg_record if w.category is FitFailedWarning]
    assert _failure_report(rg_msg) == _failure_report(sk_msg)
    # ... and the same other warnings (non-finite means with error_score=nan).
    assert sorted(str(w.message) for w in rg_record if w.category is not FitFailedWarning) == \
        sorted(str(w.message) for w in sk_record if w.category is not FitFailedWarning)
    assert "FitBoom: Failing classifier failed as required" in rg_msg
    failed = ours.results_[ours.results_["error"].notna()]
    assert sorted(failed["candidate"]) == [0, 0, 0]
    if np.isnan(error_score):
        assert np.isnan(ours.cv_results_["mean_test_score"][0])
        assert ours.cv_results_["rank_test_score"][0] == ours.cv_results_["rank_test_score"].max()


def test_error_score_raise_reraises_original_type(backend):
    grid = {"parameter": [0.0, FailingClassifier.FAIL]}
    with pytest.raises(FitBoom, match="failed as required"):
        skms.GridSearchCV(FailingClassifier(), grid, cv=3, error_score="raise").fit(X_IRIS, Y_IRIS)
    with pytest.raises(FitBoom, match="failed as required"):
        raygrid.GridSearchCV(FailingClassifier(), grid, cv=3, error_score="raise",
                             backend=backend).fit(X_IRIS, Y_IRIS)


def test_all_fits_failing_lists_the_tracebacks(backend):
    grid = {"parameter": [FailingClassifier.FAIL]}
    with pytest.raises(ValueError) as sk_info:
        skms.GridSearchCV(FailingClassifier(), grid, cv=3).fit(X_IRIS, Y_IRIS)
    with pytest.raises(ValueError) as rg_info:
        raygrid.GridSearchCV(FailingClassifier(), grid, cv=3, backend=backend).fit(X_IRIS, Y_IRIS)
    assert _failure_report(str(rg_info.value)) == _failure_report(str(sk_info.value))
    assert "All the 3 fits failed" in str(rg_info.value)
    assert "Traceback" in str(rg_info.value)
    assert "FitBoom: Failing classifier failed as required" in str(rg_info.value)


def test_one_failing_metric_spoils_only_itself(backend):
    scoring = {"acc": "accuracy", "bad": failing_scorer}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        ours, _ = both("GridSearchCV", SVC(), {"C": [0.1, 1.0]}, backend, X_IRIS, Y_IRIS,
                       scoring=scoring, refit="acc", cv=3, return_train_score=True)
    assert np.isnan(ours.cv_results_["mean_test_bad"]).all()
    assert np.isfinite(ours.cv_results_["mean_test_acc"]).all()


def test_failing_scorer_warns_like_sklearn():
    with pytest.warns(UserWarning, match="Scoring failed") as record:
        ours = raygrid.GridSearchCV(SVC(), {"C": [0.1, 1.0]}, scoring=failing_scorer, cv=3,
                                    backend="serial").fit(X_IRIS, Y_IRIS)
    assert any("scorer failed as required" in str(w.message) for w in record)
    assert np.isnan(ours.cv_results_["mean_test_score"]).all()
    assert list(ours.cv_results_["rank_test_score"]) == [1, 1]


def test_failing_scorer_with_error_score_raise(backend):
    with pytest.raises(FitBoom, match="scorer failed"):
        raygrid.GridSearchCV(SVC(), {"C": [1.0]}, scoring={"a": "accuracy", "b": failing_scorer},
                             refit="a", cv=3, error_score="raise",
                             backend=backend).fit(X_IRIS, Y_IRIS)


# -- fit params, randomized search ------------------------------------------------------------
@pytest.mark.parametrize("scoring", [None, ["accuracy", "balanced_accuracy"], custom_accuracy])
def test_sample_weight_is_split_per_fold(scoring, backend):
    """Fit gets the training rows' weights; the scorers that accept sample_weight get the test
    rows' weights (sklearn >= 1.8 without metadata routing), the others warn and score plain."""
    weights = np.linspace(0.1, 3.0, len(Y_IRIS))
    kw = dict(scoring=scoring, refit="accuracy" if isinstance(scoring, list) else True, cv=3,
              return_train_score=True)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        ours, theirs = both("GridSearchCV", LogisticRegression(max_iter=500), {"C": [0.1, 1.0]},
                            backend, X_IRIS, Y_IRIS, fit_params={"sample_weight": weights}, **kw)
    unsupported = [str(w.message) for w in record if "does not support sample_weight" in
                   str(w.message)]
    assert len(unsupported) == (2 if scoring is custom_accuracy else 0)  # sklearn's and ours
    plain = skms.GridSearchCV(LogisticRegression(max_iter=500), {"C": [0.1, 1.0]}, **kw)
    plain.fit(X_IRIS, Y_IRIS)
    # The weights mattered, so the equality above is not vacuous.
    assert not np.array_equal(plain.best_estimator_.coef_, theirs.best_estimator_.coef_)


def test_randomized_search_draws_sklearn_candidates(backend):
    space = {"C": loguniform(1e-2, 1e2), "gamma": loguniform(1e-3, 1e0), "degree": randint(1, 4),
             "kernel": ["rbf", "poly"]}
    ours, _ = both("RandomizedSearchCV", SVC(), space, backend, X_IRIS, Y_IRIS, n_iter=6,
                   random_state=0, cv=3, return_train_score=True)
    assert len(ours.cv_results_["params"]) == 6


# -- cross_validate / cross_val_score ---------------------------------------------------------
def assert_cross_validate_equal(ours: dict, theirs: dict, X) -> None:
    assert list(ours) == list(theirs)
    for key, expected in theirs.items():
        got = ours[key]
        if key.endswith("_time"):
            assert np.shape(got) == np.shape(expected)
        elif key == "estimator":
            assert len(got) == len(expected)
            for a, b in zip(got, expected):
                assert repr(a) == repr(b)
                np.testing.assert_array_equal(a.predict(X), b.predict(X), strict=True)
        elif key == "indices":
            assert list(got) == list(expected)
            for side in expected:
                assert type(got[side]) is type(expected[side])
                assert len(got[side]) == len(expected[side])
                for a, b in zip(got[side], expected[side]):
                    np.testing.assert_array_equal(a, b, strict=True)
        else:
            np.testing.assert_array_equal(got, expected, err_msg=key, strict=True)


@pytest.mark.parametrize("scoring", [None, ["accuracy", "balanced_accuracy"], dict_scorer])
def test_cross_validate_matches_sklearn(scoring, backend):
    kw = dict(cv=StratifiedKFold(4, shuffle=True, random_state=0), scoring=scoring,
              return_train_score=True, return_estimator=True, return_indices=True)
    theirs = skms.cross_validate(SVC(C=0.5), X_IRIS, Y_IRIS, **kw)
    ours = raygrid.cross_validate(SVC(C=0.5), X_IRIS, Y_IRIS, backend=backend, **kw)
    assert_cross_validate_equal(ours, theirs, X_IRIS)


def test_cross_validate_groups_and_params(backend):
    weights = np.linspace(0.1, 3.0, len(Y_IRIS))
    kw = dict(groups=GROUPS, cv=GroupKFold(5), params={"sample_weight": weights})
    theirs = skms.cross_validate(LogisticRegression(max_iter=500), X_IRIS, Y_IRIS, **kw)
    ours = raygrid.cross_validate(LogisticRegression(max_iter=500), X_IRIS, Y_IRIS,
                                  backend=backend, **kw)
    assert_cross_validate_equal(ours, theirs, X_IRIS)


def test_cross_validate_failures_follow_error_score(backend):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match="All the 3 fits failed"):
            raygrid.cross_validate(FailingClassifier(FailingClassifier.FAIL), X_IRIS, Y_IRIS,
                                   cv=3, backend=backend)
    with pytest.raises(FitBoom):
        raygrid.cross_validate(FailingClassifier(FailingClassifier.FAIL), X_IRIS, Y_IRIS, cv=3,
                               error_score="raise", backend=backend)


@pytest.mark.parametrize("scoring", [None, "neg_mean_absolute_error"])
def test_cross_val_score_matches_sklearn(scoring, backend):
    theirs = skms.cross_val_score(Ridge(alpha=0.5), X_REG, Y_REG, cv=5, scoring=scoring)
    ours = raygrid.cross_val_score(Ridge(alpha=0.5), X_REG, Y_REG, cv=5, scoring=scoring,
                                   backend=backend)
    np.testing.assert_array_equal(ours, theirs, strict=True)
