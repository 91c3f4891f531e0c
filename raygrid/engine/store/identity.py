"""What identifies a fit: a canonical description of any value, each estimator class's source or
package version, the versions of the libraries that decide results, and the fingerprints of a
search's trials built from them.

A fingerprint is a sha256 of everything that decides a fit's result (each estimator class's
source, or the version of the package it comes from, and all parameters with the candidate
applied, the data, the fold's train/test indices and number, the scoring spec, ``error_score``,
``return_train_score`` and library versions). What cannot be described raises ``Unhashable``:
such a fit is run (and stored), never reused.
"""
from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import inspect
import os
import sys
import types
import warnings
from enum import Enum
from typing import Any, Mapping, Sequence

import numpy as np
from sklearn.base import clone

from raygrid.engine.plan import Trial

FINGERPRINT_VERSION = 2  # bump when what goes into a fingerprint changes


class Unhashable(Exception):
    """A value a fingerprint cannot describe: the fit it belongs to is run, never reused."""


def qualname(obj: Any) -> str:
    """``module.QualifiedName`` of a class or function."""
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', getattr(obj, '__name__', '?'))}"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _array_digest(arr: np.ndarray) -> tuple:
    if arr.dtype.hasobject:
        import joblib

        return ("ndarray-object", arr.shape, joblib.hash(arr))
    return ("ndarray", arr.dtype.str, arr.shape, _sha(np.ascontiguousarray(arr).tobytes()))


def _code(code: types.CodeType, depth: int, path: frozenset) -> tuple:
    consts = tuple(
        _code(c, depth + 1, path) if isinstance(c, types.CodeType) else _canon(c, depth + 1, path)
        for c in code.co_consts
    )
    return ("code", code.co_name, _sha(code.co_code), consts, code.co_names)


def _canon(obj: Any, depth: int = 0, path: frozenset = frozenset()) -> Any:
    """A structure of tuples and strings that is equal for equal values in any process.

    Never uses ``repr`` of arbitrary objects (memory addresses) nor ``hash`` (randomised per
    process). What it cannot describe raises ``Unhashable``: such a fit is run, never reused.
    """
    if depth > 40:
        raise Unhashable("nested too deeply")
    t = type(obj)
    if obj is None or t in (bool, int, float, complex, str):
        return (t.__name__, repr(obj))
    if t is bytes:
        return ("bytes", _sha(obj))
    if isinstance(obj, np.generic):
        return ("np", obj.dtype.str, repr(obj.item()))
    if isinstance(obj, np.ndarray):
        return _array_digest(obj)
    if id(obj) in path:
        raise Unhashable("a reference cycle")
    inner = path | {id(obj)}
    sub = functools.partial(_canon, depth=depth + 1, path=inner)
    if isinstance(obj, Enum):
        return ("enum", qualname(t), obj.name)
    if isinstance(obj, (list, tuple)):
        return (qualname(t), tuple(sub(v) for v in obj))
    if isinstance(obj, dict):
        items = sorted(((sub(k), sub(v)) for k, v in obj.items()), key=lambda kv: repr(kv[0]))
        return (qualname(t), tuple(items))
    if isinstance(obj, (set, frozenset)):
        return (qualname(t), tuple(sorted((sub(v) for v in obj), key=repr)))
    if isinstance(obj, type):
        return ("class", qualname(obj))
    if isinstance(obj, types.FunctionType):
        closure = tuple(sub(c.cell_contents) for c in obj.__closure__ or ())
        return ("function", qualname(obj), _code(obj.__code__, depth + 1, inner),
                sub(obj.__defaults__), sub(obj.__kwdefaults__), closure)
    if isinstance(obj, (types.BuiltinFunctionType, types.MethodDescriptorType, np.ufunc)):
        return ("builtin", qualname(obj), getattr(obj, "__name__", "?"))
    if isinstance(obj, types.MethodType):
        return ("method", sub(obj.__self__), sub(obj.__func__))
    if isinstance(obj, functools.partial):
        return ("partial", sub(obj.func), sub(obj.args), sub(obj.keywords))
    module = getattr(t, "__module__", "") or ""
    if hasattr(obj, "get_params") and callable(obj.get_params):
        return ("estimator", qualname(t), class_identity(t), sub(obj.get_params(deep=False)))
    if module.startswith("keras") and callable(getattr(obj, "get_config", None)):
        weights = getattr(obj, "get_weights", None)
        try:
            config = _without_names(obj.get_config())
            state = tuple(_array_digest(np.asarray(w)) for w in weights()) if callable(weights) else ()
        except Exception as exc:  # noqa: BLE001 - e.g. an unbuilt model without a config
            raise Unhashable(f"{qualname(t)}: {exc}") from None
        return ("keras", qualname(t), sub(config), state)
    if module.startswith("scipy.sparse") and hasattr(obj, "tocoo"):
        coo = obj.tocoo()
        return ("sparse", obj.format, obj.shape, _array_digest(coo.row), _array_digest(coo.col),
                _array_digest(coo.data))
    if module.startswith("pandas"):
        return ("pandas", qualname(t), _joblib_hash(obj))
    if hasattr(obj, "__dict__") and not isinstance(obj, types.ModuleType):
        try:
            return ("object", qualname(t), sub(vars(obj)))
        except Unhashable:
            pass
    return ("pickle", qualname(t), _joblib_hash(obj))


