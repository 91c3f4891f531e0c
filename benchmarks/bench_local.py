"""What a small search costs on the default backend, whose fits run in a local child process: the
child forked from raygrid's zygote (the default on Linux) against a fresh interpreter per search
(``RAYGRID_LOCAL_START=spawn``) and the driver's own process (``backend="serial"``), in one run.

    python -m benchmarks.bench_local              # 15 searches each; saves results/local_start.json
    python -m benchmarks.bench_local --searches 5

Each search is ``GridSearchCV(SVC(), {"C": [0.1, 1, 10]}, cv=3)`` on a quarter of the
breast-cancer data (9 fits of a few milliseconds): the case where starting a process is most of
the time. The first search of each row is reported apart (it starts the zygote, or imports
what the fits need); the rest as their median.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

from benchmarks.common import machine, save

ROWS = (("serial", {}, "in the driver's process (`backend=\"serial\"`)"),
        ("auto", {}, "default: a child forked from the zygote"),
        ("auto", {"RAYGRID_LOCAL_START": "spawn"}, "a fresh interpreter per search (`RAYGRID_LOCAL_START=spawn`)"))


def _search(backend: str) -> float:
    from sklearn.datasets import load_breast_cancer
    from sklearn.svm import SVC

    import raygrid

    X, y = load_breast_cancer(return_X_y=True)
    t0 = time.perf_counter()
    raygrid.GridSearchCV(SVC(), {"C": [0.1, 1, 10]}, cv=3, backend=backend).fit(X[::4], y[::4])
    return time.perf_counter() - t0


def run(searches: int = 15) -> dict:
    os.environ.pop("RAYGRID_LOCAL_BUDGET_S", None)
    rows = {}
    for backend, env, label in ROWS:
        old = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            walls = [_search(backend) for _ in range(searches)]
        finally:
            for k, v in old.items():
                os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
        rows[label] = {"first_s": round(walls[0], 3),
                       "median_next_s": round(statistics.median(walls[1:]), 4)}
    base = rows[ROWS[0][2]]["median_next_s"]
    for row in rows.values():
        row["vs_in_process"] = round(row["median_next_s"] / base, 2)
    return {"benchmark": "local_start", "searches": searches, "fits_per_search": 9,
            "machine": machine(), "rows": rows}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--searches", type=int, default=15)
    out = run(ap.parse_args(argv).searches)
    save("local_start", out)
    for label, row in out["rows"].items():
        print(f"{label:70s} first {row['first_s']:7.3f} s   next (median) "
              f"{row['median_next_s']:7.4f} s   {row['vs_in_process']:g}x in-process")
    return out


if __name__ == "__main__":
    main()
