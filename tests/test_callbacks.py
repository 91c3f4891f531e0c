"""scikit-learn's callbacks on raygrid's searches: the same task tree as scikit-learn's, every
hook of the search's own tasks called on the driver with the search itself."""
import pytest
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression

import raygrid

pytest.importorskip("sklearn.callback")
X, Y = make_classification(n_samples=60, random_state=0)


class Recorder:
    """A callback that keeps (hook, task name, estimator) in a list on the driver."""

    def __init__(self):
        self.calls = []

    def setup(self, estimator, context):
        self.calls.append(("setup", context.task_name, estimator))

    def on_fit_task_begin(self, estimator, context, *, metadata=None):
        self.calls.append(("begin", context.task_name, estimator, metadata))

    def on_fit_task_end(self, estimator, context, *, metadata=None):
        self.calls.append(("end", context.task_name, estimator, metadata))

    def teardown(self, estimator, context):
        self.calls.append(("teardown", context.task_name, estimator))


@pytest.mark.parametrize("search_class", [raygrid.GridSearchCV, raygrid.HalvingGridSearchCV])
def test_search_callbacks_see_scikit_learns_task_tree(search_class, backend):
    recorder = Recorder()
    search = search_class(LogisticRegression(), {"C": [0.1, 1.0, 10.0]}, cv=2,
                          backend=backend).set_callbacks(recorder)
    search.fit(X, Y, sample_weight=[1.0] * len(Y))
    begun = [c[1] for c in recorder.calls if c[0] == "begin"]
    ended = [c[1] for c in recorder.calls if c[0] == "end"]
    n_fits = len(search.results_)
    assert sorted(begun) == sorted(ended)
    assert begun.count("candidate-split-evaluation") == n_fits
    assert begun.count("fit") == begun.count("search") == begun.count("refit-with-best-params") == 1
    if search_class is raygrid.HalvingGridSearchCV:
        assert begun.count("halving-iteration") == search.n_iterations_
    assert all(call[2] is search for call in recorder.calls)
    assert all("sample_weight" in call[3] for call in recorder.calls
               if call[0] == "begin" and call[1] == "candidate-split-evaluation")
    assert [c[0] for c in recorder.calls if c[0] in ("setup", "teardown")] == ["setup", "teardown"]