def _without_names(config: Any) -> Any:
    """A Keras config without ``name`` entries: Keras numbers them per process (adam, adam_1...),
    and names do not change what a fit computes."""
    if isinstance(config, dict):
        return {k: _without_names(v) for k, v in config.items() if k != "name"}
    if isinstance(config, (list, tuple)):
        return type(config)(_without_names(v) for v in config)
    return config


def _joblib_hash(obj: Any) -> str:
    import joblib

    try:
        return joblib.hash(obj, hash_name="sha1")
    except Exception as exc:  # noqa: BLE001 - unpicklable
        raise Unhashable(f"{type(obj).__name__}: {exc}") from None


def digest(*parts: Any) -> str:
    """sha256 hex of ``parts`` (any values ``_canon`` describes)."""
    return _sha(repr(_canon(parts)).encode())


def _estimator_digest(cls: type, described: Mapping[str, Any]) -> str:
    items = tuple(sorted(described.items()))
    return _sha(repr(("estimator", qualname(cls), class_identity(cls), items)).encode())


@functools.lru_cache(maxsize=None)
def _distributions() -> Mapping[str, list[str]]:
    return importlib.metadata.packages_distributions()


@functools.lru_cache(maxsize=None)
def _version_of(top_module: str) -> tuple[str, str] | None:
    """(distribution, version) of the installed package that provides ``top_module``, if any."""
    for dist in _distributions().get(top_module, ()):
        try:
            return dist, importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def _source_digest(cls: type) -> str:
    """sha256 of a class's source text; without one (defined in ``python -c`` or ``exec``), of
    its methods' code."""
    try:
        return _sha(inspect.getsource(cls).encode())
    except (OSError, TypeError):
        pass
    methods = []
    for name, value in sorted(vars(cls).items()):
        if isinstance(value, (staticmethod, classmethod)):
            value = value.__func__
        elif isinstance(value, property):
            value = (value.fget, value.fset)
        if isinstance(value, types.FunctionType) or (
                isinstance(value, tuple) and any(isinstance(v, types.FunctionType) for v in value)):
            try:
                methods.append((name, _canon(value)))
            except Unhashable:
                methods.append((name, "?"))
    return _sha(repr(("code", methods)).encode())


@functools.lru_cache(maxsize=None)
def class_identity(cls: type) -> tuple:
    """What decides how an estimator class behaves, for fingerprints.

    For each class of its MRO (the standard library's aside): the distribution and version of
    the installed package it comes from, else a hash of its source. A changed ``fit`` of a class
    of one's own therefore never reuses the fits of the old one. Classes defined in ``__main__``
    get a warning: only the class's own source counts, not the script's other code it calls.
    """
    parts = []
    for klass in cls.__mro__:
        module = getattr(klass, "__module__", "") or ""
        top = module.split(".")[0]
        if klass is object or top in sys.stdlib_module_names:
            continue
        installed = _version_of(top)
        if installed is not None:
            parts.append((qualname(klass), installed))
            continue
        if module == "__main__":
            warnings.warn(
                f"Estimator class {klass.__qualname__} is defined in __main__: its stored fits are "
                "recognised by the class's own source, not by other code of the script it calls. "
                "Define it in a module of its own for reuse you can rely on.", UserWarning,
                stacklevel=2)
        parts.append((qualname(klass), _source_digest(klass)))
    return tuple(parts)


