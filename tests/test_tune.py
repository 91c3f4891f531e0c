"""raygrid.tune: tune-sklearn's TuneSearchCV / TuneGridSearchCV on Ray Tune's Tuner API.

The README examples of tune-sklearn run here with only the import line changed (and small data /
budgets); the parity tests hold cv_results_ against scikit-learn's own searches.
"""
import warnings

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.datasets import make_classification
from sklearn.ensemble import RandomForestClassifier
from sklearn.exceptions import FitFailedWarning
from sklearn.linear_model import LogisticRegression, SGDClassifier
from sklearn.model_selection import GridSearchCV, RandomizedSearchCV, train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC
from sklearn.tree import DecisionTreeClassifier

from raygrid.tune import ASHA, TuneGridSearchCV, TuneSearchCV, incremental_kind


@pytest.fixture(scope="module")
def data():
    X, y = make_classification(n_samples=400, n_features=20, n_informative=10, n_redundant=0,
                               n_classes=3, class_sep=2.5, random_state=0)
    return train_test_split(X, y, test_size=100, random_state=0)


def _accuracy(search, X_test, y_test):
    pred = search.predict(X_test)
    return np.count_nonzero(np.array(pred) == np.array(y_test)) / len(pred)


# -- tune-sklearn's README examples, only the import changed ------------------------------------
def test_readme_grid_search_median_stopping(ray_local, data):
    X_train, X_test, y_train, y_test = data
    parameters = {"alpha": [1e-4, 1e-1, 1], "epsilon": [0.01, 0.1]}
    tune_search = TuneGridSearchCV(SGDClassifier(), parameters,
                                   early_stopping="MedianStoppingRule", max_iters=4)
    tune_search.fit(X_train, y_train)
    assert 0.5 < _accuracy(tune_search, X_test, y_test) <= 1
    assert tune_search.best_params_ in tune_search.cv_results_["params"]
    assert len(tune_search.cv_results_["params"]) == 6
    assert len(tune_search.results_) == 6 * 5  # one row per fold, default 5-fold CV
    assert tune_search.results_["error"].isna().all()
    # MedianStoppingRule pauses trials; they resume from their checkpoint, never from scratch.
    for _, reports in tune_search.history_.groupby("candidate"):
        assert reports["budget"].is_monotonic_increasing
        assert reports["budget"].is_unique


def test_early_stopping_true_passes_classes_to_partial_fit(ray_local, data):
    # tune-sklearn 0.5.0 fails this one: getfullargspec cannot see `classes` through
    # scikit-learn's fit-context decorator, so partial_fit is called without it.
    X_train, X_test, y_train, y_test = data
    tune_search = TuneGridSearchCV(SGDClassifier(), {"alpha": [1e-4, 1e-1, 1], "epsilon": [0.01, 0.1]},
                                   early_stopping=True, max_iters=10, random_state=0)
    tune_search.fit(X_train, y_train)
    assert tune_search.results_["error"].isna().all()
    assert np.isfinite(tune_search.cv_results_["mean_test_score"]).all()
    summary = tune_search.summary_
    assert set(summary["max_budget"]) == {10}
    # ASHA's rungs (1, 3, 9) and the full budget are the only reports.
    assert set(tune_search.history_["budget"]) <= {1, 3, 9, 10}
    assert (summary["budget"] == 10).any()  # someone trained to the end
    assert (summary["stopped_early"] == (summary["budget"] < 10)).all()
    assert _accuracy(tune_search, X_test, y_test) > 0.5


@pytest.mark.parametrize("search_optimization", ["hyperopt", "bayesian", "optuna"])
def test_readme_tune_search(ray_local, data, search_optimization):
    X_train, X_test, y_train, y_test = data
    param_dists = {"alpha": (1e-4, 1e-1), "epsilon": (1e-2, 1e-1)}
    search = TuneSearchCV(SGDClassifier(), param_distributions=param_dists, n_trials=2,
                          early_stopping=True, max_iters=10,
                          search_optimization=search_optimization, random_state=0)
    search.fit(X_train, y_train)
    assert len(search.cv_results_["params"]) == 2
    for params in search.cv_results_["params"]:
        assert 1e-4 <= params["alpha"] <= 1e-1 and 1e-2 <= params["epsilon"] <= 1e-1
    assert search.best_params_ == search.cv_results_["params"][search.best_index_]
    assert 0 < search.score(X_test, y_test) <= 1


