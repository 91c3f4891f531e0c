"""raygrid._compat's scikeras / TensorFlow / scikit-learn-scorer probes: when a private API raygrid
uses is gone or changed, the feature that needs it falls back (with a warning once) instead of
breaking. Each test takes the private API away and checks the fallback."""
import warnings

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import get_scorer

from raygrid import _compat
from raygrid.engine.scoring import resolve_scoring, search_score_params


@pytest.fixture
def fresh_warnings(monkeypatch):
    """Every once-per-process warning of these probes may fire again in the test."""
    monkeypatch.setattr(_compat, "_warned", set())


def _no_warning(func, *args):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return func(*args)


# -- scikit-learn scorers' _accept_sample_weight ------------------------------------------------
@pytest.fixture
def scorers_without_accept(monkeypatch, fresh_warnings):
    """scikit-learn's scorers as if ``_accept_sample_weight`` were gone from every class of them."""
    for scorer in (get_scorer("accuracy"), resolve_scoring(LogisticRegression(), None).scorer):
        for klass in type(scorer).__mro__:
            if "_accept_sample_weight" in vars(klass):
                monkeypatch.delattr(klass, "_accept_sample_weight")
    _compat._scorers_say_sample_weight.cache_clear()
    yield
    monkeypatch.undo()
    _compat._scorers_say_sample_weight.cache_clear()


def test_scorers_answer_with_the_private_api():
    _compat._scorers_say_sample_weight.cache_clear()
    assert _compat.scorer_accepts_sample_weight(get_scorer("accuracy")) is True
    assert _compat.scorer_accepts_sample_weight(get_scorer("roc_auc")) is True
    assert _compat.scorer_accepts_sample_weight(lambda est, X, y: 0.0) is None  # not sklearn's
    scoring = resolve_scoring(LogisticRegression(), "accuracy")
    weight = np.ones(4)
    params = _no_warning(search_score_params, scoring, {"sample_weight": weight}, "search")
    assert params["sample_weight"] is weight


def test_scorers_without_the_private_api_score_unweighted(scorers_without_accept):
    assert not hasattr(get_scorer("accuracy"), "_accept_sample_weight")
    with pytest.warns(RuntimeWarning, match="do not say whether they accept sample_weight"):
        assert _compat.scorer_accepts_sample_weight(get_scorer("accuracy")) is False
    # Once per process; a plain callable is still judged by its signature.
    assert _no_warning(_compat.scorer_accepts_sample_weight, get_scorer("roc_auc")) is False
    assert _no_warning(_compat.scorer_accepts_sample_weight, lambda est, X, y: 0.0) is None

    weight = np.ones(4)
    for scoring in ("accuracy", ["accuracy", "roc_auc"], None):
        resolved = resolve_scoring(LogisticRegression(), scoring, refit=False)
        with pytest.warns(UserWarning, match="does not support sample_weight"):
            assert search_score_params(resolved, {"sample_weight": weight}, "search") == {}
    # A callable scorer that names sample_weight still gets it.
    def weighted(est, X, y, sample_weight=None):
        return 0.0
    resolved = resolve_scoring(LogisticRegression(), weighted)
    assert search_score_params(resolved, {"sample_weight": weight}, "search")["sample_weight"] is weight


# -- TensorFlow's op-determinism switch --------------------------------------------------------
@pytest.fixture
def tf_config():
    pytest.importorskip("tensorflow")
    from tensorflow.python.framework import config

    _compat._tf_determinism_config.cache_clear()
    yield config
    _compat._tf_determinism_config.cache_clear()


def test_op_determinism_switch_is_used_when_present(tf_config):
    before = tf_config.is_op_determinism_enabled()
    tf_config.enable_op_determinism()
    try:
        assert _compat.tf_op_determinism_enabled() is True
        _compat.tf_disable_op_determinism()
        assert tf_config.is_op_determinism_enabled() is False
        assert _compat.tf_op_determinism_enabled() is False
    finally:
        (tf_config.enable_op_determinism if before else tf_config.disable_op_determinism)()


