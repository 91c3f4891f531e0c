"""The seed Keras grid on the Pima data: raygrid against the searches a user would pick instead.

Every engine gets the same data (min-max scaled once, as in the original study), the same grid,
the same folds (StratifiedKFold(3) without shuffling) and the same TensorFlow backend, one after
another in this run:

- ``sklearn-1`` / ``sklearn-all``: scikit-learn's GridSearchCV with n_jobs=1 / n_jobs=-1, on
  scikeras' stock KerasClassifier (what a user has without raygrid);
- ``joblib-ray``: the same, under Ray's joblib backend;
- ``tune-sklearn``: TuneGridSearchCV, in its own virtual environment (it does not import on
  current Ray; see ``tune_sklearn_env``);
- ``raygrid``: raygrid.GridSearchCV with raygrid.keras.KerasClassifier;
- ``raygrid-default``: raygrid.GridSearchCV with its defaults (``engine="auto"``) from this
  TensorFlow driver: the fusable fits train fused in Ray workers on JAX, with an empty
  compilation cache (Ray's start-up is timed apart, ``ray_start_s``). Run it first, so the cache
  directory reaches the workers Ray starts;
- ``raygrid-fused``: the same with ``engine="fused"``, which needs Keras on the JAX backend, so it
  runs in a subprocess (``benchmarks.bench_fused``, cold compilation cache, all-in). Opt-in: it
  changes the Keras backend, so its scores are not the TensorFlow engines' to the last digit.

The JSON under benchmarks/results/ is rewritten after every engine, so a failure late in a long
run keeps what was measured.

    python -m benchmarks.bench_seed --subset quick          # 8 candidates, 1-2 epochs
    python -m benchmarks.bench_seed --subset glorot         # 81 candidates, 243 fits
    python -m benchmarks.bench_seed --subset full           # 243 candidates, 729 fits
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import PIMA, Measure, machine, save
from benchmarks.seed_model import load_data, stock_classifier

HERE = Path(__file__).resolve().parent
TUNE_ENV = HERE / ".venv-tune-sklearn"
TUNE_PINS = ["ray[tune]==2.10.0", "tune-sklearn==0.5.0", "scikit-learn==1.5.2", "pyarrow==20.0.0",
             "tensorflow==2.21.0", "scikeras==0.13.0", "pandas<3"]

SUBSETS = {
    "quick": {"model__activation": ["tanh", "relu"], "optimizer": ["adam", "rmsprop"],
              "model__init": ["glorot_uniform"], "batch_size": [32], "epochs": [1, 2]},
    "glorot": {"model__activation": ["tanh", "relu", "sigmoid"],
               "optimizer": ["rmsprop", "adam", "sgd"], "model__init": ["glorot_uniform"],
               "batch_size": [8, 16, 64], "epochs": [5, 10, 25]},
    "full": {"model__activation": ["tanh", "relu", "sigmoid"],
             "optimizer": ["rmsprop", "adam", "sgd"],
             "model__init": ["glorot_uniform", "normal", "uniform"],
             "batch_size": [8, 16, 64], "epochs": [5, 10, 25]},
}


def run_sklearn(X, y, grid, cv, n_jobs, backend=None):
    import joblib
    from sklearn.model_selection import GridSearchCV

    search = GridSearchCV(stock_classifier(), grid, cv=cv, scoring="accuracy", n_jobs=n_jobs)
    if backend == "ray":
        from ray.util.joblib import register_ray

        register_ray()
        with joblib.parallel_backend("ray"):
            return search.fit(X, y)
    return search.fit(X, y)


def _ray_init() -> float:
    """Start a local Ray unless one runs; the seconds it took (0 if it was running)."""
    import ray

    if ray.is_initialized():
        return 0.0
    start = time.perf_counter()
    ray.init(address="local", include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    return time.perf_counter() - start


def run_raygrid(X, y, grid, cv, **kw):
    import raygrid
    from raygrid.keras import seed_classifier

    kw.setdefault("engine", "standard")  # the "raygrid" row: one Ray task per fit
    return raygrid.GridSearchCV(seed_classifier(), grid, cv=cv, scoring="accuracy", **kw).fit(X, y)


def tune_sklearn_env() -> Path:
    """A virtual environment with the newest set tune-sklearn still works with (made once)."""
    python = TUNE_ENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(TUNE_ENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *TUNE_PINS], check=True)
    return python


TUNE_SCRIPT = r"""
import json, sys, time
from sklearn.model_selection import StratifiedKFold
from seed_model import load_data, stock_classifier
from tune_sklearn import TuneGridSearchCV
import ray
grid, n_cpus = json.loads(sys.argv[1]), int(sys.argv[2])
X, y = load_data()
ray.init(num_cpus=n_cpus, include_dashboard=False, log_to_driver=False)
t = time.perf_counter()
s = TuneGridSearchCV(stock_classifier(), grid, cv=StratifiedKFold(3), scoring="accuracy",
                     n_jobs=n_cpus, verbose=0).fit(X, y)
print("RESULT " + json.dumps({"wall_s": time.perf_counter() - t, "best_score": float(s.best_score_),
                              "best_params": s.best_params_}))
