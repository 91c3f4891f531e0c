"""The seed study: a Keras MLP on the Pima Indians diabetes data, cross-validated and grid-searched.

1. 10-fold stratified cross-validation of a Dense(30)-Dense(15)-Dense(1) relu/adam model
   (10 epochs, batch 32): mean and standard deviation of the accuracy.
2. The full grid on a Dense(12)-Dense(8)-Dense(1) model: activation {tanh, relu, sigmoid} ×
   optimizer {rmsprop, adam, sgd} × init {glorot_uniform, normal, uniform} × batch size
   {8, 16, 64} × epochs {5, 10, 25}, cv=3: 243 candidates, 729 fits, every fit a Ray task.
3. The results table, the best configuration, and the outputs of ``raygrid.save_search`` in
   ``--out``: results.csv/.parquet, summary.csv, best.json, the plots (violins of the mean
   accuracy per hyperparameter, a heatmap, score vs fit time) and report.html; study.json
   holds the cross-validation result and the grid's best.

Scaling happens inside a Pipeline fitted per fold (no leakage); ``--scale-first`` reproduces the
original study's min-max scaling of the whole data set before splitting.

    python examples/pima_keras.py                  # the whole study (10-20 minutes on 2 cores)
    python examples/pima_keras.py --quick          # a tiny grid, 1-2 epochs (about a minute)
    python examples/pima_keras.py --address auto   # on a Ray cluster
"""
from __future__ import annotations

import argparse
import json
import shutil
import textwrap
from pathlib import Path

from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import MinMaxScaler, minmax_scale

from rich.console import Console

import raygrid
from raygrid.cli.api import best_config
from raygrid.cli.main import print_results
from raygrid.datasets import load_pima
from raygrid.keras import seed_classifier
from raygrid.keras.quiet import native_noise_filtered

with native_noise_filtered():  # Keras loads TensorFlow here, without its C++ start-up lines
    import keras  # noqa: F401

STEP = "mlp"  # the Keras step's name in the pipeline: grid keys read "mlp__<parameter>"

FULL_GRID = {
    "model__activation": ["tanh", "relu", "sigmoid"],
    "optimizer": ["rmsprop", "adam", "sgd"],
    "model__init": ["glorot_uniform", "normal", "uniform"],
    "batch_size": [8, 16, 64],
    "epochs": [5, 10, 25],
}
QUICK_GRID = {
    "model__activation": ["tanh", "relu"],
    "optimizer": ["adam"],
    "model__init": ["glorot_uniform"],
    "batch_size": [32],
    "epochs": [1, 2],
}


def make_model(scale_first: bool, **params):
    """The seed MLP, behind a per-fold MinMaxScaler unless the data was scaled up front."""
    clf = seed_classifier(**params)
    return clf if scale_first else Pipeline([("scale", MinMaxScaler()), (STEP, clf)])


def grid_keys(grid: dict, scale_first: bool) -> dict:
    return grid if scale_first else {f"{STEP}__{k}": v for k, v in grid.items()}


def cross_validation_study(X, y, *, quick=False, scale_first=False, random_state=7, **search_kw):
    """10-fold stratified CV of the Dense(30)-Dense(15)-Dense(1) relu/adam model (10 epochs, batch 32)."""
    model = make_model(scale_first, model__hidden=(30, 15), model__activation="relu",
                       optimizer="adam", epochs=1 if quick else 10, batch_size=32)
    cv = StratifiedKFold(n_splits=3 if quick else 10, shuffle=True, random_state=random_state)
    scores = raygrid.cross_val_score(model, X, y, cv=cv, random_state=random_state, **search_kw)
    return float(scores.mean()), float(scores.std())


def grid_study(X, y, *, quick=False, scale_first=False, random_state=7, **search_kw):
    """The seed grid (or a tiny one with ``quick``), cv=3, every fit a Ray task."""
    grid = grid_keys(QUICK_GRID if quick else FULL_GRID, scale_first)
    search = raygrid.GridSearchCV(make_model(scale_first), grid, cv=3, scoring="accuracy",
                                  random_state=random_state, **search_kw)
    return search.fit(X, y)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a tiny grid with 1-2 epochs")
    ap.add_argument("--scale-first", action="store_true",
                    help="min-max scale the whole data set before splitting (the original study)")
    ap.add_argument("--data", default=None, help="path to pima-indians-diabetes.csv")
    ap.add_argument("--out", default="raygrid-out/pima_keras", help="output directory")
    ap.add_argument("--backend", default="ray", choices=["ray", "serial"])
    ap.add_argument("--address", default=None, help="Ray cluster address (default: local Ray)")
    ap.add_argument("--skip-cv", action="store_true", help="only run the grid search")
    ap.add_argument("--skip-grid", action="store_true", help="only run the cross-validation")
    ap.add_argument("-v", "--verbose", type=int, default=1)
    return ap


def main(argv=None) -> dict:
    args = build_parser().parse_args(argv)

    X, y = load_pima(args.data)
    if args.scale_first:
        X = minmax_scale(X)
    kw = dict(quick=args.quick, scale_first=args.scale_first, backend=args.backend,
              address=args.address, verbose=args.verbose)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary: dict = {}
    if not args.skip_cv:
        mean, std = cross_validation_study(X, y, **kw)
        summary["cv_accuracy"] = {"mean": mean, "std": std}
        print(f"cross-validated accuracy: {mean:.3f} ± {std:.3f}")

    if args.skip_grid:
        (out_dir / "study.json").write_text(json.dumps(summary, indent=2))
        print(f"written: {out_dir / 'study.json'}")
        return summary
    search = grid_study(X, y, **kw)
    summary.update(best_params=search.best_params_, best_score=float(search.best_score_),
                   n_candidates=len(search.summary_), n_fits=len(search.results_),
                   wall_time_s=round(search.wall_time_, 1))
    written = raygrid.save_search(search, out_dir, title="Keras MLP on the Pima diabetes data",
                                  X=X, y=y, data="Pima Indians diabetes")
    (out_dir / "study.json").write_text(json.dumps(summary, indent=2, default=str))
    # The table `raygrid show` prints: the top 10 folded to the terminal's width, then the best.
    print_results(search.summary_, best_config(search), None, top=10, console=Console())
    print(f"written to {out_dir}/:")
    width = shutil.get_terminal_size().columns
    print(textwrap.fill(", ".join(["study.json"] + sorted(written)), width, initial_indent="  ",
                        subsequent_indent="  "))
    return summary

if __name__ == "__main__":
    main()
