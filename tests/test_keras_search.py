"""Keras models through raygrid's searches: Ray equals serial, seeds recorded, backends switch."""
import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.keras
ROOT = Path(__file__).resolve().parents[1]


def _pima_small(pima_csv, n=240):
    from sklearn.preprocessing import minmax_scale

    data = np.loadtxt(pima_csv, delimiter=",", skiprows=1)[:n]
    return minmax_scale(data[:, :8]), data[:, 8].astype(int)


def _grid_search(backend, X, y):
    import raygrid
    from raygrid.keras import seed_classifier

    grid = {"model__activation": ["tanh", "relu"], "epochs": [1, 2]}
    search = raygrid.GridSearchCV(seed_classifier(batch_size=32), grid, cv=2, scoring="accuracy",
                                  random_state=11, backend=backend, engine="standard")
    return search.fit(X, y)


def test_keras_grid_on_ray_equals_serial_with_seeds_recorded(ray_local, pima_csv):
    X, y = _pima_small(pima_csv)
    ray_search = _grid_search("ray", X, y)
    serial = _grid_search("serial", X, y)
    for key in ("mean_test_score", "std_test_score", "rank_test_score", "split0_test_score"):
        np.testing.assert_allclose(ray_search.cv_results_[key], serial.cv_results_[key], atol=1e-12)
    assert ray_search.best_params_ == serial.best_params_
    seeds = ray_search.results_["seed"]
    assert seeds.notna().all() and seeds.nunique() == len(seeds) == 8
    assert list(seeds) == list(serial.results_["seed"])
    # The refit is seeded too: the same predictions on both backends.
    np.testing.assert_array_equal(ray_search.predict_proba(X), serial.predict_proba(X))


def test_keras_classifier_is_stratified_through_raygrid(pima_csv):
    import raygrid
    from raygrid.keras import seed_classifier

    X, y = _pima_small(pima_csv, 120)
    scores = raygrid.cross_validate(seed_classifier(epochs=1), X, y, cv=3, scoring="roc_auc",
                                    backend="serial", random_state=0, return_indices=True)
    assert np.isfinite(scores["test_score"]).all()
    for test in scores["indices"]["test"]:  # StratifiedKFold: every fold has both classes in ratio
        assert abs(y[test].mean() - y.mean()) < 0.05


def _stock_classifier():
    from scikeras.wrappers import KerasClassifier

    from raygrid.keras import build_mlp

    return KerasClassifier(build_mlp, loss="binary_crossentropy", epochs=1, batch_size=32,
                           verbose=0, random_state=0)


def test_stock_scikeras_classifier_is_treated_as_a_classifier(pima_csv, monkeypatch):
    import warnings

    from sklearn.model_selection import StratifiedKFold

    import raygrid
    import raygrid.keras as rk

    X, y = _pima_small(pima_csv, 120)
    monkeypatch.setattr(raygrid._compat, "_warned", set())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(2):
            out = raygrid.cross_validate(_stock_classifier(), X, y, cv=3,
                                         scoring=["accuracy", "roc_auc"], backend="serial",
                                         return_indices=True)
    tag_warnings = [w for w in caught if "__sklearn_tags__" in str(w.message)]
    assert len(tag_warnings) == 1  # once per process
    assert "RAYGRID_STOCK_SCIKERAS_TAGS=sklearn" in str(tag_warnings[0].message)
    assert np.isfinite(out["test_roc_auc"]).all()
    want = [test for _, test in StratifiedKFold(3).split(X, y)]
    for got, expected in zip(out["indices"]["test"], want):
        np.testing.assert_array_equal(got, expected)
    # The search refits the tag-fixed class with the stock class's parameters.
    search = raygrid.GridSearchCV(_stock_classifier(), {"batch_size": [32]}, cv=3,
                                  scoring="roc_auc", backend="serial", engine="standard").fit(X, y)
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()
    assert type(search.best_estimator_) is rk.KerasClassifier
    assert search.best_estimator_.get_params()["steps_per_execution"] is None


def test_stock_scikeras_classifier_keeps_sklearn_behaviour_when_asked(pima_csv, monkeypatch):
    from sklearn.model_selection import KFold

    import raygrid

    X, y = _pima_small(pima_csv, 120)
    monkeypatch.setenv("RAYGRID_STOCK_SCIKERAS_TAGS", "sklearn")
    out = raygrid.cross_validate(_stock_classifier(), X, y, cv=3, scoring="roc_auc",
                                 backend="serial", return_indices=True)
    assert np.isnan(out["test_score"]).all()  # scikit-learn's own outcome with the stock class
    for got, (_, expected) in zip(out["indices"]["test"], KFold(3).split(X, y)):
        np.testing.assert_array_equal(got, expected)


def _example():
    spec = importlib.util.spec_from_file_location("pima_keras", ROOT / "examples" / "pima_keras.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_seed_example_quick_runs_end_to_end(ray_local, pima_csv, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    summary = _example().main(["--quick", "--data", str(pima_csv), "--out", str(tmp_path), "-v", "0"])
    printed = capsys.readouterr().out
    # The ranked table as `raygrid show` prints it, folded to the terminal: no 387-character rows.
    assert "top 4 of 4 candidates by mean test" in printed and "best configuration" in printed
    assert max(len(line) for line in printed.splitlines() if str(tmp_path) not in line) <= 80, printed
    assert summary["n_candidates"] == 4 and summary["n_fits"] == 12
    assert 0.0 <= summary["cv_accuracy"]["mean"] <= 1.0
    saved = json.loads((tmp_path / "study.json").read_text())
    assert saved["best_params"] == summary["best_params"]
    best = json.loads((tmp_path / "best.json").read_text())
    assert best["params"] == summary["best_params"] and best["n_fits"] == 12
    assert best["best_model"] == {"joblib": "best_model.joblib", "keras": "best_model.keras"}
    assert (tmp_path / "best_model.keras").stat().st_size > 0
    assert (tmp_path / "violin_per_param.png").stat().st_size > 0
    assert "data:image/png;base64," in (tmp_path / "report.html").read_text()
    assert len((tmp_path / "results.csv").read_text().strip().splitlines()) == 1 + 12


@pytest.mark.parametrize("backend", ["jax", "tensorflow"])
def test_keras_backend_reaches_ray_workers(backend, tmp_path):
    """KERAS_BACKEND set on the driver is what every Ray worker of the standard engine fits with
    (the fused engine's workers run Keras on JAX whatever the driver's backend)."""
    script = textwrap.dedent("""
        import json, sys
        import numpy as np
        import ray
        import raygrid
        from raygrid.keras import seed_classifier

        def backend_scorer(est, X, y):
            import keras
            return {"jax": 1.0, "tensorflow": 2.0, "torch": 3.0}[keras.backend.backend()]

        ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False)
        X = np.random.RandomState(0).rand(40, 4); y = (X[:, 0] > 0.5).astype(int)
        s = raygrid.GridSearchCV(seed_classifier(epochs=1), {"batch_size": [16]}, cv=2,
                                 scoring=backend_scorer, refit=False,
                                 engine="standard").fit(X, y)
        print(json.dumps({"scores": list(s.results_["test_score"]),
                          "driver_tf": "tensorflow" in sys.modules}))
        ray.shutdown()
    """)
    env = {**os.environ, "KERAS_BACKEND": backend, "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "disabled")}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env,
                          timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    expected = {"jax": 1.0, "tensorflow": 2.0}[backend]
    assert out["scores"] == [expected, expected]
    if backend == "jax":
        assert out["driver_tf"] is False
