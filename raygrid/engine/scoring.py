"""Turn ``scoring`` (str, callable, list, tuple, set, dict or None) into what the search needs."""
from __future__ import annotations

import difflib
import inspect
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from sklearn.metrics import check_scoring, get_scorer, get_scorer_names

from raygrid._compat import scorer_accepts_sample_weight


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


def resolve_scoring(estimator: Any, scoring: Any, refit: Any = True,
                    error_score: Any = float("nan")) -> Scoring:
    if callable(scoring):
        return Scoring(scoring, None, scoring, False)
    if scoring is None or isinstance(scoring, str):
        if isinstance(scoring, str):
            _named_scorer(scoring)
        scorer = check_scoring(estimator, scoring)
        return Scoring(scorer, ("score",), scorer, False)
    if not isinstance(scoring, (list, tuple, set, dict)):
        raise ValueError(
            "scoring must be a metric name, a callable, a list/tuple/set of names, a dict of "
            f"name -> scorer, or None; got {scoring!r}"
        )
    named = scoring.values() if isinstance(scoring, dict) else scoring
    for name in named:
        if isinstance(name, str):
            _named_scorer(name)  # an unknown name gets a did-you-mean
    # scikit-learn's own checks and messages (unique strings, empty list or dict, ...). As
    # scikit-learn: unless error_score="raise", one failing metric does not spoil the others.
    scorer = check_scoring(estimator, scoring, raise_exc=(error_score == "raise"))
    if isinstance(scoring, dict):
        scorers = {k: get_scorer(v) if isinstance(v, str) else v for k, v in scoring.items()}
    else:
        scorers = {n: get_scorer(n) for n in scoring}
    metrics = tuple(scorers)
    check_refit(refit, metrics)
    return Scoring(scorer, metrics, scorers, True)


def _accepts_sample_weight(scorer: Any, known: bool | None) -> bool:
    # scikit-learn's own answer for its scorers (``known``); for a plain callable, whether its
    # signature names sample_weight.
    if known is not None:
        return known
    try:
        return "sample_weight" in inspect.signature(scorer).parameters
    except (TypeError, ValueError):
        return False


def search_score_params(scoring: Scoring, fit_params: Mapping[str, Any], owner: Any) -> dict:
    """What a search passes to its scorers besides (estimator, X, y), as scikit-learn does with
    metadata routing off: fit's ``sample_weight`` when a scorer accepts it (split per fold with
    the data, so test scores are weighted), with sklearn's warning for each scorer that does not.
    cross_validate forwards nothing (sklearn's rule too).
    """
    weight = fit_params.get("sample_weight")
    if weight is None:
        return {}
    if scoring.multimetric and isinstance(scoring.scorers, Mapping):
        named = list(scoring.scorers.items())
    else:
        named = [(None, scoring.scorer)]
    known = [scorer_accepts_sample_weight(scorer) for _, scorer in named]
    accepted = []
    for (name, scorer), answer in zip(named, known):
        accepted.append(_accepts_sample_weight(scorer, answer))
        if not accepted[-1]:
            label = scorer if name is None else f"{name}={scorer}"
            warnings.warn(
                f"The scoring {label} does not support sample_weight, which may lead to "
                f"statistically incorrect results when fitting {owner} with sample_weight. "
            )
    if scoring.multimetric and any(answer is None for answer in known):
        # scikit-learn fails here (a plain callable in a scoring dict); raygrid scores unweighted.
        return {}
    return {"sample_weight": weight} if any(accepted) else {}
