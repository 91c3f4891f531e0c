"""ASHA early stopping against the full grid, on the seed Keras grid (Pima, min-max scaled, cv=3).

Both searches run in this process, one after another, on the same data, grid, folds
(StratifiedKFold(3) without shuffling) and Ray runtime:

- ``full``: raygrid.GridSearchCV, every candidate trained for its own ``epochs`` on every fold;
- ``asha``: raygrid.tune.TuneGridSearchCV(early_stopping=ASHA(...)): one Tune trial per candidate
  trains its three folds in increments of epochs and reports the mean CV accuracy at ASHA's rungs
  (``grace * rf**k`` epochs) and at its own ``epochs``; weak candidates stop at a rung.

Reported: each search's best mean CV accuracy, the ASHA winner's accuracy when fully trained (read
from the full grid), the fit-seconds (training time summed over every fit and increment; scoring
not included), wall time, and epochs trained. The target: ASHA's best >= 0.98 of the full grid's
best with <= 40 % of its fit-seconds.

    python -m benchmarks.bench_asha --subset glorot                      # 81 candidates
    python -m benchmarks.bench_asha --subset glorot --only model__activation=tanh   # 27
    python -m benchmarks.bench_asha --subset full --grace 2 --rf 3       # 243 candidates, slow
    python -m benchmarks.bench_asha --subset glorot --baseline results/asha_glorot.json
        (reuse the full grid measured by an earlier run; only ASHA runs)
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from benchmarks.bench_seed import SUBSETS
from benchmarks.common import Measure, machine, save
from benchmarks.seed_model import load_data


def restrict(grid: dict, only: list[str]) -> dict:
    """``--only key=v1,v2``: keep those values of one parameter (numbers parsed as numbers)."""
    grid = {k: list(v) for k, v in grid.items()}
    for item in only:
        key, _, values = item.partition("=")
        if key not in grid:
            raise SystemExit(f"--only {item}: {key!r} is not in the grid {sorted(grid)}")
        wanted = []
        for v in values.split(","):
            try:
                wanted.append(json.loads(v))
            except json.JSONDecodeError:
                wanted.append(v)
        grid[key] = [v for v in grid[key] if v in wanted]
        if not grid[key]:
            raise SystemExit(f"--only {item}: none of {values} is in {key}'s values")
    return grid


def _key(params: dict) -> str:
    return json.dumps(params, sort_keys=True, default=str)


def run_full(X, y, grid, cv, seed) -> dict:
    import raygrid
    from raygrid.keras import seed_classifier

    with Measure() as m:
        search = raygrid.GridSearchCV(seed_classifier(), grid, cv=cv, scoring="accuracy",
                                      random_state=seed, refit=False, engine="standard").fit(X, y)
    cv_res = search.cv_results_
    epochs = sum(int(p.get("epochs", 10)) for p in cv_res["params"]) * search.n_splits_
    return m.row(
        best_score=float(search.best_score_), best_params=search.best_params_,
        fit_seconds=float(search.results_["fit_time"].sum()),
        score_seconds=float(search.results_["score_time"].sum()),
        epochs_trained=epochs, fits=len(search.results_),
        scores={_key(p): float(s) for p, s in zip(cv_res["params"], cv_res["mean_test_score"])},
    )


def run_asha(X, y, grid, cv, seed, grace, rf) -> dict:
    from raygrid.keras import seed_classifier
    from raygrid.tune import ASHA, TuneGridSearchCV

    with Measure() as m:
        search = TuneGridSearchCV(seed_classifier(), grid, cv=cv, scoring="accuracy",
                                  early_stopping=ASHA(grace_period=grace, reduction_factor=rf),
                                  random_state=seed, refit=False).fit(X, y)
    summary = search.summary_
    return m.row(
        best_score=float(search.best_score_), best_params=search.best_params_,
        fit_seconds=float(search.fit_seconds_),
        score_seconds=float(search.score_seconds_),  # each trial once (members share a trial)
        # candidates equal but for their epochs share one run: count each trial's epochs once
        epochs_trained=int(summary.groupby("trial")["budget"].max().sum()) * search.n_splits_,
        trials=int(summary["trial"].nunique()),
        fits=len(search.results_), reports=len(search.history_),
        trained_to_end=int((~summary["stopped_early"]).sum()),
        stopped_at=summary["budget"].value_counts().sort_index().to_dict(),
        candidates=len(summary),
    )


def run(subset: str, only: list[str], grace: int, rf: float, seed: int, baseline: str | None):
    import ray
    from sklearn.model_selection import StratifiedKFold

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    X, y = load_data()
    X = X.astype("float32")
    grid = restrict(SUBSETS[subset], only)
    cv = StratifiedKFold(3)
    n_cand = int(np.prod([len(v) for v in grid.values()]))
    if not ray.is_initialized():
        ray.init(address="local", include_dashboard=False, log_to_driver=False,
                 configure_logging=False)
    rows = {}
    name = f"asha_{subset}" + "".join(f"_{o.replace('=', '-').replace(',', '+')}" for o in only)
    head = {"benchmark": name, "machine": machine(), "grid": grid, "candidates": n_cand,
            "asha": {"grace_period": grace, "reduction_factor": rf}, "seed": seed}
    if baseline:
        saved = json.loads(Path(baseline).read_text())
        if saved.get("grid") != grid:
            raise SystemExit(f"--baseline {baseline} measured another grid: {saved.get('grid')}")
        rows["full"] = saved["engines"]["full"]
        rows["full"]["reused_from"] = baseline
    else:
        print(f"full grid: {n_cand} candidates x 3 folds ...", flush=True)
        rows["full"] = run_full(X, y, grid, cv, seed)
        print(json.dumps({k: v for k, v in rows["full"].items() if k != "scores"}), flush=True)
        # saved at once: a long baseline is not lost if the ASHA run fails (reuse: --baseline)
        save("baselines/" + name + "_full", {**head, "when": time.strftime("%Y-%m-%d %H:%M"), "engines": rows})
    print(f"ASHA (grace {grace} epochs, reduction factor {rf}) ...", flush=True)
    rows["asha"] = run_asha(X, y, grid, cv, seed, grace, rf)
    full, asha = rows["full"], rows["asha"]
    winner_full = full.get("scores", {}).get(_key(asha["best_params"]))
    compare = {
        "best_score_ratio": asha["best_score"] / full["best_score"],
        "asha_winner_fully_trained_score": winner_full,
        "asha_winner_fully_trained_ratio": (winner_full / full["best_score"]) if winner_full else None,
        "fit_seconds_ratio": asha["fit_seconds"] / full["fit_seconds"],
        "fit_plus_score_seconds_ratio": (asha["fit_seconds"] + asha["score_seconds"])
        / (full["fit_seconds"] + full["score_seconds"]),
        "wall_ratio": asha["wall_s"] / full["wall_s"] if "reused_from" not in full else None,
        "epochs_ratio": asha["epochs_trained"] / full["epochs_trained"],
        "target_met": asha["best_score"] >= 0.98 * full["best_score"]
        and asha["fit_seconds"] <= 0.40 * full["fit_seconds"],
    }
    if ray.is_initialized():
        ray.shutdown()
    return name, {**head, "when": time.strftime("%Y-%m-%d %H:%M"), "engines": rows,
                  "compare": compare}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--subset", choices=sorted(SUBSETS), default="glorot")
    ap.add_argument("--only", action="append", default=[], metavar="KEY=V1,V2",
                    help="keep only these values of one grid parameter (repeatable)")
    ap.add_argument("--grace", type=int, default=1, help="ASHA grace period, in epochs")
    ap.add_argument("--rf", type=float, default=3, help="ASHA reduction factor")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--baseline", help="a saved result of this benchmark whose full grid to reuse")
    args = ap.parse_args(argv)
    name, out = run(args.subset, args.only, args.grace, args.rf, args.seed, args.baseline)
    path = save(name, out)
    shown = json.loads(json.dumps(out, default=str))
    shown["engines"]["full"].pop("scores", None)
    print(json.dumps(shown, indent=2))
    print(f"saved {path}")


if __name__ == "__main__":
    main()