def test_mixed_space_through_optuna_decodes_to_the_values_given():
    from ray.tune.search.optuna import OptunaSearch

    from raygrid.search.tune.spaces import tune_domain
    from raygrid.search.tune.spec import TrialSpec

    estimator = LogisticRegression()
    dists = {"C": (1e-2, 10.0, "log-uniform"), "penalty": ["l2", None], "max_iter": (50, 200),
             "class_weight": [{0: 1, 1: 2}, "balanced"]}
    decoders = {}
    space = {k: tune_domain(k, v, "optuna", decoders) for k, v in dists.items()}
    spec = TrialSpec(kind="plain", max_iters=1, rungs=None, every_unit=False,
                     objective_metric="score", mode="max", random_state=None, decoders=decoders)
    searcher = OptunaSearch(seed=0)
    assert searcher.set_search_properties("objective", "max", space)
    for i in range(5):
        params = spec.params_of(searcher.suggest(f"t{i}"))
        assert params["penalty"] in ("l2", None)
        assert params["class_weight"] in ({0: 1, 1: 2}, "balanced")
        assert isinstance(params["max_iter"], int) and 50 <= params["max_iter"] <= 200
        assert 1e-2 <= params["C"] <= 10
        clone(estimator).set_params(**params)


def test_bohb_is_refused_with_a_hint():
    search = TuneSearchCV(SGDClassifier(), {"alpha": (1e-4, 1e-1)}, search_optimization="bohb")
    with pytest.raises(ValueError, match="bohb"):
        search.fit(np.zeros((20, 2)), np.arange(20) % 2)


# -- parity with scikit-learn -------------------------------------------------------------------
def test_grid_cv_results_match_sklearn(ray_local, data):
    X_train, _, y_train, _ = data
    grid = [{"max_depth": [2, 4], "criterion": ["gini", "entropy"]}, {"min_samples_leaf": [5]}]
    kw = dict(cv=3, scoring=["accuracy", "f1_macro"], refit="accuracy", return_train_score=True)
    ours = TuneGridSearchCV(DecisionTreeClassifier(random_state=0), grid, **kw).fit(X_train, y_train)
    ref = GridSearchCV(DecisionTreeClassifier(random_state=0), grid, **kw).fit(X_train, y_train)
    # scikit-learn's keys, and tune-sklearn's two: every candidate trained once, in some seconds
    assert sorted(ours.cv_results_) == sorted([*ref.cv_results_, "training_iteration",
                                               "time_total_s"])
    assert list(ours.cv_results_["training_iteration"]) == [1] * len(ref.cv_results_["params"])
    assert (ours.cv_results_["time_total_s"] > 0).all()
    assert ours.cv_results_["params"] == ref.cv_results_["params"]
    for key in ref.cv_results_:
        if "test_" in key or "train_" in key:
            np.testing.assert_allclose(ours.cv_results_[key], ref.cv_results_[key], err_msg=key)
    assert ours.best_params_ == ref.best_params_
    assert ours.best_score_ == pytest.approx(ref.best_score_)
    assert ours.best_index_ == ref.best_index_
    assert ours.multimetric_ and ours.n_splits_ == 3
    assert len(ours.summary_) == len(ref.cv_results_["params"])


def test_a_tune_search_leaves_the_ctrl_c_handler_as_it_found_it(ray_local, data):
    """Ray Tune installs its own SIGINT handler for a run; a later search's Ctrl-C must still
    raise KeyboardInterrupt."""
    import signal

    X_train, _, y_train, _ = data
    before = signal.getsignal(signal.SIGINT)
    TuneGridSearchCV(DecisionTreeClassifier(random_state=0), {"max_depth": [2, 3]},
                     cv=2).fit(X_train, y_train)
    assert signal.getsignal(signal.SIGINT) is before


