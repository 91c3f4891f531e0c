"""GPU check: fractional-GPU packing, the fused engine and sklearn on a GPU machine, as JSON lines.

Run it on a machine with a GPU, Keras on the JAX backend (no TensorFlow needed), Ray and
scikeras installed, from the project root:

    KERAS_BACKEND=jax XLA_PYTHON_CLIENT_PREALLOCATE=false python scripts/gpu_check.py \
        [--data pima-indians-diabetes.csv] [--skip sklearn]

Each step prints one JSON line:

1. ``packing``: a small Keras grid through raygrid with ``ray_remote_args={"num_cpus": 1,
   "num_gpus": 0.25}``: every fit must see the GPU, and at most four fits may overlap on it.
2. ``fused_*``: the whole seed grid (243 candidates x 3 folds) through ``engine="fused"``, all-in
   (planning, compilation, training, scoring and the refit): in the driver's process on the GPU
   with a cold, then a warm compilation cache, and as Ray tasks sharing the GPU (cold cache).
3. ``raygrid_cpu``: the same grid through the standard engine, one fit per CPU (JAX on CPU).
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


def _fused_search(X, y, backend: str, cache: str):
    import raygrid
    from raygrid.engine import fused as fused_engine
    from raygrid.keras import seed_classifier
    from sklearn.model_selection import StratifiedKFold

    os.environ["RAYGRID_JAX_CACHE"] = cache  # Ray workers get it through their runtime_env
    start = time.perf_counter()
    search = raygrid.GridSearchCV(seed_classifier(), SEED_GRID, cv=StratifiedKFold(3), scoring="accuracy",
                                  engine="fused", random_state=0, backend=backend)
    search.fit(X, y)
    wall = time.perf_counter() - start
    stats = fused_engine.last_stats()
    keys = ("lanes", "trials", "prep_s", "compile_s", "train_s", "score_s", "node")
    return dict(wall_s=round(wall, 2), fits=len(search.results_),
                fused_fits=int((search.results_["engine"] == "fused").sum()),
                best_score=float(search.best_score_), best_params=search.best_params_,
                groups=[{k: g.get(k) for k in keys} for g in stats])


def fused(X, y) -> None:
    """The fused engine, all-in: in the driver (groups compiled in threads) and as Ray tasks.

    Each backend gets its own new compilation cache, so its first run is cold; the second
    in-process run shows a warm cache.
    """
    emit("fused_serial_cold", **_fused_search(X, y, "serial", "/tmp/raygrid-jax-serial"))
    emit("fused_serial_warm", **_fused_search(X, y, "serial", "/tmp/raygrid-jax-serial"))
    emit("fused_ray_cold", **_fused_search(X, y, "ray", "/tmp/raygrid-jax-ray"))


def raygrid_cpu(X, y) -> None:
    import raygrid
    from raygrid.keras import seed_classifier
    from sklearn.model_selection import StratifiedKFold

    start = time.perf_counter()
    cpu_only = {"runtime_env": {"env_vars": {"JAX_PLATFORMS": "cpu"}}}
    search = raygrid.GridSearchCV(seed_classifier(), SEED_GRID, cv=StratifiedKFold(3), scoring="accuracy",
                                  ray_remote_args=cpu_only)
    search.fit(X, y)
    emit("raygrid_cpu", wall_s=round(time.perf_counter() - start, 2), fits=len(search.results_),
         best_score=float(search.best_score_))


def sklearn(X, y) -> None:
    from sklearn.model_selection import GridSearchCV, StratifiedKFold

    from raygrid.keras import seed_classifier

    os.environ["JAX_PLATFORMS"] = "cpu"  # joblib's worker processes inherit it: one fit per core
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
    import jax

    emit("ray", init_s=round(time.perf_counter() - t, 2), resources=ray.cluster_resources(),
         keras_backend=os.environ.get("KERAS_BACKEND"), jax=jax.__version__,
         jax_devices=[str(d) for d in jax.devices()])
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
