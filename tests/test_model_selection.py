"""cross_val_predict, learning_curve, validation_curve and permutation_test_score: the same
results as scikit-learn's for the same inputs and seeds, on both backends."""
import sys
import warnings

import numpy as np
import pytest
import ray
import sklearn.model_selection as skms
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.datasets import load_iris, make_regression
from sklearn.exceptions import FitFailedWarning
from sklearn.linear_model import LogisticRegression, Ridge, SGDClassifier, SGDRegressor
from sklearn.model_selection import GroupKFold, KFold, StratifiedKFold
from sklearn.neighbors import KNeighborsClassifier
from sklearn.svm import SVC

import raygrid

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # doubles reach the workers

X_IRIS, Y_IRIS = load_iris(return_X_y=True)
X_REG, Y_REG = make_regression(n_samples=80, n_features=5, noise=5.0, random_state=0)
GROUPS = np.arange(len(Y_IRIS)) % 6
WEIGHTS = np.linspace(0.5, 2.0, len(Y_IRIS))


class FitBoom(RuntimeError):
    """What FailingClassifier raises: the exception must reach the caller as is."""


class FailingClassifier(ClassifierMixin, BaseEstimator):
    """Predicts by a threshold on feature 0; ``fit`` raises FitBoom when ``parameter == FAIL``
    (and, with ``fail_below``, when given fewer training rows than that)."""

    FAIL = -1

    def __init__(self, parameter=0.0, fail_below=0):
        self.parameter = parameter
        self.fail_below = fail_below

    def fit(self, X, y):
        X = np.asarray(X)
        if self.parameter == self.FAIL or len(X) < self.fail_below:
            raise FitBoom("Failing classifier failed as required")
        self.classes_ = np.unique(y)
        self.threshold_ = float(np.median(X[:, 0])) + self.parameter
        return self

    def predict(self, X):
        return np.where(np.asarray(X)[:, 0] > self.threshold_, self.classes_[-1], self.classes_[0])


def assert_all_equal(ours, theirs):
    assert type(ours) is type(theirs)
    if isinstance(theirs, tuple):
        assert len(ours) == len(theirs)
        for a, b in zip(ours, theirs):
            assert_all_equal(a, b)
    else:
        np.testing.assert_array_equal(ours, theirs, strict=True)


def both(name, *args, backend, **kw):
    """scikit-learn's function ``name`` and raygrid's on the same arguments."""
    return getattr(raygrid, name)(*args, backend=backend, **kw), getattr(skms, name)(*args, **kw)


# -- cross_val_predict --------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["predict", "predict_proba", "predict_log_proba",
                                    "decision_function"])
def test_cross_val_predict_methods(method, backend):
    ours, theirs = both("cross_val_predict", LogisticRegression(max_iter=500), X_IRIS, Y_IRIS,
                        cv=StratifiedKFold(4, shuffle=True, random_state=0), method=method,
                        backend=backend)
    assert_all_equal(ours, theirs)


def test_cross_val_predict_regressor_groups_and_params(backend):
    ours, theirs = both("cross_val_predict", Ridge(alpha=0.3), X_REG, Y_REG, cv=KFold(4),
                        backend=backend)
    assert_all_equal(ours, theirs)
    ours, theirs = both("cross_val_predict", LogisticRegression(max_iter=500), X_IRIS, Y_IRIS,
                        groups=GROUPS, cv=GroupKFold(3), params={"sample_weight": WEIGHTS},
                        method="predict_proba", backend=backend)
    assert_all_equal(ours, theirs)


def test_cross_val_predict_classes_missing_from_a_fold(backend):
    # A fourth class only in the first rows: the first training fold of KFold(5) lacks it.
    y = np.array(["setosa", "versicolor", "virginica", "rare"])[np.where(
        np.arange(len(Y_IRIS)) < 10, 3, Y_IRIS)]
    for method in ("predict_proba", "predict_log_proba", "decision_function"):
        with pytest.warns(RuntimeWarning, match="Number of classes in training fold"):
            ours = raygrid.cross_val_predict(LogisticRegression(max_iter=500), X_IRIS, y,
                                             cv=KFold(5), method=method, backend=backend)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            theirs = skms.cross_val_predict(LogisticRegression(max_iter=500), X_IRIS, y,
                                            cv=KFold(5), method=method)
        assert_all_equal(ours, theirs)


