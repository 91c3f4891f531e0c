"""Persisted fits: a SQLite store on the driver that makes searches resumable and fits reusable.

Every finished fit is written the moment its result reaches the driver and committed within
``COMMIT_INTERVAL_S`` (0.2 s): a crash of the driver's process loses at most the fits of that last
moment, never one committed before. Each fit is keyed by a *fingerprint*: a sha256 of everything
that decides its result (each estimator class's source, or the version of the package it comes
from, and all parameters with the candidate applied, the data, the fold's train/test indices and
number, the scoring spec, ``error_score``, ``return_train_score`` and library versions). Rerunning
a search with the same ``storage`` runs only the fits whose fingerprint has no usable row (failed
fits run again unless ``cache="all"``).

``<storage>/fits.sqlite`` (WAL journal, so a reader such as ``raygrid status`` and several
searches can use one store at once; writers queue on SQLite's lock with a generous busy timeout):

- ``meta(key, value)``: ``application = raygrid``, ``schema_version``, when and by what it was made.
  A file without it, or with tables or columns missing, or with triggers or views, is not
  raygrid's and is never reused, changed or wiped. A new store is built under a temporary name
  and linked in place, so an existing ``fits.sqlite`` (even an empty one) is never taken for new.
  ``status`` opens a store read-only.
- ``fits``: one row per fingerprint: scores as JSON, times, error text, system failure flag, node,
  pid, seed. No models.
- ``searches``: one row per search plan (kind, estimator, candidates, folds, fits planned).
- ``planned``: (search, candidate, fold) -> fingerprint, so ``status`` can count missing fits.
"""
from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import inspect
import json
import os
import sqlite3
import sys
import threading
import time
import types
import warnings
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
from sklearn.base import clone

from raygrid.engine.fitting import FitResult
from raygrid.engine.plan import Trial

FILENAME = "fits.sqlite"
SCHEMA_VERSION = 1
APPLICATION = "raygrid"
APPLICATION_ID = 0x52594744  # "RYGD" in SQLite's header: marks the file as raygrid's
FINGERPRINT_VERSION = 2  # bump when what goes into a fingerprint changes
BUSY_TIMEOUT_S = 60.0
COMMIT_INTERVAL_S = 0.2  # a finished fit is committed at most this long after it arrives
_SQLITE_MAGIC = b"SQLite format 3\x00"
_CHUNK = 500  # fingerprints per lookup query (SQLite's variable limit is far above this)


class StoreError(RuntimeError):
    """The storage directory or its ``fits.sqlite`` cannot be used as a raygrid store."""


# -- fingerprints -------------------------------------------------------------------------------
class Unhashable(Exception):
    pass


