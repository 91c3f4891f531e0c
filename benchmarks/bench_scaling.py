"""The same Keras grid on 1, 2 and 3 nodes of a local multi-node Ray cluster.

Each run starts a ``ray.cluster_utils.Cluster`` on this machine (a head with one CPU, plus one-CPU
worker nodes), connects a raygrid search to it with ``address=``, and stops the cluster after.
The workers are fresh in every run, so each run pays its workers' TensorFlow import, as a user's
first search on a new cluster does.

On a machine with fewer cores than nodes this measures what Ray's multi-node plumbing costs, not a
speed-up: all the "nodes" share the same cores. On a real cluster (``ray up cluster.yaml``) each
node brings its own cores.

    python -m benchmarks.bench_scaling                  # 1, 2, 3 nodes, 12 candidates x 3 folds
    python -m benchmarks.bench_scaling --nodes 1,2      # fewer runs
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from collections import Counter

import numpy as np

from benchmarks.common import Measure, machine, save
from benchmarks.seed_model import load_data

GRID = {"model__activation": ["tanh", "relu", "sigmoid"], "optimizer": ["adam", "rmsprop"],
        "model__init": ["glorot_uniform"], "batch_size": [16], "epochs": [5, 10]}


def run_nodes(n_nodes: int, X, y) -> dict:
    """One search on a fresh cluster of ``n_nodes`` one-CPU nodes: wall time and where fits ran."""
    import ray
    from ray.cluster_utils import Cluster
    from sklearn.model_selection import StratifiedKFold

    import raygrid
    from raygrid.keras import seed_classifier

    t0 = time.perf_counter()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    for _ in range(n_nodes - 1):
        cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    start_s = time.perf_counter() - t0
    try:
        ray.init(address=cluster.address, include_dashboard=False, log_to_driver=False,
                 configure_logging=False)
        search = raygrid.GridSearchCV(seed_classifier(), GRID, cv=StratifiedKFold(3),
                                      scoring="accuracy", refit=False, random_state=0,
                                      address=cluster.address, engine="standard")
        with Measure() as m:
            search.fit(X, y)
        per_node = Counter(search.results_["node"])
        row = m.row(nodes=n_nodes, cluster_start_s=round(start_s, 2), fits=len(search.results_),
                    fits_per_node=sorted(per_node.values(), reverse=True),
                    best_score=float(search.best_score_),
                    mean_scores=[round(float(s), 4) for s in search.cv_results_["mean_test_score"]])
    finally:
        ray.shutdown()
        cluster.shutdown()
    row["fits_per_s"] = round(row["fits"] / row["wall_s"], 3)
    return row


def run(nodes=(1, 2, 3)) -> dict:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # The cluster's sockets and session files in a private, short directory: never another Ray's.
    tmp = tempfile.mkdtemp(prefix="rgsc", dir="/tmp")
    os.environ.update(RAY_TMPDIR=tmp, RAY_USAGE_STATS_ENABLED="0")
    os.environ.pop("RAY_ADDRESS", None)
    X, y = load_data()
    rows = {}
    try:
        for n in nodes:
            rows[f"{n} node{'s' if n > 1 else ''}"] = run_nodes(n, X, y)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    first = next(iter(rows.values()))
    for row in rows.values():
        row["speedup_vs_1_node"] = round(first["wall_s"] / row["wall_s"], 2)
        # Same seeds, same folds: every node count must find the same scores.
        row["same_scores_as_1_node"] = bool(np.allclose(row["mean_scores"], first["mean_scores"]))
    cores = machine()["cpus"]
    note = (f"Nodes are one-CPU Ray nodes of `ray.cluster_utils.Cluster` on one {cores}-core "
            "machine: beyond its cores they share CPUs, so this shows Ray's multi-node overhead, "
            "not a speed-up.")
    return {"benchmark": "scaling", "machine": machine(), "grid_fits": 3 * int(np.prod(
        [len(v) for v in GRID.values()])), "engines": rows, "ratio_to": next(iter(rows)), "note": note}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", default="1,2,3")
    args = ap.parse_args(argv)
    out = run(tuple(int(n) for n in args.nodes.split(",")))
    save(out["benchmark"], out)
    print(json.dumps(out, indent=2, default=str))
    return out


if __name__ == "__main__":
    main()