def test_cross_val_predict_multilabel_outputs(backend):
    Y = np.column_stack([Y_IRIS, Y_IRIS % 2])
    ours, theirs = both("cross_val_predict", KNeighborsClassifier(), X_IRIS, Y, cv=3,
                        method="predict_proba", backend=backend)
    assert isinstance(theirs, list) and isinstance(ours, list) and len(ours) == len(theirs) == 2
    for a, b in zip(ours, theirs):
        np.testing.assert_array_equal(a, b, strict=True)


def test_cross_val_predict_failures(backend):
    with pytest.raises(FitBoom):
        raygrid.cross_val_predict(FailingClassifier(FailingClassifier.FAIL), X_IRIS, Y_IRIS,
                                  cv=3, backend=backend)
    with pytest.raises(ValueError, match="only works for partitions"):
        raygrid.cross_val_predict(Ridge(), X_REG, Y_REG, backend=backend,
                                  cv=skms.ShuffleSplit(3, test_size=0.2, random_state=0))


# -- learning_curve -----------------------------------------------------------------------------
def test_learning_curve_classifier_shuffle_and_times(backend):
    kw = dict(cv=StratifiedKFold(3, shuffle=True, random_state=1), train_sizes=[0.3, 0.6, 1.0],
              shuffle=True, random_state=4, return_times=True)
    ours, theirs = both("learning_curve", SVC(C=0.7), X_IRIS, Y_IRIS, backend=backend, **kw)
    assert len(ours) == len(theirs) == 5
    assert_all_equal(ours[:3], theirs[:3])
    for a, b in zip(ours[3:], theirs[3:]):  # fit and score times: shape only
        assert a.shape == b.shape and np.all(a >= 0)


def test_learning_curve_regressor_groups_and_scoring(backend):
    ours, theirs = both("learning_curve", Ridge(alpha=0.5), X_REG, Y_REG, cv=GroupKFold(4),
                        groups=np.arange(80) % 8, train_sizes=[10, 25, 40],
                        scoring="neg_mean_absolute_error", backend=backend)
    assert_all_equal(ours, theirs)


@pytest.mark.parametrize("estimator", [SGDClassifier(max_iter=5, tol=None, random_state=0),
                                       SGDRegressor(max_iter=5, tol=None, random_state=0)])
def test_learning_curve_incremental(estimator, backend):
    X, y = (X_IRIS, Y_IRIS) if isinstance(estimator, SGDClassifier) else (X_REG, Y_REG)
    ours, theirs = both("learning_curve", estimator, X, y, cv=3, train_sizes=[0.2, 0.5, 0.8, 1.0],
                        exploit_incremental_learning=True, shuffle=True, random_state=2,
                        backend=backend)
    assert_all_equal(ours, theirs)


def test_learning_curve_failing_fits(backend):
    estimator = FailingClassifier(fail_below=60)  # the small training sets fail
    kw = dict(cv=3, train_sizes=[30, 60, 100])
    with pytest.warns(FitFailedWarning, match="3 fits failed out of a total of 9"):
        ours = raygrid.learning_curve(estimator, X_IRIS, Y_IRIS, error_score=-5.0,
                                      backend=backend, **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FitFailedWarning)
        theirs = skms.learning_curve(estimator, X_IRIS, Y_IRIS, error_score=-5.0, **kw)
    assert_all_equal(ours, theirs)
    assert (ours[1][0] == -5.0).all()
    with pytest.raises(FitBoom):
        raygrid.learning_curve(estimator, X_IRIS, Y_IRIS, error_score="raise", backend=backend,
                               **kw)
    with pytest.raises(ValueError, match="partial_fit interface"):
        raygrid.learning_curve(SVC(), X_IRIS, Y_IRIS, exploit_incremental_learning=True,
                               backend=backend)


# -- validation_curve ---------------------------------------------------------------------------
def test_validation_curve_classifier_and_regressor(backend):
    ours, theirs = both("validation_curve", SVC(), X_IRIS, Y_IRIS, param_name="C",
                        param_range=[0.01, 0.3, 3.0], cv=4, backend=backend)
    assert_all_equal(ours, theirs)
    ours, theirs = both("validation_curve", Ridge(), X_REG, Y_REG, param_name="alpha",
                        param_range=np.logspace(-2, 2, 4), cv=GroupKFold(4),
                        groups=np.arange(80) % 5, scoring="r2", backend=backend)
    assert_all_equal(ours, theirs)


