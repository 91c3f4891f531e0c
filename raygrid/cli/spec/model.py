"""The spec's schema: pydantic models of every section (unknown keys rejected, no silent type
coercion) and :func:`schema_problems`, which words pydantic's errors as :class:`Problem` s."""
from __future__ import annotations

import math
import types
import typing
from typing import Any, Literal, Sequence

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from raygrid.cli.spec.problems import Problem, did_you_mean, join_path, short_repr, type_name


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


def schema_problems(error: ValidationError, model: type[BaseModel], prefix: Sequence[Any] = ()) -> list[Problem]:
    """Turn pydantic's errors into :class:`Problem` s with dotted key paths and plain wording."""
    problems = []
    for err in error.errors(include_url=False):
        loc = [p for p in err["loc"]]
        path = join_path(*prefix, *loc)
        kind, value = err["type"], err.get("input")
        if kind == "extra_forbidden":
            parent = _model_at(model, loc[:-1])
            allowed = _keys_of(parent) if parent else []
            hint = did_you_mean(str(loc[-1]), allowed)
            expected = f" (expected one of: {', '.join(allowed)})" if allowed else ""
            message = f"unknown key{hint}{expected}"
        elif kind == "missing":
            message = "required key is missing"
        elif kind == "model_type" or kind == "dict_type":
            message = f"expected a mapping, got {type_name(value)} {short_repr(value)}"
        else:
            msg = err["msg"]
            if msg.startswith("Input should be "):
                msg = "expected " + msg[len("Input should be "):]
            elif msg.startswith("Value error, "):
                msg = msg[len("Value error, "):]
            message = f"{msg}, got {short_repr(value)}"
        problems.append(Problem(path, message))
    return problems
