"""The report of a real search, as a reader sees it: sections, names, data, baseline, saved model."""
from __future__ import annotations

import json
import re

import joblib
import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

import raygrid


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    X, y = load_breast_cancer(return_X_y=True)
    X, y = X[::3], y[::3]
    pipe = Pipeline([("scaler", StandardScaler()), ("model", SVC())])
    grid = [{"model__kernel": ["rbf"], "model__C": [0.1, 1, 10], "model__gamma": ["scale", 0.01]},
            {"model__kernel": ["poly"], "model__degree": [2, 3], "model__C": [1]}]
    search = raygrid.GridSearchCV(pipe, grid, cv=3, scoring="accuracy", backend="serial").fit(X, y)
    out = tmp_path_factory.mktemp("report")
    paths = raygrid.save_search(search, out, X=X, y=y, data="breast_cancer (every third row)")
    return search, out, paths, X, y


def test_every_link_has_its_section(saved):
    _, out, _, _, _ = saved
    page = (out / "report.html").read_text()
    anchors = re.findall(r'href="#([^"]+)"', page)
    assert anchors and all(f'id="{a}"' in page for a in anchors), anchors
    assert 'href="#failures"' not in page  # no fit failed: no section, no link


def test_one_name_for_the_metric_and_prefixes_once(saved):
    _, out, _, _, _ = saved
    page = (out / "report.html").read_text()
    assert "mean test accuracy" in page and "mean test score" not in page
    assert "model__C" not in page.replace("<code>model__</code>", "")
    assert page.count("<code>model__</code>") == 1


def test_data_cv_and_baseline_are_named(saved):
    search, out, _, _, y = saved
    page = (out / "report.html").read_text()
    best = json.loads((out / "best.json").read_text())
    majority = max(np.mean(y), 1 - np.mean(y))
    assert best["baseline"]["mean_score"] == pytest.approx(majority, abs=0.02)
    assert best["baseline"]["clearly_beaten"] is True
    assert "StratifiedKFold(n_splits=3" in best["cv"] and "StratifiedKFold(n_splits=3" in page
    assert "breast_cancer (every third row)" in page and f"{len(y)} rows × 30 features" in page
    assert "DummyClassifier(strategy=&#x27;most_frequent&#x27;)" in page


def test_the_best_model_is_saved_and_named(saved):
    search, out, paths, X, _ = saved
    best = json.loads((out / "best.json").read_text())
    assert best["best_model"] == {"joblib": "best_model.joblib"} and "best_model.joblib" in paths
    model = joblib.load(out / "best_model.joblib")
    assert (model.predict(X) == search.best_estimator_.predict(X)).all()


def test_a_best_not_above_the_baseline_is_flagged(tmp_path):
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(90, 3)), rng.integers(0, 2, 90)  # labels unrelated to the features
    search = raygrid.GridSearchCV(SVC(), {"C": [0.01, 0.1]}, cv=3, backend="serial").fit(X, y)
    raygrid.save_search(search, tmp_path, X=X, y=y)
    assert json.loads((tmp_path / "best.json").read_text())["baseline"]["clearly_beaten"] is False
    assert "not clearly above the baseline" in (tmp_path / "report.html").read_text()


def test_nodes_are_named_by_host_and_ip(ray_local, tmp_path):
    X, y = load_breast_cancer(return_X_y=True)
    search = raygrid.GridSearchCV(SVC(), {"C": [0.1, 1]}, cv=2, backend="ray").fit(X[::4], y[::4])
    raygrid.save_search(search, tmp_path)
    nodes = json.loads((tmp_path / "best.json").read_text())["nodes"]
    ips = {n["NodeManagerAddress"] for n in ray_local.nodes() if n["Alive"]}
    assert set(nodes) == set(search.results_["node"]) and all(
        any(ip in name for ip in ips) for name in nodes.values()), nodes
    page = (tmp_path / "report.html").read_text()
    assert all(name in page for name in nodes.values())