def test_validation_curve_failing_fits_score_error_score(backend):
    kw = dict(param_name="parameter", param_range=[0.0, FailingClassifier.FAIL, 0.5], cv=3,
              error_score=0.25)
    ours, theirs = both("validation_curve", FailingClassifier(), X_IRIS, Y_IRIS, backend=backend,
                        **kw)
    assert_all_equal(ours, theirs)
    assert (ours[1][1] == 0.25).all()
    scorer = {"scoring": lambda est, X, y: float(np.mean(est.predict(X) == y))}
    ours, theirs = both("validation_curve", FailingClassifier(), X_IRIS, Y_IRIS, backend=backend,
                        **kw, **scorer)
    assert_all_equal(ours, theirs)
    with pytest.raises(FitBoom):
        raygrid.validation_curve(FailingClassifier(), X_IRIS, Y_IRIS, backend=backend,
                                 **{**kw, "error_score": "raise"})


# -- permutation_test_score ---------------------------------------------------------------------
def test_permutation_test_score_classifier_with_groups(backend):
    ours, theirs = both("permutation_test_score", LogisticRegression(max_iter=500), X_IRIS,
                        Y_IRIS, groups=GROUPS, cv=StratifiedKFold(3), n_permutations=8,
                        random_state=5, backend=backend)
    assert_all_equal(ours, theirs)


def test_permutation_test_score_regressor_and_scoring(backend):
    kw = dict(cv=4, n_permutations=6, scoring="neg_mean_squared_error")
    ours = raygrid.permutation_test_score(Ridge(alpha=1.0), X_REG, Y_REG, backend=backend,
                                          random_state=np.random.RandomState(3), **kw)
    theirs = skms.permutation_test_score(Ridge(alpha=1.0), X_REG, Y_REG,
                                         random_state=np.random.RandomState(3), **kw)
    assert_all_equal(ours, theirs)


def test_permutation_test_score_failures(backend):
    with pytest.raises(FitBoom):
        raygrid.permutation_test_score(FailingClassifier(FailingClassifier.FAIL), X_IRIS, Y_IRIS,
                                       cv=3, n_permutations=3, backend=backend)
    with pytest.raises(ValueError, match="n_permutations"):
        raygrid.permutation_test_score(Ridge(), X_REG, Y_REG, n_permutations=0, backend=backend)
    for name in ("learning_curve", "permutation_test_score"):
        with pytest.raises(ValueError, match="takes one metric"):
            getattr(raygrid, name)(Ridge(), X_REG, Y_REG, scoring=["r2", "max_error"],
                                   backend=backend)


# -- the fit store ------------------------------------------------------------------------------
def test_store_reuses_fits_and_tells_permutations_apart(tmp_path):
    kw = dict(cv=3, n_permutations=4, backend="serial", storage=tmp_path / "fits")
    first = raygrid.permutation_test_score(Ridge(), X_REG, Y_REG, random_state=0, **kw)
    again = raygrid.permutation_test_score(Ridge(), X_REG, Y_REG, random_state=0, **kw)
    other = raygrid.permutation_test_score(Ridge(), X_REG, Y_REG, random_state=1, **kw)
    assert_all_equal(again, first)
    assert_all_equal(other, skms.permutation_test_score(Ridge(), X_REG, Y_REG, cv=3,
                                                        n_permutations=4, random_state=1))
    for _ in range(2):  # predictions are not stored: the rerun fits again
        predicted = raygrid.cross_val_predict(Ridge(), X_REG, Y_REG, cv=3, backend="serial",
                                              storage=tmp_path / "fits")
        assert_all_equal(predicted, skms.cross_val_predict(Ridge(), X_REG, Y_REG, cv=3))
    curve = raygrid.learning_curve(SGDClassifier(random_state=0), X_IRIS, Y_IRIS, cv=3,
                                   exploit_incremental_learning=True, backend="serial",
                                   storage=tmp_path / "fits", train_sizes=[0.5, 1.0])
    assert_all_equal(curve, skms.learning_curve(SGDClassifier(random_state=0), X_IRIS, Y_IRIS,
                                                cv=3, exploit_incremental_learning=True,
                                                train_sizes=[0.5, 1.0]))


