"""How a spec's candidates are evaluated: its scoring and refit checked against scikit-learn's
scorer names, and its cross-validation splitter."""
from __future__ import annotations

from typing import Any

from raygrid.cli.spec.model import CVSpec
from raygrid.cli.spec.problems import Problem, did_you_mean, short_repr


def check_scoring(scoring: Any, refit: Any, problems: list[Problem]) -> None:
    from sklearn.metrics import get_scorer_names

    known = set(get_scorer_names())
    names: list[str] = []
    if scoring is None:
        pass
    elif isinstance(scoring, str):
        names = [scoring]
    elif isinstance(scoring, list) and scoring and all(isinstance(s, str) for s in scoring):
        names = scoring
        if len(set(names)) != len(names):
            problems.append(Problem("scoring", "metric names must be unique"))
    else:
        problems.append(Problem("scoring", "expected a metric name or a non-empty list of metric "
                                           f"names, got {short_repr(scoring)}"))
        return
    for i, name in enumerate(names):
        if name not in known:
            hint = did_you_mean(name, sorted(known), n=2)
            path = "scoring" if isinstance(scoring, str) else f"scoring.{i}"
            problems.append(Problem(path, f"unknown metric {name!r}{hint} (see "
                                          "sklearn.metrics.get_scorer_names())"))
    if isinstance(refit, bool):
        if isinstance(scoring, list) and len(scoring) > 1 and refit:
            problems.append(Problem("refit", f"with several metrics, refit must name one of them "
                                             f"({', '.join(scoring)}) or be false"))
    elif isinstance(refit, str):
        if not isinstance(scoring, list) or refit not in scoring:
            problems.append(Problem("refit", f"{refit!r} is not one of the scoring metrics; with a "
                                             "list of metrics give one of them, else true or false"))
    else:
        problems.append(Problem("refit", f"expected true, false or a metric name, got {short_repr(refit)}"))


def make_cv(cv: CVSpec, model: Any) -> Any:
    """An integer (scikit-learn picks stratified for classifiers) or an explicit splitter."""
    from sklearn.base import is_classifier
    from sklearn.model_selection import KFold, StratifiedKFold

    kind = cv.kind
    if kind == "auto":
        if not cv.shuffle:
            return cv.n_splits
        kind = "stratified" if is_classifier(model) else "kfold"
    cls = StratifiedKFold if kind == "stratified" else KFold
    return cls(n_splits=cv.n_splits, shuffle=cv.shuffle, random_state=cv.random_state)
