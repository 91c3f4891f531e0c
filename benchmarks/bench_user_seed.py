"""The seed grid as users write it, raygrid against scikit-learn, side by side in one run.

The user's script: the model function defined in the script itself (``__main__``), compiling
itself with ``metrics=["accuracy"]``; scikeras' stock ``KerasClassifier``; TensorFlow as the
driver's Keras backend; only the ``GridSearchCV`` import switched; default arguments. The same
script with scikit-learn's ``GridSearchCV(n_jobs=N)`` is the baseline. Each runs as
``python script.py`` in a process of its own, one after the other; the wall time is the whole
process (imports, Ray's start, compilation: what the user waits for) and the search's ``fit``.

    python -m benchmarks.bench_user_seed --subset quick    # 8 candidates, 1-2 epochs
    python -m benchmarks.bench_user_seed --subset full     # 243 candidates, 729 fits
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

from benchmarks.common import PIMA, machine, save

SUBSETS = {
    "quick": dict(model__activation=["tanh", "relu"], model__optimizer=["adam", "rmsprop"],
                  model__init=["glorot_uniform"], batch_size=[32], epochs=[1, 2]),
    "glorot": dict(model__activation=["tanh", "relu", "sigmoid"],
                   model__optimizer=["rmsprop", "adam", "sgd"], model__init=["glorot_uniform"],
                   batch_size=[8, 16, 64], epochs=[5, 10, 25]),
    "full": dict(model__activation=["tanh", "relu", "sigmoid"],
                 model__optimizer=["rmsprop", "adam", "sgd"],
                 model__init=["glorot_uniform", "normal", "uniform"],
                 batch_size=[8, 16, 64], epochs=[5, 10, 25]),
}

#: The user's script, as the Keras tutorials write it. {IMPORT} and {SEARCH_ARGS} differ.
SCRIPT = '''
import json, sys, time
import numpy as np
from keras.layers import Dense, Input
from keras.models import Sequential
from scikeras.wrappers import KerasClassifier
from sklearn.preprocessing import minmax_scale
{IMPORT}

data = np.loadtxt(sys.argv[1], delimiter=",", skiprows=1)
X, y = minmax_scale(data[:, :8]), data[:, 8].astype(int)


def create_model(activation="relu", optimizer="rmsprop", init="glorot_uniform"):
    model = Sequential()
    model.add(Input((8,)))
    model.add(Dense(12, kernel_initializer=init, activation=activation))
    model.add(Dense(8, kernel_initializer=init, activation=activation))
    model.add(Dense(1, kernel_initializer=init, activation="sigmoid"))
    model.compile(loss="binary_crossentropy", optimizer=optimizer, metrics=["accuracy"])
    return model


model = KerasClassifier(model=create_model, verbose=0)
param_grid = json.loads(sys.argv[2])
start = time.perf_counter()
grid = GridSearchCV(model, param_grid, cv=3{SEARCH_ARGS}).fit(X, y)
fit_s = time.perf_counter() - start
engines = grid.results_["engine"].value_counts().to_dict() if hasattr(grid, "results_") else {{}}
print("RESULT " + json.dumps({{
    "fit_s": fit_s, "best_score": float(grid.best_score_), "best_params": grid.best_params_,
    "params": [str(sorted(p.items())) for p in grid.cv_results_["params"]],
    "means": grid.cv_results_["mean_test_score"].tolist(), "engines": engines}}))
'''

ENGINES = {
    "raygrid": ("from raygrid import GridSearchCV", ""),
    "sklearn": ("from sklearn.model_selection import GridSearchCV", ", n_jobs={n_jobs}"),
}


def run_engine(name: str, grid: dict, workdir: Path, n_jobs: int) -> dict:
    importer, args = ENGINES[name]
    script = workdir / f"{name}_search.py"
    script.write_text(SCRIPT.format(IMPORT=importer, SEARCH_ARGS=args.format(n_jobs=n_jobs)))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, str(script), str(PIMA), json.dumps(grid)],
                          capture_output=True, text=True, env=env, cwd=workdir)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{name} failed:\n{proc.stderr[-3000:]}")
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT "))
    return {"wall_s": round(wall, 2), **json.loads(line[len("RESULT "):])}


def compare(ours: dict, theirs: dict) -> dict:
    """Per-candidate mean accuracy, raygrid against scikit-learn (matched by parameters)."""
    mine = dict(zip(ours["params"], ours["means"]))
    diffs = np.array([abs(mine[p] - m) for p, m in zip(theirs["params"], theirs["means"])])
    return {"mean_abs_diff": round(float(diffs.mean()), 4),
            "max_abs_diff": round(float(diffs.max()), 4),
            "share_within_0.03": round(float((diffs <= 0.03).mean()), 3),
            "best_diff": round(ours["best_score"] - theirs["best_score"], 4)}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--subset", choices=sorted(SUBSETS), default="quick")
    ap.add_argument("--n-jobs", type=int, default=os.cpu_count() or 2,
                    help="scikit-learn's n_jobs (default: every core)")
    args = ap.parse_args(argv)
    grid = SUBSETS[args.subset]
    with tempfile.TemporaryDirectory() as tmp:
        rows = {name: run_engine(name, grid, Path(tmp), args.n_jobs)
                for name in ("raygrid", "sklearn")}
    ours, theirs = rows["raygrid"], rows["sklearn"]
    n_fits = len(theirs["params"]) * 3
    fused = ours["engines"].get("fused", 0)
    result = {
        "benchmark": "user_seed", "subset": args.subset, "machine": machine(),
        "n_fits": n_fits, "sklearn_n_jobs": args.n_jobs,
        "raygrid": {k: v for k, v in ours.items() if k not in ("params", "means")},
        "sklearn": {k: v for k, v in theirs.items() if k not in ("params", "means", "engines")},
        "fused_share": round(fused / n_fits, 3),
        "speedup_wall": round(theirs["wall_s"] / ours["wall_s"], 2),
        "speedup_fit": round(theirs["fit_s"] / ours["fit_s"], 2),
        "scores": compare(ours, theirs),
    }
    path = save(f"user_seed_{args.subset}", result)
    print(json.dumps(result, indent=2, default=str))
    print(f"written: {path}")
    return result


if __name__ == "__main__":
    main()
