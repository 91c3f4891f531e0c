"""Search spaces of the Tune searches: tune-sklearn's ranges, scipy distributions and Ray Tune
domains, for scikit-learn's samplers or Ray Tune's searchers."""
from __future__ import annotations

import importlib
import math
import numbers
from typing import Any, Mapping, Sequence

import numpy as np

SEARCH_OPTIMIZATIONS = ("random", "bayesian", "hyperopt", "optuna")


# ---------------------------------------------------------------------------------------------
# Search spaces
# ---------------------------------------------------------------------------------------------
def _tuple_range(name: str, value: tuple) -> tuple[Any, Any, bool, bool]:
    """tune-sklearn's ``(low, high)`` / ``(low, high, "uniform" | "log-uniform")`` ranges."""
    if len(value) not in (2, 3):
        raise ValueError(
            f"Parameter {name!r}: a range is (low, high) or (low, high, 'uniform'|'log-uniform'), "
            f"got {value!r}"
        )
    low, high = value[0], value[1]
    prior = value[2] if len(value) == 3 else "uniform"
    if prior not in ("uniform", "log-uniform"):
        raise ValueError(f"Parameter {name!r}: the prior must be 'uniform' or 'log-uniform', "
                         f"got {prior!r}")
    if not all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in (low, high)):
        raise ValueError(f"Parameter {name!r}: range bounds must be numbers, got {value!r}")
    if not low < high:
        raise ValueError(f"Parameter {name!r}: the range needs low < high, got {value!r}")
    log = prior == "log-uniform"
    if log and low <= 0:
        raise ValueError(f"Parameter {name!r}: a log-uniform range needs low > 0, got {value!r}")
    is_int = all(isinstance(v, numbers.Integral) for v in (low, high))
    return low, high, log, is_int


def _is_domain(value: Any) -> bool:
    try:
        from ray.tune.search.sample import Domain
    except ImportError:  # pragma: no cover
        return False
    return isinstance(value, Domain)


def grid_values(name: str, value: Any) -> Any:
    """``tune.grid_search([...])`` inside a param grid is the plain list."""
    if isinstance(value, Mapping) and set(value) == {"grid_search"}:
        return list(value["grid_search"])
    return value


class _DomainDistribution:
    """A Ray Tune domain with scipy's ``rvs`` interface, so sklearn's ParameterSampler can draw it."""

    def __init__(self, domain):
        self.domain = domain

    def rvs(self, random_state=None):
        rng = random_state if random_state is not None else np.random.default_rng()
        if isinstance(rng, np.random.RandomState):
            rng = np.random.default_rng(rng.randint(2**31 - 1))
        value = self.domain.sample(random_state=rng)
        return value.item() if isinstance(value, np.generic) else value

    def __repr__(self) -> str:
        return repr(self.domain)


def sampler_dists(name: str, value: Any) -> Any:
    """One parameter of a random search, in what sklearn's ParameterSampler takes."""
    from scipy import stats

    value = grid_values(name, value)
    if isinstance(value, tuple):
        low, high, log, is_int = _tuple_range(name, value)
        if is_int:
            return stats.randint(low, high + 1) if not log else _LogInt(low, high)
        return stats.loguniform(low, high) if log else stats.uniform(low, high - low)
    if _is_domain(value):
        return _DomainDistribution(value)
    if hasattr(value, "rvs") or (isinstance(value, Sequence) and not isinstance(value, str)):
        return value
    raise ValueError(
        f"Parameter {name!r}: random search takes a list, a (low, high[, prior]) range, a scipy "
        f"distribution or a ray.tune domain, got {value!r}"
    )


class _LogInt:
    """Integers from ``low`` to ``high`` (inclusive), log-uniformly."""

    def __init__(self, low: int, high: int):
        self.low, self.high = low, high

    def rvs(self, random_state=None):
        rng = random_state if random_state is not None else np.random.RandomState()
        value = math.exp(rng.uniform(math.log(self.low), math.log(self.high + 1)))
        return int(min(self.high, max(self.low, math.floor(value))))


def tune_domain(name: str, value: Any, optimizer: str, decoders: dict) -> Any:
    """One parameter of an adaptive (bayesian / hyperopt / optuna) search as a Ray Tune domain."""
    from ray import tune

    value = grid_values(name, value)
    if _is_domain(value) or (optimizer == "hyperopt" and is_hyperopt_expression(value)):
        return value
    if isinstance(value, tuple):
        low, high, log, is_int = _tuple_range(name, value)
        if is_int:
            return tune.lograndint(low, high + 1) if log else tune.randint(low, high + 1)
        return tune.loguniform(low, high) if log else tune.uniform(low, high)
    if isinstance(value, Sequence) and not isinstance(value, str):
        values = list(value)
        if not values:
            raise ValueError(f"Parameter {name!r} has an empty list of values")
        decoders[name] = values
        return tune.choice(list(range(len(values))))
    if hasattr(value, "rvs") and hasattr(value, "dist"):
        family = getattr(value.dist, "name", "")
        low, high = value.support()
        if family == "uniform":
            return tune.uniform(float(low), float(high))
        if family in ("loguniform", "reciprocal"):
            return tune.loguniform(float(low), float(high))
        if family == "randint":
            return tune.randint(int(low), int(high) + 1)
        raise ValueError(
            f"Parameter {name!r}: search_optimization={optimizer!r} cannot take a scipy "
            f"{family!r} distribution (only uniform, loguniform and randint convert); give a "
            "(low, high[, 'log-uniform']) range, a list, or a ray.tune domain"
        )
    raise ValueError(
        f"Parameter {name!r}: search_optimization={optimizer!r} takes a list (categorical), a "
        f"(low, high[, 'log-uniform']) range, a scipy uniform/loguniform/randint or a ray.tune "
        f"domain, got {value!r}"
    )


