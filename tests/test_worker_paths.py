"""Ray workers import what the driver imports: a class defined in a folder that only the
driver's sys.path names (a script's folder, a notebook's working directory) works on workers."""
import sys
import textwrap

import numpy as np

import raygrid
from raygrid.engine.executors.worker_env import driver_paths

MODULE = textwrap.dedent('''
    import numpy as np
    from sklearn.base import BaseEstimator, ClassifierMixin

    class LocalClassifier(ClassifierMixin, BaseEstimator):
        def __init__(self, bias=0.0):
            self.bias = bias

        def fit(self, X, y):
            self.classes_ = np.unique(y)
            return self

        def predict(self, X):
            return np.where(X[:, 0] + self.bias > 0, self.classes_[-1], self.classes_[0])
''')


def test_an_estimator_from_a_folder_only_the_driver_knows_runs_on_workers(ray_local, tmp_path,
                                                                         monkeypatch):
    folder = tmp_path / "only_here"
    folder.mkdir()
    (folder / "local_estimators_for_paths.py").write_text(MODULE)
    monkeypatch.syspath_prepend(str(folder))
    from local_estimators_for_paths import LocalClassifier

    assert str(folder) in driver_paths()
    X = np.linspace(-1, 1, 40).reshape(-1, 1)
    y = (X[:, 0] > 0).astype(int)
    search = raygrid.GridSearchCV(LocalClassifier(), {"bias": [0.0, 0.5]}, cv=2,
                                  error_score="raise").fit(X, y)
    assert not search.results_["error"].notna().any()
    assert search.best_params_ == {"bias": 0.0}
    sys.modules.pop("local_estimators_for_paths", None)


def test_driver_paths_leave_out_the_interpreter_and_its_packages():
    paths = driver_paths()
    assert all(not p.startswith(sys.prefix + "/") for p in paths)
    assert all(not p.startswith(sys.base_prefix + "/") for p in paths)
