"""The seed grid through the fused engine (Keras on JAX), all-in, compilation included.

The whole seed study: activation {tanh, relu, sigmoid} x optimizer {rmsprop, adam, sgd} x
init {glorot_uniform, normal, uniform} x batch_size {8, 16, 64} x epochs {5, 10, 25} = 243
candidates x 3 folds = 729 fits, on the Pima data min-max scaled once, StratifiedKFold(3)
without shuffling, raygrid.keras.seed_classifier (MLP 12-8-1, binary cross-entropy).

    python -m benchmarks.bench_fused                      # fused, cold cache, then a warm rerun
    python -m benchmarks.bench_fused --baseline           # + sklearn GridSearchCV(n_jobs=-1) on a subset
    python -m benchmarks.bench_fused --backend ray        # every fused group as a Ray task

The fused run uses a fresh, empty JAX compilation cache (so compilation is paid in full) unless
``--cache warm``; ``--rerun`` repeats the search in the same process with the cache then filled.

``--baseline`` runs scikit-learn's GridSearchCV(n_jobs=-1) on 9 candidates (one per
(batch_size, epochs) pair; activation, optimizer and init rotate) x 3 folds and extrapolates x27
to the full grid: a fit's cost is set by its batch size and epochs, and every such pair occurs 27
times in the grid. Its workers use ``--baseline-backend`` (TensorFlow by default, as the
other seed-grid benchmarks). Prints one JSON document and saves it under benchmarks/results/.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

GRID = {
    "model__activation": ["tanh", "relu", "sigmoid"],
    "optimizer": ["rmsprop", "adam", "sgd"],
    "model__init": ["glorot_uniform", "normal", "uniform"],
    "batch_size": [8, 16, 64],
    "epochs": [5, 10, 25],
}
PIMA = Path(os.environ.get("RAYGRID_PIMA",
                           Path(__file__).resolve().parents[2] / "shared/data/pima-indians-diabetes.csv"))


def load_pima(path=PIMA):
    import numpy as np
    from sklearn.preprocessing import minmax_scale

    data = np.loadtxt(path, delimiter=",", skiprows=1)
    return minmax_scale(data[:, :8]), data[:, 8].astype(int)


def _n_candidates(grid: dict) -> int:
    n = 1
    for values in grid.values():
        n *= len(values)
    return n


def baseline_candidates() -> list[dict]:
    """One candidate per (batch_size, epochs) pair, the other parameters rotating."""
    out = []
    acts, opts, inits = GRID["model__activation"], GRID["optimizer"], GRID["model__init"]
    for i, (b, e) in enumerate((b, e) for b in GRID["batch_size"] for e in GRID["epochs"]):
        out.append({"model__activation": [acts[i % 3]], "optimizer": [opts[(i // 3) % 3]],
                    "model__init": [inits[(i + i // 3) % 3]], "batch_size": [b], "epochs": [e]})
    return out


def run_fused(X, y, backend: str, random_state: int | None, grid: dict | None = None) -> dict:
    from sklearn.model_selection import StratifiedKFold

    from raygrid import GridSearchCV
    from raygrid.engine import fused
    from raygrid.keras import seed_classifier

    search = GridSearchCV(seed_classifier(), grid or GRID, cv=StratifiedKFold(3), backend=backend,
                          engine="fused", random_state=random_state, refit=True)
    t0 = time.perf_counter()
    cpu0 = time.process_time()
    search.fit(X, y)
    wall = time.perf_counter() - t0
    stats = fused.last_stats()
    frame = search.results_
    return {
        "wall_s": round(wall, 2),
        "driver_cpu_s": round(time.process_time() - cpu0, 2),
        "plan_s": round(stats[0]["plan_s"], 2) if stats else None,
        "compile_s": round(sum(s["lower_s"] + s["compile_s"] for s in stats), 2),
        "compile_xla_s": round(sum(s["compile_s"] for s in stats), 2),
        "trace_s": round(sum(s["lower_s"] for s in stats), 2),
        "prepare_s": round(sum(s["prep_s"] for s in stats), 2),
        "training_s": round(sum(s["train_s"] for s in stats), 2),
        "scoring_s": round(sum(s["score_s"] for s in stats), 2),
        "refit_s": round(search.refit_time_, 2),
        "programs": sum(s["programs"] for s in stats),
        "lanes": sum(s["lanes"] for s in stats),
        "fits": len(frame),
        "fused_fits": int((frame["engine"] == "fused").sum()) if "engine" in frame else 0,
        "best_params": search.best_params_,
        "best_score": round(float(search.best_score_), 4),
        "mean_test_scores": [round(float(v), 4) for v in search.cv_results_["mean_test_score"]],
        "groups": [{k: (round(v, 2) if isinstance(v, float) else v) for k, v in s.items()}
                   for s in stats],
    }


def run_baseline(X, y, keras_backend: str) -> dict:
    """sklearn GridSearchCV(n_jobs=-1) on the 9-candidate subset, in worker processes that use
    ``keras_backend``; extrapolated x27 to the full grid."""
    from sklearn.model_selection import GridSearchCV, StratifiedKFold

    previous = os.environ.get("KERAS_BACKEND")
    os.environ["KERAS_BACKEND"] = keras_backend  # loky starts its workers with this environment
    try:
        from raygrid.keras import seed_classifier

        search = GridSearchCV(seed_classifier(), baseline_candidates(), cv=StratifiedKFold(3),
                              n_jobs=-1, refit=False)
        t0 = time.perf_counter()
        search.fit(X, y)
        wall = time.perf_counter() - t0
    finally:
        if previous is None:
            os.environ.pop("KERAS_BACKEND", None)
        else:
            os.environ["KERAS_BACKEND"] = previous
    return {"keras_backend": keras_backend, "candidates": len(search.cv_results_["params"]),
            "fits": 3 * len(search.cv_results_["params"]), "wall_s": round(wall, 2),
            "extrapolated_full_s": round(27 * wall, 1)}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("serial", "ray"), default="serial")
    parser.add_argument("--cache", choices=("cold", "warm"), default="cold",
                        help="cold: a fresh, empty JAX compilation cache; warm: the user's own")
    parser.add_argument("--rerun", action="store_true", help="repeat with the cache filled")
    parser.add_argument("--baseline", action="store_true",
                        help="also time sklearn GridSearchCV(n_jobs=-1) on a subset (slow)")
    parser.add_argument("--baseline-backend", default="tensorflow",
                        choices=("tensorflow", "jax", "torch"))
    parser.add_argument("--random-state", type=int, default=0)
    parser.add_argument("--out", default="fused", help="name of the JSON under benchmarks/results")
    parser.add_argument("--grid", default=None, help="another grid, as JSON (default: the seed grid)")
    args = parser.parse_args(argv)
    grid = json.loads(args.grid) if args.grid else GRID

    os.environ["KERAS_BACKEND"] = "jax"
    if args.cache == "cold":
        os.environ["RAYGRID_JAX_CACHE"] = tempfile.mkdtemp(prefix="raygrid-jax-cold-")
    t_import = time.perf_counter()
    import keras  # noqa: F401 - imported here so the search's timings exclude it
    import jax  # noqa: F401

    import_s = time.perf_counter() - t_import
    X, y = load_pima()
    import psutil

    report = {
        "benchmark": "fused seed grid", "machine": {"cpus": psutil.cpu_count(),
                                                    "load_avg_1m_at_start": os.getloadavg()[0]},
        "grid_fits": 3 * _n_candidates(grid), "backend": args.backend, "cache": args.cache,
        "keras_jax_import_s": round(import_s, 2),
    }
    report["fused"] = run_fused(X, y, args.backend, args.random_state, grid)
    if args.rerun:
        report["fused_rerun_warm_cache"] = run_fused(X, y, args.backend, args.random_state, grid)
    if args.baseline:
        report["sklearn_n_jobs_-1"] = base = run_baseline(X, y, args.baseline_backend)
        report["speedup_vs_sklearn_extrapolated"] = round(
            base["extrapolated_full_s"] / report["fused"]["wall_s"], 1)
    # sklearn GridSearchCV(n_jobs=2) took about 18 minutes for the whole grid on the 2-core
    # machine these benchmarks were written on (benchmarks.bench_seed measures it directly).
    report["speedup_vs_sklearn_18min_reference"] = round(18 * 60 / report["fused"]["wall_s"], 1)
    report["machine"]["load_avg_1m_at_end"] = os.getloadavg()[0]
    text = json.dumps(report, indent=2, default=str)
    print(text)
    path = Path(__file__).resolve().parent / "results" / f"{args.out}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")
    return report


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
