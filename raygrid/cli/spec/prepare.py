"""A spec checked completely and built into what a run needs: :func:`prepare` and its result,
:class:`Prepared`."""
from __future__ import annotations

import copy
import math
import numbers
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from pydantic import ValidationError

from raygrid.cli.spec.data import load_data
from raygrid.cli.spec.estimator import build_estimator, make_scaler, wrap_in_pipeline
from raygrid.cli.spec.evaluation import check_scoring, make_cv
from raygrid.cli.spec.model import Spec, schema_problems
from raygrid.cli.spec.problems import Problem, SpecError, short_repr
from raygrid.cli.spec.space import check_space, map_space


@dataclass
class Prepared:
    """A checked spec, ready to run: data, estimator and the search's keyword arguments."""

    spec: Spec
    raw: dict
    X: Any
    y: Any
    estimator: Any
    kind: str  # "grid" or "random"
    space: Any  # param_grid or param_distributions, keys as the search sees them
    search_kwargs: dict
    title: str
    source: str | None = None

    def make_search(self, *, backend: str | None = None, address: str | None = None,
                    verbose: int = 0, **extra: Any):
        """The unfitted raygrid search this spec describes (``extra`` goes to its constructor)."""
        from raygrid.search.grid import GridSearchCV, RandomizedSearchCV

        kwargs = dict(self.search_kwargs, verbose=verbose, **extra)
        if backend is not None:
            kwargs["backend"] = backend
        if address is not None:
            kwargs["address"] = address
        if self.kind == "random":
            return RandomizedSearchCV(self.estimator, self.space, **kwargs)
        return GridSearchCV(self.estimator, self.space, **kwargs)

    @property
    def n_candidates(self) -> int | None:
        if self.kind == "random":
            return None
        from sklearn.model_selection import ParameterGrid

        return len(ParameterGrid(self.space))


def default_out_dir(source: str | None) -> Path:
    stem = Path(source).stem if source else "spec"
    return Path("raygrid-out") / stem


def _section(raw: Mapping, name: str, problems: Sequence[Problem]) -> Any:
    """The top-level section ``name`` validated for the checks beyond the schema.

    When the schema found problems inside the section, the keys they point at are left out (their
    defaults apply) so the rest of the section is still checked; None when that does not validate
    either (a required key is missing or wrong, or the section itself has the wrong type).
    """
    from pydantic import TypeAdapter

    info = Spec.model_fields[name]
    key = info.alias or name
    if key not in raw:
        return None if info.is_required() else info.get_default(call_default_factory=True)
    value = raw[key]
    inner = [p.path.split(".")[1] for p in problems
             if p.path.split(".")[0] == key and p.path.count(".") >= 1]
    if any(p.path == key for p in problems):
        return None
    if inner and isinstance(value, dict):
        value = {k: v for k, v in value.items() if str(k) not in inner}
    try:
        return TypeAdapter(info.annotation).validate_python(value, strict=True)
    except ValidationError:
        return None


def prepare(raw: Mapping, *, source: str | None = None, out: Any = None,
            check_out: bool = True) -> Prepared:
    """Check ``raw`` completely and build what the run needs; raise :class:`SpecError` listing
    every problem found. Nothing is written."""
    problems: list[Problem] = []
    bad: set[str] = set()
    spec: Spec | None = None
    try:
        spec = Spec.model_validate(raw)
    except ValidationError as exc:
        found = schema_problems(exc, Spec)
        problems += found
        bad = {str(p.path.split(".")[0]) for p in found}
    schema = list(problems)
    get = (lambda name: getattr(spec, name)) if spec is not None else (
        lambda name: _section(raw, name, schema))

    data, pre, est_spec, search = get("data"), get("preprocessing"), get("estimator"), get("search")

    X = y = None
    if data is not None:
        X, y = load_data(data, problems)
    if pre is not None and pre.scale_before_split and pre.scaler == "none":
        problems.append(Problem("preprocessing.scale_before_split",
                                "needs a scaler (standard or minmax); preprocessing is none"))

    estimator = None
    if est_spec is not None:
        estimator = build_estimator(est_spec, problems)

    scoring_ok = "scoring" not in bad and "refit" not in bad
    scoring = raw.get("scoring") if spec is None else spec.scoring
    refit = raw.get("refit", True) if spec is None else spec.refit
    if scoring_ok:
        check_scoring(scoring, refit, problems)
    if "error_score" not in bad:
        error_score = raw.get("error_score", math.nan) if spec is None else spec.error_score
        if not (error_score == "raise" or (isinstance(error_score, numbers.Real)
                                            and not isinstance(error_score, bool))):
            problems.append(Problem("error_score",
                                    f"expected 'raise' or a number (.nan for NaN), got {short_repr(error_score)}"))
    cv = get("cv")
    if cv is not None and cv.random_state is not None and not cv.shuffle:
        problems.append(Problem("cv.random_state", "has no effect without shuffle: true; "
                                                   "set shuffle: true or drop random_state"))

    space = None
    if search is not None:
        space = check_space(search, problems)

    pipeline = None
    if estimator is not None and pre is not None:
        pipeline = wrap_in_pipeline(estimator, pre)
    if space is not None and estimator is not None and pre is not None:
        space = map_space(space, search, estimator, pipeline, problems)

    if check_out:
        target = Path(out) if out is not None else (
            Path(spec.out) if spec is not None and spec.out else
            Path(raw["out"]) if isinstance(raw.get("out"), str) and "out" not in bad else
            default_out_dir(source))
        if target.exists() and not target.is_dir():
            problems.append(Problem("out", f"{target} exists and is not a directory"))

    if problems:
        raise SpecError(problems, source)
    assert spec is not None and X is not None

    if pre.scale_before_split:
        X = make_scaler(pre.scaler).fit_transform(X)
        model = estimator
    else:
        model = pipeline if pipeline is not None else estimator

    search_kwargs: dict[str, Any] = dict(
        scoring=spec.scoring, refit=spec.refit, cv=make_cv(spec.cv, model),
        error_score=spec.error_score, return_train_score=spec.return_train_score,
        backend=spec.backend, address=spec.address, random_state=spec.random_state,
        n_jobs=spec.n_jobs,
    )
    if isinstance(spec.scoring, list):
        search_kwargs["scoring"] = list(spec.scoring)
    if spec.ray_remote_args is not None:
        search_kwargs["ray_remote_args"] = spec.ray_remote_args.model_dump(exclude_none=True)
    if spec.max_retries is not None:
        search_kwargs["max_retries"] = spec.max_retries
    if search.kind == "random":
        search_kwargs["n_iter"] = search.n_iter
    title = spec.title or _default_title(spec, estimator, source)
    return Prepared(spec=spec, raw=copy.deepcopy(dict(raw)), X=X, y=y, estimator=model,
                    kind=search.kind, space=space, search_kwargs=search_kwargs, title=title,
                    source=source)


def _default_title(spec: Spec, estimator: Any, source: str | None) -> str:
    data = spec.data.name or Path(spec.data.csv or "data").name
    kind = "grid search" if spec.search.kind == "grid" else "randomized search"
    stem = f" ({Path(source).stem})" if source else ""
    return f"{type(estimator).__name__} {kind} on {data}{stem}"
