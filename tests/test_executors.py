"""The executors on their own: the Ray executor gives the serial oracle's results, batches tiny
fits, honours n_jobs and fractional GPUs, and says where every fit ran."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import ray.cloudpickle
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.metrics import check_scoring
from sklearn.model_selection import KFold

import raygrid
from raygrid.engine.executors import SerialExecutor, get_executor
from raygrid.engine.executors import ray as ray_executor
from raygrid.engine.executors.ray import AutoBatcher, RayExecutor
from raygrid.engine.fitting import FitResult, Payload, run_trials
from raygrid.engine.plan import build_trials

# Ray workers cannot import this test module by name: ship its classes and functions by value.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

ROOT = Path(__file__).resolve().parents[1]
X = np.arange(120, dtype=float).reshape(60, 2)
Y = np.arange(60) % 2


class ParamScore(ClassifierMixin, BaseEstimator):
    """Exact, known scores: parameter / 1000 plus a function of the rows it saw."""

    def __init__(self, parameter=0, fail=False):
        self.parameter = parameter
        self.fail = fail

    def fit(self, X, y):
        if self.fail:
            raise ValueError(f"failing as asked (parameter={self.parameter})")
        self.classes_ = np.unique(y)
        self.offset_ = float(np.sum(X[:, 0])) / 1e6
        return self

    def predict(self, X):
        return np.full(len(X), self.classes_[0])

    def score(self, X, y):
        return self.parameter / 1000 + self.offset_ + len(X) / 1e9


def tagged_run_trials(payload, trials):
    """run_trials, with each result tagged by the Ray task that ran it and when it ran."""
    import ray as ray_

    start = time.time()
    results = run_trials(payload, trials)
    tag = (ray_.get_runtime_context().get_task_id(), start, time.time())
    for r in results:
        r.task = tag
    return results


def max_overlap(intervals) -> int:
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    now = peak = 0
    for _, step in events:
        now += step
        peak = max(peak, now)
    return peak


def make_payload(n_splits=3, **kw) -> Payload:
    estimator = ParamScore()
    splits = list(KFold(n_splits, shuffle=True, random_state=0).split(X))
    return Payload(estimator=estimator, X=X, y=Y, splits=splits,
                   scorer=check_scoring(estimator), metrics=("score",), **kw)


def comparable(r: FitResult):
    def scores(d):  # NaN != NaN once it has crossed a process boundary: compare by repr
        return None if d is None else sorted((k, repr(v)) for k, v in d.items())

    return (r.candidate, r.fold, scores(r.test_scores), scores(r.train_scores), r.n_test_samples,
            r.error, r.system_failure, r.seed)


# -- AutoBatcher and slots (no Ray needed) ------------------------------------------------------
def fake_result(seconds: float) -> FitResult:
    return FitResult(0, 0, {"score": 1.0}, None, seconds, 0.0, 10)


def test_autobatcher_starts_with_one_trial_per_task():
    assert AutoBatcher().size(remaining=300, slots=2) == 1


def test_autobatcher_groups_tiny_fits_but_keeps_every_slot_busy():
    batcher = AutoBatcher(target_s=0.25)
    batcher.observe([fake_result(0.001)] * 4)
    assert batcher.size(remaining=10_000, slots=2) == 250  # ~target_s of work per task
    assert batcher.size(remaining=100, slots=2) == 25  # the rest spread twice over every slot
    assert batcher.size(remaining=1, slots=8) == 1
    capped = AutoBatcher(target_s=10, max_size=40)
    assert capped.size(10_000, 2) == 1  # nothing observed yet
    capped.observe([fake_result(0.001)])
    assert capped.size(10_000, 2) == 40


def test_autobatcher_keeps_slow_fits_alone_and_follows_changes():
    batcher = AutoBatcher(target_s=0.25)
    batcher.observe([fake_result(2.0)])
    assert batcher.size(remaining=1000, slots=2) == 1
    batcher.observe([fake_result(0.0)] * 3)  # a moving average: faster fits, bigger batches
    assert batcher.size(remaining=1000, slots=2) == 1
    for _ in range(10):
        batcher.observe([fake_result(0.0)])
    assert batcher.size(remaining=1000, slots=2) > 1


def test_get_executor():
    assert isinstance(get_executor("serial"), SerialExecutor)
    assert isinstance(get_executor("ray", n_jobs=2), RayExecutor)
    with pytest.raises(ValueError, match="'spark'"):
        get_executor("spark")


# -- Ray executor against the serial oracle -------------------------------------------------------
def test_ray_equals_serial_over_300_tiny_fits_in_fewer_tasks(ray_local, monkeypatch):
    monkeypatch.setattr(ray_executor, "run_trials", tagged_run_trials)
    payload = make_payload(return_train_score=True)
    candidates = [{"parameter": p, "fail": p % 37 == 5} for p in range(100)]
    trials = build_trials(candidates, 3, random_state=7)
    assert len(trials) == 300

    serial = SerialExecutor()
    expected = sorted(map(comparable, serial.run(serial.share(payload), trials)))
    executor = RayExecutor()
    got = list(executor.run(executor.share(payload), trials))

    assert sorted(map(comparable, got)) == expected
    assert sum(r.failed for r in got) == 9
    assert all("failing as asked" in r.error for r in got if r.failed)
    tasks = {r.task[0] for r in got}
    assert len(tasks) < len(trials) // 3, f"{len(tasks)} tasks for {len(trials)} fits"
    assert executor.batcher.per_trial is not None
    assert executor.running == 0


def test_n_jobs_one_caps_tasks_in_flight(ray_local, monkeypatch):
    monkeypatch.setattr(ray_executor, "run_trials", tagged_run_trials)
    executor = RayExecutor(n_jobs=1, batch=False)
    assert executor.slots() == 1
    payload = make_payload()
    trials = build_trials([{"parameter": p} for p in range(4)], 3)
    got = list(executor.run(executor.share(payload), trials))
    assert len({r.task[0] for r in got}) == len(trials)  # batch=False: one task per fit
    assert max_overlap({r.task[1:] for r in got}) == 1


def test_slots_follow_resources_and_n_jobs(ray_local):
    cpus = int(ray_local.cluster_resources()["CPU"])
    assert RayExecutor().slots() == cpus
    assert RayExecutor(n_jobs=1).slots() == 1
    assert RayExecutor(n_jobs=10 * cpus).slots() == cpus
    assert RayExecutor(ray_remote_args={"num_cpus": 0.5}).slots() == 2 * cpus


def test_search_results_say_where_each_fit_ran(ray_local):
    grid = {"parameter": [1, 2, 3]}
    ours = raygrid.GridSearchCV(ParamScore(), grid, cv=3, backend="ray").fit(X, Y)
    frame = ours.results_
    assert len(frame) == 9
    assert frame["node"].isin({n["NodeID"] for n in ray_local.nodes()}).all()
    assert (frame["pid"] > 0).all() and (frame["pid"] != os.getpid()).all()

    serial = raygrid.GridSearchCV(ParamScore(), grid, cv=3, backend="serial").fit(X, Y)
    assert (serial.results_["pid"] == os.getpid()).all()
    # In this process: "local:<host>", or the driver's node when Ray runs here.
    driver_node = ray_local.get_runtime_context().get_node_id()
    assert serial.results_["node"].isin({driver_node, f"local:{socket.gethostname()}"}).all()
    np.testing.assert_array_equal(ours.cv_results_["mean_test_score"],
                                  serial.cv_results_["mean_test_score"])
    assert ours.best_params_ == serial.best_params_ == {"parameter": 3}


# -- fractional GPUs, on a Ray of its own ---------------------------------------------------------
GPU_SCRIPT = textwrap.dedent("""
    import json, os, time
    import numpy as np
    import ray
    from sklearn.base import BaseEstimator, ClassifierMixin
    import raygrid
    from raygrid.engine.executors.ray import RayExecutor

    class Sleepy(ClassifierMixin, BaseEstimator):
        def __init__(self, parameter=0):
            self.parameter = parameter
        def fit(self, X, y):
            self.start_ = time.time()
            self.resources_ = ray.get_runtime_context().get_assigned_resources()
            self.cuda_ = os.environ.get("CUDA_VISIBLE_DEVICES")
            time.sleep(0.4)
            self.end_ = time.time()
            self.classes_ = np.unique(y)
            return self

    def where(est, X, y):
        return {"gpu": est.resources_.get("GPU", 0.0), "cpu": est.resources_.get("CPU", 0.0),
                "cuda": float(est.cuda_) if est.cuda_ else -1.0,
                "start": est.start_, "end": est.end_}

    T0 = time.time()
    ray.init(address="local", num_cpus=4, num_gpus=1, include_dashboard=False,
             log_to_driver=False, configure_logging=False)
    X = np.zeros((24, 2)); y = np.arange(24) % 2
    print(f"TIME ray.init: {time.time() - T0:.1f}s")
    out = {}
    for gpus in (0.25, 0.5):
        args = {"num_cpus": 1, "num_gpus": gpus}
        search = raygrid.GridSearchCV(Sleepy(), {"parameter": list(range(4))}, cv=2,
                                      scoring=where, refit=False, ray_remote_args=args)
        t = time.time()
        search.fit(X, y)
        print(f"TIME search {gpus}: {time.time() - t:.1f}s")
        f = search.results_
        out[str(gpus)] = {"slots": RayExecutor(ray_remote_args=args).slots(), "fits": len(f),
                          "failed": int(f["error"].notna().sum()),
                          "gpu": sorted(set(f["test_gpu"])), "cpu": sorted(set(f["test_cpu"])),
                          "cuda": sorted(set(f["test_cuda"])),
                          "intervals": list(zip(f["test_start"], f["test_end"]))}
    print("RESULT " + json.dumps(out))
