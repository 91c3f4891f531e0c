"""The plan: every (candidate, fold) fit as a small immutable record, built before anything runs."""
from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
from sklearn.base import is_classifier
from sklearn.model_selection import check_cv
from sklearn.utils import check_consistent_length, indexable


@dataclass(frozen=True)
class Trial:
    """One fit to run: candidate ``candidate`` on split ``fold``.

    ``seed`` is the per-fit seed handed to estimators that take one from raygrid (Keras models);
    ``None`` leaves the estimator's own ``random_state`` untouched. ``engine`` is the engine
    planned for the fit: ``"fused"`` when raygrid.engine.fused will train it with others (its seed is
    then its lane's), else ``"standard"``. ``callback_ctx`` is the fit's scikit-learn callback
    context when the search has callbacks (raygrid.search.callbacks).
    """

    candidate: int
    fold: int
    params: Mapping[str, Any]
    seed: int | None = None
    engine: str = "standard"
    callback_ctx: Any = field(default=None, compare=False, repr=False)


def params_key(params: Mapping[str, Any]) -> int:
    """A 31-bit number for a candidate's parameter values, whatever its position in the grid.

    Fit seeds derive from it, so a candidate keeps its seeds when the grid around it grows (and
    its stored fits stay valid). Values are told apart by their ``repr``.
    """
    text = repr(sorted((str(k), repr(v)) for k, v in params.items()))
    return zlib.crc32(text.encode()) & 0x7FFFFFFF


def fit_seed(random_state: int | None, key: int, fold: int) -> int | None:
    """A reproducible 31-bit seed for one fit, from (random_state, ``key``, fold); ``key`` names
    the candidate, normally ``params_key(params)``."""
    if random_state is None:
        return None
    state = np.random.SeedSequence([int(random_state), int(key), int(fold)]).generate_state(1)
    return int(state[0] & 0x7FFFFFFF)


def build_trials(
    candidates: Sequence[Mapping[str, Any]],
    n_splits: int,
    *,
    first_candidate: int = 0,
    random_state: int | None = None,
) -> list[Trial]:
    """Trials for ``candidates`` (numbered from ``first_candidate``) on every fold, candidate-major.

    With a ``random_state``, each fit's seed comes from (random_state, the candidate's parameter
    values, fold): equal parameters get equal seeds wherever they sit in the grid.
    """
    return [
        Trial(c, f, params, fit_seed(random_state, params_key(params), f))
        for c, params in enumerate(candidates, start=first_candidate)
        for f in range(n_splits)
    ]


def split_data(estimator: Any, X: Any, y: Any, groups: Any, cv: Any,
               split_params: Mapping[str, Any] | None = None):
    """Check X, y and groups, and compute the cross-validation splits once, on the driver.

    ``cv`` is scikit-learn's: an int (stratified for classifiers), a splitter or an iterable of
    (train, test) index pairs. ``split_params`` go to its ``split`` (default: ``groups``).
    Returns ``(X, y, splits)`` with the splits as index arrays.
    """
    check_consistent_length(*[a for a in (X, y, groups) if a is not None])
    X, y, groups = indexable(X, y, groups)
    split_params = {"groups": groups} if split_params is None else dict(split_params)
    splitter = check_cv(cv, y, classifier=is_classifier(estimator))
    splits = [(np.asarray(tr), np.asarray(te)) for tr, te in splitter.split(X, y, **split_params)]
    if not splits:
        # scikit-learn's words, and which cv it was.
        raise ValueError("No fits were performed. Was the CV iterator empty? Were there no "
                         f"candidates? (cv={cv!r} yields no train/test splits)")
    # A splitter without get_n_splits (scikit-learn's functions accept one) is taken at its word.
    expected = (splitter.get_n_splits(X, y, **split_params)
                if hasattr(splitter, "get_n_splits") else len(splits))
    if len(splits) != expected:
        raise ValueError("cv.split and cv.get_n_splits return inconsistent results. Expected "
                         f"{expected} splits, got {len(splits)}")
    return X, y, splits
