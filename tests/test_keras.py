"""raygrid.keras: tag-fixed scikeras wrappers, worker hygiene (fit_context) and backends.

Every fit here is tiny (a few dozen rows, 1-2 epochs) and serial; no Ray.
"""
import importlib.util
import json
import os
import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from sklearn.base import clone, is_classifier, is_regressor
from sklearn.datasets import make_classification
from sklearn.ensemble import BaggingClassifier, VotingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import (
    GridSearchCV,
    KFold,
    ParameterGrid,
    StratifiedKFold,
    check_cv,
    cross_val_score,
)
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from raygrid.keras import fit_context, keras_backend, uses_keras

pytest.importorskip("scikeras")

pytestmark = pytest.mark.keras

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def data():
    X, y = make_classification(
        n_samples=60, n_features=6, n_informative=4, class_sep=2.0, random_state=0
    )
    return X.astype("float32"), y


def tiny(**kwargs):
    from raygrid.keras import seed_classifier

    params = dict(epochs=2, batch_size=16, model__hidden=(4,))
    params.update(kwargs)
    return seed_classifier(**params)


# ---------------------------------------------------------------------------------------
# Tags
# ---------------------------------------------------------------------------------------
def test_classifier_tags_make_sklearn_stratify(data):
    from raygrid.keras import KerasClassifier

    _, y = data
    clf = KerasClassifier(model=lambda: None)
    assert is_classifier(clf) and not is_regressor(clf)
    assert isinstance(check_cv(3, y, classifier=is_classifier(clf)), StratifiedKFold)
    tags = clf.__sklearn_tags__()
    assert tags.estimator_type == "classifier" and tags.target_tags.required


def test_regressor_tags():
    from raygrid.keras import KerasRegressor

    reg = KerasRegressor(model=lambda: None)
    assert is_regressor(reg) and not is_classifier(reg)
    y = np.linspace(0, 1, 30)
    assert isinstance(check_cv(3, y, classifier=is_classifier(reg)), KFold)
    assert reg.__sklearn_tags__().target_tags.required


def test_roc_auc_is_finite_with_sklearn_cross_val_score(data):
    X, y = data
    scores = cross_val_score(tiny(), X, y, cv=3, scoring="roc_auc", error_score="raise")
    assert scores.shape == (3,) and np.all(np.isfinite(scores))


# ---------------------------------------------------------------------------------------
# Parameters, clone, pickling
# ---------------------------------------------------------------------------------------
def test_clone_round_trips_routed_params():
    est = tiny(optimizer__learning_rate=0.01, fit__shuffle=False, model__activation="tanh")
    params = est.get_params()
    assert params["model__hidden"] == (4,)
    assert params["optimizer__learning_rate"] == 0.01
    assert params["fit__shuffle"] is False
    assert params["steps_per_execution"] == "auto"
    twin = clone(est)
    assert type(twin) is type(est)
    assert twin.get_params() == params
    assert isinstance(twin.get_params()["model__hidden"], tuple)

    twin.set_params(model__activation="sigmoid", optimizer="sgd", batch_size=8, epochs=1,
                    model__init="uniform", steps_per_execution=None)
    again = clone(twin).get_params()
    assert again["model__activation"] == "sigmoid" and again["optimizer"] == "sgd"
    assert again["batch_size"] == 8 and again["steps_per_execution"] is None
    assert est.get_params()["model__activation"] == "tanh"  # the original is untouched


def test_seed_grid_applies_to_clones():
    grid = {
        "model__activation": ["tanh", "relu", "sigmoid"],
        "optimizer": ["rmsprop", "adam", "sgd"],
        "model__init": ["glorot_uniform", "normal", "uniform"],
        "batch_size": [8, 16, 64],
        "epochs": [5, 10, 25],
    }
    est = tiny()
    candidates = list(ParameterGrid(grid))
    assert len(candidates) == 243
    for params in candidates[::40]:
        got = clone(est).set_params(**params).get_params()
        assert {k: got[k] for k in params} == params


def test_sklearn_grid_search_runs(data):
    X, y = data
    search = GridSearchCV(tiny(epochs=1), {"optimizer": ["adam", "sgd"]}, cv=2,
                          refit=False, error_score="raise")
    search.fit(X, y)
    assert np.all(np.isfinite(search.cv_results_["mean_test_score"]))
    assert search.best_params_["optimizer"] in {"adam", "sgd"}


