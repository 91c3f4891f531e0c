"""A fit's identity is the code that ran: user code by value (``__main__``, notebooks, one's own
modules, development-mode installs), the code it calls included, the same in every process.

The scenarios run as a user runs them: a script as ``__main__`` in a fresh process, edited between
two runs with the same ``storage``; a module reloaded in one process while Ray's workers hold the
old one. The rerun's scores must equal scikit-learn's own search on the edited code.
"""
from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from ray import cloudpickle

from raygrid.engine.codecheck import CodeCheck, StaleCodeError
from raygrid.engine.describe import code_identity, describe, digest, origin
from raygrid.engine.fitting import FitResult

ESTIMATOR = '''
import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

THRESHOLD = 0.0


def signal(X):
    return (X[:, 0] > THRESHOLD).astype(float)


class Thresh(ClassifierMixin, BaseEstimator):
    """Predicts 1 where signal(X) + a > 0.5: its scores follow the helper it calls."""

    def __init__(self, a=0.0):
        self.a = a

    def fit(self, X, y):
        self.classes_ = np.unique(y)
        return self

    def predict(self, X):
        return np.where(signal(X) + self.a > 0.5, 1, 0)
'''

SEARCH = '''
import json, sys
import numpy as np
from sklearn.model_selection import GridSearchCV as SklearnGridSearchCV
from raygrid import GridSearchCV

rng = np.random.default_rng(0)
X = rng.normal(size=(90, 2))
y = (X[:, 0] > 0.4).astype(int)
grid = {"a": [0.0, 0.2, 0.7]}
ours = GridSearchCV(Thresh(), grid, cv=3, storage=sys.argv[1], **KW).fit(X, y)
theirs = SklearnGridSearchCV(Thresh(), grid, cv=3).fit(X, y)
print(json.dumps({"cached": int(ours.results_["cached"].sum()),
                  "ours": ours.cv_results_["mean_test_score"].tolist(),
                  "sklearn": theirs.cv_results_["mean_test_score"].tolist()}))
'''


def run_script(path: Path, *args: str, env: dict | None = None, cwd: Path | None = None) -> dict:
    proc = subprocess.run([sys.executable, str(path), *args], capture_output=True, text=True,
                          timeout=300, cwd=cwd or path.parent, env={**os.environ, **(env or {})})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def edit_helper(path: Path) -> None:
    text = path.read_text()
    assert "X[:, 0] > THRESHOLD" in text
    path.write_text(text.replace("X[:, 0] > THRESHOLD", "X[:, 0] > THRESHOLD + 0.5"))


def assert_rerun_is_fresh_and_right(first: dict, second: dict) -> None:
    assert first["cached"] == 0 and first["ours"] == pytest.approx(first["sklearn"])
    assert second["sklearn"] != first["sklearn"]  # the edit changes what the code computes
    assert second["cached"] == 0  # nothing of the old code is reused
    assert second["ours"] == pytest.approx(second["sklearn"])


# -- descriptions ------------------------------------------------------------------------------
MAIN_CODE = '''
import functools, json, sys
import keras
from ray import cloudpickle
from raygrid.engine.describe import digest

HIDDEN = 8

def layer_sizes(n):
    return [n, n // 2] if n in {4, 8, 16} else [n]

def create_model(activation="relu", init="glorot_uniform", hidden=HIDDEN):
    sizes = layer_sizes(hidden)
    return sizes, activation, init

def make_scaler(k):
    return lambda x: x * k

class Holder:
    def build(self, n):
        return layer_sizes(n)

values = {
    "function": create_model, "lambda": make_scaler(3), "partial": functools.partial(create_model, "tanh"),
    "method": Holder().build, "class": Holder,
    "sgd": keras.optimizers.SGD(learning_rate=0.1, momentum=0.9), "maxnorm": keras.constraints.MaxNorm(3),
}
out = {k: digest(v) for k, v in values.items()}
out.update({k + "-pickled": digest(cloudpickle.loads(cloudpickle.dumps(v))) for k, v in values.items()})
print(json.dumps(out))
'''


