"""backend="auto": small searches run in this process, larger ones move to Ray; explicit backends win."""
from __future__ import annotations

import os

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer
from sklearn.model_selection import GridSearchCV as SkGridSearchCV
from sklearn.svm import SVC

import raygrid
from raygrid.engine.executors import auto
from raygrid.engine.executors.auto import choose_backend

X, y = load_breast_cancer(return_X_y=True)
X, y = X[::4], y[::4]
GRID = {"C": [0.1, 1, 10], "kernel": ["linear", "rbf"]}


@pytest.fixture
def ray_not_running(monkeypatch):
    monkeypatch.setattr(auto, "ray_is_running", lambda: False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)


def test_the_default_is_auto():
    assert raygrid.GridSearchCV(SVC(), GRID).backend == "auto"
    assert raygrid.RandomizedSearchCV(SVC(), GRID).backend == "auto"
    assert raygrid.HalvingGridSearchCV(SVC(), GRID).backend == "auto"


def test_explicit_backends_are_honoured(ray_not_running):
    assert choose_backend("ray") == "ray" and choose_backend("serial") == "serial"


def test_when_auto_goes_to_ray_at_once(ray_not_running, monkeypatch):
    assert choose_backend("auto") == "auto"
    assert choose_backend("auto", address="10.0.0.5:6379") == "ray"
    assert choose_backend("auto", keras=True) == "ray"
    monkeypatch.setenv("RAY_ADDRESS", "auto")
    assert choose_backend("auto") == "ray"
    monkeypatch.delenv("RAY_ADDRESS")
    monkeypatch.setenv(auto.BUDGET_ENV, "0")
    assert choose_backend("auto") == "ray"
    monkeypatch.setattr(auto, "ray_is_running", lambda: True)
    monkeypatch.delenv(auto.BUDGET_ENV)
    assert choose_backend("auto") == "ray"


def test_a_small_search_runs_in_this_process(ray_not_running, monkeypatch):
    monkeypatch.setenv(auto.BUDGET_ENV, "600")
    started = []
    monkeypatch.setattr(auto.AutoExecutor, "_start_ray", lambda self: started.append(1))
    search = raygrid.GridSearchCV(SVC(), GRID, cv=3).fit(X, y)
    assert not started and set(search.results_["pid"]) == {os.getpid()}
    reference = SkGridSearchCV(SVC(), GRID, cv=3).fit(X, y)
    assert search.best_params_ == reference.best_params_
    np.testing.assert_array_equal(search.cv_results_["mean_test_score"], reference.cv_results_["mean_test_score"])


def test_a_search_longer_than_the_budget_moves_to_ray(ray_local, ray_not_running, monkeypatch):
    monkeypatch.setenv(auto.BUDGET_ENV, "0.000001")
    search = raygrid.GridSearchCV(SVC(), GRID, cv=3).fit(X, y)
    local = search.results_["pid"] == os.getpid()
    assert local.sum() == 1, "the first fit alone exceeds the budget: every other fit runs on Ray"
    reference = SkGridSearchCV(SVC(), GRID, cv=3).fit(X, y)
    np.testing.assert_array_equal(search.cv_results_["mean_test_score"], reference.cv_results_["mean_test_score"])


def test_the_progress_line_says_where_fits_run(ray_not_running, monkeypatch):
    from raygrid.outputs.progress import SearchProgress

    monkeypatch.setenv(auto.BUDGET_ENV, "600")
    seen = []
    original = SearchProgress.add

    def spy(self, result, running=0, params=None):
        original(self, result, running, params)
        seen.append(self.render(200).plain)

    monkeypatch.setattr(SearchProgress, "add", spy)
    raygrid.cross_validate(SVC(), X, y, cv=3)
    assert seen and all("local: search < 600 s" in line for line in seen)