def test_pickles_by_reference():
    from raygrid.keras import KerasClassifier

    est = tiny()
    back = pickle.loads(pickle.dumps(est))
    assert type(back) is KerasClassifier
    assert back.get_params()["model__hidden"] == (4,)


# ---------------------------------------------------------------------------------------
# uses_keras and fit_context
# ---------------------------------------------------------------------------------------
def test_uses_keras():
    from raygrid.keras import KerasClassifier

    keras_clf = tiny()
    assert uses_keras(keras_clf)
    assert uses_keras(Pipeline([("scale", StandardScaler()), ("clf", keras_clf)]))
    assert uses_keras(VotingClassifier([("lr", LogisticRegression()), ("k", keras_clf)]))
    assert uses_keras(BaggingClassifier(estimator=keras_clf))
    assert not uses_keras(LogisticRegression())
    assert not uses_keras(Pipeline([("scale", StandardScaler()), ("lr", LogisticRegression())]))
    assert not uses_keras(KerasClassifier)  # the class itself is not a model
    assert not uses_keras(None)
    assert not uses_keras("KerasClassifier")


def test_fit_context_leaves_plain_estimators_alone():
    est = LogisticRegression()
    with fit_context(est, seed=3, num_cpus=1) as inside:
        assert inside is est
    assert est.random_state is None


def test_fit_context_seeds_pipeline_step_and_repeats(data):
    X, y = data

    def make():
        return Pipeline([("scale", StandardScaler()), ("clf", tiny())])

    probas = []
    for _ in range(2):
        pipe = make()
        with fit_context(pipe, seed=7, num_cpus=1):
            assert pipe.named_steps["clf"].random_state == 7
            pipe.fit(X, y)
            probas.append(pipe.predict_proba(X))
    np.testing.assert_array_equal(probas[0], probas[1])

    top = tiny()
    with fit_context(top, seed=11):
        assert top.random_state == 11


def test_fit_context_clears_session_even_when_fit_fails(monkeypatch):
    import keras

    calls = []
    monkeypatch.setattr(keras.backend, "clear_session", lambda *a, **k: calls.append(1))
    with pytest.raises(RuntimeError, match="boom"):
        with fit_context(tiny(), seed=1, num_cpus=1):
            raise RuntimeError("boom")
    assert calls == [1]


def test_fit_context_caps_threads_once():
    import raygrid.keras as rk

    with fit_context(tiny(), num_cpus=1):
        pass
    assert "threads" in rk.setup_log  # recorded once per process, whatever the outcome
    first = dict(rk.setup_log)
    with fit_context(tiny(), num_cpus=2):
        pass
    assert rk.setup_log == first


# ---------------------------------------------------------------------------------------
# steps_per_execution (training only)
# ---------------------------------------------------------------------------------------
def test_steps_per_execution_changes_no_result(data):
    X, y = data
    base = tiny(random_state=0, steps_per_execution=None, batch_size=8).fit(X, y)
    fast = tiny(random_state=0, batch_size=8).fit(X, y)  # "auto"
    assert fast._resolved_steps_per_execution() > 1
    for a, b in zip(base.model_.get_weights(), fast.model_.get_weights()):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(base.predict_proba(X), fast.predict_proba(X))
    # Prediction keeps Keras' one-step path.
    assert fast.model_.steps_per_execution == 1