def _qualname(obj: Any) -> str:
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
        return ("enum", _qualname(t), obj.name)
    if isinstance(obj, (list, tuple)):
        return (_qualname(t), tuple(sub(v) for v in obj))
    if isinstance(obj, dict):
        items = sorted(((sub(k), sub(v)) for k, v in obj.items()), key=lambda kv: repr(kv[0]))
        return (_qualname(t), tuple(items))
    if isinstance(obj, (set, frozenset)):
        return (_qualname(t), tuple(sorted((sub(v) for v in obj), key=repr)))
    if isinstance(obj, type):
        return ("class", _qualname(obj))
    if isinstance(obj, types.FunctionType):
        closure = tuple(sub(c.cell_contents) for c in obj.__closure__ or ())
        return ("function", _qualname(obj), _code(obj.__code__, depth + 1, inner),
                sub(obj.__defaults__), sub(obj.__kwdefaults__), closure)
    if isinstance(obj, (types.BuiltinFunctionType, types.MethodDescriptorType, np.ufunc)):
        return ("builtin", _qualname(obj), getattr(obj, "__name__", "?"))
    if isinstance(obj, types.MethodType):
        return ("method", sub(obj.__self__), sub(obj.__func__))
    if isinstance(obj, functools.partial):
        return ("partial", sub(obj.func), sub(obj.args), sub(obj.keywords))
    module = getattr(t, "__module__", "") or ""
    if hasattr(obj, "get_params") and callable(obj.get_params):
        return ("estimator", _qualname(t), class_identity(t), sub(obj.get_params(deep=False)))
    if module.startswith("keras") and callable(getattr(obj, "get_config", None)):
        weights = getattr(obj, "get_weights", None)
        try:
            config = _without_names(obj.get_config())
            state = tuple(_array_digest(np.asarray(w)) for w in weights()) if callable(weights) else ()
        except Exception as exc:  # noqa: BLE001 - e.g. an unbuilt model without a config
            raise Unhashable(f"{_qualname(t)}: {exc}") from None
        return ("keras", _qualname(t), sub(config), state)
    if module.startswith("scipy.sparse") and hasattr(obj, "tocoo"):
        coo = obj.tocoo()
        return ("sparse", obj.format, obj.shape, _array_digest(coo.row), _array_digest(coo.col),
                _array_digest(coo.data))
    if module.startswith("pandas"):
        return ("pandas", _qualname(t), _joblib_hash(obj))
    if hasattr(obj, "__dict__") and not isinstance(obj, types.ModuleType):
        try:
            return ("object", _qualname(t), sub(vars(obj)))
        except Unhashable:
            pass
    return ("pickle", _qualname(t), _joblib_hash(obj))


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
    return _sha(repr(("estimator", _qualname(cls), class_identity(cls), items)).encode())


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
            parts.append((_qualname(klass), installed))
            continue
        if module == "__main__":
            warnings.warn(
                f"Estimator class {klass.__qualname__} is defined in __main__: its stored fits are "
                "recognised by the class's own source, not by other code of the script it calls. "
                "Define it in a module of its own for reuse you can rely on.", UserWarning,
                stacklevel=2)
        parts.append((_qualname(klass), _source_digest(klass)))
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
                 error_score: Any = np.nan, return_train_score: bool = False, keras: bool = False):
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
            self.key = digest(head)
        except Unhashable as exc:
            self._not_reusable(f"the data, fit parameters or scoring ({exc})")
            self.key = _sha(os.urandom(32))
        self.folds = [
            digest("fold", i, _array_digest(np.asarray(tr, dtype=np.int64)),
                   _array_digest(np.asarray(te, dtype=np.int64)))
            for i, (tr, te) in enumerate(splits)
        ]

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


