"""backend="auto": small searches run in a child process, larger ones move to Ray; explicit backends
and explicit Ray resources win; a fit that kills its process or hangs fails alone."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer
from sklearn.model_selection import GridSearchCV as SkGridSearchCV
from sklearn.svm import SVC

import fault_helpers as fh
import raygrid
from raygrid.engine.executors import auto
from raygrid.engine.executors.auto import choose_backend

X, y = load_breast_cancer(return_X_y=True)
X, y = X[::4], y[::4]
GRID = {"C": [0.1, 1, 10], "kernel": ["linear", "rbf"]}


@pytest.fixture
def ray_not_running(monkeypatch):
    monkeypatch.setattr(auto, "ray_is_running", lambda: False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)


def test_the_default_is_auto():
    assert raygrid.GridSearchCV(SVC(), GRID).backend == "auto"
    assert raygrid.RandomizedSearchCV(SVC(), GRID).backend == "auto"
    assert raygrid.HalvingGridSearchCV(SVC(), GRID).backend == "auto"


def test_explicit_backends_are_honoured(ray_not_running):
    assert choose_backend("ray") == "ray" and choose_backend("serial") == "serial"


def test_when_auto_goes_to_ray_at_once(ray_not_running, monkeypatch):
    assert choose_backend("auto") == "auto"
    assert choose_backend("auto", address="10.0.0.5:6379") == "ray"
    assert choose_backend("auto", keras=True) == "ray"
    monkeypatch.setenv("RAY_ADDRESS", "auto")
    assert choose_backend("auto") == "ray"
    monkeypatch.delenv("RAY_ADDRESS")
    monkeypatch.setenv(auto.BUDGET_ENV, "0")
    assert choose_backend("auto") == "ray"
    monkeypatch.setattr(auto, "ray_is_running", lambda: True)
    monkeypatch.delenv(auto.BUDGET_ENV)
    assert choose_backend("auto") == "ray"
    monkeypatch.setattr(auto, "ray_is_running", lambda: False)
    assert choose_backend("auto", ray_remote_args={"num_cpus": 1}) == "ray"  # a request for Ray


def test_a_small_search_runs_in_a_child_process(ray_not_running, monkeypatch):
    monkeypatch.setenv(auto.BUDGET_ENV, "600")
    started = []
    monkeypatch.setattr(auto.AutoExecutor, "_start_ray", lambda self: started.append(1))
    search = raygrid.GridSearchCV(SVC(), GRID, cv=3).fit(X, y)
    pids = set(search.results_["pid"])
    assert not started and len(pids) == 1 and os.getpid() not in pids
    reference = SkGridSearchCV(SVC(), GRID, cv=3).fit(X, y)
    assert search.best_params_ == reference.best_params_
    np.testing.assert_array_equal(search.cv_results_["mean_test_score"], reference.cv_results_["mean_test_score"])


def test_a_search_longer_than_the_budget_moves_to_ray(ray_local, ray_not_running, monkeypatch):
    monkeypatch.setenv(auto.BUDGET_ENV, "0.000001")
    search = raygrid.GridSearchCV(SVC(), GRID, cv=3).fit(X, y)
    local = search.results_["node"].str.startswith("local")
    assert local.sum() == auto.MIN_FITS, "measured fits run locally, every other fit on Ray"
    reference = SkGridSearchCV(SVC(), GRID, cv=3).fit(X, y)
    np.testing.assert_array_equal(search.cv_results_["mean_test_score"], reference.cv_results_["mean_test_score"])


def test_the_progress_line_says_where_fits_run(ray_not_running, monkeypatch):
    from raygrid.outputs.progress import SearchProgress

    monkeypatch.setenv(auto.BUDGET_ENV, "600")
    seen = []
    original = SearchProgress.add

    def spy(self, result, running=0, params=None):
        original(self, result, running, params)
        seen.append(self.render(200).plain)

    monkeypatch.setattr(SearchProgress, "add", spy)
    raygrid.GridSearchCV(SVC(), GRID, cv=3).fit(X, y)
    assert len(seen) == 18 and all("local:" in line and "600 s" in line for line in seen)
    # The rule as it applies: the fits left x the median CPU time of the fits measured.
    assert all(re.search(r"local: \d+ fits x [\d.e-]+ s CPU = [\d.]+ s < 600 s to start Ray", line)
               for line in seen[auto.MIN_FITS:-1]), seen



def test_the_rule_projects_the_median_cpu_time_after_the_warm_up():
    """A slow first fit (imports) and one slow outlier do not decide; the median of the others does."""
    executor = auto.AutoExecutor(budget_s=5.0)
    executor.local.cpu_times = [3.0, 0.01, 0.02]
    assert executor.projection(1000) is None  # 3 fits measured: not yet
    executor.local.cpu_times = [3.0, 0.01, 2.0, 0.02, 0.01]
    assert executor.projection(100) == pytest.approx(100 * 0.015)
    assert not executor._worth_ray(100)
    assert executor._worth_ray(1000)


def test_fits_that_wait_on_a_busy_machine_stay_local(ray_not_running, monkeypatch):
    """Fits whose wall time is long but whose CPU time is small (a busy machine makes wall time
    swell the same way) do not start Ray: 40 fits x 0.05 s of wall time exceed a 1 s budget."""
    monkeypatch.setenv(auto.BUDGET_ENV, "1")
    started = []
    monkeypatch.setattr(auto.AutoExecutor, "_start_ray", lambda self: started.append(1))
    search = raygrid.GridSearchCV(fh.CountingClassifier(sleep=0.05), {"a": list(range(20))},
                                  cv=2, refit=False).fit(*fh.data())
    assert not started and search.results_["node"].str.startswith("local").all()


DRIVER = """
import sys
import numpy as np
from fault_helpers import DyingClassifier, data
from raygrid import GridSearchCV
X, y = data()
search = GridSearchCV(DyingClassifier(die_on=1, how=sys.argv[1]), {"a": [0, 1, 2]}, cv=2,
                      refit=False, max_retries=1).fit(X, y)
