"""A Keras learning curve and a Keras permutation test: raygrid against scikit-learn n_jobs=-1.

The seed study's model (scikeras' stock KerasClassifier: Dense(12)-Dense(8)-Dense(1), relu,
adam, 10 epochs, batch 32) on the Pima data, the same estimator object and the same
StratifiedKFold for both engines, one after another in this run, TensorFlow on the driver:

- ``learning_curve``: 5 training sizes (10 % to 100 %) x 5 folds = 25 fits;
- ``permutation_test_score``: the score on the data and on ``--permutations`` permuted targets
  (default 100), 3 folds each.

``sklearn-all`` is scikit-learn's function with n_jobs=-1 (joblib's loky workers, TensorFlow).
``raygrid`` is raygrid's function with its defaults (``backend="auto"``, ``engine="auto"``): the
fits train fused in Ray workers on JAX; Ray's start-up is timed apart (``ray_start_s``); the
compilation cache starts empty, and the permutation test reuses the programs the learning curve
compiled (same model and batch size). The scores come from different Keras backends and seeds, so
they are close, not equal (raygrid's tests check equality with scikit-learn on deterministic
estimators).

    python -m benchmarks.bench_modsel [--permutations 100]
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np

from benchmarks.common import Measure, machine, save
from benchmarks.seed_model import load_data, stock_classifier


def _engines(name: str, call, score_of) -> dict:
    """Each engine's run of ``call(module, **extra)``: raygrid first (empty compilation cache),
    then scikit-learn with n_jobs=-1."""
    import sklearn.model_selection as skms

    import raygrid

    rows = {}
    for engine, module, extra in (("raygrid", raygrid, {}), ("sklearn-all", skms, {"n_jobs": -1})):
        with Measure() as m:
            out = call(module, **extra)
        rows[engine] = m.row(best_score=round(float(score_of(out)), 4))
        print(f"{name} {engine}: {rows[engine]}", flush=True)
    return rows


CACHE_NOTES = {
    "modsel_learning_curve": " The compilation cache was empty (this benchmark runs first).",
    "modsel_permutation_test": (" It ran after the learning curve in the same Ray workers, whose "
                                "compiled programs (same model, batch size 32) it reused: its "
                                "time is training, not compilation."),
}


def run(permutations: int = 100) -> list[dict]:
    os.environ.setdefault("RAYGRID_JAX_CACHE", tempfile.mkdtemp(prefix="raygrid-jax-"))
    import ray
    from sklearn.model_selection import StratifiedKFold

    X, y = load_data()
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
    ray_start = round(time.perf_counter() - t0, 2)
    sizes = np.linspace(0.1, 1.0, 5)
    curve = _engines(
        "learning_curve",
        lambda mod, **kw: mod.learning_curve(stock_classifier(), X, y, train_sizes=sizes,
                                             cv=StratifiedKFold(5), **kw),
        lambda out: out[2][-1].mean())
    perm = _engines(
        "permutation_test_score",
        lambda mod, **kw: mod.permutation_test_score(stock_classifier(), X, y,
                                                     cv=StratifiedKFold(3),
                                                     n_permutations=permutations,
                                                     random_state=0, **kw),
        lambda out: out[0])
    results = []
    for name, engines, fits, what, plan in (
        ("modsel_learning_curve", curve, 25, "mean test score at the largest training size",
         "5 training sizes x 5 folds"),
        ("modsel_permutation_test", perm, 3 * (permutations + 1),
         "the score on the unpermuted data",
         f"the data and {permutations} permuted targets, 3 folds each"),
    ):
        for row in engines.values():
            row["fits_per_s"] = round(fits / row["wall_s"], 2)
        result = {
            "benchmark": name, "machine": {**machine(), "load_avg_1m_at_start": load},
            "engines": engines, "ratio_to": None, "ray_start_s": ray_start,
            "note": (f"{fits} Keras fits (the seed model on Pima: {plan}), one engine after the "
                     "other in one run, TensorFlow on the driver; raygrid with its defaults: fused "
                     f"in Ray workers on JAX, Ray's start ({ray_start} s) not in its wall time. best "
                     f"score: {what}." + CACHE_NOTES[name]
                     + f" Load average {load:.1f} on the 2 cores at the start."),
        }
        save(name, result)
        results.append(result)
    return results


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--permutations", type=int, default=100)
    run(parser.parse_args(argv).permutations)


if __name__ == "__main__":
    main()
