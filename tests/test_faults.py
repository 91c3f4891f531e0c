"""Faults: a worker killed mid-fit, a node removed mid-search, Ctrl-C and SIGTERM on the driver.

Drivers that receive signals, and the multi-node cluster, run in subprocesses (each with its own
Ray), so they never touch the test session's Ray. ``CountingClassifier`` logs every completed fit,
so the tests count the fits that really executed.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from sklearn.exceptions import FitFailedWarning

from fault_helpers import CountingClassifier, data, fits_logged, store_rows
from raygrid import GridSearchCV
from raygrid.cli.status import status

TESTS = Path(__file__).resolve().parent
SCORE_KEYS = ("params", "mean_test_score", "std_test_score", "rank_test_score",
              "split0_test_score", "split1_test_score")


def assert_same_scores(a, b):
    for key in SCORE_KEYS:
        if key == "params":
            assert a[key] == b[key]
        else:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def serial_oracle(grid, X, y):
    return GridSearchCV(CountingClassifier(), grid, cv=2, backend="serial", refit=False).fit(X, y)


def driver_env() -> dict:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")])
    return env


def wait_for_rows(storage, n, proc, timeout=120.0) -> None:
    deadline = time.monotonic() + timeout
    while store_rows(storage) < n:
        if proc.poll() is not None:
            pytest.fail(f"driver exited early ({proc.returncode}): {proc.stderr.read()[-3000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"store never reached {n} rows")
        time.sleep(0.05)


# -- workers -----------------------------------------------------------------------------------
def test_worker_killed_inside_a_batch_loses_nothing(tmp_path, ray_local):
    """The fit of a=25 SIGKILLs its worker once; by then tiny fits travel in batches."""
    X, y = data()
    grid = {"a": list(range(40))}
    est = CountingClassifier(log=str(tmp_path / "log"), crash="first", crash_on=25,
                             marker=str(tmp_path / "crashed"))
    search = GridSearchCV(est, grid, cv=2, refit=False, storage=str(tmp_path / "store")).fit(X, y)
    assert (tmp_path / "crashed").exists()
    res = search.results_
    assert len(res) == 80 and not res["error"].notna().any() and not res["system_failure"].any()
    ran = fits_logged(tmp_path / "log")
    assert len(set(ran)) == 80  # every fit ran; those sharing the killed batch ran again
    assert_same_scores(search.cv_results_, serial_oracle(grid, X, y).cv_results_)
    assert status(tmp_path / "store")["done"] == 80


def test_fit_that_always_kills_its_worker_is_a_system_failure(tmp_path, ray_local):
    X, y = data()
    est = CountingClassifier(crash="always", crash_on=1)
    with pytest.warns(FitFailedWarning):
        search = GridSearchCV(est, {"a": [0, 1]}, cv=2, refit=False, max_retries=0,
                              storage=str(tmp_path / "store")).fit(X, y)
    res = search.results_.set_index(["candidate", "fold"])
    assert res.loc[1, "system_failure"].all() and res.loc[1, "error"].notna().all()
    assert not res.loc[0, "system_failure"].any() and res.loc[0, "error"].isna().all()
    assert np.isnan(search.cv_results_["mean_test_score"][1])
    info = status(tmp_path / "store")
    assert (info["done"], info["system_failures"], info["failed"]) == (2, 2, 0)
    assert not info["searches"][0]["complete"]  # a rerun runs the system failures again


# -- the driver ----------------------------------------------------------------------------------
DRIVER = """
import sys
from fault_helpers import CountingClassifier, data
from raygrid import GridSearchCV
X, y = data()
backend, storage, log = sys.argv[1:4]
GridSearchCV(CountingClassifier(log=log, sleep={sleep}), {{"a": list(range({n}))}}, cv=2,
             refit=False, backend=backend, storage=storage).fit(X, y)
