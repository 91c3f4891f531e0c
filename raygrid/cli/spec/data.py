"""The data a spec names: a built-in data set or a CSV file, checked and loaded as ``(X, y)``."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from raygrid.cli.spec.model import DataSpec
from raygrid.cli.spec.problems import Problem, did_you_mean


def load_data(data: DataSpec, problems: list[Problem]) -> tuple[Any, Any]:
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
        hint = did_you_mean(data.target, columns)
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
