"""The classic Keras tutorial grids, written as the tutorials write them: each model function
defined in the script that runs (``__main__``), compiling itself, scikeras' stock
``KerasClassifier``. Every fit trains fused, and the scores equal the standard engine's (the
same seeds, Keras on JAX in both).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = '''
import json, sys
import numpy as np
import keras
from keras.constraints import MaxNorm
from keras.layers import Dense, Dropout, Input
from keras.models import Sequential
from keras.optimizers import SGD
from scikeras.wrappers import KerasClassifier
from sklearn.preprocessing import minmax_scale
from raygrid import GridSearchCV

data = np.loadtxt(sys.argv[1], delimiter=",", skiprows=1)
X, y = minmax_scale(data[:, :8]), data[:, 8].astype(int)


def create_model():
    model = Sequential([Input((8,)), Dense(12, activation="relu"), Dense(1, activation="sigmoid")])
    model.compile(loss="binary_crossentropy", optimizer="adam", metrics=["accuracy"])
    return model


def create_model_optimizer(optimizer="adam"):
    model = Sequential([Input((8,)), Dense(12, activation="relu"), Dense(1, activation="sigmoid")])
    model.compile(loss="binary_crossentropy", optimizer=optimizer, metrics=["accuracy"])
    return model


def create_model_sgd(learning_rate=0.01, momentum=0.0):
    model = Sequential([Input((8,)), Dense(12, activation="relu"), Dense(1, activation="sigmoid")])
    optimizer = SGD(learning_rate=learning_rate, momentum=momentum)
    model.compile(loss="binary_crossentropy", optimizer=optimizer, metrics=["accuracy"])
    return model


def create_model_init(init_mode="uniform"):
    model = Sequential([Input((8,)), Dense(12, kernel_initializer=init_mode, activation="relu"),
                        Dense(1, kernel_initializer=init_mode, activation="sigmoid")])
    model.compile(loss="binary_crossentropy", optimizer="adam", metrics=["accuracy"])
    return model


def create_model_activation(activation="relu"):
    model = Sequential([Input((8,)), Dense(12, kernel_initializer="uniform", activation=activation),
                        Dense(1, kernel_initializer="uniform", activation="sigmoid")])
    model.compile(loss="binary_crossentropy", optimizer="adam", metrics=["accuracy"])
    return model


def create_model_dropout(dropout_rate=0.0, weight_constraint=1.0):
    model = Sequential([Input((8,)),
                        Dense(12, kernel_initializer="uniform", activation="linear",
                              kernel_constraint=MaxNorm(weight_constraint)),
                        Dropout(dropout_rate),
                        Dense(1, kernel_initializer="uniform", activation="sigmoid")])
    model.compile(loss="binary_crossentropy", optimizer="adam", metrics=["accuracy"])
    return model


def create_model_neurons(neurons=1):
    model = Sequential([Input((8,)), Dense(neurons, kernel_initializer="uniform", activation="linear",
                                           kernel_constraint=MaxNorm(4)),
                        Dropout(0.2), Dense(1, kernel_initializer="uniform", activation="sigmoid")])
    model.compile(loss="binary_crossentropy", optimizer="adam", metrics=["accuracy"])
    return model


GRIDS = {
    "batch_epochs": (create_model, dict(batch_size=[10, 20], epochs=[1, 2])),
    "optimizer": (create_model_optimizer, dict(model__optimizer=[
        "SGD", "RMSprop", "Adagrad", "Adadelta", "Adam", "Adamax", "Nadam"])),
    "sgd": (create_model_sgd, dict(model__learning_rate=[0.01, 0.1], model__momentum=[0.0, 0.9])),
    "init": (create_model_init, dict(model__init_mode=[
        "uniform", "lecun_uniform", "normal", "zero", "glorot_normal", "glorot_uniform",
        "he_normal", "he_uniform"])),
    "activation": (create_model_activation, dict(model__activation=[
        "softmax", "softplus", "softsign", "relu", "tanh", "sigmoid", "hard_sigmoid", "linear"])),
    "dropout": (create_model_dropout, dict(model__dropout_rate=[0.0, 0.2],
                                           model__weight_constraint=[1.0, 3.0])),
    "neurons": (create_model_neurons, dict(model__neurons=[1, 5, 10])),
}

out = {}
for name, (build, grid) in GRIDS.items():
    for engine in ("fused", "standard"):
        # Over epochs, one seed for every fit (the model's own random_state): a fused lane
        # trains to the longest epochs once and its shorter fits are read off it.
        seeds = dict(model=0, search=None) if "epochs" in grid else dict(model=None, search=0)
        model = KerasClassifier(model=build, epochs=1, batch_size=32, verbose=0,
                                random_state=seeds["model"])
        search = GridSearchCV(model, grid, cv=2, backend="serial", engine=engine,
                              random_state=seeds["search"], refit=False).fit(X, y)
        r = search.results_
        out.setdefault(name, {})[engine] = {
            "engines": sorted(set(r["engine"])), "errors": int(r["error"].notna().sum()),
            "means": search.cv_results_["mean_test_score"].tolist()}
print(json.dumps(out))
'''


@pytest.mark.keras
@pytest.mark.slow
def test_classic_tutorial_grids_train_fused_with_the_standard_engines_scores(tmp_path, pima_csv):
    script = tmp_path / "tutorial_grids.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "3",
           "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, str(script), str(pima_csv)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-5000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(out) == {"batch_epochs", "optimizer", "sgd", "init", "activation", "dropout",
                        "neurons"}
    for name, runs in out.items():
        fused, standard = runs["fused"], runs["standard"]
        assert fused["engines"] == ["fused"], name  # 100 % fused
        assert standard["engines"] == ["standard"] and fused["errors"] == standard["errors"] == 0
        diff = np.abs(np.array(fused["means"]) - np.array(standard["means"]))
        # Every fit trains from the standard engine's seed: the same fit up to float rounding
        # (at most a test row or two may flip).
        assert np.all(diff <= 0.01), (name, diff)