def test_random_search_draws_what_randomized_search_draws(ray_local, data):
    from scipy.stats import randint

    X_train, _, y_train, _ = data
    dists = [{"max_depth": randint(1, 6), "criterion": ["gini", "entropy"]},
             {"min_samples_leaf": [2, 5, 10]}]
    ours = TuneSearchCV(DecisionTreeClassifier(random_state=0), dists, n_trials=4, cv=3,
                        random_state=7).fit(X_train, y_train)
    ref = RandomizedSearchCV(DecisionTreeClassifier(random_state=0), dists, n_iter=4, cv=3,
                             random_state=7).fit(X_train, y_train)
    # scikit-learn's keys, and tune-sklearn's two: every candidate trained once, in some seconds
    assert sorted(ours.cv_results_) == sorted([*ref.cv_results_, "training_iteration",
                                               "time_total_s"])
    assert list(ours.cv_results_["training_iteration"]) == [1] * len(ref.cv_results_["params"])
    assert (ours.cv_results_["time_total_s"] > 0).all()
    assert ours.cv_results_["params"] == ref.cv_results_["params"]
    np.testing.assert_allclose(ours.cv_results_["mean_test_score"],
                               ref.cv_results_["mean_test_score"])
    assert ours.best_params_ == ref.best_params_


def test_sklearn_protocol():
    search = TuneSearchCV(SGDClassifier(), {"alpha": (1e-4, 1e-1)}, n_trials=3, max_iters=5,
                          early_stopping=ASHA(grace_period=2))
    twin = clone(search)
    assert twin.get_params()["early_stopping"] == ASHA(grace_period=2)
    assert twin.get_params()["n_trials"] == 3
    assert "estimator__alpha" in search.get_params()


# -- what trains in increments, and how -----------------------------------------------------------
def test_incremental_kind():
    assert incremental_kind(SGDClassifier()) == "partial_fit"
    assert incremental_kind(LogisticRegression()) == "max_iter"
    assert incremental_kind(RandomForestClassifier()) == "n_estimators"
    assert incremental_kind(SVC()) is None
    assert incremental_kind(Pipeline([("s", StandardScaler()), ("m", SGDClassifier())])) == "partial_fit"


def test_pipeline_last_step_trains_in_increments(ray_local, data):
    X_train, _, y_train, _ = data
    pipe = Pipeline([("scale", StandardScaler()), ("sgd", SGDClassifier(random_state=0))])
    search = TuneGridSearchCV(pipe, {"sgd__alpha": [1e-4, 1e-2]}, early_stopping=True,
                              max_iters=3, cv=3).fit(X_train, y_train)
    assert search.results_["error"].isna().all()
    assert set(search.summary_["max_budget"]) == {3}


