"""Warnings raised inside fits reach the driver on every backend (a Ray worker's would be lost)."""
import warnings

import pytest
from sklearn.datasets import load_iris
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

import raygrid


@pytest.mark.parametrize("backend", ["serial", "ray"])
def test_fit_warnings_reach_the_driver(backend, request):
    if backend == "ray":
        request.getfixturevalue("ray_local")
    X, y = load_iris(return_X_y=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        search = raygrid.GridSearchCV(LogisticRegression(max_iter=1), {"C": [1.0, 2.0]}, cv=2,
                                      backend=backend).fit(X, y)
    convergence = [w for w in caught if issubclass(w.category, ConvergenceWarning)]
    assert len(convergence) == 4 + 1  # every (candidate, fold) fit, then the refit
    assert search.results_["error"].isna().all()


def test_driver_filters_still_apply(ray_local):
    X, y = load_iris(return_X_y=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warnings.filterwarnings("ignore", category=ConvergenceWarning)
        raygrid.GridSearchCV(LogisticRegression(max_iter=1), {"C": [1.0]}, cv=2).fit(X, y)
    assert not [w for w in caught if issubclass(w.category, ConvergenceWarning)]


def test_unschedulable_resources_are_named(ray_local, monkeypatch):
    """Asking for a GPU on a cluster without one: an error naming it on a fixed cluster, a
    warning (the fits wait) where an autoscaler may add such a node."""
    from raygrid.engine.executors.ray import RayExecutor

    executor = RayExecutor(ray_remote_args={"num_cpus": 1, "num_gpus": 0.25})
    monkeypatch.setenv("RAYGRID_AUTOSCALING", "1")
    with pytest.warns(RuntimeWarning, match=r"GPU.*autoscaler"):
        executor.check_schedulable()
    monkeypatch.setenv("RAYGRID_AUTOSCALING", "0")
    with pytest.raises(ValueError, match=r"GPU.*never start"):
        executor.check_schedulable()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        RayExecutor(ray_remote_args={"num_cpus": 1}).check_schedulable()