print("DONE", flush=True)
"""


def _interrupt(tmp_path, backend, sig, n_candidates, after_rows, sleep=0.3, again_after=None):
    """Run a search in a driver process, signal it once ``after_rows`` fits are stored (and
    again ``again_after`` seconds later, if given): (store, fit log, (stderr, rows stored at the
    first signal))."""
    script = tmp_path / "driver.py"
    script.write_text(DRIVER.format(n=n_candidates, sleep=sleep))
    storage, log = tmp_path / "store", tmp_path / "log"
    proc = subprocess.Popen([sys.executable, str(script), backend, str(storage), str(log)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=driver_env())
    wait_for_rows(storage, after_rows, proc)
    proc.rows_at_signal = store_rows(storage)
    proc.send_signal(sig)
    if again_after is not None:
        time.sleep(again_after)
        proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert "DONE" not in out, "the search finished before the signal: make it longer"
    assert proc.returncode != 0
    hint = [line for line in err.splitlines() if line.startswith("raygrid: search interrupted")]
    assert len(hint) == 1 and f"storage={str(storage)!r}" in hint[0], err[-3000:]
    return storage, log, (err, proc.rows_at_signal)


def test_sigint_then_resume_runs_every_fit_exactly_once(tmp_path, ray_local):
    n = 16
    storage, log, _ = _interrupt(tmp_path, "ray", signal.SIGINT, n, after_rows=6)
    saved = store_rows(storage)
    assert 6 <= saved < 2 * n
    # The fits in flight at Ctrl-C were let finish and stored: every fit that ran is stored.
    assert len(fits_logged(log)) == saved
    X, y = data()
    grid = {"a": list(range(n))}
    resumed = GridSearchCV(CountingClassifier(log=str(log), sleep=0.3), grid, cv=2, refit=False,
                           storage=str(storage)).fit(X, y)
    ran = fits_logged(log)
    assert len(set(ran)) == 2 * n  # every fit ran
    assert len(ran) == 2 * n  # none ran twice
    assert resumed.results_["cached"].sum() == saved
    assert_same_scores(resumed.cv_results_, serial_oracle(grid, X, y).cv_results_)
    info = status(storage)
    assert info["done"] == 2 * n and info["missing"] == 0


def test_second_ctrl_c_stops_without_waiting_for_the_fits_in_flight(tmp_path, ray_local):
    # Fits of 4 s: at the first Ctrl-C the fits in flight have most of their 4 s to go; the
    # second, 2 s later (the first is handled within a second), cancels them, so they are
    # neither finished nor stored.
    storage, log, (err, before) = _interrupt(tmp_path, "ray", signal.SIGINT, 8, after_rows=2,
                                             sleep=4.0, again_after=2.0)
    waiting = re.search(r"raygrid: stopping; letting the (\d+) fit\(s\) in flight finish", err)
    assert waiting, err[-3000:]
    saved = store_rows(storage)
    assert before <= saved < before + int(waiting.group(1))  # not all of them finished
    assert len(fits_logged(log)) == saved  # the cancelled fits did not finish: nothing is lost


def test_sigterm_keeps_finished_fits_and_restores_the_handler(tmp_path):
    storage, log, _ = _interrupt(tmp_path, "serial", signal.SIGTERM, 30, after_rows=3)
    saved = store_rows(storage)
    assert 3 <= saved < 60 and len(fits_logged(log)) == saved
    info = status(storage)
    assert info["missing"] == 60 - saved and not info["searches"][0]["complete"]

    # In this process: the handler is set only while fits run, and restored after.
    def mine(signum, frame):
        pass

    seen = []

    class Probe(CountingClassifier):
        def fit(self, X, y):
            seen.append(signal.getsignal(signal.SIGTERM))
            return super().fit(X, y)

    previous = signal.signal(signal.SIGTERM, mine)
    try:
        X, y = data()
        GridSearchCV(Probe(), {"a": [1]}, cv=2, backend="serial", refit=False).fit(X, y)
        assert signal.getsignal(signal.SIGTERM) is mine
        assert seen and all(h is not mine for h in seen)
    finally:
        signal.signal(signal.SIGTERM, previous)


# -- nodes ---------------------------------------------------------------------------------------
# A head without CPUs and two one-CPU nodes that Ray declares dead within about 2 s of removal.
CLUSTER_PRELUDE = """
import json, sys, threading, time
import numpy as np
import ray
from ray.cluster_utils import Cluster
from fault_helpers import CountingClassifier, data, fits_logged, store_rows
from raygrid import GridSearchCV
"""
CLUSTER_SETUP = """
cluster = Cluster(initialize_head=True, head_node_args={
    "num_cpus": 0,
    "_system_config": {"health_check_period_ms": 500, "health_check_failure_threshold": 3,
                       "health_check_initial_delay_ms": 0}})
