"""cross_val_predict with scikit-learn's signature: every fold a fit on Ray whose test-row
predictions come back as its result."""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from sklearn.preprocessing import LabelEncoder
from sklearn.utils import indexable

from raygrid.engine.fitting import FitTask, num_samples
from raygrid.engine.plan import build_trials
from raygrid.engine.predictions import encodes
from raygrid.engine.scoring import Scoring
from raygrid.search.prepare import RunOptions, prepare_run, run_plan
from raygrid.search.routing import route_function

#: No scorer: cross_val_predict's fits give predictions, not scores.
NO_SCORING = Scoring(scorer=None, metrics=(), scorers=None, multimetric=False)


def encoded_target(y):
    """``y`` label-encoded (each column of a 2-D ``y``), so that class columns line up across
    folds, as scikit-learn's cross_val_predict does for class-column methods."""
    y = np.asarray(y)
    if y.ndim == 1:
        return LabelEncoder().fit_transform(y)
    out = np.zeros_like(y, dtype=int)
    for j in range(y.shape[1]):
        out[:, j] = LabelEncoder().fit_transform(y[:, j])
    return out


def is_partition(indices: np.ndarray, n_samples: int) -> bool:
    if len(indices) != n_samples:
        return False
    hit = np.zeros(n_samples, dtype=bool)
    hit[indices] = True
    return bool(np.all(hit))


def cross_val_predict(
    estimator,
    X,
    y=None,
    *,
    groups=None,
    cv=None,
    n_jobs=None,
    verbose=0,
    params=None,
    pre_dispatch="2*n_jobs",
    method="predict",
    backend="auto",
    ray_remote_args=None,
    address=None,
    max_retries=3,
    random_state=None,
    storage=None,
    cache=True,
    engine="auto",
    fit_timeout=None,
):
    """Cross-validated estimates for each input data point; scikit-learn's result, fits on Ray.

    Each sample's prediction (``method``: ``predict``, ``predict_proba``,
    ``predict_log_proba``, ``decision_function``, ``transform``...) comes from the estimator
    fitted on the training set of the fold where it is a test sample; the cv must be a
    partition. A failed fit raises its exception, as in scikit-learn. The raygrid keywords are
    those of :func:`raygrid.cross_validate`; ``storage`` records the fits (predictions are not
    stored, so a rerun fits again).
    """
    X, y = indexable(X, y)
    if encodes(method, y):
        y = encoded_target(y)
    options = RunOptions(backend=backend, address=address, ray_remote_args=ray_remote_args,
                         max_retries=max_retries, n_jobs=n_jobs, engine=engine,
                         storage=storage, cache=cache, fit_timeout=fit_timeout)
    run = prepare_run(
        estimator, X, y, cv=cv, scoring=NO_SCORING, refit=False, error_score="raise",
        route=lambda est, _: route_function("cross_val_predict", est, None, cv, groups, params),
        options=options, kind="cross_val_predict", random_state=random_state,
        task=FitTask(predict=method), return_estimator=False,
    )
    test_indices = np.concatenate([test for _, test in run.table])
    if not is_partition(test_indices, num_samples(run.X)):
        raise ValueError("cross_val_predict only works for partitions")
    trials = build_trials([{}], run.n_splits, random_state=run.seed_state)
    run_plan(run, trials, title="cross_val_predict", verbose=verbose)

    predictions = [run.results[(0, f)].predictions for f in range(run.n_splits)]
    inverse = np.empty(len(test_indices), dtype=int)
    inverse[test_indices] = np.arange(len(test_indices))
    if sp.issparse(predictions[0]):
        predictions = sp.vstack(predictions, format=predictions[0].format)
    elif encodes(method, y) and isinstance(predictions[0], list):
        # One output per label (multioutput-multiclass): each label's folds together.
        predictions = [np.concatenate([p[j] for p in predictions])
                       for j in range(np.asarray(y).shape[1])]
    else:
        predictions = np.concatenate(predictions)
    if isinstance(predictions, list):
        return [p[inverse] for p in predictions]
    return predictions[inverse]
