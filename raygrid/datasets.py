"""Datasets for examples, benchmarks and tests: the Pima Indians diabetes data and sklearn's
breast cancer data.

The Pima data is not shipped with raygrid. ``load_pima`` looks for it, in order:

1. the ``path=`` argument;
2. the file named by the ``RAYGRID_PIMA`` environment variable;
3. a cached copy, ``$RAYGRID_CACHE/pima-indians-diabetes.csv`` (default cache folder
   ``~/.cache/raygrid``);
4. OpenML dataset 37 (``sklearn.datasets.fetch_openml(data_id=37)``, needs internet), whose
   columns are renamed to the names below and which is then written to the cache.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = [
    "PIMA_COLUMNS",
    "PIMA_FILENAME",
    "PIMA_OPENML_ID",
    "PIMA_TARGET",
    "DatasetNotFoundError",
    "load_breast_cancer",
    "load_pima",
    "pima_cache_path",
]

PIMA_COLUMNS = (
    "Pregnancies",
    "Glucose",
    "BloodPressure",
    "SkinThickness",
    "Insulin",
    "BMI",
    "DiabetesPedigreeFunction",
    "Age",
)
PIMA_TARGET = "Outcome"
PIMA_FILENAME = "pima-indians-diabetes.csv"
PIMA_OPENML_ID = 37

# OpenML's names for the same columns.
_OPENML_NAMES = {
    "preg": "Pregnancies",
    "plas": "Glucose",
    "pres": "BloodPressure",
    "skin": "SkinThickness",
    "insu": "Insulin",
    "mass": "BMI",
    "pedi": "DiabetesPedigreeFunction",
    "age": "Age",
}
_OPENML_TARGET = "class"
_OPENML_POSITIVE = "tested_positive"


class DatasetNotFoundError(FileNotFoundError):
    """A dataset could be found neither locally nor online."""


def pima_cache_path() -> Path:
    """Where ``load_pima`` keeps its cached copy (``$RAYGRID_CACHE`` or ``~/.cache/raygrid``)."""
    root = os.environ.get("RAYGRID_CACHE")
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "raygrid"
    return base / PIMA_FILENAME


def _read_pima_csv(path: Path) -> pd.DataFrame:
    try:
        frame = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not a readable Pima CSV ({exc})") from exc
    expected = [*PIMA_COLUMNS, PIMA_TARGET]
    if [str(c).strip() for c in frame.columns] != expected:
        raise ValueError(
            f"{path}: unexpected header {list(frame.columns)}; "
            f"a Pima CSV starts with the header {','.join(expected)}"
        )
    frame.columns = expected
    if len(frame) == 0:
        raise ValueError(f"{path}: the file has a header but no rows")
    try:
        frame[list(PIMA_COLUMNS)] = frame[list(PIMA_COLUMNS)].astype("float64")
        target = frame[PIMA_TARGET].astype("int64")
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: non-numeric values ({exc})") from exc
    if not set(np.unique(target)) <= {0, 1}:
        raise ValueError(f"{path}: the {PIMA_TARGET} column must hold only 0 and 1")
    frame[PIMA_TARGET] = target
    return frame


def _fetch_pima_openml() -> pd.DataFrame:
    from sklearn.datasets import fetch_openml

    bunch = fetch_openml(data_id=PIMA_OPENML_ID, as_frame=True)
    data = bunch.frame if getattr(bunch, "frame", None) is not None else bunch.data
    data = data.copy()
    if _OPENML_TARGET not in data.columns:
        data[_OPENML_TARGET] = bunch.target
    missing = [c for c in [*_OPENML_NAMES, _OPENML_TARGET] if c not in data.columns]
    if missing:
        raise ValueError(f"OpenML dataset {PIMA_OPENML_ID} lacks the columns {missing}")
    frame = data[list(_OPENML_NAMES)].rename(columns=_OPENML_NAMES).astype("float64")
    frame[PIMA_TARGET] = (data[_OPENML_TARGET].astype(str) == _OPENML_POSITIVE).astype("int64")
    return frame.reset_index(drop=True)


def _write_cache(frame: pd.DataFrame, path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        out = frame.copy()
        # Write whole numbers without a trailing ".0", as in the usual copy of the file.
        for col in PIMA_COLUMNS:
            values = out[col].to_numpy()
            if np.all(np.isfinite(values)) and np.all(values == np.round(values)):
                out[col] = values.astype("int64")
        out.to_csv(tmp, index=False)
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only home must not make the download useless


def _as_output(frame: pd.DataFrame, as_frame: bool):
    X = frame[list(PIMA_COLUMNS)]
    y = frame[PIMA_TARGET]
    if as_frame:
        return X.reset_index(drop=True), y.reset_index(drop=True)
    return X.to_numpy(dtype=np.float64), y.to_numpy(dtype=np.int64)


def load_pima(path: str | os.PathLike | None = None, *, as_frame: bool = False):
    """The Pima Indians diabetes data: 768 rows, 8 features, binary ``Outcome``.

    Returns ``(X, y)``: a float64 array of shape (768, 8) and an int array of 0/1, or with
    ``as_frame=True`` a DataFrame with ``PIMA_COLUMNS`` and a Series named ``PIMA_TARGET``.

    Looks in ``path``, then ``$RAYGRID_PIMA``, then the cache (``pima_cache_path()``), then
    downloads OpenML dataset 37 and caches it. An explicit ``path`` or ``$RAYGRID_PIMA`` that
    does not exist is an error (no silent fallback). Raises ``DatasetNotFoundError`` (a
    ``FileNotFoundError``) when no copy is found and the download fails, and ``ValueError``
    for a file that is not a Pima CSV.
    """
    if path is not None:
        path = Path(path).expanduser()
        if not path.is_file():
            raise DatasetNotFoundError(f"Pima CSV not found at path={str(path)!r}")
        return _as_output(_read_pima_csv(path), as_frame)

    env = os.environ.get("RAYGRID_PIMA")
    if env:
        env_path = Path(env).expanduser()
        if not env_path.is_file():
            raise DatasetNotFoundError(f"Pima CSV not found at RAYGRID_PIMA={env!r}")
        return _as_output(_read_pima_csv(env_path), as_frame)

    cache = pima_cache_path()
    if cache.is_file():
        return _as_output(_read_pima_csv(cache), as_frame)

    try:
        frame = _fetch_pima_openml()
    except Exception as exc:
        raise DatasetNotFoundError(
            "The Pima Indians diabetes data was not found. Give it in one of these ways: "
            "load_pima(path='.../pima-indians-diabetes.csv'); the RAYGRID_PIMA environment "
            f"variable; a copy at {cache} (the cache; its folder can be set with RAYGRID_CACHE); "
            f"or internet access to download OpenML dataset {PIMA_OPENML_ID} "
            f"(sklearn.datasets.fetch_openml(data_id={PIMA_OPENML_ID})), which failed: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    _write_cache(frame, cache)
    return _as_output(frame, as_frame)


def load_breast_cancer(*, as_frame: bool = False):
    """scikit-learn's bundled breast cancer data (569 x 30, binary), available offline.

    Returns ``(X, y)`` as arrays, or as (DataFrame, Series) with ``as_frame=True``.
    """
    from sklearn.datasets import load_breast_cancer as _sk_load

    return _sk_load(return_X_y=True, as_frame=as_frame)
