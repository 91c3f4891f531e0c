"""Keras training options on the fused engine, against the standard engine's own fits.

EarlyStopping (a loss or a metric, on validation_split or validation_data, patience,
restore_best_weights, baseline, start_from_epoch), validation_split, class_weight and
sample_weight train fused; other callbacks fall back with the reason. Every search here runs
each candidate with one epochs value, so both engines train each fit from the same seed and
Keras' own fit (the standard engine) is the oracle, fit by fit: the same scores up to float
rounding (at most one test row of a fold flips) and the same stop epochs.

The checks run in subprocesses with ``KERAS_BACKEND=jax`` (see tests/test_fused.py).
"""
from __future__ import annotations

import numpy as np
import pytest

from test_fused import JaxScript

COMMON = """
import keras
from keras.callbacks import EarlyStopping
X = minmax_scale(data[:, :8]); y = data[:, 8].astype(int)
cv = StratifiedKFold(3)
GRID = {"model__activation": ["tanh", "relu"]}


def both(estimator, fit_params=None, grid=GRID):
    '''The same search on each engine: per-fit scores, stop epochs, engines, warnings.'''
    out = {}
    for engine in ("fused", "standard"):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            s = GridSearchCV(estimator, grid, cv=cv, backend="serial", engine=engine,
                             random_state=0, refit=False).fit(X, y, **(fit_params or {}))
        r = s.results_
        out[engine] = {
            "scores": r["test_score"].tolist(),
            "means": s.cv_results_["mean_test_score"].tolist(),
            "stops": (r["stopped_epoch"].astype(float).tolist() if "stopped_epoch" in r
                      else None),
            "engines": sorted(set(r["engine"])), "errors": int(r["error"].notna().sum()),
            "seeds": r["seed"].astype(float).tolist(),
            "warnings": [str(w.message) for w in caught if "fused engine" in str(w.message)],
        }
    return out


def classifier(**kw):
    return seed_classifier(**{"batch_size": 32, "optimizer__learning_rate": 0.01, **kw})
"""

STOPPING = COMMON + """
out = {}
# 1. The issue's case: EarlyStopping on val_loss with validation_split, restoring the best.
out["val_loss"] = both(classifier(epochs=6, validation_split=0.2, callbacks=[
    EarlyStopping(monitor="val_loss", patience=1, restore_best_weights=True)]))
# 2. A training metric (mode "auto": accuracy goes up), with class weights.
out["accuracy"] = both(classifier(epochs=6, metrics=["accuracy"], class_weight="balanced",
                                  callbacks=[EarlyStopping(monitor="accuracy", patience=1)]))
# 3. Shorter fits read off a longer lane: the weights Keras' fit of that many epochs ends
#    with (best restored at its end), checked against scikeras' own fit with the lane's seed.
es = EarlyStopping(monitor="val_loss", patience=3, restore_best_weights=True)
est = classifier(validation_split=0.25, callbacks=[es])
s = GridSearchCV(est, {"epochs": [2, 7]}, cv=cv, backend="serial", engine="fused",
                 random_state=0, refit=False).fit(X, y)
short = s.results_[s.results_["param_epochs"] == 2]
own = []
for _, row in short.iterrows():
    train, test = list(cv.split(X, y))[int(row["fold"])]
    e = clone(est).set_params(epochs=2, random_state=int(row["seed"])).fit(X[train], y[train])
    own.append([float(row["test_score"]), float(e.score(X[test], y[test])),
                int(row["stopped_epoch"]), len(e.history_["loss"])])
out["shared_lane"] = {"engines": sorted(set(s.results_["engine"])), "own": own}
print(json.dumps(out))
"""

