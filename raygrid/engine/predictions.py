"""What ``cross_val_predict`` asks of one fit (runs on the workers): the output of its method on
the test rows, with every fold's columns in the same class order."""
from __future__ import annotations

import warnings
from typing import Any

import numpy as np

#: Methods whose columns are classes: the target is label-encoded first, as scikit-learn does.
ENCODED_METHODS = ("decision_function", "predict_proba", "predict_log_proba")


def encodes(method: str, y: Any) -> bool:
    return method in ENCODED_METHODS and y is not None


def predict_fold(estimator: Any, X_test: Any, y: Any, method: str) -> Any:
    """``estimator.<method>(X_test)``; for a class-column method, columns for every class of
    ``y`` (the whole, label-encoded target), whatever classes the training fold had."""
    predictions = getattr(estimator, method)(X_test)
    if not encodes(method, y):
        return predictions
    y = np.asarray(y)
    if isinstance(predictions, list):  # one output per label (multioutput-multiclass)
        return [order_columns(estimator.classes_[i], p, len(set(y[:, i])), method)
                for i, p in enumerate(predictions)]
    n_classes = len(set(y)) if y.ndim == 1 else y.shape[1]
    return order_columns(estimator.classes_, predictions, n_classes, method)


def order_columns(classes: Any, predictions: Any, n_classes: int, method: str) -> Any:
    """``predictions`` with one column per class of the whole target (scikit-learn's rule).

    ``classes`` are the (encoded, so integer) classes of the training fold; a class it lacks
    gets 0 for ``predict_proba`` and the dtype's smallest value otherwise, with scikit-learn's
    RuntimeWarning; ``decision_function`` cannot be completed for two classes or fewer.
    """
    classes = np.asarray(classes)
    n_fold = classes.shape[0]
    if n_classes == n_fold:
        return predictions
    advice = "To fix this, use a cross-validation technique resulting in properly stratified folds"
    warnings.warn(
        f"Number of classes in training fold ({n_fold}) does not match total number of classes "
        f"({n_classes}). Results may not be appropriate for your use case. {advice}",
        RuntimeWarning,
    )
    if method == "decision_function":
        if predictions.ndim == 2 and predictions.shape[1] != n_fold:
            raise ValueError(
                f"Output shape {predictions.shape} of {method} does not match number of classes "
                f"({n_fold}) in fold. Irregular decision_function outputs are not currently "
                "supported by cross_val_predict"
            )
        if n_fold <= 2:
            raise ValueError(
                f"Only {n_fold} class/es in training fold, but {n_classes} in overall dataset. "
                f"This is not supported for decision_function with imbalanced folds. {advice}"
            )
    fill = 0 if method == "predict_proba" else np.finfo(predictions.dtype).min
    out = np.full((predictions.shape[0], n_classes), fill, dtype=predictions.dtype)
    out[:, classes] = predictions
    return out
