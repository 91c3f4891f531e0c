"""GPU check: fractional-GPU packing, the fused engine and sklearn on a GPU machine, as JSON lines.

Run it on a machine with a GPU, Keras on the JAX backend (no TensorFlow needed), Ray and
scikeras installed, from the project root:

    KERAS_BACKEND=jax XLA_PYTHON_CLIENT_PREALLOCATE=false python scripts/gpu_check.py \
        [--data pima-indians-diabetes.csv] [--skip sklearn]

Each step prints one JSON line:

1. ``packing``: a small Keras grid through raygrid with ``ray_remote_args={"num_cpus": 1,
   "num_gpus": 0.25}``: every fit must see the GPU, and at most four fits may overlap on it.
2. ``fused``: the whole seed grid (243 candidates x 3 folds) through ``engine="fused"`` with the
   fused groups as Ray tasks on the GPU, all-in (compilation included).
3. ``raygrid_cpu``: the same grid through the standard engine, one fit per CPU.
4. ``sklearn``: scikit-learn's GridSearchCV(n_jobs=<all CPUs>) on the same grid and folds.

``--fake-gpus 1 --skip fused,raygrid_cpu,sklearn`` dry-runs the packing step on a CPU machine.
Without ``--data`` the Pima file is looked up as raygrid.datasets.load_pima does; if it cannot be
found, scikit-learn's bundled breast-cancer data stands in (and the line says so).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SEED_GRID = {
    "model__activation": ["tanh", "relu", "sigmoid"],
    "optimizer": ["rmsprop", "adam", "sgd"],
    "model__init": ["glorot_uniform", "normal", "uniform"],
    "batch_size": [8, 16, 64],
    "epochs": [5, 10, 25],
}


def emit(step: str, **fields) -> None:
    print(json.dumps({"step": step, **fields}, default=str), flush=True)


def load(path: str | None):
    from sklearn.preprocessing import minmax_scale

    from raygrid.datasets import load_breast_cancer, load_pima

    try:
        X, y = load_pima(path)
        name = "pima"
    except (FileNotFoundError, OSError, RuntimeError) as exc:
        X, y = load_breast_cancer()
        name = f"breast_cancer (pima unavailable: {exc.__class__.__name__})"
    return minmax_scale(X), y, name


class UsesGpu:
    """A scorer that records, per fit, the GPU Ray assigned and when the fit's scoring ran."""

    def __call__(self, estimator, X, y):
        import ray

        gpus = ray.get_runtime_context().get_assigned_resources().get("GPU", 0.0)
        return {"gpu": float(gpus), "t": time.time(), "accuracy": float((estimator.predict(X) == y).mean())}


def packing(X, y) -> None:
    import raygrid
    from raygrid.keras import seed_classifier

    grid = {"model__activation": ["tanh", "relu"], "optimizer": ["adam", "sgd"], "epochs": [2]}
    start = time.perf_counter()
    search = raygrid.GridSearchCV(seed_classifier(batch_size=16), grid, cv=3, refit=False,
                                  scoring=UsesGpu(), ray_remote_args={"num_cpus": 1, "num_gpus": 0.25})
    search.fit(X, y)
    frame = search.results_
    ends = sorted(frame["test_t"])
    starts = sorted(frame["test_t"] - frame["fit_time"] - frame["score_time"])
    overlap = max(sum(1 for s in starts if s <= t) - sum(1 for e in ends if e < t) for t in starts)
    emit("packing", fits=len(frame), gpu_per_fit=sorted(set(frame["test_gpu"])),
         max_overlap=int(overlap), ok=bool((frame["test_gpu"] == 0.25).all() and overlap <= 4),
         wall_s=round(time.perf_counter() - start, 2))


def fused(X, y) -> None:
    import raygrid
    from raygrid.keras import seed_classifier
    from sklearn.model_selection import StratifiedKFold

    start = time.perf_counter()
    search = raygrid.GridSearchCV(seed_classifier(), SEED_GRID, cv=StratifiedKFold(3), scoring="accuracy",
                                  engine="fused", random_state=0)
    search.fit(X, y)
    fused_fits = int((search.results_.get("engine") == "fused").sum()) if "engine" in search.results_ else 0
    emit("fused", wall_s=round(time.perf_counter() - start, 2), fits=len(search.results_),
         fused_fits=fused_fits, best_score=float(search.best_score_), best_params=search.best_params_)


def raygrid_cpu(X, y) -> None:
    import raygrid
    from raygrid.keras import seed_classifier
    from sklearn.model_selection import StratifiedKFold

    start = time.perf_counter()
    search = raygrid.GridSearchCV(seed_classifier(), SEED_GRID, cv=StratifiedKFold(3), scoring="accuracy")
    search.fit(X, y)
    emit("raygrid_cpu", wall_s=round(time.perf_counter() - start, 2), fits=len(search.results_),
         best_score=float(search.best_score_))


def sklearn(X, y) -> None:
    from sklearn.model_selection import GridSearchCV, StratifiedKFold

    from raygrid.keras import seed_classifier

    start = time.perf_counter()
    search = GridSearchCV(seed_classifier(), SEED_GRID, cv=StratifiedKFold(3), scoring="accuracy",
                          n_jobs=os.cpu_count())
    search.fit(X, y)
    emit("sklearn", n_jobs=os.cpu_count(), wall_s=round(time.perf_counter() - start, 2),
         best_score=float(search.best_score_))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=None)
    ap.add_argument("--skip", default="", help="comma-separated steps to skip")
    ap.add_argument("--fake-gpus", type=int, default=None,
                    help="declare this many logical GPUs (a dry run of the scheduling on a CPU machine)")
    args = ap.parse_args(argv)
    import ray

    t = time.perf_counter()
    ray.init(address="local", include_dashboard=False, log_to_driver=False, num_gpus=args.fake_gpus)
    emit("ray", init_s=round(time.perf_counter() - t, 2), resources=ray.cluster_resources(),
         keras_backend=os.environ.get("KERAS_BACKEND"))
    X, y, name = load(args.data)
    emit("data", name=name, rows=len(y))
    skip = set(filter(None, args.skip.split(",")))
    for step in (packing, fused, raygrid_cpu, sklearn):
        if step.__name__ in skip:
            continue
        try:
            step(X, y)
        except Exception as exc:  # noqa: BLE001 - report and go on to the next step
            emit(step.__name__, error=f"{type(exc).__name__}: {exc}")
    ray.shutdown()


if __name__ == "__main__":
    main()
