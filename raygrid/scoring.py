"""Turn ``scoring`` (str, callable, list, tuple, set, dict or None) into what the search needs."""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any, Callable

from sklearn.metrics import check_scoring, get_scorer, get_scorer_names


@dataclass
class Scoring:
    scorer: Callable  # what the workers call: returns a number, or a dict for several metrics
    metrics: tuple[str, ...] | None  # None: a callable whose result names the metrics
    scorers: Any  # the fitted search's ``scorer_``: one scorer, or a dict of them
    multimetric: bool


def _named_scorer(name: str) -> Callable:
    try:
        return get_scorer(name)
    except ValueError:
        close = difflib.get_close_matches(name, get_scorer_names(), n=3)
        hint = f" Did you mean {' or '.join(map(repr, close))}?" if close else ""
        raise ValueError(
            f"Unknown scoring {name!r}.{hint} See sklearn.metrics.get_scorer_names() for the "
            "valid names."
        ) from None


def check_refit(refit: Any, metrics: tuple[str, ...]) -> None:
    """scikit-learn's rule: with several metrics, refit is False, a metric name or a callable."""
    if refit is not False and not callable(refit) and not (isinstance(refit, str) and refit in metrics):
        raise ValueError(
            "For multi-metric scoring, the parameter refit must be set to a scorer key or a "
            "callable to refit an estimator with the best parameter setting on the whole data and "
            "make the best_* attributes available for that metric. If this is not needed, refit "
            f"should be set to False explicitly. {refit!r} was passed."
        )


def resolve_scoring(estimator: Any, scoring: Any, refit: Any = True) -> Scoring:
    if callable(scoring):
        return Scoring(scoring, None, scoring, False)
    if scoring is None or isinstance(scoring, str):
        if isinstance(scoring, str):
            _named_scorer(scoring)
        scorer = check_scoring(estimator, scoring)
        return Scoring(scorer, ("score",), scorer, False)
    if isinstance(scoring, (list, tuple, set)):
        names = list(scoring)
        if not names:
            raise ValueError("scoring is an empty list; give at least one metric name")
        if len(set(names)) != len(names) or not all(isinstance(n, str) for n in names):
            raise ValueError(f"scoring as a list must hold unique metric names, got {scoring!r}")
        scorers = {n: _named_scorer(n) for n in names}
    elif isinstance(scoring, dict):
        if not scoring:
            raise ValueError("scoring is an empty dict; give at least one metric")
        scorers = {k: _named_scorer(v) if isinstance(v, str) else v for k, v in scoring.items()}
    else:
        raise ValueError(
            "scoring must be a metric name, a callable, a list/tuple/set of names, a dict of "
            f"name -> scorer, or None; got {scoring!r}"
        )
    metrics = tuple(scorers)
    check_refit(refit, metrics)
    return Scoring(check_scoring(estimator, scorers), metrics, scorers, True)