"""


def run_tune_sklearn(grid) -> dict:
    python = tune_sklearn_env()
    env = {**os.environ, "PYTHONPATH": str(HERE), "RAYGRID_PIMA": str(PIMA)}
    env.pop("RAY_ADDRESS", None)
    t = time.perf_counter()
    proc = subprocess.run([str(python), "-c", TUNE_SCRIPT, json.dumps(grid), str(os.cpu_count())],
                          capture_output=True, text=True, env=env)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if line is None:
        return {"error": (proc.stderr or proc.stdout)[-2000:], "wall_s": time.perf_counter() - t}
    return json.loads(line[len("RESULT "):])


def run_fused_engine(grid: dict, subset: str) -> dict:
    """raygrid's fused engine (Keras on JAX) in a subprocess: its own Keras backend, cold cache."""
    name = f"parts/seed_{subset}_fused"  # the whole report, kept out of the README's tables
    env = {**os.environ, "KERAS_BACKEND": "jax", "RAYGRID_PIMA": str(PIMA)}
    proc = subprocess.run([sys.executable, "-m", "benchmarks.bench_fused", "--out", name,
                           "--grid", json.dumps(grid)], capture_output=True, text=True, env=env,
                          cwd=HERE.parent)
    path = HERE / "results" / f"{name}.json"
    if proc.returncode != 0 or not path.exists():
        return {"error": (proc.stderr or proc.stdout)[-2000:]}
    fused = json.loads(path.read_text())["fused"]
    scores = np.asarray(fused["mean_test_scores"])
    return {"wall_s": fused["wall_s"], "fits": fused["fits"], "best_score": fused["best_score"],
            "best_params": fused["best_params"], "keras_backend": "jax", "fused_fits": fused["fused_fits"],
            "compile_s": fused["compile_s"], "training_s": fused["training_s"],
            "score_quartiles": [round(float(q), 4) for q in np.quantile(scores, [.25, .5, .75])]}


def summarise(rows: dict) -> None:
    """Fits per second, every engine's speed-up against every other (wall-time ratios), and how
    far the default (fused) engine's candidate means are from the standard engine's."""
    default, standard = rows.get("raygrid-default", {}), rows.get("raygrid", {})
    if default.get("mean_test_scores") and standard.get("mean_test_scores"):
        diff = np.abs(np.subtract(default["mean_test_scores"], standard["mean_test_scores"]))
        default["mean_abs_diff_vs_standard"] = round(float(diff.mean()), 4)
    for row in rows.values():
        if "wall_s" in row and row.get("fits"):
            row["fits_per_s"] = round(row["fits"] / row["wall_s"], 2)
    timed = {name: row for name, row in rows.items() if "wall_s" in row and "error" not in row}
    for name, row in timed.items():
        row["speedup_vs"] = {other: round(o["wall_s"] / row["wall_s"], 2)
                             for other, o in timed.items() if other != name}


ENGINES = ("raygrid-default", "sklearn-1", "sklearn-all", "joblib-ray", "tune-sklearn", "raygrid",
           "raygrid-fused")


def run(subset="quick", engines=ENGINES, save_as=None):
    import ray
    from sklearn.model_selection import StratifiedKFold

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    X, y = load_data()
    grid = SUBSETS[subset]
    cv = StratifiedKFold(3)
    n_cand = int(np.prod([len(v) for v in grid.values()]))
    rows = {}
    report = {"benchmark": save_as or f"seed_{subset}", "machine": machine(), "candidates": n_cand,
              "engines": rows}
    for name in engines:
        if name == "tune-sklearn":
            r = run_tune_sklearn(grid)
            rows[name] = {**r, "fits": 3 * n_cand}
        elif name == "raygrid-fused":
            rows[name] = run_fused_engine(grid, subset)
        else:
            rows[name] = run_tf_engine(name, X, y, grid, cv, n_cand)
        summarise(rows)
        if save_as:
            save(save_as, report)
    if ray.is_initialized():
        ray.shutdown()
    report["machine"] = {**report["machine"], "load_avg_1m_at_end": os.getloadavg()[0]}
    return report


def run_tf_engine(name, X, y, grid, cv, n_cand) -> dict:
    """One TensorFlow-backend engine in this process: its wall time, resources and scores."""
    extra = {}
    if name == "raygrid-default":
        # An empty compilation cache, set before Ray starts so that its workers inherit it.
        os.environ["RAYGRID_JAX_CACHE"] = tempfile.mkdtemp(prefix="raygrid-jax-cold-")
    if name in ("joblib-ray", "raygrid", "raygrid-default"):
        extra["ray_start_s"] = round(_ray_init(), 2)
    with Measure() as m:
        if name == "raygrid":
            search = run_raygrid(X, y, grid, cv)
        elif name == "raygrid-default":
            search = run_raygrid(X, y, grid, cv, engine="auto")
            extra["fused_fits"] = int(search.n_fused_)
        else:
            search = run_sklearn(X, y, grid, cv, 1 if name == "sklearn-1" else -1,
                                 "ray" if name == "joblib-ray" else None)
    scores = search.cv_results_["mean_test_score"]
    return m.row(fits=3 * n_cand, best_score=float(search.best_score_),
                 best_params=search.best_params_, summary_rows=len(scores),
                 result_rows=len(getattr(search, "results_", [])) or None,
                 score_quartiles=[round(float(q), 4) for q in np.quantile(scores, [.25, .5, .75])],
                 fit_seconds=float(np.sum(search.cv_results_["mean_fit_time"]) * 3),
                 mean_test_scores=[round(float(v), 6) for v in scores], **extra)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--subset", choices=sorted(SUBSETS), default="quick")
    ap.add_argument("--engines", default=",".join(ENGINES))
    ap.add_argument("--name", help="results file name (default: seed_SUBSET)")
    args = ap.parse_args(argv)
    name = args.name or f"seed_{args.subset}"
    out = run(args.subset, tuple(args.engines.split(",")), save_as=name)
    save(name, out)
    print(json.dumps(out, indent=2, default=str))


if __name__ == "__main__":
    main()
