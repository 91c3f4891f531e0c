"""From laptop to cluster, end to end on one machine: an autoscaling fake multi-node Ray cluster
(``tests/fake_cluster.yaml``, docs/cluster.md "Test it locally"), a ``raygrid run`` submitted to it
as a Ray job, and the files the job writes.

The cluster is started as in docs/cluster.md, with what a shared machine needs: ports chosen free
at run time (outside Ray's worker range 10002-19999, and below the system's ephemeral range so
no other process is handed them meanwhile), a private temp dir, ``RAY_AUTH_MODE`` the same for
every process, and ``ray start`` in a session of its own. Cleanup ends exactly that session's
processes (the head's, the autoscaled worker nodes', the job's): never ``ray stop``, which ends
every Ray on the machine.
"""
from __future__ import annotations

import json
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest

from multinode_procs import end_started

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # the venv's bin: `ray` here, and `raygrid` for the job's driver
# Measured on a loaded 2-core machine: start 11-24 s, workers up 14-26 s later, job 40-50 s.
START_TIMEOUT_S = 150
WORKERS_TIMEOUT_S = 180
JOB_TIMEOUT_S = 360

SPEC = """\
title: fake cluster check
data: {name: breast_cancer}
preprocessing: standard
estimator:
  import: "sklearn.svm:SVC"
search:
  kind: grid
  grid:
    kernel: [rbf, linear]
    C: [0.1, 1, 10]
cv: {kind: stratified, n_splits: 3, shuffle: true, random_state: 0}
scoring: accuracy
random_state: 0
"""
N_CANDIDATES, N_SPLITS = 6, 3


# ----------------------------------------------------------------------------- helpers
def free_ports(n: int, low: int = 20000, high: int = 32000) -> list[int]:
    """``n`` distinct ports that nothing listens on now, from a range no one is handed at random."""
    ports: list[int] = []
    candidates = list(range(low, high))
    random.shuffle(candidates)
    for port in candidates:
        try:
            for host in ("0.0.0.0", "127.0.0.1"):
                with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                    s.bind((host, port))
        except OSError:
            continue
        ports.append(port)
        if len(ports) == n:
            return ports
    raise RuntimeError(f"no {n} free ports in {low}-{high}")


def worker_counts(status: str) -> dict[str, int]:
    """Active nodes per node type in the output of ``ray status``."""
    active = status.split("Active:", 1)[-1].split("Pending:", 1)[0] if "Active:" in status else ""
    return {m.group(2): int(m.group(1))
            for m in re.finditer(r"^\s*(\d+)\s+(ray\.[\w.]+)\s*$", active, re.MULTILINE)}


