"""The estimator a spec names: its import path resolved, built with its parameters, and wrapped
with the scaler in a ``Pipeline`` when scaling per fold."""
from __future__ import annotations

import importlib
import inspect
from typing import Any

from raygrid.cli.spec.model import EstimatorSpec, PreprocessingSpec
from raygrid.cli.spec.problems import Problem, did_you_mean, listing

STEP = "model"  # the pipeline step that holds the estimator
SCALER_STEP = "scaler"


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
            hint = did_you_mean(part, names, n=3)
            raise ImportError(f"{where!r} has no attribute {part!r}{hint}")
        obj = getattr(obj, part)
        where = f"{where}.{part}"
    if not callable(obj):
        raise ImportError(f"{spec!r} is not callable (expected an estimator class or a factory)")
    return obj


def build_estimator(est: EstimatorSpec, problems: list[Problem]) -> Any:
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
                hint = did_you_mean(k, valid, n=2)
                problems.append(Problem(f"estimator.params.{k}",
                                        f"not a parameter of {_name(factory)}{hint} "
                                        f"(parameters: {listing(valid)})"))
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


def make_scaler(kind: str):
    from sklearn.preprocessing import MinMaxScaler, StandardScaler

    return {"standard": StandardScaler, "minmax": MinMaxScaler}[kind]()


def wrap_in_pipeline(estimator: Any, pre: PreprocessingSpec) -> Any:
    """``Pipeline([("scaler", ...), ("model", estimator)])`` when scaling per fold, else None."""
    if pre.scaler == "none" or pre.scale_before_split:
        return None
    from sklearn.pipeline import Pipeline

    return Pipeline([(SCALER_STEP, make_scaler(pre.scaler)), (STEP, estimator)])
