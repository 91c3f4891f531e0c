"""error_score="raise" on Ray: the fit's own exception comes back at once, and stopping the
search with fits still in flight leaves Ray healthy for the next search."""
import numpy as np
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin

import raygrid


class FailsOn(ClassifierMixin, BaseEstimator):
    """Fails to fit when ``value == bad``; otherwise a constant classifier (a little slow)."""

    def __init__(self, value=0, bad=-1):
        self.value = value
        self.bad = bad

    def fit(self, X, y):
        if self.value == self.bad:
            raise ArithmeticError(f"value {self.value} is bad")
        self.classes_ = np.unique(y)
        return self

    def predict(self, X):
        return np.full(len(X), self.classes_[0])


X = np.arange(80, dtype=float).reshape(40, 2)
Y = np.tile([0, 1], 20)


def test_raising_on_a_failed_fit_with_fits_in_flight_leaves_ray_usable(ray_local):
    for bad in range(0, 30, 3):
        search = raygrid.GridSearchCV(FailsOn(bad=bad), {"value": list(range(30))}, cv=4,
                                      error_score="raise")
        with pytest.raises(ArithmeticError, match=f"value {bad} is bad"):
            search.fit(X, Y)
    ok = raygrid.GridSearchCV(FailsOn(), {"value": [1, 2]}, cv=2).fit(X, Y)
    assert ok.results_["error"].isna().all()
