"""Reliability: bad values, broken tasks, bad options and unreachable or wrong clusters fail one
fit or fail fast, with a clear error; nothing hangs and nothing is created before it is checked."""
from __future__ import annotations

import contextlib
import signal

import numpy as np
import pytest
from sklearn.metrics import check_scoring

import fault_helpers as fh
from raygrid import GridSearchCV
from raygrid.engine.fitting import Payload
from raygrid.engine.plan import build_trials


@pytest.mark.parametrize("reject", [3, 0])  # 0: the first candidate, also checked on the driver
def test_a_value_rejected_by_set_params_fails_that_fit_only(backend, reject):
    X, y = fh.data(40)
    search = GridSearchCV(fh.RejectingClassifier(reject=reject), {"a": list(range(6))}, cv=2,
                          backend=backend, refit=False)
    with pytest.warns(Warning, match="fits failed"):
        search.fit(X, y)
    frame = search.results_
    failed = frame[frame["error"].notna()]
    assert sorted(failed["candidate"]) == [reject, reject]
    assert not frame["system_failure"].any()
    assert failed["error"].str.contains(f"a={reject} is not allowed").all()
    assert np.isnan(search.cv_results_["mean_test_score"][reject])
    assert np.isfinite(np.delete(search.cv_results_["mean_test_score"], reject)).all()


def test_an_unknown_parameter_is_still_refused_before_any_fit(tmp_path):
    X, y = fh.data(20)
    log = tmp_path / "log"
    with pytest.raises(ValueError, match=r"Invalid parameter 'c' .*Valid parameters are: .*'a'"):
        GridSearchCV(fh.RejectingClassifier(log=str(log), reject=0), {"a": [0, 1], "c": [1]},
                     cv=2).fit(X, y)
    assert not log.exists()


@pytest.mark.parametrize("n_iter", [-1, 0, 2.5, "3"])
def test_a_bad_n_iter_is_named_before_anything_runs(n_iter, tmp_path):
    from raygrid import RandomizedSearchCV

    X, y = fh.data(20)
    log = tmp_path / "log"
    search = RandomizedSearchCV(fh.CountingClassifier(log=str(log)), {"a": [1, 2, 3]},
                                n_iter=n_iter, cv=2, storage=tmp_path / "store")
    with pytest.raises(ValueError, match=r"n_iter must be an integer >= 1.*got"):
        search.fit(X, y)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_trial_that_breaks_its_batch_task_fails_alone(ray_local):
    """A batch whose task raises (here a BaseException from one fit) is rerun one trial per
    task: the other trials of the batch get their scores."""
    from raygrid.engine.executors.ray import RayExecutor

    X, y = fh.data(40)
    splits = [(np.arange(20), np.arange(20, 40)), (np.arange(20, 40), np.arange(20))]
    est = fh.AbortingClassifier(abort_on=4)
    payload = Payload(estimator=est, X=X, y=y, splits=splits, scorer=check_scoring(est),
                      metrics=("score",))
    trials = build_trials([{"a": a} for a in range(8)], 2)
    executor = RayExecutor(n_jobs=2)
    executor.batcher.per_trial = 1e-4  # batches from the first task on
    results = list(executor.run(executor.share(payload), trials))
    assert sorted((r.candidate, r.fold) for r in results) == sorted(
        (t.candidate, t.fold) for t in trials)
    failed = sorted((r.candidate, r.fold) for r in results if r.failed)
    assert failed == [(4, 0), (4, 1)]
    assert all(np.isfinite(r.test_scores["score"]) for r in results if not r.failed)


@pytest.mark.parametrize("option, value, match", [
    ("n_jobs", 0, "n_jobs=0 has no meaning"),
    ("n_jobs", 1.5, "n_jobs must be"),
    ("max_retries", -1, "max_retries must be an integer >= 0"),
])
@pytest.mark.parametrize("backend_name", ["serial", "ray"])
def test_bad_n_jobs_and_max_retries_fail_before_anything_is_created(option, value, match,
                                                                     backend_name, tmp_path):
    from raygrid import cross_validate

    X, y = fh.data(20)
    log = tmp_path / "log"
    est = fh.CountingClassifier(log=str(log))
    with pytest.raises(ValueError, match=match):
        GridSearchCV(est, {"a": [1, 2]}, cv=2, backend=backend_name, storage=tmp_path / "s1",
                     **{option: value}).fit(X, y)
    with pytest.raises(ValueError, match=match):
        cross_validate(est, X, y, cv=2, backend=backend_name, storage=tmp_path / "s2",
                       **{option: value})
    assert sorted(p.name for p in tmp_path.iterdir()) == []


class Hung(AssertionError):
    pass


