"""Search specs: a YAML file that names the data, preprocessing, estimator, search space and run.

A spec is checked in two passes before anything runs, and every problem found is reported at once,
each with its key path (``search.grid.C``) and what was expected:

1. the schema (pydantic models, unknown keys rejected, no silent type coercion);
2. everything the schema cannot see: exactly one data source, the data file exists and has the
   target column, the estimator's import path resolves and the estimator builds with its params,
   every grid/distribution parameter exists on the estimator, scoring names are known, ...

Example (``examples/specs/breast_cancer_svc.yaml``)::

    data: {name: breast_cancer}            # or {name: pima, path: ...} or {csv: FILE, target: COLUMN}
    preprocessing: standard                # none | standard | minmax, fitted per fold in a Pipeline
    estimator: {import: "sklearn.svm:SVC", params: {cache_size: 500}}
    search:
      kind: grid                           # or random, with distributions and n_iter
      grid: {C: [0.1, 1, 10], gamma: [scale, 0.01]}
    cv: {kind: stratified, n_splits: 5, shuffle: true, random_state: 0}
    scoring: [accuracy, roc_auc]
    refit: accuracy

Parameter names in ``search`` are the estimator's own. When preprocessing wraps the estimator in a
``Pipeline([("scaler", ...), ("model", estimator)])`` they are prefixed with ``model__``
automatically; names already written for the pipeline (``model__C``, ``scaler__...``) are accepted
as they are. Relative paths (``data.csv``, ``data.path``, ``out``) are relative to the current
directory. Lists inside grid values (``hidden: [[12, 8], [30, 15]]``) become tuples.
"""
from __future__ import annotations

import copy
import difflib
import importlib
import inspect
import math
import numbers
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

__all__ = [
    "Spec",
    "SpecError",
    "Problem",
    "Prepared",
    "load_spec",
    "apply_overrides",
    "prepare",
    "default_out_dir",
    "STARTER_SPEC",
]

STEP = "model"  # the pipeline step that holds the estimator
SCALER_STEP = "scaler"
SCALERS = ("none", "standard", "minmax")


# ----------------------------------------------------------------------------- problems
@dataclass(frozen=True)
class Problem:
    """One thing wrong with a spec: where (a dotted key path) and what was expected."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path or '<spec>'}: {self.message}"


class SpecError(ValueError):
    """A spec that cannot run; ``problems`` lists every problem found."""

    def __init__(self, problems: Sequence[Problem], source: str | None = None):
        self.problems = list(problems)
        self.source = source
        super().__init__(self.describe())

    def describe(self) -> str:
        n = len(self.problems)
        where = f" {self.source}" if self.source else ""
        head = f"invalid spec{where}: {n} problem{'s' if n != 1 else ''}"
        return head + "".join(f"\n  - {p}" for p in self.problems)


def _join(*parts: Any) -> str:
    return ".".join(str(p) for p in parts if p != "")


# ----------------------------------------------------------------------------- schema
class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class DataSpec(_Model):
    """Where the data comes from: a built-in data set or a CSV file."""

    name: Literal["breast_cancer", "pima"] | None = None
    path: str | None = Field(None, description="pima only: the CSV file (default: raygrid's lookup)")
    csv: str | None = Field(None, description="a CSV file with a header row")
    target: str | None = Field(None, description="csv only: the label column")
    features: list[str] | None = Field(None, description="csv only: feature columns (default: all others)")


class PreprocessingSpec(_Model):
    scaler: Literal["none", "standard", "minmax"] = "none"
    scale_before_split: bool = Field(
        False, description="scale all rows once before splitting (the seed article's way; leaks "
                           "test-fold statistics into training) instead of per fold in a Pipeline")

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        if value is None:
            return {}
        if isinstance(value, str):
            return {"scaler": value}
        return value


class EstimatorSpec(_Model):
    import_: str | None = Field(None, alias="import",
                                description='"module:callable", a class or a factory')
    builtin: Literal["seed_mlp"] | None = None
    params: dict[str, Any] = Field(default_factory=dict)


class SearchSpec(_Model):
    kind: Literal["grid", "random"] = "grid"
    grid: Any = None  # checked by hand: a mapping of lists, or a list of such mappings
    distributions: dict[str, Any] | None = None
    n_iter: int = Field(10, ge=1)


class DistributionSpec(_Model):
    dist: Literal["uniform", "loguniform", "randint"]
    low: float
    high: float


class CVSpec(_Model):
    kind: Literal["auto", "stratified", "kfold"] = "auto"
    n_splits: int = Field(5, ge=2)
    shuffle: bool = False
    random_state: int | None = None

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            return {"n_splits": value}
        return value


class ResourcesSpec(_Model):
    """Resources per fit, Ray's own names (passed to ``.options()``)."""

    num_cpus: float | None = Field(None, ge=0)
    num_gpus: float | None = Field(None, ge=0)
    memory: int | None = Field(None, ge=0, description="bytes")
    resources: dict[str, float] | None = None
    accelerator_type: str | None = None
    runtime_env: dict[str, Any] | None = None


