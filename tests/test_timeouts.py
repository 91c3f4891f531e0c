"""fit_timeout: a fit that runs longer is stopped (its Ray worker or child process killed; on the
serial backend interrupted in the driver) and is that fit's failure row; Ctrl-C on hung fits stops
within their time limit."""
from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
import pytest
from sklearn.metrics import check_scoring

import fault_helpers as fh
from raygrid import GridSearchCV, cross_validate
from raygrid.engine.fitting import FitTimeout, Payload
from raygrid.engine.plan import build_trials
from test_reliability import hang_guard

LIMIT = 3.0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (killed, not yet reaped by its parent) is not running
        with open(f"/proc/{pid}/stat") as fh_:
            return fh_.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def _pids(path) -> list[int]:
    return [int(line) for line in open(path).read().split()] if os.path.exists(path) else []


def test_a_fit_over_its_time_limit_is_a_failure_row(backend, tmp_path):
    X, y = fh.data(40)
    pid_file = tmp_path / "pids"
    est = fh.HangingClassifier(hang_on=1, pid_file=str(pid_file))
    with hang_guard(180), pytest.warns(Warning, match="fits failed"):
        search = GridSearchCV(est, {"a": [0, 1, 2]}, cv=2, refit=False, backend=backend,
                              fit_timeout=LIMIT).fit(X, y)
    frame = search.results_.set_index(["candidate", "fold"])
    assert frame.loc[1, "error"].str.contains(f"fit_timeout={LIMIT:g} s").all()
    assert frame.loc[1, "error"].str.contains("FitTimeout").all()
    assert not frame["system_failure"].any()
    assert frame.loc[[0, 2], "error"].isna().all()
    assert np.isnan(search.cv_results_["mean_test_score"][1])
    assert np.isfinite(search.cv_results_["mean_test_score"][[0, 2]]).all()
    if backend == "ray":  # the hung fits' workers were killed
        deadline = time.monotonic() + 30
        while any(_alive(p) for p in _pids(pid_file)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _pids(pid_file) and not any(_alive(p) for p in _pids(pid_file))


def test_error_score_raise_raises_the_timeout(backend):
    X, y = fh.data(40)
    with hang_guard(180), pytest.raises(FitTimeout, match="fit_timeout=2 s"):
        cross_validate(fh.HangingClassifier(hang_on=0), X, y, cv=2, backend=backend,
                       error_score="raise", fit_timeout=2)


def test_the_auto_backends_child_is_killed_at_the_limit(tmp_path):
    """The local fits of backend="auto" run in a child process: a hung fit's child is killed,
    a new child runs the next fit."""
    from raygrid.engine.executors.auto import AutoExecutor

    X, y = fh.data(40)
    pid_file = tmp_path / "pids"
    est = fh.HangingClassifier(hang_on=1, pid_file=str(pid_file))
    payload = Payload(estimator=est, X=X, y=y, splits=[(np.arange(20), np.arange(20, 40))],
                      scorer=check_scoring(est), metrics=("score",))
    executor = AutoExecutor(budget_s=600, fit_timeout=LIMIT)
    with hang_guard(120):
        results = list(executor.run(executor.share(payload),
                                    build_trials([{"a": a} for a in range(3)], 1)))
    by_candidate = {r.candidate: r for r in results}
    assert by_candidate[1].failed and isinstance(by_candidate[1].exception, FitTimeout)
    assert not by_candidate[0].failed and not by_candidate[2].failed
    assert by_candidate[0].pid != by_candidate[2].pid  # a new child after the kill
    assert _pids(pid_file) and not any(_alive(p) for p in _pids(pid_file))
    executor.local.close()


def _ctrl_c_once_started(pid_file, timeout=120.0) -> threading.Thread:
    """Press Ctrl-C (SIGINT to the main thread) once the hung fit has started."""
    def press():
        deadline = time.monotonic() + timeout
        while not os.path.exists(pid_file) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
        signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)

    thread = threading.Thread(target=press, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("where", ["ray", "auto"])
def test_ctrl_c_on_hung_fits_stops_within_their_time_limit(where, request, tmp_path):
    """Ctrl-C lets the fits in flight finish, but a hung fit only until its time limit: the
    search stops then, without a second Ctrl-C, with the hung fit's failure row."""
    X, y = fh.data(20)
    pid_file = tmp_path / "pids"
    est = fh.HangingClassifier(hang_on=1, pid_file=str(pid_file))
    payload = Payload(estimator=est, X=X, y=y, splits=[(np.arange(10), np.arange(10, 20))],
                      scorer=check_scoring(est), metrics=("score",))
    if where == "ray":
        request.getfixturevalue("ray_local")
        from raygrid.engine.executors.ray import RayExecutor

        executor = RayExecutor(n_jobs=1, fit_timeout=8.0)
    else:
        from raygrid.engine.executors.auto import AutoExecutor

        executor = AutoExecutor(budget_s=600, fit_timeout=8.0)
    stream = executor.run(executor.share(payload), build_trials([{"a": 1}, {"a": 2}], 1))
    kept = []
    presser = _ctrl_c_once_started(pid_file)
    with hang_guard(120), pytest.raises(KeyboardInterrupt):
        for result in stream:
            kept.append(result)
    presser.join()
    assert [r.candidate for r in kept] == [0] and isinstance(kept[0].exception, FitTimeout)
    assert executor.running == 0


def test_the_model_selection_functions_take_a_fit_timeout():
    """cross_val_predict, learning_curve, validation_curve and permutation_test_score stop a
    fit at fit_timeout too: error_score applies to the curves (learning_curve raises when
    every fit failed, as scikit-learn's does), the others raise, as they raise any failed fit."""
    from raygrid import (cross_val_predict, learning_curve, permutation_test_score,
                         validation_curve)

    X, y = fh.data(40)
    hangs = fh.HangingClassifier(hang_on=0)
    with hang_guard(180):
        _, test = validation_curve(fh.HangingClassifier(hang_on=1), X, y, param_name="a",
                                   param_range=[0, 1], cv=2, backend="serial", fit_timeout=1)
        assert np.isfinite(test[0]).all() and np.isnan(test[1]).all()
        with pytest.raises(ValueError, match="(?s)All the 2 fits failed.+fit_timeout=1 s"):
            learning_curve(hangs, X, y, train_sizes=[1.0], cv=2, backend="serial", fit_timeout=1)
        with pytest.raises(FitTimeout, match="fit_timeout=1 s"):
            cross_val_predict(hangs, X, y, cv=2, backend="serial", fit_timeout=1)
        with pytest.raises(FitTimeout, match="fit_timeout=1 s"):
            permutation_test_score(hangs, X, y, cv=2, n_permutations=1, backend="serial",
                                   fit_timeout=1)