WEIGHTS = COMMON + """
from keras.callbacks import ReduceLROnPlateau
out = {}
rng = np.random.default_rng(0)
sw = rng.uniform(0.2, 2.0, len(y))
sw[rng.random(len(y)) < 0.1] = 0.0  # scikeras drops rows of weight 0
# 4. class_weight (the Pima data is imbalanced) with validation_split alone, small batches
#    (a short last batch in each fold).
out["class_weight"] = both(classifier(epochs=2, batch_size=10, validation_split=0.33,
                                      class_weight={0: 1.0, 1: 1.87}))
# 5. sample_weight (a fit parameter, split per fold) with validation_split, EarlyStopping on a
#    validation metric in mode "max" with a baseline and a warm-up.
out["sample_weight"] = both(
    classifier(epochs=6, metrics=["accuracy"], validation_split=0.3, callbacks=[
        EarlyStopping(monitor="val_accuracy", mode="max", patience=2, baseline=0.7,
                      start_from_epoch=1)]), {"sample_weight": sw})
# 6. validation_data given to fit.
out["validation_data"] = both(
    classifier(epochs=5, callbacks=[EarlyStopping(monitor="val_loss", patience=0,
                                                  min_delta=0.002)]),
    {"validation_data": (X[:100], y[:100])})
# 7. Other callbacks stay on the standard engine, saying why.
out["other_callback"] = both(classifier(epochs=2, callbacks=[ReduceLROnPlateau()]))
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def scripts(pima_csv):
    started = {"stopping": JaxScript(STOPPING, pima_csv, timeout=400),
               "weights": JaxScript(WEIGHTS, pima_csv, timeout=400)}
    yield started
    for script in started.values():
        if script.proc.poll() is None:
            script.proc.kill()
            script.proc.communicate()


def _agree(case: dict, stops: bool) -> None:
    fused, std = case["fused"], case["standard"]
    assert fused["engines"] == ["fused"] and std["engines"] == ["standard"]
    assert fused["errors"] == std["errors"] == 0
    assert fused["seeds"] == std["seeds"]  # the same fits, from the same seeds
    # Means within 0.03 (the bar); fit by fit, at most one test row of 256 flips.
    np.testing.assert_allclose(fused["means"], std["means"], atol=0.03)
    np.testing.assert_allclose(fused["scores"], std["scores"], atol=1 / 256 + 1e-9)
    if stops:
        assert fused["stops"] is not None and std["stops"] is not None
        assert sum(a != b for a, b in zip(fused["stops"], std["stops"])) <= 1, (
            fused["stops"], std["stops"])
    else:
        assert fused["stops"] is None and std["stops"] is None


@pytest.mark.keras
def test_early_stopping_trains_fused_and_stops_each_lane_like_keras(scripts):
    out = scripts["stopping"].result()
    for name in ("val_loss", "accuracy"):
        _agree(out[name], stops=True)
        assert not out[name]["fused"]["warnings"]
    # Lanes stop on their own: some stopped before the last epoch, not all at the same one.
    stops = out["val_loss"]["fused"]["stops"]
    assert min(stops) < 6 and len(set(stops)) > 1 and all(1 <= s <= 6 for s in stops)
    # A shorter fit read off a lane is what Keras' fit of that many epochs gives.
    shared = out["shared_lane"]
    assert shared["engines"] == ["fused"]
    for fused_score, own_score, fused_stop, own_stop in shared["own"]:
        assert abs(fused_score - own_score) <= 1 / 256 + 1e-9
        assert fused_stop == own_stop


@pytest.mark.keras
def test_weights_and_validation_train_fused_like_the_standard_engine(scripts):
    out = scripts["weights"].result()
    _agree(out["class_weight"], stops=False)
    _agree(out["sample_weight"], stops=True)
    _agree(out["validation_data"], stops=True)
    for name in ("class_weight", "sample_weight", "validation_data"):
        assert not out[name]["fused"]["warnings"], out[name]["fused"]["warnings"]
    other = out["other_callback"]
    assert other["fused"]["engines"] == ["standard"] and other["fused"]["errors"] == 0
    assert any("callback ReduceLROnPlateau is not supported by the fused engine" in w
               for w in other["fused"]["warnings"]), other["fused"]["warnings"]
    np.testing.assert_allclose(other["fused"]["scores"], other["standard"]["scores"])


def test_training_options_are_read_without_keras():
    from raygrid.engine.fused.options import NotFusable, lane_rows, parse

    class EarlyStopping:  # stands for a callback of another library: not Keras' own
        monitor, min_delta, patience = "val_loss", 0.0, 1
        restore_best_weights = False

    with pytest.raises(NotFusable, match="callback EarlyStopping is not supported"):
        parse({"callbacks": [EarlyStopping()]})
    with pytest.raises(NotFusable, match="validation_freq"):
        parse({"validation_freq": 2})
    with pytest.raises(NotFusable, match="fit parameter groups"):
        parse({}, {"groups": np.zeros(4)})
    opts = parse({"epochs": 3, "validation_split": 0.25, "class_weight": {0: 1.0, 1: 3.0}})
    assert opts.validates and opts.weighted and opts.epochs == 3
    # Keras holds out the LAST rows (before shuffling); scikeras drops rows of weight 0 first
    # and multiplies the sample weights by the class weights.
    rows = lane_rows(np.arange(10, 20), np.array([0, 1] * 5), opts,
                     {"class_weight": {0: 1.0, 1: 3.0}},
                     sample_weight=np.array([1, 1, 0, 1, 1, 1, 1, 1, 2, 1], float))
    np.testing.assert_array_equal(rows.train, [10, 11, 13, 14, 15, 16])
    np.testing.assert_array_equal(rows.val, [17, 18, 19])
    np.testing.assert_allclose(rows.train_weight, [1, 3, 3, 1, 3, 1])
    np.testing.assert_allclose(rows.val_weight, [3, 2, 3])
    with pytest.raises(NotFusable, match="no training or"):
        lane_rows(np.arange(3), np.zeros(3), parse({"validation_split": 0.9}), {})