def test_main_code_has_one_identity_in_every_process_and_after_pickling(tmp_path):
    script = tmp_path / "user_script.py"
    script.write_text(MAIN_CODE)
    outs = [run_script(script, env={"PYTHONHASHSEED": str(seed), "KERAS_BACKEND": "jax"})
            for seed in (1, 2)]
    assert outs[0] == outs[1]
    for key in ("function", "lambda", "partial", "method", "class", "sgd", "maxnorm"):
        assert outs[0][key] == outs[0][key + "-pickled"], key
    assert len({outs[0][k] for k in ("function", "lambda", "partial", "method", "class")}) == 5


def _namespace(source: str, name: str = "__main__") -> dict:
    namespace = {"__name__": name}
    exec(textwrap.dedent(source), namespace)
    return namespace


def test_code_the_function_calls_is_part_of_its_identity():
    base = textwrap.dedent("""
        LIMIT = 3
        def helper(x):
            return x + LIMIT
        def model(x):
            return helper(x) * 2
    """)
    same = _namespace(base)["model"]
    assert digest(same) == digest(_namespace(base)["model"])
    assert digest(same) != digest(_namespace(base.replace("x + LIMIT", "x - LIMIT"))["model"])
    assert digest(same) != digest(_namespace(base.replace("LIMIT = 3", "LIMIT = 4"))["model"])
    # Unrelated code of the same script is no part of it (an extended grid reuses fits).
    assert digest(same) == digest(_namespace(base + "\nGRID = [1, 2, 3]\n")["model"])
    # Recursion, closures and defaults are described without looping.
    recursive = _namespace("""
        def a(n, k=lambda v: v):
            return b(n - 1) if n else k(0)
        def b(n):
            return a(n)
    """)
    assert digest(recursive["a"]) == digest(cloudpickle.loads(cloudpickle.dumps(recursive["a"])))


def test_keras_values_are_described_by_their_configuration():
    pytest.importorskip("keras")
    import keras

    sgd = lambda lr: keras.optimizers.SGD(learning_rate=lr, momentum=0.9)  # noqa: E731
    assert digest(sgd(0.1)) == digest(sgd(0.1)) != digest(sgd(0.2))
    assert digest(keras.constraints.MaxNorm(3)) != digest(keras.constraints.MaxNorm(4))


def test_installed_code_is_known_by_version_development_installs_by_their_code(tmp_path):
    import sklearn
    from sklearn.svm import SVC

    assert describe(SVC) == ("class", "sklearn.svm._classes.SVC",
                             ("dist", "scikit-learn", sklearn.__version__))
    script = tmp_path / "origins.py"
    script.write_text("import json, devpkg, wheelpkg\n"
                      "from raygrid.engine.describe import origin\n"
                      "print(json.dumps([origin('devpkg'), origin('wheelpkg'), origin('__main__')]))")
    site = tmp_path / "site"
    for name, direct_url in (("devpkg", {"url": f"file://{tmp_path}/src",
                                         "dir_info": {"editable": True}}),
                             ("wheelpkg", None)):
        (site / name).mkdir(parents=True)
        (site / name / "__init__.py").write_text("")
        info = site / f"{name}-1.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
        (info / "top_level.txt").write_text(name + "\n")
        if direct_url:
            (info / "direct_url.json").write_text(json.dumps(direct_url))
    out = run_script(script, env={"PYTHONPATH": str(site)})
    assert out == [None, ["dist", "wheelpkg", "1.0"], None]
    assert origin("numpy")[0] == "dist" and origin("json") == ("stdlib",)


def test_a_worker_that_ran_other_code_is_an_error_not_a_result():
    old = _namespace(ESTIMATOR)["Thresh"]
    new = _namespace(ESTIMATOR.replace("X[:, 0] > THRESHOLD", "X[:, 0] < THRESHOLD"))["Thresh"]
    assert code_identity(old()) is not None and code_identity(old()) != code_identity(new())
    from sklearn.svm import SVC

    assert code_identity(SVC()) is None  # installed code only: nothing to compare
    check = CodeCheck(new())
    row = FitResult(0, 0, {"score": 1.0}, None, 0.0, 0.0, 10)
    row.code = code_identity(cloudpickle.loads(cloudpickle.dumps(new())))
    check(row, {"a": 0.2})  # the same code, sent by value: accepted
    row.code = code_identity(old())
    with pytest.raises(StaleCodeError, match="Thresh.*Restart Ray"):
        check(row, {"a": 0.2})


