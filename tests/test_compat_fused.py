"""The private APIs of Keras, scikeras and scikit-learn that the fused engine uses, reached
through raygrid/_compat.py: each probe finds them in the versions installed, and where a probe
says one moved the fused engine falls back (the fits run on the standard engine with the reason,
or are scored without the shortcut, or a warning says what may be wrong) instead of breaking.
"""
from __future__ import annotations

import copy
import sys
import warnings

import numpy as np
import pytest

from raygrid import _compat


# -- the probes themselves -----------------------------------------------------------------------
def test_scorer_parts_of_scikit_learn_scorers():
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, check_scoring, make_scorer, mean_squared_error

    est = LogisticRegression()
    parts = _compat.sklearn_scorer_parts(check_scoring(est, scoring="accuracy"))
    assert parts == {"passthrough": False, "score_func": accuracy_score, "kwargs": {},
                     "sign": 1, "response_method": "predict"}
    assert _compat.sklearn_scorer_parts(check_scoring(est)) == {"passthrough": True}
    neg = _compat.sklearn_scorer_parts(make_scorer(mean_squared_error, greater_is_better=False))
    assert neg["sign"] == -1 and neg["score_func"] is mean_squared_error
    assert _compat.sklearn_scorer_parts(lambda e, X, y: 1.0) is None  # a plain callable
    # A scikit-learn whose _Scorer lost one of the fields: unknown, not a crash.
    changed = copy.copy(check_scoring(est, scoring="accuracy"))
    del changed._sign
    assert _compat.sklearn_scorer_parts(changed) is None


def test_keras_and_scikeras_probes_say_when_the_private_api_is_missing():
    class Bare:
        pass

    bare = Bare()
    assert _compat.keras_flat_layers(bare) is None
    assert _compat.keras_compile_config(bare) is None
    assert _compat.keras_compile_built(bare) is None
    assert _compat.scikeras_compile_kwargs(bare) is None
    assert _compat.scikeras_compile(bare) is False

    class OtherSignature:
        def _flatten_layers(self):  # a version whose method takes other arguments
            return []

    assert _compat.keras_flat_layers(OtherSignature()) is None


@pytest.mark.keras
def test_keras_probes_read_a_compiled_model():
    import keras

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, activation="relu"),
                              keras.layers.Dense(1)])
    model.compile(optimizer="adam", loss="mse", loss_weights=[0.5])
    flat = _compat.keras_flat_layers(model)
    assert [layer for layer in flat if isinstance(layer, keras.layers.Dense)] == model.layers
    assert _compat.keras_compile_config(model)["loss_weights"] == [0.5]
    assert _compat.keras_compile_built(model) is False  # fit builds the loss on a first batch
    model.fit(np.zeros((4, 3)), np.zeros((4, 1)), verbose=0)
    assert _compat.keras_compile_built(model) is True
    assert _compat.keras_initializer_seeded(keras.initializers.RandomUniform(seed=3)) is True
    assert _compat.keras_initializer_seeded(keras.initializers.RandomUniform()) is False


@pytest.mark.keras
def test_keras_forget_missing_tensorflow_resets_a_remembered_no(monkeypatch):
    from keras.src.utils import module_utils  # where this Keras keeps its lazy modules

    monkeypatch.setattr(module_utils.tensorflow, "_available", False)
    assert _compat.keras_forget_missing_tensorflow() is True
    assert module_utils.tensorflow._available is None  # Keras will look again
    monkeypatch.setattr(module_utils, "tensorflow", object())  # a Keras that changed it
    assert _compat.keras_forget_missing_tensorflow() is False


# -- the fused engine when a probe says the private API moved ------------------------------------
@pytest.mark.parametrize("known", [True, False])
def test_without_tensorflow_warns_only_when_keras_lazy_module_moved(monkeypatch, known):
    from raygrid.engine.fused import runtime

    monkeypatch.setattr(runtime, "keras_forget_missing_tensorflow", lambda: known)
    monkeypatch.delitem(sys.modules, "tensorflow", raising=False)  # restored after the test
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with runtime.without_tensorflow():
            assert sys.modules["tensorflow"] is None  # an import fails fast in here
    assert "tensorflow" not in sys.modules
    moved = [w for w in caught if "lazy TensorFlow module" in str(w.message)]
    assert len(moved) == (0 if known else 1)
    if moved:
        assert moved[0].category is RuntimeWarning


@pytest.mark.keras
def test_accuracy_shortcut_is_dropped_when_the_scorer_fields_moved(monkeypatch):
    from sklearn.metrics import check_scoring

    from raygrid.engine.fitting import Payload
    from raygrid.engine.fused import scoring
    from raygrid.keras import seed_classifier

    est = seed_classifier()
    payload = Payload(estimator=est, X=np.zeros((4, 8)), y=np.array([0, 1, 0, 1]), splits=[],
                      scorer=check_scoring(est, scoring="accuracy"), metrics=("score",),
                      keras=True)
    assert scoring._is_accuracy(payload, est)
    monkeypatch.setattr(scoring, "sklearn_scorer_parts", lambda scorer: None)
    assert not scoring._is_accuracy(payload, est)  # the search's scorer is called per trial