def check_bayesian(space: Mapping[str, Any], decoders: Mapping[str, list]) -> None:
    from ray.tune.search.sample import Float

    bad = [k for k, v in space.items() if k in decoders or not isinstance(v, Float)]
    if bad:
        raise ValueError(
            "search_optimization='bayesian' (Ray's BayesOptSearch) takes only continuous float "
            f"ranges such as (1e-4, 1e-1); {bad} {'is' if len(bad) == 1 else 'are'} categorical or "
            "integer. Use search_optimization='optuna' or 'hyperopt' for mixed spaces."
        )


#: Ray Tune's searcher of each search_optimization: (its module and class, the package it
#: imports, the requirement to install, the keyword that takes the seed).
_SEARCHERS = {
    "optuna": ("ray.tune.search.optuna", "OptunaSearch", "optuna", "optuna", "seed"),
    "hyperopt": ("ray.tune.search.hyperopt", "HyperOptSearch", "hyperopt", "hyperopt",
                 "random_state_seed"),
    "bayesian": ("ray.tune.search.bayesopt", "BayesOptSearch", "bayes_opt",
                 "bayesian-optimization==1.4.3", "random_state"),
}


def searcher_seed(random_state: Any) -> int | None:
    """The seed of a search algorithm: an integer ``random_state``, or (as tune-sklearn) one
    drawn from a ``numpy.random.RandomState``, so two searches given equal RandomStates search
    alike."""
    if isinstance(random_state, np.random.RandomState):
        return int(random_state.randint(2**31 - 1))
    return int(random_state) if isinstance(random_state, numbers.Integral) else None


def is_hyperopt_expression(value: Any) -> bool:
    """A hyperopt expression (``hp.choice(...)``, ``hp.uniformint(...)``), without importing it."""
    return type(value).__module__.startswith("hyperopt.")


def check_searcher(searcher: Any, metric: str, mode: str) -> Any:
    """A Ray Tune ``Searcher`` given as ``search_optimization``; its own search space, if it was
    created with one (then its ``metric`` and ``mode`` must be the search's, as in
    tune-sklearn: ``average_test_<metric>`` or raygrid's ``objective``)."""
    from ray.tune.search import Searcher

    from raygrid._compat import tune_searcher_space

    if not isinstance(searcher, Searcher):
        raise ValueError(f"Search optimization must be one of {', '.join(SEARCH_OPTIMIZATIONS)} "
                         f"or a ray.tune.search.Searcher instance, got {searcher!r}")
    space = tune_searcher_space(searcher)
    if space is None:
        return None
    if searcher.metric not in (f"average_test_{metric}", "objective"):
        raise ValueError(
            "If a Searcher instance has been initialized with a space, its metric "
            f"({searcher.metric!r}) must match the metric set in the search "
            f"('average_test_{metric}')")
    if searcher.mode != mode:
        raise ValueError(
            "If a Searcher instance has been initialized with a space, its mode "
            f"({searcher.mode!r}) must match the mode set in the search ({mode!r})")
    return space


def hyperopt_searcher(space: Mapping[str, Any], metric: str, mode: str, seed: int | None,
                      search_kwargs: Mapping[str, Any] | None):
    """Ray's ``HyperOptSearch`` over ``space``: hyperopt expressions as given, Ray Tune domains
    converted to them (tune-sklearn passed hyperopt expressions to HyperOptSearch)."""
    make_searcher("hyperopt", None, None)  # the clear ImportError if hyperopt is missing
    from ray.tune.search.hyperopt import HyperOptSearch

    domains = {k: v for k, v in space.items() if not is_hyperopt_expression(v)}
    converted = HyperOptSearch.convert_search_space(domains) if domains else {}
    merged = {k: (v if is_hyperopt_expression(v) else converted[k]) for k, v in space.items()}
    kwargs = dict(search_kwargs or {})
    if seed is not None:
        kwargs.setdefault("random_state_seed", seed)
    return HyperOptSearch(space=merged, metric=metric, mode=mode, **kwargs)


def make_searcher(optimizer: Any, random_state: Any, search_kwargs: Mapping[str, Any] | None):
    """Ray Tune's searcher for ``search_optimization`` (a Searcher object is used as given),
    seeded by ``random_state`` (see ``searcher_seed``) unless ``search_kwargs`` set the seed."""
    if not isinstance(optimizer, str):
        return optimizer
    if optimizer not in _SEARCHERS:
        raise ValueError(f"search_optimization must be one of {SEARCH_OPTIMIZATIONS}, "
                         f"got {optimizer!r}")
    module, name, package, requirement, seed_key = _SEARCHERS[optimizer]
    try:
        importlib.import_module(package)
        searcher = getattr(importlib.import_module(module), name)
    except ImportError as exc:
        raise ImportError(f"search_optimization={optimizer!r} needs {requirement}: pip install "
                          f"'raygrid[tune]' (or: pip install '{requirement}')") from exc
    kwargs = dict(search_kwargs or {})
    seed = searcher_seed(random_state)
    if seed is not None:
        kwargs.setdefault(seed_key, seed)
    return searcher(**kwargs)