workers = [cluster.add_node(num_cpus=1) for _ in range(2)]
cluster.wait_for_nodes()
ray.init(address=cluster.address, log_to_driver=False)
X, y = data()
"""

CLUSTER_DRIVER = CLUSTER_PRELUDE + """
storage, log = sys.argv[1:3]
""" + CLUSTER_SETUP + """grid = {"a": list(range(30))}
removed = []

def nodes_with_fits():
    import sqlite3
    try:
        conn = sqlite3.connect(storage + "/fits.sqlite", timeout=5)
        try:
            return {r[0] for r in conn.execute("SELECT DISTINCT node FROM fits")}
        finally:
            conn.close()
    except sqlite3.DatabaseError:
        return set()

def remove_one():
    # Once both nodes have finished fits (and others run there), remove one of them.
    while store_rows(storage) < 8 or len(nodes_with_fits()) < 2:
        time.sleep(0.02)
    victim = next(w for w in workers if w.node_id in nodes_with_fits())
    cluster.remove_node(victim, allow_graceful=False)
    removed.append(store_rows(storage))

threading.Thread(target=remove_one, daemon=True).start()
search = GridSearchCV(CountingClassifier(log=log, sleep=0.1), grid, cv=2, refit=False,
                      storage=storage).fit(X, y)
oracle = GridSearchCV(CountingClassifier(), grid, cv=2, refit=False, backend="serial").fit(X, y)
res = search.results_
print("REPORT", json.dumps({
    "removed_at": removed[0] if removed else None,
    "nodes": int(res["node"].nunique()),
    "n": len(res),
    "failed": int(res["error"].notna().sum()),
    "system": int(res["system_failure"].sum()),
    "same": bool(search.cv_results_["params"] == oracle.cv_results_["params"] and all(
        np.array_equal(search.cv_results_[k], oracle.cv_results_[k])
        for k in ("mean_test_score", "split0_test_score", "split1_test_score", "rank_test_score"))),
}))
ray.shutdown()
cluster.shutdown()
"""


def test_node_removed_mid_search_loses_nothing(tmp_path):
    script = tmp_path / "cluster_driver.py"
    script.write_text(CLUSTER_DRIVER)
    storage, log = tmp_path / "store", tmp_path / "log"
    proc = subprocess.run([sys.executable, str(script), str(storage), str(log)],
                          capture_output=True, text=True, env=driver_env(), timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    [line] = [ln for ln in proc.stdout.splitlines() if ln.startswith("REPORT ")]
    report = json.loads(line[len("REPORT "):])
    assert report["removed_at"] is not None and report["removed_at"] < 60, report
    assert report == {**report, "n": 60, "failed": 0, "system": 0, "same": True}
    assert report["nodes"] == 2  # fits ran on both nodes, then the survivor ran the rest
    assert len(set(fits_logged(log))) == 60
    assert status(storage)["done"] == 60


TUNE_CLUSTER_DRIVER = CLUSTER_PRELUDE + """
from raygrid.tune import TuneGridSearchCV

log = sys.argv[1]
""" + CLUSTER_SETUP + """grid = {"a": list(range(6))}
removed = []

def half_done():
    # The candidates with one of their two folds logged: trials in flight.
    seen = [fit[0] for fit in fits_logged(log)]
    return {a for a in seen if seen.count(a) == 1}