class Spec(_Model):
    """A whole spec file."""

    title: str | None = None
    data: DataSpec
    preprocessing: PreprocessingSpec = Field(default_factory=PreprocessingSpec)
    estimator: EstimatorSpec
    search: SearchSpec
    cv: CVSpec = Field(default_factory=CVSpec)
    scoring: Any = None  # a metric name or a list of names; checked by hand
    refit: Any = True  # true/false or a metric name; checked by hand
    error_score: Any = math.nan  # "raise" or a number; checked by hand
    return_train_score: bool = False
    random_state: int | None = None
    ray_remote_args: ResourcesSpec | None = None
    n_jobs: int | None = None
    max_retries: int | None = Field(None, ge=0)
    backend: Literal["auto", "ray", "serial"] = "auto"
    address: str | None = None
    out: str | None = None


def _unwrap(annotation: Any) -> Any:
    """The model class inside ``X | None`` / ``Optional[X]``, else the annotation itself."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return _unwrap(args[0])
    return annotation


def _model_at(model: type[BaseModel], loc: Sequence[Any]) -> type[BaseModel] | None:
    """The model class a (pydantic) location points into, when there is one."""
    current: Any = model
    for part in loc:
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return None
        fields = {(f.alias or name): f for name, f in current.model_fields.items()}
        if part not in fields:
            return None
        current = _unwrap(fields[part].annotation)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _keys_of(model: type[BaseModel]) -> list[str]:
    return [f.alias or name for name, f in model.model_fields.items()]


def _short_repr(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _type_name(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean", int: "an integer",
            float: "a number", type(None): "null"}.get(type(value), type(value).__name__)


def schema_problems(error: ValidationError, model: type[BaseModel], prefix: Sequence[Any] = ()) -> list[Problem]:
    """Turn pydantic's errors into :class:`Problem` s with dotted key paths and plain wording."""
    problems = []
    for err in error.errors(include_url=False):
        loc = [p for p in err["loc"]]
        path = _join(*prefix, *loc)
        kind, value = err["type"], err.get("input")
        if kind == "extra_forbidden":
            parent = _model_at(model, loc[:-1])
            allowed = _keys_of(parent) if parent else []
            close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            expected = f" (expected one of: {', '.join(allowed)})" if allowed else ""
            message = f"unknown key{hint}{expected}"
        elif kind == "missing":
            message = "required key is missing"
        elif kind == "model_type" or kind == "dict_type":
            message = f"expected a mapping, got {_type_name(value)} {_short_repr(value)}"
        else:
            msg = err["msg"]
            if msg.startswith("Input should be "):
                msg = "expected " + msg[len("Input should be "):]
            elif msg.startswith("Value error, "):
                msg = msg[len("Value error, "):]
            message = f"{msg}, got {_short_repr(value)}"
        problems.append(Problem(path, message))
    return problems


# ----------------------------------------------------------------------------- loading
def load_spec(source: Any) -> tuple[dict, str | None]:
    """``(raw mapping, source name)`` from a path, a YAML string's file, a mapping or a :class:`Spec`."""
    if isinstance(source, Spec):
        return source.model_dump(by_alias=True, exclude_unset=True), None
    if isinstance(source, Mapping):
        return copy.deepcopy(dict(source)), None
    path = Path(source)
    if not path.is_file():
        raise SpecError([Problem("", f"spec file not found: {path}")], str(path))
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise SpecError([Problem("", f"not valid YAML: {exc}")], str(path)) from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise SpecError([Problem("", f"expected a mapping at the top level, got {_type_name(raw)}")],
                        str(path))
    return raw, str(path)


