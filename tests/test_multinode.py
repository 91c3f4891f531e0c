"""A search on a multi-node Ray cluster on this machine: fits spread over the nodes, and the
results are exactly the serial backend's.

The cluster (``ray.cluster_utils.Cluster``: a head with no CPUs and two one-CPU nodes) and the
search run in a fresh interpreter, ``tests/multinode_search.py``: a process can be connected to
one Ray only, and this pytest process may already hold the session's local Ray.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile

import numpy as np
import pytest

import multinode_search as mn
from multinode_procs import end_started

TIMEOUT_S = 300  # ~50 s on a loaded 2-core machine; generous so a busy CI box does not fail it


def run_on_cluster() -> dict:
    # A private, short temp dir (Ray's socket paths must stay under 108 bytes): the cluster's
    # session and its ray_current_cluster file stay out of /tmp/ray, where another Ray lives.
    tmp = tempfile.mkdtemp(prefix="rgmn", dir="/tmp")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    # With ~/.ray/auth_token present, a started cluster and its clients must agree on the mode.
    env.update(RAY_AUTH_MODE="disabled", RAY_TMPDIR=tmp, RAY_USAGE_STATS_ENABLED="0")
    proc = subprocess.Popen([sys.executable, mn.__file__], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"the multi-node search did not finish in {TIMEOUT_S} s:\n{err[-4000:]}")
    finally:
        # Normally gone with the helper; otherwise end them (only the helper's session's processes
        # and those carrying its RAY_TMPDIR, never another Ray on the machine).
        end_started(proc.pid, tmp, wait_s=10.0)
        shutil.rmtree(tmp, ignore_errors=True)
    lines = [line for line in out.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, (
        f"exit code {proc.returncode}\nstdout:\n{out[-4000:]}\nstderr:\n{err[-4000:]}")
    return json.loads(lines[-1][len("RESULT "):])


_RUN: list[dict] = []


def _cluster() -> dict:
    """The one cluster run of this module (its ~7 s start is paid once)."""
    if not _RUN:
        _RUN.append(run_on_cluster())
    return _RUN[0]


def test_search_spreads_over_nodes_and_matches_serial():
    cluster = _cluster()

    nodes = cluster["fit_nodes"]
    n_fits = len(mn.GRID["threshold"]) * len(mn.GRID["feature"]) * mn.CV
    assert len(nodes) == n_fits
    # The head has no CPUs: every fit ran on one of the three worker nodes, and each got work.
    assert set(nodes) <= set(cluster["worker_nodes"]), (set(nodes), cluster)
    assert len(set(nodes)) == 3, {n: nodes.count(n) for n in set(nodes)}

    X, y = mn.data()
    serial = mn.search(sleep=0, backend="serial").fit(X, y)
    expected = json.loads(json.dumps(mn.comparable(serial.cv_results_)))  # same JSON round trip
    assert set(cluster["cv_results"]) == set(expected)
    for key, values in expected.items():
        assert cluster["cv_results"][key] == values, key
    assert cluster["best_params"] == serial.best_params_
    assert cluster["best_index"] == serial.best_index_
    assert cluster["best_score"] == serial.best_score_
    # The grid's scores are not all equal, so the comparison above says something.
    assert len(set(np.round(expected["mean_test_score"], 12))) > 3


def test_the_report_shows_three_nodes_with_their_fits():
    """Three Ray nodes on one machine share host and IP: the report tells them apart by their
    short ids (not "36 fits on 1 nodes"), with each node's own fits, also when rebuilt without Ray."""
    cluster = _cluster()
    fits = {n[:8]: cluster["fit_nodes"].count(n) for n in cluster["worker_nodes"]}
    for report in (cluster["report"], cluster["report_rebuilt"]):
        assert report["count"] == 3, report
        rows = {name.rsplit(" · ", 1)[-1]: n for name, n in report["rows"]}
        assert rows == fits and sum(rows.values()) == len(cluster["fit_nodes"]), (report, fits)
        assert all(" (" in name and " · " in name for name, _ in report["rows"]), report  # host (IP) · id
