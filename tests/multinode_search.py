"""A raygrid search on a multi-node Ray cluster on this machine (``ray.cluster_utils.Cluster``).

Run by ``tests/test_multinode.py`` as a fresh interpreter (a process can be connected to one Ray
only, and the pytest process has its own)::

    python tests/multinode_search.py

It starts a head with no CPUs plus three one-CPU nodes, so every fit must run on one of the
worker nodes, runs ``raygrid.GridSearchCV(..., address=cluster.address)``, saves its outputs
(``raygrid.save_search``) while connected, shuts the cluster down, rebuilds the report from the
saved files (as ``raygrid report`` does, with no Ray), and prints one JSON line (prefixed
``RESULT ``) with the worker nodes' ids, the node of every fit, the search's ``cv_results_``
(time keys left out), ``best_params_`` and the rows of both reports' nodes table.

The estimator and data live here, importable by the test, so the test can run the very same
search on the serial backend and compare.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere: use this checkout's raygrid
    sys.path.insert(0, str(ROOT))

FIT_SLEEP_S = 0.2  # long enough that the executor's auto-batching keeps one fit per task
GRID = {"threshold": [-1.0, -0.5, 0.0, 0.5, 1.0, 1.5], "feature": [0, 1]}
CV = 3  # 12 candidates x 3 folds = 36 fits


class ThresholdClassifier(ClassifierMixin, BaseEstimator):
    """Predicts 1 where ``X[:, feature] > threshold``: its scores are exact functions of its params."""

    def __init__(self, threshold=0.0, feature=0, sleep=0.0):
        self.threshold = threshold
        self.feature = feature
        self.sleep = sleep

    def fit(self, X, y):
        if self.sleep:
            time.sleep(self.sleep)
        self.classes_ = np.unique(y)
        return self

    def predict(self, X):
        return (np.asarray(X)[:, self.feature] > self.threshold).astype(int)


def data():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(90, 2))
    y = (X[:, 0] + 0.5 * X[:, 1] + rng.normal(scale=0.7, size=90) > 0.3).astype(int)
    return X, y


def search(sleep=FIT_SLEEP_S, **kwargs):
    """The search under test; ``sleep`` is no grid parameter, so it changes no result."""
    import raygrid

    return raygrid.GridSearchCV(ThresholdClassifier(sleep=sleep), GRID, cv=CV, **kwargs)


def comparable(cv_results: dict) -> dict:
    """cv_results_ without its time keys, as JSON-ready lists (masked entries become None)."""
    out = {}
    for key, value in cv_results.items():
        if "time" in key:
            continue
        if key == "params":
            out[key] = [dict(p) for p in value]
        elif isinstance(value, np.ma.MaskedArray):
            out[key] = [None if m else v for v, m in
                        zip(value.data.tolist(), np.ma.getmaskarray(value).tolist())]
        else:
            out[key] = np.asarray(value).tolist()
    return out


# Ports left to the system: another Ray on this machine may hold the dashboard agent's default
# 52365, and its raylet would exit when its agent cannot bind.
NODE_ARGS = {"object_store_memory": 100 * 1024 * 1024, "dashboard_agent_listen_port": 0}


N_WORKERS = 3


def report_nodes(out: Path) -> dict:
    """The nodes table and the run's node count of ``out/report.html``: {"rows": [[name, fits]],
    "count": n}."""
    import re

    page = (out / "report.html").read_text(encoding="utf-8")
    section = page[page.index('<section id="nodes">'):]
    section = section[:section.index("</section>")]
    rows = re.findall(r"<tr><td><code>(.*?)</code></td><td class=\"num\">(\d+)</td>", section)
    count = re.search(r'<th scope="row">nodes</th><td>(\d+)</td>', page)
    return {"rows": [[name, int(fits)] for name, fits in rows],
            "count": int(count.group(1)) if count else None}


def main() -> None:
    import ray
    from ray.cluster_utils import Cluster

    t0 = time.perf_counter()
    cluster = Cluster(
        initialize_head=True,
        head_node_args=dict(NODE_ARGS, num_cpus=0, include_dashboard=False,
                            dashboard_port=None),  # None: the first free port from 8265 on
    )
    try:
        workers = [cluster.add_node(**NODE_ARGS, num_cpus=1) for _ in range(N_WORKERS)]
        cluster.wait_for_nodes()
        started = time.perf_counter() - t0
        X, y = data()
        t1 = time.perf_counter()
        gs = search(address=cluster.address).fit(X, y)
        searched = time.perf_counter() - t1
        import tempfile

        import raygrid

        out = Path(tempfile.mkdtemp(prefix="rgmn-out"))
        raygrid.save_search(gs, out)
        result = {
            "worker_nodes": [w.node_id for w in workers],
            "head_node": cluster.head_node.node_id,
            "fit_nodes": gs.results_["node"].tolist(),
            "cv_results": comparable(gs.cv_results_),
            "best_params": gs.best_params_,
            "best_index": int(gs.best_index_),
            "best_score": float(gs.best_score_),
            "start_s": round(started, 2),
            "search_s": round(searched, 2),
            "report": report_nodes(out),
        }
    finally:
        ray.shutdown()
        cluster.shutdown()
    # Rebuilt later, without Ray (`raygrid report`): the names come from best.json.
    from raygrid.outputs.report import load_outputs, write_report

    write_report(*load_outputs(out), out)
    result["report_rebuilt"] = report_nodes(out)
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