FALLBACKS = """
import json, sys, warnings
import numpy as np
from sklearn.preprocessing import minmax_scale
from raygrid import GridSearchCV
from raygrid.engine import fused
from raygrid.engine.fused import members, scoring, unit
from raygrid.keras import seed_classifier

data = np.loadtxt(sys.argv[1], delimiter=",", skiprows=1)[:160]
X = minmax_scale(data[:, :8]); y = data[:, 8].astype(int)


def search(grid, engine="fused"):
    unit._members_cache.clear()  # models built by an earlier search of the same data: built again
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        s = GridSearchCV(seed_classifier(epochs=1, batch_size=32), grid, cv=2, scoring="accuracy",
                         backend="serial", engine=engine, random_state=0, refit=False).fit(X, y)
    r = s.results_.sort_values(["candidate", "fold"])
    stats = fused.last_stats() if engine == "fused" else []
    return {"scores": r["test_score"].tolist(), "engines": r["engine"].tolist(),
            "errors": int(r["error"].notna().sum()),
            "vectorised": [st["vectorised_scoring"] for st in stats],
            "warnings": [str(w.message) for w in caught if "on the fused engine" in str(w.message)]}


ACTS = {"model__activation": ["tanh", "relu"]}
OPTS = {"optimizer": ["adam", "rmsprop"]}
out = {"fused": search(ACTS), "standard": search(ACTS, "standard"),
       "fused_opts": search(OPTS), "standard_opts": search(OPTS, "standard")}


def patched(module, name, value, grid):
    saved = getattr(module, name)
    setattr(module, name, value)
    try:
        return search(grid)
    finally:
        setattr(module, name, saved)


out["scorer_moved"] = patched(scoring, "sklearn_scorer_parts", lambda scorer: None, ACTS)
for name, gone in [("keras_flat_layers", None), ("keras_compile_config", None),
                   ("keras_compile_built", None), ("keras_initializer_seeded", None),
                   ("scikeras_compile", False)]:
    out[name] = patched(members, name, lambda *a, gone=gone: gone, ACTS)
out["scikeras_compile_kwargs"] = patched(members, "scikeras_compile_kwargs", lambda est: None,
                                         OPTS)
print(json.dumps(out))
"""


@pytest.mark.keras
def test_fused_search_falls_back_when_a_private_api_moved(pima_csv):
    """Each probe patched to say its private API is gone: the fits still come back, from the
    standard engine with the reason naming what moved (or, for the scorer, the same scores
    without the vectorised shortcut)."""
    from test_fused import JaxScript

    out = JaxScript(FALLBACKS, pima_csv, timeout=400).result()
    fused, standard = out["fused"], out["standard"]
    assert fused["engines"] == ["fused"] * 4 and fused["vectorised"] == [True]
    assert standard["engines"] == ["standard"] * 4
    # One epoch: each lane trains with its trial's own seed, as the standard engine does.
    np.testing.assert_allclose(fused["scores"], standard["scores"], atol=1 / 80 + 1e-9)

    moved = out["scorer_moved"]
    assert moved["engines"] == ["fused"] * 4 and moved["vectorised"] == [False]
    assert moved["scores"] == fused["scores"] and not moved["warnings"]

    named = {"keras_flat_layers": "Layer._flatten_layers",
             "keras_compile_config": "Model._compile_config",
             "keras_compile_built": "Model._compile_loss",
             "keras_initializer_seeded": "RandomInitializer._init_seed",
             "scikeras_compile": "BaseWrapper._ensure_compiled_model"}
    for probe, private in named.items():
        run = out[probe]
        assert run["engines"] == ["standard"] * 4, probe
        assert run["errors"] == 0 and run["scores"] == standard["scores"], probe
        assert len(run["warnings"]) == 1 and private in run["warnings"][0], (probe, run)
        assert "4 fits" in run["warnings"][0]

    # Candidates that differ in the optimizer share one built model and take their optimizer
    # from scikeras' compile arguments; without them, those lanes run on the standard engine.
    opts, reference = out["scikeras_compile_kwargs"], out["standard_opts"]
    assert out["fused_opts"]["engines"] == ["fused"] * 4
    assert opts["engines"].count("standard") == 2 and opts["engines"].count("fused") == 2
    assert len(opts["warnings"]) == 1
    assert "BaseWrapper._get_compile_kwargs" in opts["warnings"][0]
    standard_rows = [i for i, e in enumerate(opts["engines"]) if e == "standard"]
    assert [opts["scores"][i] for i in standard_rows] == [reference["scores"][i]
                                                         for i in standard_rows]
    assert opts["errors"] == 0 and all(0.3 < s <= 1.0 for s in opts["scores"])