def library_versions() -> dict[str, str | None]:
    """Versions that decide fit results (read from package metadata; imports nothing heavy)."""
    out: dict[str, str | None] = {}
    for dist in ("raygrid", "scikit-learn", "numpy", "scipy", "keras", "scikeras"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = None
    if out["raygrid"] is None:
        from raygrid.version import __version__

        out["raygrid"] = __version__
    return out


class Fingerprinter:
    """Fingerprints of trials: one hash of what the search shares, one per candidate, per fold."""

    def __init__(self, *, estimator: Any, X: Any, y: Any, splits: Sequence[tuple[np.ndarray, np.ndarray]],
                 fit_params: Mapping[str, Any] | None = None, scoring: Any = None,
                 error_score: Any = np.nan, return_train_score: bool = False, keras: bool = False,
                 task: Any = None):
        self.estimator = estimator
        self.keras = keras
        self.reusable = True  # False when some input cannot be fingerprinted: every fit runs
        self._candidates: dict[int, str] = {}
        self._base: dict[str, Any] | None = None
        try:
            head = (
                ("fingerprint", FINGERPRINT_VERSION),
                ("versions", library_versions()),
                ("X", _canon(X)),
                ("y", _canon(y)),
                ("fit_params", _canon(dict(fit_params or {}))),
                ("scoring", _canon(scoring)),
                ("error_score", repr(error_score)),
                ("return_train_score", bool(return_train_score)),
                ("keras_backend", os.environ.get("KERAS_BACKEND", "tensorflow") if keras else None),
            )
            described = task.describe() if task is not None else (None, None, None)
            if any(v is not None for v in described):  # predictions, partial_fit: other fits
                head += (("task", _canon(described)),)
            self.key = digest(head)
        except Unhashable as exc:
            self._not_reusable(f"the data, fit parameters or scoring ({exc})")
            self.key = _sha(os.urandom(32))
        self.folds = [
            digest("fold", i, _array_digest(np.asarray(tr, dtype=np.int64)),
                   _array_digest(np.asarray(te, dtype=np.int64)))
            for i, (tr, te) in enumerate(splits)
        ]
        rows = getattr(task, "target_rows", None)  # a permuted target is part of its fold
        for i, permuted in enumerate(rows or ()):
            if permuted is not None:
                self.folds[i] = digest(self.folds[i], _array_digest(np.asarray(permuted, np.int64)))

    def _not_reusable(self, what: str) -> None:
        if self.reusable:
            warnings.warn(f"raygrid cannot fingerprint {what}; these fits are stored but will not "
                          "be reused by a later search.", UserWarning, stacklevel=3)
        self.reusable = False

    def candidate(self, params: Mapping[str, Any]) -> str:
        """Hash of the estimator with ``params`` applied: class and every parameter, nested too.

        Candidates that set only top-level parameters are hashed from the template's parameters
        (described once) with theirs replaced; others (``step__param``, replaced steps) go
        through ``clone(...).set_params(...)``. Both give the same hash for the same estimator.
        """
        try:
            if self._base is None:
                self._base = {k: _canon(v) for k, v in self.estimator.get_params(deep=False).items()}
            if all(k in self._base for k in params):
                described = {**self._base, **{k: _canon(v) for k, v in params.items()}}
                return _estimator_digest(type(self.estimator), described)
            est = clone(self.estimator).set_params(**dict(params))
            return _estimator_digest(type(est), {k: _canon(v) for k, v in
                                                 est.get_params(deep=False).items()})
        except Unhashable as exc:
            self._not_reusable(f"a parameter of the estimator ({exc})")
            return _sha(os.urandom(32))

    def trial(self, trial: Trial, engine: str | None = None) -> str:
        """The fit's identity; ``engine`` (default: the trial's planned one) and the seed are part
        of it, so a fused fit (trained with its lane's seed) is never taken for a standard one."""
        cand = self._candidates.get(trial.candidate)
        if cand is None:
            cand = self._candidates[trial.candidate] = self.candidate(trial.params)
        seed = trial.seed if self.keras else None  # only Keras fits use raygrid's per-fit seed
        engine = trial.engine if engine is None else engine
        tag = "" if engine == "standard" else f"|{engine}"  # standard fits keep their identity
        return _sha(f"{self.key}|{cand}|{self.folds[trial.fold]}|{trial.fold}|{seed}{tag}".encode())