# -- metadata routing ---------------------------------------------------------------------------
ROUTED = {
    "cross_val_predict": dict(method="predict_proba"),
    "learning_curve": dict(train_sizes=[0.5, 1.0]),
    "learning_curve-incremental": dict(train_sizes=[0.5, 1.0], exploit_incremental_learning=True),
    "validation_curve": dict(param_name="alpha", param_range=[1e-4, 1e-2]),
    "permutation_test_score": dict(n_permutations=3),
}


@pytest.mark.parametrize("case", list(ROUTED))
def test_routed_metadata_gives_scikit_learn_results(case, backend):
    from sklearn import config_context
    from sklearn.metrics import accuracy_score, make_scorer

    name = case.split("-")[0]
    weights = np.linspace(0.2, 3.0, len(Y_IRIS))
    params = dict(fit_weights=weights, split_groups=GROUPS)
    kw = dict(ROUTED[case])
    with config_context(enable_metadata_routing=True):
        if name != "cross_val_predict":
            kw["scoring"] = make_scorer(accuracy_score).set_score_request(sample_weight="score_w")
            params["score_w"] = weights[::-1].copy()

        def estimator():
            return (SGDClassifier(loss="log_loss", random_state=0)
                    .set_fit_request(sample_weight="fit_weights")
                    .set_partial_fit_request(sample_weight="fit_weights"))

        cv = GroupKFold(3).set_split_request(groups="split_groups")
        ours = getattr(raygrid, name)(estimator(), X_IRIS, Y_IRIS, cv=cv, params=params,
                                      backend=backend, **kw)
        theirs = getattr(skms, name)(estimator(), X_IRIS, Y_IRIS, cv=cv, params=params, **kw)
    assert_all_equal(ours, theirs)


# -- Keras: the fused engine --------------------------------------------------------------------
FUSED_SCRIPT = """
import json, sys, warnings
import numpy as np
from sklearn.model_selection import StratifiedKFold
from sklearn.preprocessing import minmax_scale
import raygrid
from raygrid.keras import seed_classifier

data = np.loadtxt(sys.argv[1], delimiter=",", skiprows=1)[:240]
X, y = minmax_scale(data[:, :8]), data[:, 8].astype(int)
out = {}
for engine in ("fused", "standard"):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        perm = raygrid.permutation_test_score(
            seed_classifier(epochs=2, batch_size=16), X, y, cv=StratifiedKFold(3),
            n_permutations=3, random_state=0, backend="serial", engine=engine)
        curve = raygrid.learning_curve(
            seed_classifier(epochs=2, batch_size=16), X, y, cv=StratifiedKFold(3),
            train_sizes=[0.5, 1.0], random_state=0, backend="serial", engine=engine)
    out[engine] = {"score": float(perm[0]), "permutation_scores": perm[1].tolist(),
                   "curve_test": curve[2].tolist(),
                   "left_out": [str(w.message) for w in caught if "fused" in str(w.message)]}
print(json.dumps(out))
"""


def test_keras_permutations_and_curve_sizes_train_fused(pima_csv):
    """The fused engine trains every permutation on its own permuted targets and every size on
    its own rows: its scores are the standard engine's (same seeds, Keras on JAX), up to float
    rounding."""
    import json
    import os
    import subprocess
    from pathlib import Path

    pytest.importorskip("scikeras")
    pytest.importorskip("jax")
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, KERAS_BACKEND="jax", TF_CPP_MIN_LOG_LEVEL="3",
               PYTHONPATH=str(root) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", FUSED_SCRIPT, str(pima_csv)], cwd=root, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = json.loads([line for line in proc.stdout.splitlines() if line.startswith("{")][-1])
    fused, standard = out["fused"], out["standard"]
    assert fused["left_out"] == [], fused["left_out"]
    one_row = 1 / 80  # a test fold has 80 rows: scores may differ by a row's rounding
    assert abs(fused["score"] - standard["score"]) <= one_row
    np.testing.assert_allclose(fused["permutation_scores"], standard["permutation_scores"],
                               atol=one_row)
    np.testing.assert_allclose(fused["curve_test"], standard["curve_test"], atol=one_row)
    # Each permutation was trained on its own targets, not on y.
    assert len(set(np.round(fused["permutation_scores"], 6))) > 1