@contextlib.contextmanager
def hang_guard(seconds: float = 120.0, interrupt_after: float | None = None):
    """Fail (rather than hang the suite) when the block is still running after ``seconds``;
    optionally press Ctrl-C (a KeyboardInterrupt in this thread) after ``interrupt_after``."""
    events = [] if interrupt_after is None else [interrupt_after]

    def fire(signum, frame):
        if events:
            events.pop()
            signal.setitimer(signal.ITIMER_REAL, seconds)
            raise KeyboardInterrupt
        raise Hung(f"still running after {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, interrupt_after if events else seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_a_gpu_request_on_a_ray_without_gpus_fails_at_once(ray_local, tmp_path, monkeypatch):
    monkeypatch.delenv("RAYGRID_AUTOSCALING", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ray up bootstrap file: no autoscaler
    X, y = fh.data(20)
    log = tmp_path / "log"
    with hang_guard(), pytest.raises(ValueError, match=r"'GPU': 1.*never start"):
        GridSearchCV(fh.CountingClassifier(log=str(log)), {"a": [1, 2]}, cv=2,
                     ray_remote_args={"num_cpus": 1, "num_gpus": 1},
                     storage=tmp_path / "store").fit(X, y)
    assert not log.exists()
    assert not (tmp_path / "store").exists()  # refused before any store was made


def test_ctrl_c_cancels_fits_no_node_can_start(ray_local, tmp_path, monkeypatch):
    """Fits waiting for resources no node has (an autoscaler never added one) are cancelled at
    once on Ctrl-C; the interrupt is raised again."""
    from raygrid.engine.executors.ray import RayExecutor

    monkeypatch.setenv("RAYGRID_AUTOSCALING", "1")
    X, y = fh.data(20)
    splits = [(np.arange(10), np.arange(10, 20))]
    est = fh.CountingClassifier()
    payload = Payload(estimator=est, X=X, y=y, splits=splits, scorer=check_scoring(est),
                      metrics=("score",))
    executor = RayExecutor(ray_remote_args={"num_cpus": 1, "resources": {"no_such_thing": 1}})
    with pytest.warns(RuntimeWarning, match="no_such_thing"):
        stream = executor.run(executor.share(payload), build_trials([{"a": 1}, {"a": 2}], 1))
        with hang_guard(interrupt_after=3.0), pytest.raises(KeyboardInterrupt):
            list(stream)
    assert executor.running == 0


# -- cluster addresses ----------------------------------------------------------------------------
@contextlib.contextmanager
def listening(kind: str):
    """A local port where an HTTP server answers (``"http"``) or a socket never answers."""
    import http.server
    import socket
    import threading

    if kind == "http":
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"127.0.0.1:{server.server_address[1]}"
        finally:
            server.shutdown()
            server.server_close()
    else:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)  # the kernel accepts connections; nothing ever reads or answers
        try:
            yield f"127.0.0.1:{sock.getsockname()[1]}"
        finally:
            sock.close()


def test_an_http_server_is_not_taken_for_a_ray_cluster():
    from raygrid.engine.executors.cluster import probe

    with listening("http") as address:
        with hang_guard(), pytest.raises(ConnectionError, match="an HTTP server") as info:
            probe(address)
    assert repr(address) in str(info.value)


def test_an_address_that_never_answers_fails_after_the_connect_deadline(monkeypatch):
    from raygrid.engine.executors.cluster import probe

    monkeypatch.setenv("RAYGRID_CONNECT_TIMEOUT", "1")
    with listening("silent") as address:
        with hang_guard(), pytest.raises(ConnectionError, match=r"within 1 s.*RAYGRID_CONNECT_TIMEOUT"):
            probe(address)
    monkeypatch.setenv("RAYGRID_CONNECT_TIMEOUT", "soon")
    with pytest.raises(ValueError, match="RAYGRID_CONNECT_TIMEOUT"):
        probe("127.0.0.1:1")


def test_the_running_ray_passes_the_probe(ray_local):
    from raygrid.engine.executors.cluster import connect, probe

    gcs = ray_local.get_runtime_context().gcs_address
    probe(gcs)
    connect(gcs)  # the cluster this process runs: used as it is
    connect("127.0.0.1:" + gcs.rsplit(":", 1)[1])


def test_an_address_other_than_the_running_ray_is_an_error(ray_local, tmp_path):
    X, y = fh.data(20)
    log = tmp_path / "log"
    with pytest.raises(RuntimeError, match=r"already running in this process.*ray.shutdown"):
        GridSearchCV(fh.CountingClassifier(log=str(log)), {"a": [1]}, cv=2,
                     address="10.255.255.1:6379", storage=tmp_path / "store").fit(X, y)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_with_storage_bad_input_creates_nothing(tmp_path):
    from raygrid import cross_validate

    X, y = fh.data(20)
    est = fh.CountingClassifier()
    with pytest.raises(ValueError, match="Invalid parameter 'nope'"):
        GridSearchCV(est, {"nope": [1]}, cv=2, backend="serial",
                     storage=tmp_path / "s1").fit(X, y)
    with pytest.raises(ValueError, match="param_grid yields no candidates"):
        GridSearchCV(est, [], cv=2, backend="serial", storage=tmp_path / "s2").fit(X, y)
    with pytest.raises(ValueError, match="scoring"):
        cross_validate(est, X, y, cv=2, backend="serial", scoring="no_such_metric",
                       storage=tmp_path / "s3")
    assert sorted(p.name for p in tmp_path.iterdir()) == []