def remove_one():
    # Two one-CPU nodes, one trial on each, each two folds of 1 s: once two trials have each
    # logged a fold, both nodes are inside a trial with a finished fold; remove one of them.
    while len(half_done()) < 2:
        time.sleep(0.02)
    cluster.remove_node(workers[0], allow_graceful=False)
    removed.append(len(fits_logged(log)))

threading.Thread(target=remove_one, daemon=True).start()
search = TuneGridSearchCV(CountingClassifier(log=log, sleep=1.0), grid, cv=2, refit=False).fit(X, y)
oracle = GridSearchCV(CountingClassifier(), grid, cv=2, refit=False, backend="serial").fit(X, y)
res = search.results_
print("REPORT", json.dumps({
    "removed_at": removed[0] if removed else None,
    "n": len(res),
    "failed": int(res["error"].notna().sum()),
    "same": bool(search.cv_results_["params"] == oracle.cv_results_["params"] and all(
        np.array_equal(search.cv_results_[k], oracle.cv_results_[k])
        for k in ("mean_test_score", "split0_test_score", "split1_test_score", "rank_test_score"))),
}))
ray.shutdown()
cluster.shutdown()
"""


def test_tune_search_survives_a_removed_node(tmp_path):
    """A Tune trial whose node dies runs again on the survivor (max_retries): every candidate
    gets the scores the serial oracle gives."""
    script = tmp_path / "tune_cluster_driver.py"
    script.write_text(TUNE_CLUSTER_DRIVER)
    log = tmp_path / "log"
    proc = subprocess.run([sys.executable, str(script), str(log)], capture_output=True,
                          text=True, env=driver_env(), timeout=400)
    assert proc.returncode == 0, proc.stderr[-4000:]
    [line] = [ln for ln in proc.stdout.splitlines() if ln.startswith("REPORT ")]
    report = json.loads(line[len("REPORT "):])
    assert report["removed_at"] is not None and report["removed_at"] < 12, report
    assert report == {**report, "n": 12, "failed": 0, "same": True}
    assert len(fits_logged(log)) > 12  # the fits of the trial on the removed node ran again


# -- what a crashed driver's Ray leaves ------------------------------------------------------------
CRASHING_DRIVER = """
import sys
from fault_helpers import CountingClassifier, data
from raygrid import GridSearchCV
X, y = data()
GridSearchCV(CountingClassifier(), {"a": [1]}, cv=2, refit=False, backend="ray").fit(X, y)
print("FITTED", flush=True)
sys.stdin.read()  # until the test kills this process
"""


def test_ray_processes_a_killed_driver_left_are_stopped_on_the_next_start(tmp_path):
    """kill -9 of a driver that started a local Ray leaves Ray's agent processes running; the
    next raygrid start of a local Ray stops exactly those (recorded by pid and start time)."""
    import psutil

    env = {**driver_env(), "RAYGRID_STATE_DIR": str(tmp_path / "state")}
    first = subprocess.Popen([sys.executable, "-c", CRASHING_DRIVER], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert first.stdout.readline().strip() == "FITTED", first.stderr.read()[-3000:]
        ours = psutil.Process(first.pid).children(recursive=True)
        first.kill()
        first.wait()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            left = [p for p in ours if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
            if len(left) < len(ours):  # Ray's own processes went down with their driver
                break
            time.sleep(0.2)
        time.sleep(3)
        left = [p for p in ours if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        assert left, "this Ray leaves nothing behind: the cleaning has nothing to show"
        second = subprocess.run([sys.executable, "-c", CRASHING_DRIVER], input="", text=True,
                                capture_output=True, env=env, timeout=300)
        assert second.returncode == 0, second.stderr[-3000:]
        assert "left by an earlier raygrid run" in second.stderr
        still = [p for p in left if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        assert not still, [p.name() for p in still]
        assert not list((tmp_path / "state" / "local-ray").glob("*.json"))  # shut down cleanly
    finally:  # whatever the outcome, nothing this test started keeps running
        if first.poll() is None:
            first.kill()
        for proc in locals().get("ours", []):
            try:
                proc.kill()
            except psutil.Error:
                pass