def apply_overrides(raw: Mapping, overrides: Sequence[str]) -> dict:
    """A copy of ``raw`` with ``key.path=value`` overrides applied; values are parsed as YAML.

    ``search.grid.C=[0.1, 1]`` replaces one entry; missing mappings on the way are created; an
    integer part indexes a list (``search.grid.0.C=[1]`` for a list of grids).
    """
    out = copy.deepcopy(dict(raw))
    problems = []
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            problems.append(Problem(f"--set {item}", "expected KEY=VALUE, e.g. search.n_iter=20"))
            continue
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            problems.append(Problem(f"--set {key}", f"value is not valid YAML: {exc}"))
            continue
        parts = key.split(".")
        node: Any = out
        try:
            for i, part in enumerate(parts):
                last = i == len(parts) - 1
                if isinstance(node, dict):
                    if last:
                        node[part] = value
                    else:
                        if node.get(part) is None:
                            node[part] = {}
                        node = node[part]
                elif isinstance(node, list) and part.lstrip("-").isdigit():
                    index = int(part)
                    if last:
                        node[index] = value
                    else:
                        node = node[index]
                else:
                    where = ".".join(parts[:i]) or "<spec>"
                    hint = ""
                    if isinstance(node, list) and node:
                        rest = ".".join(parts[i:])
                        tries = ", ".join(f"{where}.{n}.{rest}" for n in range(min(len(node), 3)))
                        hint = (f"; its items are numbered from 0: did you mean {where}.0.{rest}? "
                                f"(each of the {len(node)} items is set on its own: {tries}"
                                + (", ..." if len(node) > 3 else "") + ")")
                    raise LookupError(f"{where} is {_type_name(node)}, not a mapping{hint}")
        except (LookupError, IndexError) as exc:
            problems.append(Problem(f"--set {key}", str(exc)))
    if problems:
        raise SpecError(problems)
    return out


#: What ``raygrid init`` writes: a spec that runs as it is (offline data) with every key explained.
STARTER_SPEC = """\
# A raygrid search spec. Check it with `raygrid check {path}`, run it with `raygrid run {path}`.
# Every key is described in docs/spec.md. Keys not given take the defaults shown in comments.
title: My first raygrid search

# The data: a built-in data set (breast_cancer: scikit-learn's, offline; pima: the Pima diabetes
# CSV, from `path`, $RAYGRID_PIMA, a cached copy or OpenML) or a CSV file with a header row.
data: {{name: breast_cancer}}
# data: {{csv: my_data.csv, target: label}}          # features: [col_a, col_b] (default: all others)

# Scaling fitted on each fold's training rows: none | standard | minmax. With a scaler the
# estimator is step "model" of a Pipeline; grid names below stay the estimator's own.
preprocessing: standard

# Any scikit-learn compatible estimator: "module:callable" and its fixed parameters.
estimator:
  import: "sklearn.svm:SVC"
  params: {{}}
# estimator: {{builtin: seed_mlp, params: {{epochs: 10}}}}   # the Keras seed MLP (raygrid[keras])

search:
  kind: grid                    # grid | random
  grid:                         # a mapping of lists, or a list of such mappings (sub-grids)
    C: [0.1, 1, 10]
    gamma: [scale, 0.01]
  # kind: random
  # distributions: {{C: {{dist: loguniform, low: 0.01, high: 100}}, gamma: [scale, auto]}}
  # n_iter: 20

cv: {{kind: stratified, n_splits: 5, shuffle: true, random_state: 0}}   # kind: auto | stratified | kfold
scoring: accuracy               # a scikit-learn scorer name, or a list of them
refit: true                     # with several metrics: the metric that picks the best
random_state: 0                 # seeds Keras fits per (candidate, fold)

# Where fits run: resources per fit in Ray's own names; backend auto | ray | serial; address of a cluster.
ray_remote_args: {{num_cpus: 1}}
# address: auto
# n_jobs: 8                     # at most this many fits at once (default: every slot)
out: raygrid-out/my_search      # results, plots, report.html and the fit store (resume)
"""