""")


@pytest.mark.slow
def test_fractional_gpus_pack_fits_on_one_gpu():
    """A fresh Ray with 4 CPUs and 1 (logical) GPU: num_gpus=0.25 packs 4 fits on it, 0.5 two."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.run([sys.executable, "-c", GPU_SCRIPT], capture_output=True, text=True,
                          timeout=240, cwd=ROOT, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    print("\n".join(ln for ln in proc.stdout.splitlines() if ln.startswith("TIME ")))
    [line] = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    out = __import__("json").loads(line[len("RESULT "):])
    for gpus, cap in (("0.25", 4), ("0.5", 2)):
        run = out[gpus]
        assert run["slots"] == cap
        assert run["fits"] == 8 and run["failed"] == 0
        assert run["gpu"] == [float(gpus)] and run["cpu"] == [1.0]
        assert run["cuda"] == [0.0]  # Ray hands every fit the one GPU
        assert 1 <= max_overlap(run["intervals"]) <= cap


# -- work units: several trials in one task, with their own resources --------------------------
def env_tagged_unit(payload, trials):
    """A unit: run_trials, each result tagged with an environment variable of its worker."""
    results = run_trials(payload, trials)
    for r in results:
        r.node = os.environ.get("RAYGRID_UNIT_TEST", "unset")
    return results