def test_fits_run_in_this_process_are_the_drivers_node(ray_local):
    """The auto backend's first fits run in the driver's process ("local:<host>"), the rest on
    Ray: one machine, one node, named like every Ray node (host (IP) · short id). An id no Ray
    knows any more (a fit stored in an earlier session) is named by its short id, never shown
    as its 56 hex digits; the cap on parallelism is 1 for a search run wholly in this process."""
    import socket

    import pandas as pd

    from raygrid.cli.api import node_names, parallel_slots

    driver = ray_local.get_runtime_context().get_node_id()
    gone = "f" * 56
    results = pd.DataFrame({"node": [f"local:{socket.gethostname()}", driver, driver, gone]})
    names = node_names(results)
    assert names[f"local:{socket.gethostname()}"] == names[driver]
    assert names[driver].endswith(" · " + driver[:8]) and " (" in names[driver]
    assert names[gone] == "node ffffffff (earlier Ray session)"
    assert node_names(results, {gone: "host-b (10.0.0.2) · ffffffff"})[gone] == "host-b (10.0.0.2) · ffffffff"
    assert parallel_slots(results.iloc[:1]) == 1
    assert parallel_slots(results) == int(ray_local.cluster_resources()["CPU"])


def test_fits_in_parallel_never_exceed_the_slots():
    import pandas as pd

    from raygrid.outputs.sections import counts_section

    results = pd.DataFrame({"fit_time": [1.1, 1.1], "score_time": [0.5, 0.5], "node": ["a", "a"]})
    page = counts_section(results, pd.DataFrame(index=[0, 1]), {"wall_time": 1.0, "slots": 1})
    assert "fits in parallel (fit time ÷ wall time, at most 1)</th><td>1.00<" in page
    page = counts_section(results, pd.DataFrame(index=[0, 1]), {"wall_time": 2.0, "slots": 4})
    assert "at most 4)</th><td>1.10<" in page


@pytest.mark.slow
def test_report_screenshot_in_headless_chromium(saved, tmp_path):
    from browser import screenshot_and_check_images
    from PIL import Image

    _, out, _, _, _ = saved
    check = screenshot_and_check_images(out / "report.html", tmp_path / "report.png")
    assert check["ok"] and check["total"] == 4, check  # violins, heatmap, score vs time, nodes
    with Image.open(check["screenshot"]) as shot:
        assert shot.size == (1280, 2000)
        colours = shot.convert("RGB").getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 50  # a rendered page, not a blank one


def test_a_model_that_cannot_be_pickled_costs_only_its_file(tmp_path):
    from sklearn.base import BaseEstimator, ClassifierMixin

    class Unpicklable(ClassifierMixin, BaseEstimator):
        def __init__(self, c=1):
            self.c = c

        def fit(self, X, y):
            self.classes_ = np.unique(y)
            self.hook_ = lambda: None  # lambdas do not pickle
            return self

        def predict(self, X):
            return np.full(len(X), self.classes_[0])

    X, y = load_breast_cancer(return_X_y=True)
    search = raygrid.GridSearchCV(Unpicklable(), {"c": [1, 2]}, cv=2, backend="serial").fit(X[:40], y[:40])
    with pytest.warns(RuntimeWarning, match="could not be saved as best_model.joblib"):
        paths = raygrid.save_search(search, tmp_path, X=X[:40], y=y[:40])
    assert "report.html" in paths and not (tmp_path / "best_model.joblib").exists()
    assert not list(tmp_path.glob(".best_model*"))
    assert json.loads((tmp_path / "best.json").read_text())["best_model"] == {}


def test_a_baseline_that_cannot_be_computed_says_why(tmp_path):
    from sklearn.model_selection import GroupKFold

    X, y = load_breast_cancer(return_X_y=True)
    X, y, groups = X[:60], y[:60], np.arange(60) % 3
    search = raygrid.GridSearchCV(SVC(), {"C": [1, 2]}, cv=GroupKFold(3), backend="serial").fit(X, y, groups=groups)
    raygrid.save_search(search, tmp_path, X=X, y=y)  # no groups given: the splitter refuses
    baseline = json.loads((tmp_path / "best.json").read_text())["baseline"]
    assert "groups" in baseline["error"]
    assert "not computed: ValueError" in (tmp_path / "report.html").read_text()