# ----------------------------------------------------------------------------- the prepared run
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
        X, y = _load_data(data, problems)
    if pre is not None and pre.scale_before_split and pre.scaler == "none":
        problems.append(Problem("preprocessing.scale_before_split",
                                "needs a scaler (standard or minmax); preprocessing is none"))

    estimator = None
    if est_spec is not None:
        estimator = _build_estimator(est_spec, problems)

    scoring_ok = "scoring" not in bad and "refit" not in bad
    scoring = raw.get("scoring") if spec is None else spec.scoring
    refit = raw.get("refit", True) if spec is None else spec.refit
    if scoring_ok:
        _check_scoring(scoring, refit, problems)
    if "error_score" not in bad:
        error_score = raw.get("error_score", math.nan) if spec is None else spec.error_score
        if not (error_score == "raise" or (isinstance(error_score, numbers.Real)
                                            and not isinstance(error_score, bool))):
            problems.append(Problem("error_score",
                                    f"expected 'raise' or a number (.nan for NaN), got {_short_repr(error_score)}"))
    cv = get("cv")
    if cv is not None and cv.random_state is not None and not cv.shuffle:
        problems.append(Problem("cv.random_state", "has no effect without shuffle: true; "
                                                   "set shuffle: true or drop random_state"))

    space = None
    if search is not None:
        space = _check_space(search, problems)

    pipeline = None
    if estimator is not None and pre is not None:
        pipeline = _wrap(estimator, pre)
    if space is not None and estimator is not None and pre is not None:
        space = _map_space(space, search, estimator, pipeline, problems)

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
        X = _scaler(pre.scaler).fit_transform(X)
        model = estimator
    else:
        model = pipeline if pipeline is not None else estimator

    search_kwargs: dict[str, Any] = dict(
        scoring=spec.scoring, refit=spec.refit, cv=_make_cv(spec.cv, model),
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


# ----------------------------------------------------------------------------- data
def _load_data(data: DataSpec, problems: list[Problem]) -> tuple[Any, Any]:
    n_before = len(problems)
    if (data.name is None) == (data.csv is None):
        problems.append(Problem("data", "give exactly one of `name` (breast_cancer, pima) or `csv`"))
        return None, None
    if data.name is not None:
        for key in ("target", "features"):
            if getattr(data, key) is not None:
                problems.append(Problem(f"data.{key}", f"applies to `csv` data only, not name: {data.name}"))
        if data.path is not None and data.name != "pima":
            problems.append(Problem("data.path", f"applies to name: pima only, not {data.name}"))
        if data.path is not None and not Path(data.path).is_file():
            problems.append(Problem("data.path", f"file not found: {data.path} (expected the Pima CSV file)"))
        if len(problems) > n_before:
            return None, None
        try:
            return _load_named(data.name, data.path)
        except (OSError, ValueError, KeyError, ImportError) as exc:
            hint = " (give the file as data.path, or set RAYGRID_PIMA)" if data.name == "pima" else ""
            problems.append(Problem("data.path" if data.path else "data.name",
                                    f"cannot load {data.name}: {exc}{hint}"))
            return None, None

    if data.path is not None:
        problems.append(Problem("data.path", "applies to name: pima only; use `csv` for a file"))
    if data.target is None:
        problems.append(Problem("data.target", "required with `csv`: the name of the label column"))
    path = Path(data.csv)
    if not path.is_file():
        problems.append(Problem("data.csv", f"file not found: {data.csv} (expected a CSV file with a header row)"))
    if len(problems) > n_before:
        return None, None
    import pandas as pd

    try:
        frame = pd.read_csv(path)
    except (OSError, ValueError) as exc:
        problems.append(Problem("data.csv", f"cannot read {data.csv} as CSV: {exc}"))
        return None, None
    columns = [str(c) for c in frame.columns]
    if data.target not in columns:
        close = difflib.get_close_matches(data.target, columns, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        problems.append(Problem("data.target", f"no column {data.target!r} in {data.csv}{hint} "
                                               f"(columns: {', '.join(columns)})"))
    features = data.features if data.features is not None else [c for c in columns if c != data.target]
    for i, name in enumerate(data.features or []):
        if name not in columns:
            problems.append(Problem(f"data.features.{i}", f"no column {name!r} in {data.csv}"))
        elif name == data.target:
            problems.append(Problem(f"data.features.{i}", f"{name!r} is the target column"))
    if not features:
        problems.append(Problem("data.features", f"{data.csv} has no feature columns"))
    if len(problems) > n_before:
        return None, None
    return frame[features], frame[data.target]


def _xy(loaded: Any) -> tuple[Any, Any]:
    if isinstance(loaded, tuple) and len(loaded) == 2:
        return loaded
    if hasattr(loaded, "data") and hasattr(loaded, "target"):
        return loaded.data, loaded.target
    raise ValueError(f"unexpected data loader result: {type(loaded).__name__}")


def _load_named(name: str, path: str | None) -> tuple[Any, Any]:
    try:
        import raygrid.datasets as datasets
    except ImportError:
        datasets = None
    if name == "breast_cancer":
        if datasets is not None and hasattr(datasets, "load_breast_cancer"):
            return _xy(datasets.load_breast_cancer())
        from sklearn.datasets import load_breast_cancer

        return load_breast_cancer(return_X_y=True)
    if datasets is None or not hasattr(datasets, "load_pima"):
        raise ImportError("raygrid.datasets.load_pima is not available; use "
                          "{csv: FILE, target: Outcome} instead")
    return _xy(datasets.load_pima(path))


# ----------------------------------------------------------------------------- estimator
def resolve_import(spec: str) -> Any:
    """The object named by ``"module:attr"`` (or ``"module.attr"``); ImportError with a hint."""
    if ":" in spec:
        module_name, _, attr = spec.partition(":")
    else:
        module_name, _, attr = spec.rpartition(".")
    if not module_name or not attr:
        raise ImportError(f"expected 'module:callable' (e.g. 'sklearn.svm:SVC'), got {spec!r}")
    try:
        obj: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise ImportError(f"cannot import module {module_name!r}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - the module itself failed; say so
        raise ImportError(f"importing {module_name!r} failed: {type(exc).__name__}: {exc}") from None
    where = module_name
    for part in attr.split("."):
        if not hasattr(obj, part):
            names = [n for n in dir(obj) if not n.startswith("_")]
            close = difflib.get_close_matches(part, names, n=3)
            hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else ""
            raise ImportError(f"{where!r} has no attribute {part!r}{hint}")
        obj = getattr(obj, part)
        where = f"{where}.{part}"
    if not callable(obj):
        raise ImportError(f"{spec!r} is not callable (expected an estimator class or a factory)")
    return obj


def _build_estimator(est: EstimatorSpec, problems: list[Problem]) -> Any:
    if (est.import_ is None) == (est.builtin is None):
        problems.append(Problem("estimator", "give exactly one of `import` ('module:callable') or "
                                             "`builtin` (seed_mlp)"))
        return None
    if est.builtin is not None:
        try:
            from raygrid.keras import seed_classifier
        except ImportError as exc:
            problems.append(Problem("estimator.builtin",
                                    f"seed_mlp needs raygrid.keras with TensorFlow and scikeras "
                                    f"(pip install 'raygrid[keras]'): {exc}"))
            return None
        factory, path = seed_classifier, "estimator.builtin"
    else:
        try:
            factory = resolve_import(est.import_)
        except ImportError as exc:
            problems.append(Problem("estimator.import", str(exc)))
            return None
        path = "estimator.import"
    try:
        estimator = factory(**est.params)
    except TypeError as exc:
        valid = _accepted_keywords(factory)
        unknown = [k for k in est.params if valid is not None and k not in valid]
        if unknown:
            for k in unknown:
                close = difflib.get_close_matches(k, valid, n=2)
                hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else ""
                problems.append(Problem(f"estimator.params.{k}",
                                        f"not a parameter of {_name(factory)}{hint} "
                                        f"(parameters: {_listing(valid)})"))
        else:
            problems.append(Problem("estimator.params", f"{_name(factory)}(...) failed: {exc}"))
        return None
    except Exception as exc:  # noqa: BLE001 - any failure to build is a spec problem
        problems.append(Problem("estimator.params", f"{_name(factory)}(...) failed: "
                                                    f"{type(exc).__name__}: {exc}"))
        return None
    if not (hasattr(estimator, "fit") and hasattr(estimator, "get_params")):
        problems.append(Problem(path, f"{_name(factory)} returned {type(estimator).__name__}, "
                                      "not a scikit-learn estimator (needs fit and get_params)"))
        return None
    return estimator


def _name(obj: Any) -> str:
    return getattr(obj, "__qualname__", None) or type(obj).__name__


def _accepted_keywords(factory: Any) -> list[str] | None:
    try:
        sig = inspect.signature(factory)
    except (TypeError, ValueError):
        return None
    if any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
        return None
    return [n for n, p in sig.parameters.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


def _scaler(kind: str):
    from sklearn.preprocessing import MinMaxScaler, StandardScaler

    return {"standard": StandardScaler, "minmax": MinMaxScaler}[kind]()


def _wrap(estimator: Any, pre: PreprocessingSpec) -> Any:
    """``Pipeline([("scaler", ...), ("model", estimator)])`` when scaling per fold, else None."""
    if pre.scaler == "none" or pre.scale_before_split:
        return None
    from sklearn.pipeline import Pipeline

    return Pipeline([(SCALER_STEP, _scaler(pre.scaler)), (STEP, estimator)])


# ----------------------------------------------------------------------------- scoring
def _check_scoring(scoring: Any, refit: Any, problems: list[Problem]) -> None:
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
                                           f"names, got {_short_repr(scoring)}"))
        return
    for i, name in enumerate(names):
        if name not in known:
            close = difflib.get_close_matches(name, sorted(known), n=2)
            hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else ""
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
        problems.append(Problem("refit", f"expected true, false or a metric name, got {_short_repr(refit)}"))


# ----------------------------------------------------------------------------- search space
def _tuplify(value: Any) -> Any:
    """Lists inside a list of values become tuples (hashable, as scikit-learn writes them)."""
    if isinstance(value, list):
        return tuple(_tuplify(v) for v in value)
    return value


def _check_values(values: Any, path: str, problems: list[Problem]) -> list | None:
    if not isinstance(values, list):
        problems.append(Problem(path, f"expected a list of values (write [{_short_repr(values)}] for "
                                      f"one value), got {_type_name(values)}"))
        return None
    if not values:
        problems.append(Problem(path, "expected a non-empty list of values"))
        return None
    return [_tuplify(v) for v in values]


def _check_grid(grid: Any, path: str, problems: list[Problem]) -> dict | None:
    """The grid's well-formed entries (all of them when there is no problem)."""
    if not isinstance(grid, dict):
        problems.append(Problem(path, f"expected a mapping of parameter names to lists of values, "
                                      f"got {_type_name(grid)}"))
        return None
    if not grid:
        problems.append(Problem(path, "expected at least one parameter"))
        return None
    out = {}
    for name, values in grid.items():
        checked = _check_values(values, _join(path, name), problems)
        if checked is not None:
            out[str(name)] = checked
    return out


def _distribution(raw: dict, path: str, problems: list[Problem]) -> Any:
    try:
        spec = DistributionSpec.model_validate(raw)
    except ValidationError as exc:
        problems += [Problem(_join(path, p.path), p.message)
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
            problems.append(Problem(_join(path, "low"), f"loguniform needs low > 0, got {spec.low}"))
            return None
        return stats.loguniform(spec.low, spec.high)
    bad = [k for k in ("low", "high") if float(getattr(spec, k)) != int(getattr(spec, k))]
    for k in bad:
        problems.append(Problem(_join(path, k), f"randint needs an integer, got {getattr(spec, k)}"))
    return None if bad else stats.randint(int(spec.low), int(spec.high))


def _check_space(search: SearchSpec, problems: list[Problem]) -> Any:
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


def _listing(names: Sequence[str], limit: int = 25) -> str:
    return ", ".join(names[:limit]) + (", ..." if len(names) > limit else "")


def _sample(values: Any) -> Any:
    return values[0] if isinstance(values, list) else values


def _map_space(space: Any, search: SearchSpec, estimator: Any, pipeline: Any,
               problems: list[Problem]) -> Any:
    """Rename the space's keys to what the searched model takes; report unknown names."""
    target = pipeline if pipeline is not None else estimator
    if isinstance(space, list):
        base = "search.grid"
        mapped = [_map_keys(g, f"{base}.{i}", estimator, pipeline, target, problems)
                  for i, g in enumerate(space)]
        return mapped
    base = "search.grid" if search.kind == "grid" else "search.distributions"
    return _map_keys(space, base, estimator, pipeline, target, problems)


def _map_keys(space: dict, base: str, estimator: Any, pipeline: Any, target: Any,
              problems: list[Problem]) -> dict:
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
            close = difflib.get_close_matches(name.removeprefix(f"{STEP}__"), valid, n=2)
            hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else ""
            problems.append(Problem(_join(base, name),
                                    f"not a parameter of {type(estimator).__name__}{hint} "
                                    f"(parameters: {_listing(valid)})"))
            continue
        out[key] = values
    return out


def _make_cv(cv: CVSpec, model: Any) -> Any:
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
