"""The seed study's model and data, importable from the benchmarks and from the peers' own venvs.

Needs only numpy, scikit-learn and keras, so an older environment (tune-sklearn's) can import it.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

PIMA = Path(os.environ.get("RAYGRID_PIMA", Path(__file__).resolve().parents[2] / "shared/data/pima-indians-diabetes.csv"))


def load_data(path=PIMA):
    """Pima features min-max scaled once over the whole file (as the original study did), and labels."""
    from sklearn.preprocessing import minmax_scale

    data = np.loadtxt(path, delimiter=",", skiprows=1)
    return minmax_scale(data[:, :8]), data[:, 8].astype(int)


def build_mlp(meta, activation="relu", init="glorot_uniform"):
    """Dense(12)-Dense(8)-Dense(1, sigmoid), for scikeras' stock wrapper."""
    import keras

    return keras.Sequential([
        keras.Input((meta["n_features_in_"],)),
        keras.layers.Dense(12, activation=activation, kernel_initializer=init),
        keras.layers.Dense(8, activation=activation, kernel_initializer=init),
        keras.layers.Dense(1, activation="sigmoid"),
    ])


def stock_classifier():
    """scikeras' own KerasClassifier around the seed model: what a user has without raygrid."""
    from scikeras.wrappers import KerasClassifier

    return KerasClassifier(model=build_mlp, loss="binary_crossentropy", optimizer="adam",
                           epochs=10, batch_size=32, verbose=0, model__activation="relu",
                           model__init="glorot_uniform")