# -- the scenarios, as a user runs them ----------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("where,backend", [("script", "auto"), ("module", "auto"),
                                           ("script", "ray")])
def test_an_edited_helper_reuses_no_fit(tmp_path, where, backend):
    """The estimator's predict calls a helper; only the helper is edited between two runs (on
    Ray, the workers get the script's class by value and report the code they ran)."""
    script = tmp_path / "search.py"
    search = SEARCH.replace("**KW", f"backend={backend!r}")
    if where == "script":
        script.write_text(ESTIMATOR + search)
        edited = script
    else:
        (tmp_path / "my_estimators.py").write_text(ESTIMATOR)
        script.write_text("from my_estimators import Thresh\n" + search)
        edited = tmp_path / "my_estimators.py"
    store = str(tmp_path / "store")
    first = run_script(script, store)
    assert run_script(script, store)["cached"] == 9  # unchanged code: every fit reused
    edit_helper(edited)
    assert_rerun_is_fresh_and_right(first, run_script(script, store))


@pytest.mark.slow
def test_an_edited_development_install_reuses_no_fit(tmp_path):
    """A package of one's own installed in development mode (``pip install -e``): its files."""
    site, src = tmp_path / "site", tmp_path / "src"
    (src / "mypkg").mkdir(parents=True)
    (src / "mypkg" / "__init__.py").write_text(ESTIMATOR)
    info = site / "mypkg-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: mypkg\nVersion: 0.1\n")
    (info / "top_level.txt").write_text("mypkg\n")
    (info / "direct_url.json").write_text(json.dumps({"url": src.as_uri(),
                                                      "dir_info": {"editable": True}}))
    (site / "__editable__.mypkg-0.1.pth").write_text(str(src) + "\n")
    script = tmp_path / "search.py"
    script.write_text("import site, sys\nsite.addsitedir(sys.argv[2])\nfrom mypkg import Thresh\n"
                      + SEARCH.replace("**KW", ""))
    store = str(tmp_path / "store")
    first = run_script(script, store, str(site))
    edit_helper(src / "mypkg" / "__init__.py")
    assert_rerun_is_fresh_and_right(first, run_script(script, store, str(site)))


RELOAD = '''
import importlib, json, sys
from pathlib import Path
import numpy as np
import ray
import my_estimators
from raygrid import GridSearchCV
from raygrid.engine.codecheck import StaleCodeError

ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
rng = np.random.default_rng(0)
X = rng.normal(size=(90, 2))
y = (X[:, 0] > 0.4).astype(int)
search = lambda: GridSearchCV(my_estimators.Thresh(), {"a": [0.0, 0.2, 0.7]}, cv=3,
                              backend="ray", storage=sys.argv[1]).fit(X, y)
search()
path = Path(my_estimators.__file__)
path.write_text(path.read_text().replace("X[:, 0] > THRESHOLD", "X[:, 0] > THRESHOLD + 0.5"))
importlib.reload(my_estimators)
try:
    search()
    outcome = "ran"
except StaleCodeError as exc:
    outcome = str(exc)
print(json.dumps({"outcome": outcome}))
'''


@pytest.mark.slow
def test_a_reload_the_workers_did_not_see_is_an_error_and_stores_nothing(tmp_path):
    """Edit + importlib.reload in one process (a notebook), then a rerun on Ray's workers,
    which still run the module they imported before."""
    (tmp_path / "my_estimators.py").write_text(ESTIMATOR)
    reload_script = tmp_path / "reload.py"
    reload_script.write_text(RELOAD)
    store = str(tmp_path / "store")
    out = run_script(reload_script, store)
    assert "ran other code than this process for my_estimators.Thresh" in out["outcome"]
    # A fresh process (the module as edited): nothing of the old code is reused.
    script = tmp_path / "search.py"
    script.write_text("from my_estimators import Thresh\n" + SEARCH.replace("**KW", ""))
    rerun = run_script(script, store)
    assert rerun["ours"] == pytest.approx(rerun["sklearn"])