# -- the store ----------------------------------------------------------------------------------
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS fits (
    fingerprint TEXT PRIMARY KEY,
    search_id TEXT,
    candidate INTEGER NOT NULL,
    fold INTEGER NOT NULL,
    params TEXT,
    test_scores TEXT NOT NULL,
    train_scores TEXT,
    fit_time REAL NOT NULL,
    score_time REAL NOT NULL,
    n_test_samples INTEGER NOT NULL,
    error TEXT,
    system_failure INTEGER NOT NULL DEFAULT 0,
    node TEXT,
    pid INTEGER,
    seed INTEGER,
    finished_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS searches (
    search_id TEXT PRIMARY KEY,
    kind TEXT,
    estimator TEXT,
    n_candidates INTEGER NOT NULL DEFAULT 0,
    n_splits INTEGER NOT NULL DEFAULT 0,
    n_planned INTEGER NOT NULL DEFAULT 0,
    runs INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    finished_at REAL
);
CREATE TABLE IF NOT EXISTS planned (
    search_id TEXT NOT NULL,
    candidate INTEGER NOT NULL,
    fold INTEGER NOT NULL,
    fingerprint TEXT NOT NULL,
    PRIMARY KEY (search_id, candidate, fold)
) WITHOUT ROWID;
"""

_COLUMNS = {  # every table and column raygrid reads or writes
    "meta": ("key", "value"),
    "fits": ("fingerprint", "search_id", "candidate", "fold", "params", "test_scores",
             "train_scores", "fit_time", "score_time", "n_test_samples", "error",
             "system_failure", "node", "pid", "seed", "finished_at"),
    "searches": ("search_id", "kind", "estimator", "n_candidates", "n_splits", "n_planned",
                 "runs", "created_at", "updated_at", "finished_at"),
    "planned": ("search_id", "candidate", "fold", "fingerprint"),
}
_FIT_COLUMNS = ("fingerprint", "search_id", "candidate", "fold", "params", "test_scores",
                "train_scores", "fit_time", "score_time", "n_test_samples", "error",
                "system_failure", "node", "pid", "seed", "finished_at")
_INSERT_FIT = (f"INSERT OR REPLACE INTO fits ({','.join(_FIT_COLUMNS)}) "
               f"VALUES ({','.join('?' * len(_FIT_COLUMNS))})")


@dataclass(frozen=True)
class StoredFit:
    """A row of ``fits`` as it is read back."""

    fingerprint: str
    test_scores: dict
    train_scores: dict | None
    fit_time: float
    score_time: float
    n_test_samples: int
    error: str | None
    system_failure: bool
    node: str | None
    pid: int | None

    def to_result(self, trial: Trial, engine: str = "standard") -> FitResult:
        """This fit as the result of ``trial`` of the current search (marked ``cached``)."""
        return FitResult(
            trial.candidate, trial.fold, dict(self.test_scores),
            None if self.train_scores is None else dict(self.train_scores),
            self.fit_time, self.score_time, self.n_test_samples, error=self.error,
            system_failure=self.system_failure, node=self.node or "unknown", pid=self.pid or 0,
            seed=trial.seed, cached=True, engine=engine,
        )


def _json(value: Any) -> str | None:
    if value is None:
        return None
    return json.dumps({k: float(v) for k, v in value.items()}, allow_nan=True)


def _params_text(params: Mapping[str, Any]) -> str:
    return json.dumps(dict(params), sort_keys=True, default=repr)


class FitStore:
    """``<directory>/fits.sqlite``: validated on open, one row per finished fit.

    ``put`` commits at once when the last commit is ``commit_interval`` seconds old; fits that
    arrive faster are committed together, at most ``commit_interval`` later (by a timer), so
    thousands of tiny fits do not pay a commit each. ``flush`` and ``close`` commit what waits.
    ``create=False`` opens an existing store only, read-only (what ``status`` does).
    """

    def __init__(self, directory: str | os.PathLike, *, create: bool = True,
                 timeout: float = BUSY_TIMEOUT_S, commit_interval: float = COMMIT_INTERVAL_S):
        self.directory = Path(directory).expanduser()
        self.path = self.directory / FILENAME
        self.timeout = timeout
        self.commit_interval = commit_interval
        self.read_only = not create
        self._lock = threading.RLock()  # the connection is shared with the commit timer
        self._buffer: list[tuple] = []
        self._last_commit = 0.0
        self._timer: threading.Timer | None = None
        self._conn: sqlite3.Connection | None = None
        if self.directory.exists() and not self.directory.is_dir():
            raise StoreError(f"storage={str(self.directory)!r} is a file, not a directory: raygrid "
                             f"keeps its store as {FILENAME} inside a directory")
        if not create and not self.path.exists():
            raise StoreError(f"No raygrid store in {str(self.directory)!r} (no {FILENAME})")
        if create and not self.path.exists():
            try:
                self.directory.mkdir(parents=True, exist_ok=True)
                self._create()
            except (OSError, sqlite3.DatabaseError) as exc:
                raise StoreError(f"Cannot create the raygrid store {self.path}: {exc}") from exc
        self._check_header()
        try:
            self._conn = self._open()
            self._validate()
            if not self.read_only:
                self._use_wal()
                self._conn.execute("PRAGMA synchronous = NORMAL")  # durable across a crash of this process
        except sqlite3.DatabaseError as exc:
            self.close()
            raise self._unusable(f"{exc}") from None
        except StoreError:
            self.close()
            raise

    # -- opening -----------------------------------------------------------------------------
    def _unusable(self, why: str) -> StoreError:
        return StoreError(
            f"{self.path} is not a usable raygrid store: {why}. raygrid never reuses, changes or "
            "wipes a file it cannot verify: move the file away, or pass another storage directory."
        )

    def _connect(self, path: Path, mode: str | None = None) -> sqlite3.Connection:
        uri = path.resolve().as_uri() + (f"?{mode}" if mode else "")
        conn = sqlite3.connect(uri, uri=True, timeout=self.timeout, isolation_level=None,
                               check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
        conn.execute("PRAGMA trusted_schema = OFF")  # the schema's SQL never calls functions
        return conn

    def _open(self) -> sqlite3.Connection:
        """The connection: read-write (``mode=rw``: never creates a file), or read-only.

        Read-only, a store no one writes (no ``-wal`` file: writers keep one open) is opened as
        immutable, which makes no file at all (SQLite's read-only mode would leave a WAL and its
        index behind); a store being written is opened in read-only mode, except on a read-only
        file system, where SQLite cannot make the WAL's index, and nothing can change the file.
        """
        if not self.read_only:
            return self._connect(self.path, "mode=rw")
        if not Path(f"{self.path}-wal").exists() or not self._writable_mount():
            return self._connect(self.path, "immutable=1")
        return self._connect(self.path, "mode=ro")

    def _writable_mount(self) -> bool:
        """False when the store's directory is on a read-only file system."""
        try:
            return not (os.statvfs(self.directory).f_flag & os.ST_RDONLY)
        except (OSError, AttributeError):
            return True

    def _create(self) -> None:
        """Make a new store: built under a temporary name, then linked in place at once.

        The link fails when another opener made the file first (theirs is then used), so a
        ``fits.sqlite`` that exists is always complete: an empty or foreign file there is never
        mistaken for a new store.
        """
        tmp = self.directory / f".{FILENAME}.{os.getpid()}.{threading.get_ident()}.{os.urandom(4).hex()}"
        try:
            conn = self._connect(tmp, "mode=rwc")
            try:
                for statement in _SCHEMA.strip().split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.executemany("INSERT INTO meta VALUES (?, ?)", [
                    ("application", APPLICATION),
                    ("schema_version", str(SCHEMA_VERSION)),
                    ("created_at", repr(time.time())),
                    ("created_by", f"raygrid {library_versions()['raygrid']}"),
                ])
                conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                conn.execute("PRAGMA journal_mode = WAL")
            finally:
                conn.close()
            try:
                os.link(tmp, self.path)
            except FileExistsError:
                pass  # another opener was first: use theirs
            except OSError:  # a file system without hard links: create without replacing
                try:
                    fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
                except FileExistsError:
                    return
                with os.fdopen(fd, "wb") as out, open(tmp, "rb") as src:
                    out.write(src.read())
                    out.flush()
                    os.fsync(out.fileno())
        finally:
            for leftover in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-shm")):
                try:
                    leftover.unlink()
                except FileNotFoundError:
                    pass

    def _check_header(self) -> None:
        if self.path.is_dir():
            raise self._unusable("it is a directory")
        with open(self.path, "rb") as fh:
            head = fh.read(len(_SQLITE_MAGIC))
        if not head:
            raise self._unusable("it is an empty file, not made by raygrid")
        if head != _SQLITE_MAGIC:
            raise self._unusable("not an SQLite database")

    def _tables(self) -> set[str]:
        return {r[0] for r in self._conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}

    def _use_wal(self) -> None:
        """Switch the file to WAL once (it stays so), waiting out other openers.

        While another connection is opening or switching the same new file, SQLite answers the
        switch with "database is locked" at once, without the busy timeout; so wait here.
        """
        deadline = time.monotonic() + self.timeout
        delay = 0.005
        while True:
            try:
                mode = self._conn.execute("PRAGMA journal_mode").fetchone()[0]
                if mode.lower() == "wal" or self._conn.execute(
                        "PRAGMA journal_mode = WAL").fetchone()[0].lower() == "wal":
                    return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
            if time.monotonic() >= deadline:
                raise sqlite3.OperationalError(
                    f"database is locked: could not switch it to WAL in {self.timeout:g} s")
            time.sleep(delay)
            delay = min(delay * 2, 0.2)

    def _validate(self) -> None:
        """Refuse, before writing anything, a file that is not exactly a raygrid store.

        Its application id, meta table, schema version, tables and their columns must be
        raygrid's; triggers and views (SQL that would run on raygrid's reads and writes) are
        refused; and SQLite's own check must pass.
        """
        conn = self._conn
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        if app_id not in (0, APPLICATION_ID):
            raise self._unusable(f"an SQLite database of another application (id {app_id:#x})")
        if "meta" not in self._tables():
            raise self._unusable("an SQLite database without raygrid's meta table")
        meta = dict(conn.execute("SELECT key, value FROM meta"))
        if meta.get("application") != APPLICATION:
            raise self._unusable(f"its meta table names application {meta.get('application')!r}")
        try:
            version = int(meta.get("schema_version", ""))
        except ValueError:
            raise self._unusable(f"bad schema_version {meta.get('schema_version')!r}") from None
        if version > SCHEMA_VERSION:
            raise self._unusable(f"it has schema version {version}, written by a newer raygrid "
                                 f"(this one reads {SCHEMA_VERSION}); upgrade raygrid")
        missing = set(_COLUMNS) - self._tables()
        if missing:
            raise self._unusable(f"tables {sorted(missing)} are missing")
        for table, columns in _COLUMNS.items():
            have = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
            lacking = [c for c in columns if c not in have]
            if lacking:
                raise self._unusable(f"table {table} lacks the columns {lacking}")
        extra = conn.execute("SELECT type, name FROM sqlite_master "
                             "WHERE type IN ('trigger', 'view') ORDER BY type, name").fetchall()
        if extra:
            raise self._unusable("it holds " + ", ".join(f"{kind} {name!r}" for kind, name in extra)
                                 + " (raygrid's stores have none)")
        check = [r[0] for r in conn.execute("PRAGMA quick_check")]
        if check != ["ok"]:
            raise self._unusable("the database is damaged (" + "; ".join(check[:3]) + ")")

    # -- reading -----------------------------------------------------------------------------
    def lookup(self, fingerprints: Iterable[str]) -> dict[str, StoredFit]:
        """The stored rows for ``fingerprints`` (those that have one)."""
        wanted = list(dict.fromkeys(fingerprints))
        out: dict[str, StoredFit] = {}
        self.flush()
        for start in range(0, len(wanted), _CHUNK):
            chunk = wanted[start:start + _CHUNK]
            with self._lock:
                rows = self._execute(
                    "SELECT fingerprint, test_scores, train_scores, fit_time, score_time, "
                    "n_test_samples, error, system_failure, node, pid FROM fits WHERE "
                    f"fingerprint IN ({','.join('?' * len(chunk))})", chunk).fetchall()
            for fp, test, train, fit_t, score_t, n_test, error, sysfail, node, pid in rows:
                out[fp] = StoredFit(fp, json.loads(test), None if train is None else json.loads(train),
                                    fit_t, score_t, n_test, error, bool(sysfail), node, pid)
        return out

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        self.flush()
        with self._lock:
            return self._execute(sql, params).fetchall()

    # -- writing -----------------------------------------------------------------------------
    def put(self, fingerprint: str, result: FitResult, *, search_id: str | None = None,
            params: Mapping[str, Any] | str | None = None) -> None:
        """Write (or replace) one fit: committed now, or within ``commit_interval``.

        ``params`` (the candidate's parameters, or their JSON text) is kept for people reading
        the store; fingerprints alone decide reuse.
        """
        if params is not None and not isinstance(params, str):
            params = _params_text(params)
        row = (fingerprint, search_id, result.candidate, result.fold, params,
               _json(result.test_scores) or "{}",
               _json(result.train_scores), float(result.fit_time), float(result.score_time),
               int(result.n_test_samples), result.error, int(bool(result.system_failure)),
               result.node, int(result.pid or 0), result.seed, time.time())
        with self._lock:
            self._buffer.append(row)
            if time.monotonic() - self._last_commit >= self.commit_interval:
                self._flush_locked()
            elif self._timer is None:
                self._timer = threading.Timer(self.commit_interval, self._flush_from_timer)
                self._timer.daemon = True
                self._timer.start()

    def flush(self) -> None:
        """Commit every fit that waits."""
        with self._lock:
            self._flush_locked()

    def _flush_from_timer(self) -> None:
        try:
            self.flush()
        except StoreError:
            pass  # the next put, flush or close raises it in the search's thread

    def _flush_locked(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._buffer or self._conn is None:
            return
        rows = list(self._buffer)
        self._write([(_INSERT_FIT, rows)])
        del self._buffer[: len(rows)]  # only once committed: an interrupted write is retried
        self._last_commit = time.monotonic()

    def add_plan(self, search_id: str, *, kind: str, estimator: str, n_splits: int,
                 planned: Sequence[tuple[int, int, str]]) -> None:
        """Record (or extend) a search's plan: (candidate, fold, fingerprint) for every fit."""
        now = time.time()
        self._write([
            ("INSERT OR IGNORE INTO searches (search_id, kind, estimator, n_splits, created_at, "
             "updated_at) VALUES (?, ?, ?, ?, ?, ?)", [(search_id, kind, estimator, n_splits, now, now)]),
            ("INSERT OR REPLACE INTO planned (search_id, candidate, fold, fingerprint) "
             "VALUES (?, ?, ?, ?)", [(search_id, c, f, fp) for c, f, fp in planned]),
            ("UPDATE searches SET updated_at = ?, finished_at = NULL, "
             "n_candidates = (SELECT COALESCE(MAX(candidate) + 1, 0) FROM planned WHERE search_id = ?), "
             "n_planned = (SELECT COUNT(*) FROM planned WHERE search_id = ?) WHERE search_id = ?",
             [(now, search_id, search_id, search_id)]),
        ])

    def start_run(self, search_id: str) -> None:
        self._write([("UPDATE searches SET runs = runs + 1, updated_at = ? WHERE search_id = ?",
                      [(time.time(), search_id)])])

    def finish(self, search_id: str) -> None:
        now = time.time()
        self._write([("UPDATE searches SET finished_at = ?, updated_at = ? WHERE search_id = ?",
                      [(now, now, search_id)])])

    def _write(self, statements: Sequence[tuple[str, Sequence[tuple]]]) -> None:
        with self._lock:
            self._write_locked(statements)

    def _write_locked(self, statements: Sequence[tuple[str, Sequence[tuple]]]) -> None:
        conn = self._connection()
        if self.read_only:
            raise StoreError(f"The raygrid store {self.path} is open read-only")
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                for sql, rows in statements:
                    conn.executemany(sql, rows)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except sqlite3.DatabaseError as exc:
            raise StoreError(
                f"Cannot write to the raygrid store {self.path}: {exc}. The fits committed before "
                "stay in the store: once the cause is fixed, run the same search again with "
                f"storage={str(self.directory)!r} to resume (only the missing fits run).") from exc

    def _execute(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
        try:
            return self._connection().execute(sql, params)
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"Cannot read the raygrid store {self.path}: {exc}") from exc

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError(f"The raygrid store {self.path} is closed")
        return self._conn

    def count(self) -> int:
        return self.query("SELECT COUNT(*) FROM fits")[0][0]

    def close(self) -> None:
        """Commit what waits and close (safe to call twice)."""
        with self._lock:
            if self._conn is None:
                return
            try:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")  # an interrupted write: its rows still wait
                self._flush_locked()
            finally:
                if self._timer is not None:
                    self._timer.cancel()
                    self._timer = None
                self._conn.close()
                self._conn = None

    def __enter__(self) -> "FitStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# -- what a search uses ---------------------------------------------------------------------------
class StoreSession:
    """One search's view of a store: plan, reuse what is stored, record what finishes.

    ``cache=False`` runs every fit (and still records it). Stored system failures are never
    reused (the fit is run again); nor are failed fits (the estimator raised: a resumed search
    tries them again, in case the cause was passing), unless ``reuse_failures`` (``cache="all"``,
    never with ``error_score="raise"``, where the fit runs again to raise its exception).
    """

    def __init__(self, store: FitStore | str | os.PathLike, fingerprinter: Fingerprinter, *,
                 cache: bool = True, reuse_failures: bool = False, kind: str = "search",
                 estimator: str = "", n_splits: int = 0):
        # A directory is opened (and the store made) on first use: after the search has checked
        # its candidates, so that bad input leaves nothing behind.
        self._store = store if isinstance(store, FitStore) else None
        self._directory = Path(store.directory if isinstance(store, FitStore) else store).expanduser()
        self.fingerprinter = fingerprinter
        self.cache = bool(cache)
        self.reuse_failures = reuse_failures
        self.kind = kind
        self.estimator = estimator
        self.n_splits = n_splits
        self.search_id: str | None = None
        self.reused = 0
        self.written = 0
        self._fingerprints: dict[tuple[int, int], str] = {}
        self._params: dict[int, str] = {}  # candidate -> its parameters as JSON text
        self._trials: dict[tuple[int, int], Trial] = {}  # as planned (engine, seed)

    @property
    def directory(self) -> Path:
        return self._directory

    @property
    def store(self) -> FitStore:
        if self._store is None:
            self._store = FitStore(self._directory)
        return self._store

    @property
    def opened(self) -> bool:
        return self._store is not None and self._store._conn is not None

    def plan(self, trials: Sequence[Trial]) -> tuple[list[FitResult], list[Trial]]:
        """Record ``trials`` as planned; return (results reused from the store, trials to run)."""
        fps = [self.fingerprinter.trial(t) for t in trials]
        for t, fp in zip(trials, fps):
            self._fingerprints[(t.candidate, t.fold)] = fp
            if t.candidate not in self._params:
                self._params[t.candidate] = _params_text(t.params)
        if self.search_id is None:
            self.search_id = digest("search", self.kind, self.fingerprinter.key, tuple(fps))[:16]
            self.store.add_plan(self.search_id, kind=self.kind, estimator=self.estimator,
                                n_splits=self.n_splits,
                                planned=[(t.candidate, t.fold, fp) for t, fp in zip(trials, fps)])
            self.store.start_run(self.search_id)
        else:
            self.store.add_plan(self.search_id, kind=self.kind, estimator=self.estimator,
                                n_splits=self.n_splits,
                                planned=[(t.candidate, t.fold, fp) for t, fp in zip(trials, fps)])
        self._trials.update({(t.candidate, t.fold): t for t in trials})
        if not self.cache or not self.fingerprinter.reusable:
            return [], list(trials)
        # A fit planned on another engine (fused) may have run on the standard one instead
        # (a fallback, with the same seed): both identities are looked up, the planned first.
        choices = [[(fp, t.engine)] + ([(self.fingerprinter.trial(t, "standard"), "standard")]
                                       if t.engine != "standard" else [])
                   for t, fp in zip(trials, fps)]
        stored = self.store.lookup(fp for options in choices for fp, _ in options)
        hits: list[FitResult] = []
        todo: list[Trial] = []
        for t, options in zip(trials, choices):
            found = [(stored[fp], engine) for fp, engine in options if fp in stored]
            row, engine = found[0] if found else (None, "standard")
            if row is None or row.system_failure or (row.error is not None and not self.reuse_failures):
                todo.append(t)
            else:
                hits.append(row.to_result(t, engine))
        self.reused += len(hits)
        return hits, todo

    def record(self, result: FitResult) -> None:
        """Write one finished fit (committed within the store's commit interval, 0.2 s)."""
        if result.cached:
            return
        fp = self._fingerprints[(result.candidate, result.fold)]
        planned = self._trials.get((result.candidate, result.fold))
        if planned is not None and result.engine != planned.engine:  # e.g. a fused fallback
            fp = self.fingerprinter.trial(planned, result.engine)
        self.store.put(fp, result, search_id=self.search_id, params=self._params.get(result.candidate))
        self.written += 1

    def finish(self) -> None:
        if self.search_id is not None:
            self.store.finish(self.search_id)

    def close(self) -> None:
        if self._store is not None:
            self._store.close()


def open_session(storage: str | os.PathLike, *, cache: bool, estimator: Any, X: Any, y: Any,
                 splits: Sequence, fit_params: Mapping[str, Any] | None, scoring: Any,
                 error_score: Any, return_train_score: bool, keras: bool, kind: str,
                 reuse: bool = True) -> StoreSession:
    """Fingerprint this search's shared inputs (done once, on the driver) for ``storage``.

    The store itself is opened (made, if new) when the first fits are planned.
    """
    if not (isinstance(cache, (bool, np.bool_)) or cache == "all"):
        raise ValueError(f"cache must be True, False or 'all', got {cache!r}")
    directory = Path(storage).expanduser()
    if directory.exists() and not directory.is_dir():
        raise StoreError(f"storage={str(directory)!r} is a file, not a directory: raygrid "
                         f"keeps its store as {FILENAME} inside a directory")
    fingerprinter = Fingerprinter(
        estimator=estimator, X=X, y=y, splits=splits, fit_params=fit_params, scoring=scoring,
        error_score=error_score, return_train_score=return_train_score, keras=keras)
    return StoreSession(directory, fingerprinter, cache=bool(cache) and reuse,
                        reuse_failures=cache == "all" and error_score != "raise", kind=kind,
                        estimator=_qualname(type(estimator)), n_splits=len(splits))


def resume_hint(session: StoreSession) -> str:
    """The one line printed when a search with a store is interrupted."""
    n = session.store.count() if session.opened else session.written
    return (f"raygrid: search interrupted; {session.written} new fits saved ({n} in the store) in "
            f"{str(session.directory)!r}. Run the same search again with "
            f"storage={str(session.directory)!r} to resume: only the missing fits will run.")


__all__ = ["FitStore", "StoreError", "StoreSession", "Fingerprinter", "open_session", "digest",
           "library_versions", "FILENAME", "SCHEMA_VERSION"]
