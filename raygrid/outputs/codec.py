"""The JSON that saved outputs hold (``params`` columns, ``best.json``): :func:`to_jsonable` keeps
tuples, non-string dict keys and non-finite floats (tagged as ``{"__tuple__": [...]}`` etc.);
objects JSON cannot hold are kept as ``{"__repr__": "..."}`` and come back as that text."""
from __future__ import annotations

import json
import math
import os
from typing import Any

import numpy as np
import pandas as pd

_TAGS = ("__tuple__", "__dict__", "__float__", "__repr__")


def to_jsonable(value: Any) -> Any:
    """A JSON-compatible form of ``value`` that :func:`from_jsonable` turns back into it.

    NaN becomes ``null``; tuples, dicts with non-string keys and infinities are tagged; numpy
    scalars and arrays become Python numbers and lists; anything else is kept as its ``repr``.
    """
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or isinstance(value, (bool, str, int)):
        return value
    if isinstance(value, float):
        if math.isnan(value):
            return None
        return value if math.isfinite(value) else {"__float__": repr(value)}
    if isinstance(value, tuple):
        return {"__tuple__": [to_jsonable(v) for v in value]}
    if isinstance(value, (list, np.ndarray)):
        return [to_jsonable(v) for v in (value.tolist() if isinstance(value, np.ndarray) else value)]
    if isinstance(value, dict):
        if all(isinstance(k, str) for k in value) and not (len(value) == 1 and next(iter(value)) in _TAGS):
            return {k: to_jsonable(v) for k, v in value.items()}
        return {"__dict__": [[to_jsonable(k), to_jsonable(v)] for k, v in value.items()]}
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if value is pd.NA or value is pd.NaT:
        return None
    return {"__repr__": repr(value)}


def from_jsonable(value: Any) -> Any:
    """Inverse of :func:`to_jsonable` (``__repr__``-tagged objects come back as their text)."""
    if isinstance(value, list):
        return [from_jsonable(v) for v in value]
    if isinstance(value, dict):
        if len(value) == 1:
            (tag, inner), = value.items()
            if tag == "__tuple__":
                return tuple(from_jsonable(v) for v in inner)
            if tag == "__dict__":
                return {_hashable(from_jsonable(k)): from_jsonable(v) for k, v in inner}
            if tag == "__float__":
                return float(inner)
            if tag == "__repr__":
                return inner
        return {k: from_jsonable(v) for k, v in value.items()}
    return value


def _hashable(key: Any) -> Any:
    return tuple(_hashable(k) for k in key) if isinstance(key, list) else key


def dumps(value: Any, **kwargs) -> str:
    """``value`` as JSON text, through :func:`to_jsonable`."""
    return json.dumps(to_jsonable(value), allow_nan=False, ensure_ascii=False, **kwargs)


def loads(text: Any) -> Any:
    """What :func:`dumps` wrote, decoded (a missing cell is ``{}``)."""
    if not isinstance(text, str):
        return {} if text is None or (isinstance(text, float) and math.isnan(text)) else text
    return from_jsonable(json.loads(text))