def test_op_determinism_switch_gone_falls_back(tf_config, monkeypatch, fresh_warnings):
    from raygrid.keras import hygiene

    monkeypatch.delattr(tf_config, "disable_op_determinism")
    _compat._tf_determinism_config.cache_clear()
    assert _compat.tf_op_determinism_enabled() is None
    # Whether determinism is on then comes from TensorFlow's environment switch.
    monkeypatch.setenv("TF_DETERMINISTIC_OPS", "1")
    assert hygiene._op_determinism_enabled() is True
    monkeypatch.delenv("TF_DETERMINISTIC_OPS")
    assert hygiene._op_determinism_enabled() is False
    with pytest.warns(RuntimeWarning, match="Random ops require a seed"):
        _compat.tf_disable_op_determinism()
    _no_warning(_compat.tf_disable_op_determinism)  # once per process
    assert tf_config.is_op_determinism_enabled() is False  # left as it was, nothing broke


# -- scikeras' training step (BaseWrapper._fit_keras_model) ------------------------------------
@pytest.fixture
def base_wrapper():
    pytest.importorskip("scikeras")
    from scikeras.wrappers import BaseWrapper

    _compat._scikeras_training_step.cache_clear()
    yield BaseWrapper
    _compat._scikeras_training_step.cache_clear()


def test_training_hook_is_installed_for_the_known_step(base_wrapper):
    from raygrid.keras import KerasClassifier, KerasRegressor

    assert _compat.scikeras_training_hooks() == (_compat.ScikerasTrainingHook,)
    for klass in (KerasClassifier, KerasRegressor):
        assert issubclass(klass, _compat.ScikerasTrainingHook)
        assert klass._fit_keras_model is _compat.ScikerasTrainingHook._fit_keras_model


def test_training_step_gone_means_no_hook(base_wrapper, monkeypatch):
    monkeypatch.delattr(base_wrapper, "_fit_keras_model")
    _compat._scikeras_training_step.cache_clear()
    assert _compat.scikeras_training_hooks() == ()


def test_changed_training_step_trains_as_scikeras_does(base_wrapper, monkeypatch):
    """A scikeras whose training step takes other parameters: raygrid's classes override
    nothing, so steps_per_execution is not applied (one step per call), with a warning once."""
    import keras

    from raygrid.keras import build_mlp, wrappers

    original = base_wrapper._fit_keras_model

    def changed(self, X, y, sample_weight, warm_start, epochs, initial_epoch, verbose=0,
                **kwargs):
        return original(self, X, y, sample_weight=sample_weight, warm_start=warm_start,
                        epochs=epochs, initial_epoch=initial_epoch, **kwargs)

    monkeypatch.setattr(base_wrapper, "_fit_keras_model", changed)
    monkeypatch.setattr(wrappers, "_classes", {})  # classes made anew, under this scikeras
    monkeypatch.setattr(_compat, "_warned", set())
    _compat._scikeras_training_step.cache_clear()
    classes = wrappers.make_classes()
    assert not issubclass(classes["KerasClassifier"], _compat.ScikerasTrainingHook)
    assert classes["KerasClassifier"]._fit_keras_model is changed

    class CountBatches(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.n = 0

        def on_train_batch_end(self, batch, logs=None):
            self.n += 1

    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 4)).astype("float32")
    y = (X[:, 0] > 0).astype(int)
    counter = CountBatches()
    clf = classes["KerasClassifier"](
        build_mlp, loss="binary_crossentropy", epochs=1, batch_size=6, verbose=0,
        steps_per_execution=4, callbacks=[counter], random_state=0)
    with pytest.warns(RuntimeWarning, match="steps_per_execution is not applied"):
        clf.fit(X, y)
    assert counter.n == 10  # 60 rows, batch 6: ten calls of one step, not three of four
    assert clf.predict(X).shape == (60,)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        clf.fit(X, y)
    assert not [w for w in caught if "steps_per_execution" in str(w.message)]  # once per process
    with pytest.raises(ValueError, match="steps_per_execution"):
        clf.set_params(steps_per_execution=0).fit(X, y)  # still checked