def failing_unit(payload, trials):
    raise RuntimeError("this unit cannot run")


def test_units_run_beside_trials_with_their_own_resources(backend):
    from raygrid.engine.executors import Unit

    payload = make_payload()
    trials = build_trials([{"parameter": p} for p in range(6)], 3, random_state=1)
    serial = SerialExecutor()
    expected = sorted(map(comparable, serial.run(serial.share(payload), trials)))

    def on_failure(unit_trials, exc):
        return [FitResult(t.candidate, t.fold, {}, None, 0, 0, 0, error=f"unit: {exc}")
                for t in unit_trials]

    env = {"runtime_env": {"env_vars": {"RAYGRID_UNIT_TEST": "unit-env"}}}
    work = [Unit(env_tagged_unit, tuple(trials[:6]), resources=env), *trials[6:12],
            Unit(failing_unit, tuple(trials[12:]), on_failure=on_failure)]
    executor = get_executor(backend)
    got = list(executor.run(executor.share(payload), work))
    assert len(got) == len(trials) and getattr(executor, "running", 0) == 0
    by_key = {(r.candidate, r.fold): r for r in got}
    assert sorted(map(comparable, (by_key[(t.candidate, t.fold)] for t in trials[:12]))) == \
        expected[:12]
    assert all("unit: " in by_key[(t.candidate, t.fold)].error
               and "this unit cannot run" in by_key[(t.candidate, t.fold)].error
               for t in trials[12:])
    if backend == "ray":  # the unit's runtime_env reached its worker
        assert {by_key[(t.candidate, t.fold)].node for t in trials[:6]} == {"unit-env"}
