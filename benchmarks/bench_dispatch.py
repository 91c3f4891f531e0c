"""Dispatch overhead: thousands of trivial fits (a dummy classifier), raygrid vs its peers.

Every peer runs in this one process, one after another, on the same data and grid. Ray is started
once up front (its start-up time is reported on its own); each engine gets one small warm-up run.
"""
from __future__ import annotations

import argparse
import json
import time

import joblib
from sklearn.datasets import make_classification
from sklearn.dummy import DummyClassifier
from sklearn.model_selection import GridSearchCV as SkGridSearchCV

from benchmarks.common import Measure, machine, save


def problem(n_fits: int, cv: int = 5):
    X, y = make_classification(n_samples=200, n_features=10, random_state=0)
    grid = {"strategy": ["prior"], "random_state": list(range(n_fits // cv))}
    return X, y, grid, cv


def run(n_fits: int = 2000, engines=("sklearn-1", "sklearn-all", "joblib-ray", "raygrid")) -> dict:
    import ray
    import raygrid
    from ray.util.joblib import register_ray

    X, y, grid, cv = problem(n_fits)
    small = {"strategy": ["prior"], "random_state": list(range(20))}
    t0 = time.perf_counter()
    ray.init(address="local", include_dashboard=False, log_to_driver=False, configure_logging=False)
    ray_start = time.perf_counter() - t0
    register_ray()

    def sklearn(n_jobs, g):
        return SkGridSearchCV(DummyClassifier(), g, cv=cv, n_jobs=n_jobs).fit(X, y)

    def joblib_ray(g):
        with joblib.parallel_backend("ray"):
            return SkGridSearchCV(DummyClassifier(), g, cv=cv, n_jobs=-1).fit(X, y)

    def rg(g):
        return raygrid.GridSearchCV(DummyClassifier(), g, cv=cv).fit(X, y)

    runners = {
        "sklearn-1": lambda g: sklearn(1, g),
        "sklearn-all": lambda g: sklearn(-1, g),
        "joblib-ray": joblib_ray,
        "raygrid": rg,
    }
    rows = {}
    for name in engines:
        runners[name](small)  # warm-up: worker pools, imports
        with Measure() as m:
            search = runners[name](grid)
        rows[name] = m.row(fits=n_fits, fits_per_s=round(n_fits / m.wall, 1),
                           best_score=float(search.best_score_))
    serial = rows.get("sklearn-1")
    if serial:
        slots = machine()["cpus"]
        for row in rows.values():
            row["overhead_ms_per_fit"] = round(
                max(0.0, row["wall_s"] - serial["wall_s"] / slots) / n_fits * 1000, 3)
    base = rows.get("sklearn-all")
    if base:
        for row in rows.values():
            row["throughput_vs_sklearn_all"] = round(row["fits_per_s"] / base["fits_per_s"], 2)
    ray.shutdown()
    return {"benchmark": f"dispatch_{n_fits}", "machine": machine(), "ray_start_s": round(ray_start, 2),
            "engines": rows}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--fits", type=int, default=2000)
    args = ap.parse_args(argv)
    out = run(args.fits)
    save(out["benchmark"], out)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