class FakeCluster:
    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.gcs_port, self.dashboard_port, self.client_port = free_ports(3)
        self.gcs = f"127.0.0.1:{self.gcs_port}"
        self.dashboard = f"http://127.0.0.1:{self.dashboard_port}"
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        env.update(
            PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
            # When ~/.ray/auth_token exists, `ray start` turns token auth on while clients default
            # to none: every process of the test uses the same mode.
            RAY_AUTH_MODE="disabled",
            RAY_TMPDIR=str(tmp),  # also where the autoscaled nodes put their sessions
            RAY_USAGE_STATS_ENABLED="0",
        )
        self.env = env
        self.session: int | None = None

    def ray(self, *args: str, timeout: float, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run([str(BIN / "ray"), *args], env=self.env, capture_output=True,
                              text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"ray {' '.join(args)} exited {proc.returncode}\n"
                                 f"stdout:\n{proc.stdout[-6000:]}\nstderr:\n{proc.stderr[-6000:]}")
        return proc

    def start(self) -> None:
        config = (ROOT / "tests" / "fake_cluster.yaml").read_text(encoding="utf-8")
        config, n = re.subn(r'gcs_address:\s*"[^"]*"', f'gcs_address: "{self.gcs}"', config)
        assert n == 1, "tests/fake_cluster.yaml has no provider.gcs_address to point at this head"
        (self.tmp / "fake_cluster.yaml").write_text(config, encoding="utf-8")
        log = open(self.tmp / "ray_start.log", "w")
        # A session of its own: the head's processes, the worker nodes its autoscaler launches and
        # the jobs' processes all belong to it, so the test can end exactly those.
        proc = subprocess.Popen(
            [str(BIN / "ray"), "start", "--head", f"--port={self.gcs_port}", "--num-cpus=1",
             f"--autoscaling-config={self.tmp / 'fake_cluster.yaml'}",
             "--include-dashboard=true", f"--dashboard-port={self.dashboard_port}",
             "--dashboard-agent-listen-port=0", f"--ray-client-server-port={self.client_port}",
             "--min-worker-port=0", "--max-worker-port=0",
             "--object-store-memory=300000000", f"--temp-dir={self.tmp / 'ray'}",
             "--disable-usage-stats"],
            env={**self.env, "RAY_FAKE_CLUSTER": "1"}, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True)
        self.session = proc.pid
        try:
            rc = proc.wait(timeout=START_TIMEOUT_S)
        finally:
            log.close()
        assert rc == 0, f"ray start exited {rc}:\n{(self.tmp / 'ray_start.log').read_text()[-6000:]}"

    def wait_for_workers(self, n: int) -> str:
        deadline = time.monotonic() + WORKERS_TIMEOUT_S
        status = ""
        while time.monotonic() < deadline:
            proc = self.ray("status", f"--address={self.gcs}", timeout=60, check=False)
            status = proc.stdout
            if worker_counts(status).get("ray.worker.cpu", 0) >= n:
                return status
            time.sleep(3)
        raise AssertionError(f"{n} worker nodes not up after {WORKERS_TIMEOUT_S} s:\n{status}")

    def stop(self) -> list[int]:
        """End the cluster: every process of its session, or that carries its RAY_TMPDIR."""
        return end_started(self.session, str(self.tmp))


@pytest.fixture
def fake_cluster():
    # Short and private: Ray's socket paths must stay under 108 bytes.
    tmp = Path(tempfile.mkdtemp(prefix="rgfc", dir="/tmp"))
    cluster = FakeCluster(tmp)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(tmp, ignore_errors=True)


# ----------------------------------------------------------------------------- the test
@pytest.mark.timeout(START_TIMEOUT_S + WORKERS_TIMEOUT_S + JOB_TIMEOUT_S + 120)
def test_raygrid_run_as_a_job_on_a_fake_multinode_cluster(fake_cluster, tmp_path):
    fake_cluster.wait_for_workers(2)

    work = tmp_path / "work"
    work.mkdir()
    (work / "spec.yaml").write_text(SPEC, encoding="utf-8")
    out = tmp_path / "out"  # absolute: the job runs in its own copy of the working dir
    job = fake_cluster.ray(
        "job", "submit", f"--address={fake_cluster.dashboard}", f"--working-dir={work}", "--",
        "raygrid", "run", "spec.yaml", "--out", str(out), "--backend", "ray", "-q",
        timeout=JOB_TIMEOUT_S)
    assert "succeeded" in (job.stdout + job.stderr).lower(), (job.stdout + job.stderr)[-6000:]

    for name in ("results.csv", "results.parquet", "summary.csv", "best.json", "report.html"):
        assert (out / name).is_file(), (name, sorted(p.name for p in out.iterdir()))

    results = pd.read_parquet(out / "results.parquet")
    assert len(pd.read_csv(out / "results.csv")) == len(results) == N_CANDIDATES * N_SPLITS
    assert len(pd.read_csv(out / "summary.csv")) == N_CANDIDATES
    assert results["error"].isna().all() or (results["error"].fillna("") == "").all()
    assert not results["system_failure"].any()
    assert sorted(zip(results["candidate"], results["fold"])) == [
        (c, f) for c in range(N_CANDIDATES) for f in range(N_SPLITS)]
    # Fits ran as Ray tasks on the cluster's nodes (Ray node ids, not the serial "local:..."),
    # spread over more than one node.
    per_node = results["node"].value_counts()
    print("fits per node:", per_node.to_dict())
    assert all(re.fullmatch(r"[0-9a-f]{56}", n) for n in per_node.index), per_node
    assert len(per_node) >= 2, per_node

    # The same search with scikit-learn's own GridSearchCV: same best candidate and score.
    from sklearn.datasets import load_breast_cancer
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    X, y = load_breast_cancer(return_X_y=True)
    ref = GridSearchCV(Pipeline([("scaler", StandardScaler()), ("model", SVC())]),
                       [{"model__kernel": ["rbf", "linear"], "model__C": [0.1, 1, 10]}],
                       cv=StratifiedKFold(N_SPLITS, shuffle=True, random_state=0),
                       scoring="accuracy").fit(X, y)
    best = json.loads((out / "best.json").read_text(encoding="utf-8"))
    assert best["params"] == ref.best_params_
    assert best["mean_score"] == pytest.approx(ref.best_score_, rel=1e-12)
    assert best["n_fits"] == N_CANDIDATES * N_SPLITS
