"""A spec's search space: grids and distributions checked and converted, and their parameter
names mapped to what the searched model takes (``model__`` inside a pipeline)."""
from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from raygrid.cli.spec.estimator import SCALER_STEP, STEP
from raygrid.cli.spec.model import DistributionSpec, SearchSpec, schema_problems
from raygrid.cli.spec.problems import Problem, did_you_mean, join_path, listing, short_repr, type_name


def _tuplify(value: Any) -> Any:
    """Lists inside a list of values become tuples (hashable, as scikit-learn writes them)."""
    if isinstance(value, list):
        return tuple(_tuplify(v) for v in value)
    return value


def _non_empty(value: Any, kind: type, path: str, problems: list[Problem], wrong_type: str,
               empty: str) -> bool:
    """Whether ``value`` is a non-empty ``kind``; else the problem (``wrong_type`` or ``empty``)."""
    if not isinstance(value, kind):
        problems.append(Problem(path, wrong_type))
        return False
    if not value:
        problems.append(Problem(path, empty))
        return False
    return True


def _check_values(values: Any, path: str, problems: list[Problem]) -> list | None:
    if not _non_empty(values, list, path, problems,
                      f"expected a list of values (write [{short_repr(values)}] for one value), "
                      f"got {type_name(values)}",
                      "expected a non-empty list of values"):
        return None
    return [_tuplify(v) for v in values]


def _check_grid(grid: Any, path: str, problems: list[Problem]) -> dict | None:
    """The grid's well-formed entries (all of them when there is no problem)."""
    if not _non_empty(grid, dict, path, problems,
                      f"expected a mapping of parameter names to lists of values, got {type_name(grid)}",
                      "expected at least one parameter"):
        return None
    out = {}
    for name, values in grid.items():
        checked = _check_values(values, join_path(path, name), problems)
        if checked is not None:
            out[str(name)] = checked
    return out


def _distribution(raw: dict, path: str, problems: list[Problem]) -> Any:
    try:
        spec = DistributionSpec.model_validate(raw)
    except ValidationError as exc:
        problems += [Problem(join_path(path, p.path), p.message)
                     for p in schema_problems(exc, DistributionSpec)]
        return None
    if not spec.low < spec.high:
        problems.append(Problem(path, f"expected low < high, got low={spec.low}, high={spec.high}"))
        return None
    from scipy import stats

    if spec.dist == "uniform":
        return stats.uniform(loc=spec.low, scale=spec.high - spec.low)
    if spec.dist == "loguniform":
        if spec.low <= 0:
            problems.append(Problem(join_path(path, "low"), f"loguniform needs low > 0, got {spec.low}"))
            return None
        return stats.loguniform(spec.low, spec.high)
    bad = [k for k in ("low", "high") if float(getattr(spec, k)) != int(getattr(spec, k))]
    for k in bad:
        problems.append(Problem(join_path(path, k), f"randint needs an integer, got {getattr(spec, k)}"))
    return None if bad else stats.randint(int(spec.low), int(spec.high))


def check_space(search: SearchSpec, problems: list[Problem]) -> Any:
    """The search space with values converted; only its well-formed entries when some are not
    (the names of those are still checked against the estimator; the run stops on ``problems``)."""
    if search.kind == "grid":
        if search.distributions is not None:
            problems.append(Problem("search.distributions", "applies to kind: random; a grid search "
                                                            "takes `grid`"))
        if "n_iter" in search.model_fields_set:
            problems.append(Problem("search.n_iter", "applies to kind: random only"))
        if search.grid is None:
            problems.append(Problem("search.grid", "required with kind: grid (a mapping of "
                                                   "parameter names to lists of values)"))
            return None
        if isinstance(search.grid, list):
            if not search.grid:
                problems.append(Problem("search.grid", "expected at least one grid"))
                return None
            grids = [_check_grid(g, f"search.grid.{i}", problems) for i, g in enumerate(search.grid)]
            return [g if g is not None else {} for g in grids]
        return _check_grid(search.grid, "search.grid", problems)

    if search.grid is not None:
        problems.append(Problem("search.grid", "applies to kind: grid; a random search takes "
                                               "`distributions`"))
    if not search.distributions:
        problems.append(Problem("search.distributions",
                                "required with kind: random (parameter names to lists or "
                                "{dist: uniform|loguniform|randint, low, high})"))
        return None
    out = {}
    for name, value in search.distributions.items():
        path = f"search.distributions.{name}"
        if isinstance(value, dict):
            converted = _distribution(value, path, problems)
        else:
            converted = _check_values(value, path, problems)
        if converted is not None:
            out[name] = converted
    return out


def _accepts(estimator: Any, name: str, value: Any) -> bool:
    """Whether ``estimator`` takes parameter ``name`` (the search's own check, one name at a time)."""
    from raygrid.search.base import validate_candidates

    try:
        validate_candidates(estimator, [{name: value}], "spec")
    except ValueError:
        return False
    except Exception:  # noqa: BLE001 - a setter that rejects the value still knows the name
        return True
    return True


def _sample(values: Any) -> Any:
    return values[0] if isinstance(values, list) else values


def map_space(space: Any, search: SearchSpec, estimator: Any, pipeline: Any,
              problems: list[Problem]) -> Any:
    """Rename the space's keys to what the searched model takes; report unknown names."""
    if isinstance(space, list):
        return [_map_keys(g, f"search.grid.{i}", estimator, pipeline, problems) for i, g in enumerate(space)]
    base = "search.grid" if search.kind == "grid" else "search.distributions"
    return _map_keys(space, base, estimator, pipeline, problems)


def _map_keys(space: dict, base: str, estimator: Any, pipeline: Any, problems: list[Problem]) -> dict:
    """One grid's (or the distributions') keys as the estimator, or the pipeline around it, takes them."""
    out = {}
    for name, values in space.items():
        sample = _sample(values)
        key = None
        if pipeline is not None:
            if _accepts(estimator, name, sample):
                key = f"{STEP}__{name}"
            elif name.startswith((f"{STEP}__", f"{SCALER_STEP}__")) and _accepts(pipeline, name, sample):
                key = name
        else:
            if _accepts(estimator, name, sample):
                key = name
            elif name.startswith(f"{STEP}__") and _accepts(estimator, name[len(STEP) + 2:], sample):
                key = name[len(STEP) + 2:]
        if key is None:
            valid = sorted(estimator.get_params(deep=True))
            hint = did_you_mean(name.removeprefix(f"{STEP}__"), valid, n=2)
            problems.append(Problem(join_path(base, name),
                                    f"not a parameter of {type(estimator).__name__}{hint} "
                                    f"(parameters: {listing(valid)})"))
            continue
        out[key] = values
    return out