def test_steps_per_execution_is_used_in_fit(data):
    import keras

    X, y = data

    class CountBatches(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.n = 0

        def on_train_batch_end(self, batch, logs=None):
            self.n += 1

    # 60 rows, batch 6: 10 steps per epoch, run 4 at a time -> 3 calls per epoch.
    counter = CountBatches()
    tiny(epochs=1, batch_size=6, steps_per_execution=4, callbacks=[counter]).fit(X, y)
    assert counter.n == 3
    # With callbacks, "auto" keeps one step per call so batch-level hooks fire every batch.
    counter = CountBatches()
    auto = tiny(epochs=1, batch_size=6, callbacks=[counter])
    auto.fit(X, y)
    assert counter.n == 10 and auto._resolved_steps_per_execution() == 1
    with pytest.raises(ValueError, match="steps_per_execution"):
        tiny(steps_per_execution=0).fit(X, y)


# ---------------------------------------------------------------------------------------
# Model reuse (fit_context(reuse_models=True), TensorFlow)
# ---------------------------------------------------------------------------------------
def _pooled_fit(est, X, y, seed, reuse=True):
    with fit_context(est, seed=seed, reuse_models=reuse):
        est.fit(X, y)
        proba = est.predict_proba(X)
    return est, [v.numpy().copy() for v in est.model_.variables], proba


@pytest.fixture
def empty_pool():
    from raygrid.keras import model_pool

    model_pool.clear()
    yield model_pool
    model_pool.clear()


@pytest.mark.skipif(keras_backend() != "tensorflow", reason="model reuse is TensorFlow-only")
@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_reused_model_fits_are_bit_identical_to_new_ones(data, empty_pool, optimizer):
    X, y = data
    params = dict(optimizer=optimizer, model__activation="tanh", batch_size=8)
    # Fill the pool with a model of this structure, trained on other rows with another seed,
    # initialiser and batch size (none of which the pooled model may carry over).
    first, _, _ = _pooled_fit(tiny(**params, model__init="normal"), X[:40], y[:40], seed=7)
    hits = empty_pool.hits
    for seed in (0, 1):
        _, fresh_w, fresh_p = _pooled_fit(tiny(**params), X, y, seed, reuse=False)
        reused, reused_w, reused_p = _pooled_fit(tiny(**params), X, y, seed)
        assert reused.model_ is first.model_  # trained on the pooled model, not a new one
        for a, b in zip(fresh_w, reused_w):
            np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(fresh_p, reused_p)
        assert empty_pool.hits == hits + seed + 1
    # Reuse also skips tracing: the pooled model keeps its traced prediction function.
    before = first.model_.predict_function
    _pooled_fit(tiny(**params), X, y, seed=2)
    assert first.model_.predict_function is before


@pytest.mark.skipif(keras_backend() != "tensorflow", reason="model reuse is TensorFlow-only")
def test_models_are_reused_only_where_safe(data, empty_pool, monkeypatch):
    import keras

    X, y = data
    _pooled_fit(tiny(), X, y, seed=0)
    assert len(empty_pool) == 1
    # A different structure (activation, optimizer, layer sizes) gets its own model.
    for other in (dict(model__activation="tanh"), dict(optimizer="sgd"), dict(model__hidden=(3,))):
        _pooled_fit(tiny(**other), X, y, seed=0)
    assert len(empty_pool) == 4 and empty_pool.hits == 0
    # Without reuse_models (a kept estimator), with warm_start, or switched off: never pooled.
    kept, _, _ = _pooled_fit(tiny(), X, y, seed=0, reuse=False)
    warm = tiny(warm_start=True)
    _pooled_fit(warm, X, y, seed=0)
    warm_model = warm.model_
    _pooled_fit(warm, X, y, seed=0)  # trains on its own model again
    assert warm.model_ is warm_model
    monkeypatch.setenv("RAYGRID_KERAS_REUSE", "0")
    off, _, _ = _pooled_fit(tiny(), X, y, seed=0)
    monkeypatch.delenv("RAYGRID_KERAS_REUSE")
    pooled = [m for m in empty_pool._idle.values()]
    assert all(m is not kept.model_ and m is not off.model_ for m in pooled)
    # A model with a layer of the user's own is never pooled (its config may not say it all).

    class Scale(keras.layers.Layer):
        def call(self, x):
            return 2.0 * x

    def custom(meta, **_):
        return keras.Sequential([keras.Input((meta["n_features_in_"],)), Scale(),
                                 keras.layers.Dense(1, activation="sigmoid")])

    n = len(empty_pool)
    _pooled_fit(tiny(model=custom), X, y, seed=0)
    _pooled_fit(tiny(model=custom), X, y, seed=0)
    assert len(empty_pool) == n


@pytest.mark.skipif(keras_backend() != "tensorflow", reason="model reuse is TensorFlow-only")
def test_search_results_do_not_depend_on_model_reuse(data, empty_pool, monkeypatch):
    import raygrid

    X, y = data
    grid = {"optimizer": ["adam", "sgd"], "batch_size": [8, 16]}

    def search():
        return raygrid.GridSearchCV(tiny(), grid, cv=3, backend="serial", random_state=0,
                                    refit=False).fit(X, y)

    reused = search()
    assert empty_pool.hits >= 8  # 12 fits of 2 structures
    monkeypatch.setenv("RAYGRID_KERAS_REUSE", "0")
    fresh = search()
    for key in ("mean_test_score", "std_test_score", "split0_test_score", "split2_test_score"):
        np.testing.assert_array_equal(reused.cv_results_[key], fresh.cv_results_[key])
    # cross_validate(return_estimator=True) keeps every estimator: each has its own model.
    out = raygrid.cross_validate(tiny(), X, y, cv=3, backend="serial", return_estimator=True)
    assert len({id(est.model_) for est in out["estimator"]}) == 3


# ---------------------------------------------------------------------------------------
# build_mlp
# ---------------------------------------------------------------------------------------
def test_build_mlp_shapes():
    from raygrid.keras import build_mlp

    binary = build_mlp({"n_features_in_": 8, "n_classes_": 2}, hidden=(12, 8), activation="tanh")
    assert [layer.units for layer in binary.layers] == [12, 8, 1]
    assert binary.layers[-1].activation.__name__ == "sigmoid"
    assert not binary.compiled
    multi = build_mlp({"n_features_in_": 4, "n_classes_": 3}, hidden=(5,))
    assert multi.layers[-1].units == 3 and multi.layers[-1].activation.__name__ == "softmax"
    reg = build_mlp({"n_features_in_": 4, "n_outputs_expected_": 1}, hidden=(5,))
    assert reg.layers[-1].units == 1


# ---------------------------------------------------------------------------------------
# Imports and backends (fresh interpreters)
# ---------------------------------------------------------------------------------------
def _run(code: str, backend: str | None) -> dict:
    env = dict(os.environ)
    env.pop("KERAS_BACKEND", None)
    if backend:
        env["KERAS_BACKEND"] = backend
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=240,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_import_is_light():
    got = _run(
        """
        import json, sys
        import raygrid
        from raygrid.keras import fit_context, uses_keras
        from sklearn.linear_model import LogisticRegression
        with fit_context(LogisticRegression(), seed=1, num_cpus=1):
            pass
        heavy = [m for m in ("scikeras", "keras", "tensorflow", "jax", "torch") if m in sys.modules]
        print(json.dumps({"heavy": heavy, "uses": uses_keras(LogisticRegression())}))
        """,
        backend=None,
    )
    assert got == {"heavy": [], "uses": False}


FIT_IN_SUBPROCESS = """
    import json, sys
    import numpy as np
    import keras
    from raygrid.keras import fit_context, keras_backend, seed_classifier
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 4)).astype("float32")
    y = (X[:, 0] > 0).astype(int)
    probas = []
    for _ in range(2):
        clf = seed_classifier(epochs=1, batch_size=8, model__hidden=(4,))
        with fit_context(clf, seed=5, num_cpus=1):
            clf.fit(X, y)
            probas.append(clf.predict_proba(X))
    print(json.dumps({
        "backend": keras.backend.backend(),
        "reported": keras_backend(),
        "tensorflow_imported": "tensorflow" in sys.modules,
        "repeatable": bool(np.array_equal(probas[0], probas[1])),
    }))
"""


def test_jax_backend_never_imports_tensorflow():
    if importlib.util.find_spec("jax") is None:
        pytest.skip("jax is not installed")
    got = _run(FIT_IN_SUBPROCESS, backend="jax")
    assert got == {"backend": "jax", "reported": "jax", "tensorflow_imported": False,
                   "repeatable": True}


def test_tensorflow_backend():
    if importlib.util.find_spec("tensorflow") is None:
        pytest.skip("tensorflow is not installed")
    got = _run(FIT_IN_SUBPROCESS, backend="tensorflow")
    assert got == {"backend": "tensorflow", "reported": "tensorflow",
                   "tensorflow_imported": True, "repeatable": True}


def test_keras_backend_reads_config_without_importing(tmp_path, monkeypatch):
    # As if Keras were not imported yet: the answer comes from the environment or keras.json.
    monkeypatch.delitem(sys.modules, "keras", raising=False)
    monkeypatch.delenv("KERAS_BACKEND", raising=False)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    assert keras_backend() == "tensorflow"  # Keras' default
    (tmp_path / "keras.json").write_text(json.dumps({"backend": "jax"}))
    assert keras_backend() == "jax"
    monkeypatch.setenv("KERAS_BACKEND", "torch")
    assert keras_backend() == "torch"