res = search.results_.set_index(["candidate", "fold"])
print("SYSTEM", sorted(set(res.index[res["system_failure"]].get_level_values(0))))
print("NAN", [bool(v) for v in np.isnan(search.cv_results_["mean_test_score"])])
"""


@pytest.mark.parametrize("how", ["exit", "segv"])
def test_a_fit_that_kills_its_process_is_a_system_failure_and_the_driver_survives(tmp_path, how):
    """As on Ray: a fit ending its process (os._exit, a segfault) is retried, then a
    system-failure row; the driver and the search's other fits go on."""
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", auto.BUDGET_ENV)}
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parent), env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, "-c", DRIVER, how], capture_output=True, text=True,
                          timeout=300, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = dict(line.split(" ", 1) for line in proc.stdout.splitlines() if " " in line)
    assert lines["SYSTEM"] == "[1]"
    assert lines["NAN"] == "[False, True, False]"


GPU_DRIVER = """
import os, sys
from fault_helpers import CountingClassifier, data
from raygrid import GridSearchCV
X, y = data(20)
try:
    GridSearchCV(CountingClassifier(log=sys.argv[1]), {"a": [1]}, cv=2,
                 ray_remote_args={"num_cpus": 1, "num_gpus": 1}).fit(X, y)
except ValueError as exc:
    print("REFUSED", str(exc).replace(chr(10), " "))
print("LOGGED", os.path.exists(sys.argv[1]))
"""


def test_ray_remote_args_are_a_request_for_ray(tmp_path):
    """A 2-fit search asking for a GPU on a machine without one: Ray starts and refuses it before
    any fit; it never runs in-process on the CPU."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("RAY_ADDRESS", auto.BUDGET_ENV, "RAYGRID_AUTOSCALING")}
    env["HOME"] = str(tmp_path)  # no ray up bootstrap file: no autoscaler
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parent), env.get("PYTHONPATH", "")])
    log = tmp_path / "log"
    proc = subprocess.run([sys.executable, "-c", GPU_DRIVER, str(log)], capture_output=True,
                          text=True, timeout=300, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "REFUSED" in proc.stdout and "never start" in proc.stdout, proc.stdout
    assert "LOGGED False" in proc.stdout


CHILDREN_DRIVER = """
import importlib, os, signal, sys
import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
import raygrid
import helper

class Probe(ClassifierMixin, BaseEstimator):
    '''What the process running the fit sees, kept on the fitted estimator.'''
    def __init__(self, a=0):
        self.a = a
    def fit(self, X, y):
        self.classes_ = np.unique(y)
        self.seen_ = (os.getpid(), os.environ.get("PROBE"), os.path.basename(os.getcwd()),
                      helper.bias(), float(np.random.rand()))
        return self
    def predict(self, X):
        return np.full(len(X), self.classes_[0])

def search():
    out = raygrid.cross_validate(Probe(), X, y, cv=2, return_estimator=True)
    return [est.seen_ for est in out["estimator"]]

X, y = np.arange(40.0).reshape(20, 2), np.arange(20) % 2
first = search()
# The user edits their module and reloads it, changes the environment and the directory.
with open("helper.py", "w") as fh:
    fh.write("def bias():\\n    return 1.0\\n")
importlib.reload(helper)
os.environ["PROBE"] = "second"
os.mkdir("elsewhere"); os.chdir("elsewhere")
second = search()
zygote = raygrid.engine.executors.children._zygote
if zygote is not None:  # the zygote dies: the next search starts another
    os.kill(zygote.proc.pid, signal.SIGKILL); zygote.proc.wait()
third = search()
print("RESULT", repr((os.getpid(), first, second, third)))
"""


@pytest.mark.parametrize("start", ["zygote", "spawn"])
def test_each_local_search_gets_a_fresh_child_with_the_drivers_state(tmp_path, start):
    """A script run as __main__: every search's child (forked from the zygote, or a fresh
    interpreter) runs the user's module as it is now on disk, in the driver's current environment
    and directory, with its own random state; a dead zygote is replaced."""
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", auto.BUDGET_ENV)}
    env["RAYGRID_LOCAL_START"] = start
    (tmp_path / "helper.py").write_text("def bias():\n    return 0.0\n")
    (tmp_path / "driver.py").write_text(CHILDREN_DRIVER)
    proc = subprocess.run([sys.executable, "driver.py"], capture_output=True, text=True,
                          timeout=300, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(line for line in proc.stdout.splitlines() if line.startswith("RESULT "))
    driver, *searches = eval(line[len("RESULT "):])
    first, second, third = searches
    pids = [{seen[0] for seen in fits} for fits in searches]
    assert all(len(p) == 1 for p in pids) and len(set().union(*pids)) == 3  # one child each
    assert driver not in set().union(*pids)
    assert {seen[1:4] for seen in first} == {(None, tmp_path.name, 0.0)}
    assert {seen[1:4] for seen in second} == {("second", "elsewhere", 1.0)}
    assert {seen[1:4] for seen in third} == {("second", "elsewhere", 1.0)}
    draws = [seen[4] for fits in searches for seen in fits]
    assert len(set(draws)) == len(draws)  # no two children share a global random state