def test_fold_increments_without_tune(data):
    """The per-fold training a trial runs: warm-start trees, warm-start iterations, partial_fit."""
    from sklearn.metrics import check_scoring
    from sklearn.model_selection import StratifiedKFold

    from raygrid.engine.fitting import Payload
    from raygrid.search.tune.spec import TrialSpec
    from raygrid.search.tune.trial import Fold

    X, _, y, _ = data
    splits = list(StratifiedKFold(3).split(X, y))
    for estimator, kind, check, expected in [
        (RandomForestClassifier(n_estimators=6, random_state=0), "n_estimators",
         lambda est: len(est.estimators_), [2, 4, 6]),  # trees grow to its own n_estimators
        (LogisticRegression(max_iter=30, solver="saga"), "max_iter",
         lambda est: (est.warm_start, est.max_iter), [(True, 10)] * 3),  # 30 iterations, 3 steps
        (SGDClassifier(random_state=0), "partial_fit",
         lambda est: int(est.t_ - 1) // len(splits[0][0]), [1, 2, 3]),  # passes over the fold
    ]:
        assert incremental_kind(estimator) == kind
        payload = Payload(estimator=estimator, X=X, y=y, splits=splits,
                          scorer=check_scoring(estimator), metrics=("score",))
        spec = TrialSpec(kind=kind, max_iters=3, rungs=None, every_unit=True,
                         objective_metric="score", mode="max", random_state=None,
                         classes=np.unique(y))
        fold = Fold(payload, spec, {}, 0, None)
        seen = []
        for point in (1, 2, 3):
            fold.advance_to(point, 3)
            assert fold.error is None, fold.error
            assert fold.done == point and 0 <= fold.test_scores["score"] <= 1
            seen.append(check(fold.estimator))
        assert seen == expected, (kind, seen)


# -- bad search spaces fail before any trial runs ---------------------------------------------------
@pytest.fixture
def no_tune(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("Tune ran although the search space is invalid")

    monkeypatch.setattr("raygrid.search.tune.search.run_experiment", refuse)


@pytest.mark.parametrize("make, match", [
    (lambda: TuneSearchCV(SGDClassifier(), [{"alpha": (1e-4, 1e-1)}, {"epsilon": (0.01, 0.1)}],
                          search_optimization="bayesian"), "list of dicts"),
    (lambda: TuneSearchCV(SGDClassifier(), {"alpha": (1e-4, 1e-1), "penalty": ["l1", "l2"]},
                          search_optimization="bayesian"), "continuous"),
    (lambda: TuneGridSearchCV(SVC(), {"C": [1, 2]}, early_stopping=True), "partial_fit"),
    (lambda: TuneGridSearchCV(SGDClassifier(), {"alpah": [1e-4]}), "Invalid parameter 'alpah'"),
    (lambda: TuneSearchCV(SGDClassifier(), {"alpah": (1e-4, 1e-1)},
                          search_optimization="optuna"), "Invalid parameter 'alpah'"),
    (lambda: TuneSearchCV(SGDClassifier(), {"alpha": (1e-1, 1e-4)}), "low < high"),
    (lambda: TuneSearchCV(SGDClassifier(), {"alpha": (0.0, 1e-1, "log-uniform")},
                          search_optimization="hyperopt"), "low > 0"),
    (lambda: TuneSearchCV(SGDClassifier(), {"alpha": 0.1}, search_optimization="optuna"),
     "takes a list"),
    (lambda: TuneGridSearchCV(Pipeline([("s", StandardScaler()), ("m", SGDClassifier())]),
                              {"m__alpha": [1e-4]}, early_stopping=True,
                              pipeline_auto_early_stop=False), "pipeline_auto_early_stop"),
    (lambda: TuneGridSearchCV(SGDClassifier(), {"alpha": [1e-4]}, early_stopping="PBT"),
     "scheduler"),
    (lambda: TuneSearchCV(SGDClassifier(), {"alpha": (1e-4, 1e-1)}, search_optimization="skopt"),
     "search_optimization"),
])
def test_bad_spaces_raise_before_running(no_tune, make, match):
    X, y = make_classification(n_samples=60, n_features=5, random_state=0)
    with pytest.raises(ValueError, match=match):
        make().fit(X, y)


# -- errors are data --------------------------------------------------------------------------------
def test_error_score(ray_local, data):
    class Fragile(DecisionTreeClassifier):  # defined here so that Ray pickles it by value
        """Fails to fit when max_depth == 1."""

        def fit(self, X, y, **kw):
            if self.max_depth == 1:
                raise ArithmeticError("depth one is fragile")
            return super().fit(X, y, **kw)

    X_train, _, y_train, _ = data
    search = TuneGridSearchCV(Fragile(random_state=0), {"max_depth": [1, 3]}, cv=3,
                              error_score=np.nan)
    with pytest.warns(FitFailedWarning, match="depth one is fragile"):
        search.fit(X_train, y_train)
    assert np.isnan(search.cv_results_["mean_test_score"][0])
    assert search.best_params_ == {"max_depth": 3}
    assert search.results_["error"].notna().sum() == 3
    # tune-sklearn's default for its classes: error_score="raise"
    assert TuneGridSearchCV(Fragile(), {}).error_score == "raise"
    assert TuneSearchCV(Fragile(), {}).error_score == "raise"
    with pytest.raises(ArithmeticError, match="fragile"):
        TuneGridSearchCV(Fragile(), {"max_depth": [1, 3]}, cv=3).fit(X_train, y_train)


# -- Keras: early stopping by epochs ------------------------------------------------------------------
@pytest.mark.keras
def test_keras_asha_by_epochs(ray_local):
    pytest.importorskip("scikeras")
    from raygrid.keras import seed_classifier

    X, y = make_classification(n_samples=240, n_features=8, n_informative=5, random_state=0)
    X = X.astype("float32")
    search = TuneGridSearchCV(
        seed_classifier(batch_size=32, model__hidden=(8,)),
        {"optimizer": ["adam", "sgd"], "epochs": [2, 4]},
        early_stopping=ASHA(grace_period=1, reduction_factor=2), cv=3, random_state=0,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        search.fit(X, y)
    assert len(search.results_) == 4 * 3
    assert search.results_["error"].isna().all()
    # Candidates equal but for their epochs share one trial (2 trials for 4 candidates): the
    # 2-epoch candidate is scored at epoch 2 of the 4-epoch run.
    assert search.summary_["trial"].nunique() == 2
    assert set(search.history_["budget"]) <= {1, 2, 4}  # ASHA's rungs and the budgets
    summary = search.summary_.set_index(search.summary_["params"].map(
        lambda p: (p["optimizer"], p["epochs"])))
    assert list(summary["max_budget"]) == [p[1] for p in summary.index]
    assert (summary["budget"] <= summary["max_budget"]).all()
    assert (search.summary_["budget"] == 4).any()  # the surviving trial went to epoch 4
    assert search.results_["seed"].notna().all()
    assert 0 < search.fit_seconds_ <= search.results_["fit_time"].sum()
    assert search.predict(X[:5]).shape == (5,)


def test_objective_breaks_score_ties_by_training_loss_only():
    """ASHA keeps every trial tied with its rung's cutoff: equal scores are ordered by the folds'
    training loss, far too lightly to reorder different scores; cv_results_ keeps plain means."""
    from raygrid.search.tune.spec import TrialSpec
    from raygrid.search.tune.trial import TIE_BREAK, Fold, trial_objective

    def folds(scores, losses):
        out = []
        for score, loss in zip(scores, losses):
            fold = Fold.__new__(Fold)
            fold.test_scores, fold.train_loss = {"score": score}, loss
            out.append(fold)
        return out

    spec = TrialSpec(kind="keras", max_iters=3, rungs=None, every_unit=True,
                     objective_metric="score", mode="max", random_state=0)
    tied_low_loss, means = trial_objective(folds([0.65, 0.65], [0.40, 0.50]), spec)
    tied_high_loss, _ = trial_objective(folds([0.65, 0.65], [0.60, 0.70]), spec)
    better_score, _ = trial_objective(folds([0.66, 0.66], [5.0, 5.0]), spec)
    assert means == {"score": 0.65}
    assert tied_low_loss > tied_high_loss  # lower training loss wins a tie
    assert better_score > tied_low_loss  # a better score always wins
    assert abs(tied_low_loss - 0.65) == pytest.approx(TIE_BREAK * 0.45)
    no_loss, _ = trial_objective(folds([0.65, 0.65], [None, 0.5]), spec)
    assert no_loss == 0.65  # a learner without a training loss: the plain mean
    spec.mode = "min"
    low, _ = trial_objective(folds([0.3, 0.3], [0.40, 0.50]), spec)
    high, _ = trial_objective(folds([0.3, 0.3], [0.60, 0.70]), spec)
    assert low < high


# -- reliability: storage for resume, bad options -------------------------------------------------
def test_storage_resumes_the_same_search_and_only_it(ray_local, tmp_path):
    from fault_helpers import CountingClassifier, data as small_data, fits_logged

    X, y = small_data(40)
    log = tmp_path / "log"
    make = lambda grid: TuneGridSearchCV(CountingClassifier(log=str(log)), grid,  # noqa: E731
                                         cv=2, refit=False, storage=tmp_path / "tune")
    first = make({"a": [1, 2, 3]}).fit(X, y)
    assert len(fits_logged(log)) == 6
    again = make({"a": [1, 2, 3]}).fit(X, y)  # the same search: its stored trials are kept
    assert len(fits_logged(log)) == 6
    np.testing.assert_array_equal(again.cv_results_["mean_test_score"],
                                  first.cv_results_["mean_test_score"])
    assert sorted(again.history_["candidate"]) == sorted(first.history_["candidate"])
    make({"a": [1, 2, 4]}).fit(X, y)  # another search: an experiment of its own
    assert len(fits_logged(log)) == 12
    assert len([p for p in (tmp_path / "tune").iterdir() if p.is_dir()]) == 2


@pytest.mark.parametrize("option, value, match", [
    ("n_jobs", 0, "n_jobs=0 has no meaning"),
    ("max_retries", -1, "max_retries must be an integer >= 0"),
])
def test_bad_n_jobs_and_max_retries(option, value, match):
    X, y = make_classification(n_samples=20, random_state=0)
    with pytest.raises(ValueError, match=match):
        TuneGridSearchCV(DecisionTreeClassifier(), {"max_depth": [1]}, cv=2,
                         **{option: value}).fit(X, y)
