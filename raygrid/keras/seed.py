"""The seed study's model: ``build_mlp`` (for scikeras' ``model=``) and ``seed_classifier``."""
from __future__ import annotations

from raygrid.keras.wrappers import make_classes


def build_mlp(meta: dict, hidden=(12, 8), activation: str = "relu", init: str = "glorot_uniform"):
    """The seed study's MLP, for scikeras' ``model=`` (uncompiled; scikeras compiles it).

    ``Input(n_features_in_)`` -> ``Dense(h, activation, kernel_initializer=init)`` for each
    ``h`` in ``hidden`` -> output: ``Dense(1, "sigmoid")`` for a binary target,
    ``Dense(n_classes_, "softmax")`` for more classes (use a sparse categorical loss then),
    a linear ``Dense(n_outputs)`` when ``meta`` comes from a regressor.
    """
    import keras

    n_features = meta["n_features_in_"]
    model = keras.Sequential(name="mlp")
    model.add(keras.Input(shape=(n_features,)))
    for units in hidden:
        model.add(keras.layers.Dense(int(units), activation=activation, kernel_initializer=init))
    n_classes = meta.get("n_classes_")
    if n_classes is None:  # regressor
        n_out = meta.get("n_outputs_expected_") or 1
        model.add(keras.layers.Dense(int(n_out)))
    elif n_classes <= 2:
        model.add(keras.layers.Dense(1, activation="sigmoid", kernel_initializer=init))
    else:
        model.add(keras.layers.Dense(int(n_classes), activation="softmax", kernel_initializer=init))
    return model


def seed_classifier(**kwargs):
    """The seed study's classifier: ``build_mlp`` under binary cross-entropy and Adam.

    Defaults: 12-8 ReLU hidden layers, Glorot-uniform init, 10 epochs of batch 32, silent.
    Any keyword overrides a default or adds a scikeras parameter, so the study's grid
    ``{"model__activation", "optimizer", "model__init", "batch_size", "epochs"}`` applies.
    """
    params = dict(
        model=build_mlp,
        loss="binary_crossentropy",
        optimizer="adam",
        metrics=None,
        epochs=10,
        batch_size=32,
        verbose=0,
        model__hidden=(12, 8),
        model__activation="relu",
        model__init="glorot_uniform",
    )
    params.update(kwargs)
    return make_classes()["KerasClassifier"](**params)
