"""Bad input fails early, on the driver, with a message that says what is wrong (both backends)."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import ray.cloudpickle
from sklearn import model_selection as skms
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.datasets import load_iris
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

import raygrid
from raygrid.engine.executors.cluster import probe

# Ray workers cannot import this test module by name: ship its classes by value.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

ROOT = Path(__file__).resolve().parents[1]
X, Y = load_iris(return_X_y=True)


class FitBoom(RuntimeError):
    pass


class LoudClassifier(ClassifierMixin, BaseEstimator):
    """Every fit leaves a file in ``log_dir`` (seen across processes) and counts itself, then
    raises: with ``error_score="raise"`` any fit that runs ends the search with FitBoom."""

    fits = 0

    def __init__(self, log_dir=None, parameter=0):
        self.log_dir = log_dir
        self.parameter = parameter

    def fit(self, X, y):
        type(self).fits += 1
        if self.log_dir:
            Path(self.log_dir, f"fit-{os.getpid()}-{time.monotonic_ns()}").touch()
        raise FitBoom("a fit ran")


def _no_fit_ran(log_dir: Path) -> bool:
    return LoudClassifier.fits == 0 and not any(log_dir.iterdir())


@pytest.fixture
def loud(tmp_path):
    LoudClassifier.fits = 0
    return LoudClassifier(log_dir=str(tmp_path))


# -- parameter names --------------------------------------------------------------------------
@pytest.mark.parametrize("grid", [
    {"parameter": [1, 2], "bogus": [0]},
    [{"parameter": [1, 2]}, {"bogus": [0, 1]}],  # a later sub-grid: still checked before fit 1
])
def test_unknown_parameter_fails_before_any_fit(grid, loud, tmp_path, backend):
    search = raygrid.GridSearchCV(loud, grid, cv=3, error_score="raise", backend=backend)
    with pytest.raises(ValueError, match="Invalid parameter 'bogus'") as info:
        search.fit(X, Y)
    message = str(info.value)
    assert "LoudClassifier" in message
    assert "Valid parameters are: ['log_dir', 'parameter']" in message
    assert _no_fit_ran(tmp_path)


def test_unknown_nested_parameter_lists_the_valid_keys(backend):
    pipe = Pipeline([("scale", StandardScaler()), ("svc", SVC())])
    search = raygrid.GridSearchCV(pipe, {"svc__C": [1.0], "svc__bogus": [1]}, cv=3,
                                  backend=backend)
    with pytest.raises(ValueError, match="Invalid parameter 'svc__bogus'") as info:
        search.fit(X, Y)
    assert "'svc__C'" in str(info.value) and "'scale__with_mean'" in str(info.value)


def test_unknown_parameter_in_distributions(loud, tmp_path, backend):
    search = raygrid.RandomizedSearchCV(loud, {"bogus": [1, 2, 3]}, n_iter=2, random_state=0,
                                        cv=3, error_score="raise", backend=backend)
    with pytest.raises(ValueError, match="Invalid parameter 'bogus' in param_distributions"):
        search.fit(X, Y)
    assert _no_fit_ran(tmp_path)


# -- empty spaces -----------------------------------------------------------------------------
def test_empty_grid_list(loud, tmp_path, backend):
    with pytest.raises(ValueError, match="param_grid yields no candidates"):
        raygrid.GridSearchCV(loud, [], cv=3, backend=backend).fit(X, Y)
    assert _no_fit_ran(tmp_path)


def test_empty_parameter_values(loud, tmp_path, backend):
    with pytest.raises(ValueError, match="'C' need to be a non-empty sequence"):
        raygrid.GridSearchCV(SVC(), {"C": []}, cv=3, backend=backend).fit(X, Y)


def test_randomized_search_with_no_iterations(loud, tmp_path, backend):
    with pytest.raises(ValueError, match="no candidates|n_iter"):
        raygrid.RandomizedSearchCV(loud, {"parameter": [1, 2]}, n_iter=0, cv=3,
                                   backend=backend).fit(X, Y)
    assert _no_fit_ran(tmp_path)


# -- data -------------------------------------------------------------------------------------
def test_x_and_y_of_different_lengths(loud, tmp_path, backend):
    with pytest.raises(ValueError, match=r"inconsistent numbers of samples: \[150, 100\]"):
        raygrid.GridSearchCV(loud, {"parameter": [1]}, cv=3, backend=backend).fit(X, Y[:100])
    with pytest.raises(ValueError, match=r"inconsistent numbers of samples: \[150, 100\]"):
        raygrid.cross_validate(loud, X, Y[:100], cv=3, backend=backend)
    assert _no_fit_ran(tmp_path)


def test_groups_of_a_different_length(backend):
    with pytest.raises(ValueError, match=r"inconsistent numbers of samples: \[150, 150, 10\]"):
        raygrid.GridSearchCV(SVC(), {"C": [1.0]}, cv=skms.GroupKFold(3),
                             backend=backend).fit(X, Y, groups=np.arange(10))


# -- scoring ----------------------------------------------------------------------------------
@pytest.mark.parametrize("scoring", ["acuracy", ["accuracy", "acuracy"], {"a": "acuracy"}])
def test_unknown_scoring_name_suggests_the_right_one(scoring, loud, tmp_path, backend):
    refit = "accuracy" if isinstance(scoring, list) else ("a" if isinstance(scoring, dict) else True)
    with pytest.raises(ValueError, match=r"Unknown scoring 'acuracy'\. Did you mean 'accuracy'"):
        raygrid.GridSearchCV(loud, {"parameter": [1]}, scoring=scoring, refit=refit, cv=3,
                             backend=backend).fit(X, Y)
    with pytest.raises(ValueError, match="Unknown scoring 'acuracy'"):
        raygrid.cross_val_score(loud, X, Y, scoring="acuracy", cv=3, backend=backend)
    assert _no_fit_ran(tmp_path)


@pytest.mark.parametrize("refit", [True, "f1_macro"])
def test_multimetric_with_a_bad_refit_is_sklearns_error(refit, loud, tmp_path, backend):
    scoring = ["accuracy", "balanced_accuracy"]
    with pytest.raises(ValueError) as theirs:
        skms.GridSearchCV(SVC(), {"C": [1.0]}, scoring=scoring, refit=refit).fit(X, Y)
    with pytest.raises(ValueError) as ours:
        raygrid.GridSearchCV(loud, {"parameter": [1]}, scoring=scoring, refit=refit,
                             backend=backend).fit(X, Y)
    assert str(ours.value) == str(theirs.value)
    assert _no_fit_ran(tmp_path)


def test_cross_val_score_rejects_several_metrics():
    with pytest.raises(ValueError, match="one metric"):
        raygrid.cross_val_score(SVC(), X, Y, scoring=["accuracy", "f1_macro"], backend="serial")


def test_refit_callable_must_return_an_index():
    search = raygrid.GridSearchCV(SVC(), {"C": [0.1, 1.0]}, refit=lambda cv: "best", cv=3,
                                  backend="serial")
    with pytest.raises(TypeError, match="best_index_ returned is not an integer"):
        search.fit(X, Y)
    search.set_params(refit=lambda cv: 5)
    with pytest.raises(IndexError, match="best_index_ index out of range"):
        search.fit(X, Y)


# -- options ----------------------------------------------------------------------------------
def test_unknown_backend(loud, tmp_path):
    with pytest.raises(ValueError, match=r"backend must be one of \('auto', 'ray', 'serial'\), got 'dask'"):
        raygrid.GridSearchCV(loud, {"parameter": [1]}, backend="dask").fit(X, Y)
    with pytest.raises(ValueError, match="'dask'"):
        raygrid.cross_validate(loud, X, Y, backend="dask")
    assert _no_fit_ran(tmp_path)


@pytest.mark.parametrize("error_score", ["ignore", None])
def test_bad_error_score(error_score, loud, tmp_path):
    with pytest.raises(ValueError, match="error_score must be 'raise' or a number"):
        raygrid.GridSearchCV(loud, {"parameter": [1]}, error_score=error_score,
                             backend="serial").fit(X, Y)
    with pytest.raises(ValueError, match="error_score must be 'raise' or a number"):
        raygrid.cross_validate(loud, X, Y, error_score=error_score, backend="serial")
    assert _no_fit_ran(tmp_path)


def test_cv_without_splits(backend):
    with pytest.raises(ValueError, match="no train/test splits"):
        raygrid.GridSearchCV(SVC(), {"C": [1.0]}, cv=[], backend=backend).fit(X, Y)


# -- an unreachable cluster -------------------------------------------------------------------
@pytest.mark.parametrize("address", ["127.0.0.1:1", "ray://127.0.0.1:1"])
def test_probe_fails_fast_naming_the_address(address):
    start = time.monotonic()
    with pytest.raises(ConnectionError) as info:
        probe(address)
    assert time.monotonic() - start < 10
    assert repr(address) in str(info.value)
    assert "127.0.0.1:1" in str(info.value)


def test_probe_accepts_auto_and_local():
    probe("auto")
    probe("local")


SEARCH_WITH_ADDRESS = textwrap.dedent("""
    import os, sys, time
    import numpy as np
    import ray
    from sklearn.svm import SVC
    import raygrid
    X = np.random.RandomState(0).rand(30, 2); y = np.arange(30) % 2
    for via in ("address", "RAY_ADDRESS"):
        address = None
        if via == "address":
            address = "127.0.0.1:1"
        else:
            os.environ["RAY_ADDRESS"] = "127.0.0.1:1"
        start = time.monotonic()
        try:
            raygrid.GridSearchCV(SVC(), {"C": [1.0]}, cv=3, address=address).fit(X, y)
        except ConnectionError as exc:
            print(f"{via} {time.monotonic() - start:.2f} {exc}".replace("\\n", " "))
        else:
            sys.exit(f"{via}: no ConnectionError")
        assert not ray.is_initialized(), "a failed connect must not start a local Ray"
""")


def test_search_with_an_unreachable_address_in_a_fresh_interpreter():
    """A fresh interpreter, so that the session's Ray stays untouched (connect() uses a Ray that
    runs already): both ``address=`` and ``RAY_ADDRESS`` fail fast, naming the address."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.run([sys.executable, "-c", SEARCH_WITH_ADDRESS], capture_output=True,
                          text=True, timeout=120, cwd=ROOT, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert [ln.split()[0] for ln in lines] == ["address", "RAY_ADDRESS"]
    for line in lines:
        _, seconds, message = line.split(" ", 2)
        assert float(seconds) < 10
        assert "'127.0.0.1:1'" in message
