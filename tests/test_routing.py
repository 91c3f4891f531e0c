"""scikit-learn's metadata routing: with enable_metadata_routing=True each parameter reaches the
estimator, scorer or splitter that asked for it, on the workers as in scikit-learn."""
import numpy as np
import pytest
import sklearn
from sklearn.datasets import make_classification
from sklearn.exceptions import UnsetMetadataPassedError
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, make_scorer
from sklearn.model_selection import GridSearchCV as SkGridSearchCV
from sklearn.model_selection import GroupKFold
from sklearn.model_selection import cross_validate as sk_cross_validate

import raygrid
from parity_helpers import assert_cv_results_equal

X, Y = make_classification(n_samples=120, n_features=6, random_state=0)
RNG = np.random.RandomState(0)
FIT_WEIGHTS = RNG.rand(len(Y))
SCORE_WEIGHTS = RNG.rand(len(Y))
GROUPS = RNG.randint(0, 4, len(Y))


@pytest.fixture
def routing():
    with sklearn.config_context(enable_metadata_routing=True):
        yield


def _estimator():
    return LogisticRegression().set_fit_request(sample_weight="fit_weights")


def _scoring():
    weighted = make_scorer(accuracy_score).set_score_request(sample_weight="score_weights")
    return {"weighted": weighted, "plain": "accuracy"}


def test_a_search_routes_fit_score_and_split_metadata_as_scikit_learn(routing, backend):
    cv = GroupKFold(3).set_split_request(groups="split_groups")
    kwargs = dict(scoring=_scoring(), refit="weighted", cv=cv)
    params = dict(fit_weights=FIT_WEIGHTS, score_weights=SCORE_WEIGHTS, split_groups=GROUPS)
    ours = raygrid.GridSearchCV(_estimator(), {"C": [0.01, 1.0]}, backend=backend,
                                **kwargs).fit(X, Y, **params)
    theirs = SkGridSearchCV(_estimator(), {"C": [0.01, 1.0]}, **kwargs).fit(X, Y, **params)
    assert_cv_results_equal(ours.cv_results_, theirs.cv_results_)
    # The weights changed the scores: they did reach the scorer and the fits.
    assert not np.array_equal(ours.cv_results_["split0_test_weighted"],
                              ours.cv_results_["split0_test_plain"])


def test_cross_validate_routes_metadata_as_scikit_learn(routing, backend):
    params = dict(fit_weights=FIT_WEIGHTS, score_weights=SCORE_WEIGHTS)
    ours = raygrid.cross_validate(_estimator(), X, Y, scoring=_scoring(), cv=3, params=params,
                                  backend=backend)
    theirs = sk_cross_validate(_estimator(), X, Y, scoring=_scoring(), cv=3, params=params)
    for key in ("test_weighted", "test_plain"):
        np.testing.assert_array_equal(ours[key], theirs[key])


def test_unrequested_metadata_is_an_error_before_any_fit(routing):
    with pytest.raises(UnsetMetadataPassedError, match="LogisticRegression.fit"):
        raygrid.cross_validate(LogisticRegression(), X, Y, cv=3,
                               params={"sample_weight": FIT_WEIGHTS}, backend="serial")
    with pytest.raises(ValueError, match="`groups` can only be passed if"):
        raygrid.cross_validate(LogisticRegression(), X, Y, groups=GROUPS, backend="serial")


def test_score_refuses_extra_parameters_without_routing():
    search = raygrid.GridSearchCV(LogisticRegression(), {"C": [1.0]}, cv=2,
                                  backend="serial").fit(X, Y)
    with pytest.raises(ValueError, match="only supported if enable_metadata_routing=True"):
        search.score(X, Y, sample_weight=FIT_WEIGHTS)
