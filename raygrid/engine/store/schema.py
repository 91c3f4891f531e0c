"""The SQLite file of a store: its schema, and opening it: made new, validated, or read-only.

``<storage>/fits.sqlite`` (WAL journal, so a reader such as ``raygrid status`` and several
searches can use one store at once; writers queue on SQLite's lock with a generous busy timeout):

- ``meta(key, value)``: ``application = raygrid``, ``schema_version``, when and by what it was made.
  A file without it, or with tables or columns missing, or with triggers or views, is not
  raygrid's and is never reused, changed or wiped. A new store is built under a temporary name
  and linked in place, so an existing ``fits.sqlite`` (even an empty one) is never taken for new.
  ``status`` opens a store read-only.
- ``fits``: one row per fingerprint: scores as JSON, times, error text, system failure flag, node,
  pid, seed, the epochs a Keras fit with early stopping trained (schema version 2; a version-1
  store gains the column when opened for writing). No models.
- ``searches``: one row per search plan (kind, estimator, candidates, folds, fits planned).
- ``planned``: (search, candidate, fold) -> fingerprint, so ``status`` can count missing fits.
"""
from __future__ import annotations

import os
import sqlite3
import threading
import time
from pathlib import Path

from raygrid.engine.store.identity import library_versions

FILENAME = "fits.sqlite"
SCHEMA_VERSION = 2
APPLICATION = "raygrid"
APPLICATION_ID = 0x52594744  # "RYGD" in SQLite's header: marks the file as raygrid's
BUSY_TIMEOUT_S = 60.0
_SQLITE_MAGIC = b"SQLite format 3\x00"


class StoreError(RuntimeError):
    """The storage directory or its ``fits.sqlite`` cannot be used as a raygrid store."""


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
    finished_at REAL NOT NULL,
    stopped_epoch INTEGER
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

COLUMNS = {  # every table and column raygrid reads or writes, in the order of the schema
    "meta": ("key", "value"),
    "fits": ("fingerprint", "search_id", "candidate", "fold", "params", "test_scores",
             "train_scores", "fit_time", "score_time", "n_test_samples", "error",
             "system_failure", "node", "pid", "seed", "finished_at", "stopped_epoch"),
    "searches": ("search_id", "kind", "estimator", "n_candidates", "n_splits", "n_planned",
                 "runs", "created_at", "updated_at", "finished_at"),
    "planned": ("search_id", "candidate", "fold", "fingerprint"),
}


#: Columns added by a schema version, with it: a store of an older version may lack them (it
#: gains them when opened for writing, see :func:`_upgrade`).
ADDED = {("fits", "stopped_epoch"): (2, "INTEGER")}


def open_store(directory: Path, *, create: bool, timeout: float = BUSY_TIMEOUT_S) -> sqlite3.Connection:
    """A connection to ``directory/fits.sqlite``, validated: read-write (the store made first if
    there is none and ``create``), or, with ``create=False``, read-only to an existing store.

    Raises :class:`StoreError` for a missing store (``create=False``), a file where the
    directory should be, and a file that is not exactly a raygrid store.
    """
    path = directory / FILENAME
    read_only = not create
    check_directory(directory)
    if not create and not path.exists():
        raise StoreError(f"No raygrid store in {str(directory)!r} (no {FILENAME})")
    if create and not path.exists():
        try:
            directory.mkdir(parents=True, exist_ok=True)
            _create(directory, path, timeout)
        except (OSError, sqlite3.DatabaseError) as exc:
            raise StoreError(f"Cannot create the raygrid store {path}: {exc}") from exc
    _check_header(path)
    conn = None
    try:
        if not read_only:
            # Validated first through a connection that cannot write: a read-write connection
            # that closes checkpoints a WAL (a foreign file would be rewritten, its -wal deleted).
            checked = _open(path, True, timeout)
            try:
                _validate(checked, path)
            finally:
                checked.close()
        conn = _open(path, read_only, timeout)
        _validate(conn, path)
        if not read_only:
            _use_wal(conn, timeout)
            conn.execute("PRAGMA synchronous = NORMAL")  # durable across a crash of this process
            _upgrade(conn)
    except sqlite3.DatabaseError as exc:
        if conn is not None:
            conn.close()
        raise _unusable(path, f"{exc}") from None
    except StoreError:
        if conn is not None:
            conn.close()
        raise
    return conn


def check_directory(directory: Path) -> None:
    """Refuse a ``storage`` that is a file: a store is ``fits.sqlite`` inside a directory."""
    if directory.exists() and not directory.is_dir():
        raise StoreError(f"storage={str(directory)!r} is a file, not a directory: raygrid "
                         f"keeps its store as {FILENAME} inside a directory")


def _unusable(path: Path, why: str) -> StoreError:
    return StoreError(
        f"{path} is not a usable raygrid store: {why}. raygrid never reuses, changes or "
        "wipes a file it cannot verify: move the file away, or pass another storage directory."
    )


def _connect(path: Path, timeout: float, mode: str | None = None) -> sqlite3.Connection:
    uri = path.resolve().as_uri() + (f"?{mode}" if mode else "")
    conn = sqlite3.connect(uri, uri=True, timeout=timeout, isolation_level=None,
                           check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
    conn.execute("PRAGMA trusted_schema = OFF")  # the schema's SQL never calls functions
    return conn


def _open(path: Path, read_only: bool, timeout: float) -> sqlite3.Connection:
    """The connection: read-write (``mode=rw``: never creates a file), or read-only.

    Read-only, a store no one writes (no ``-wal`` file: writers keep one open) is opened as
    immutable, which makes no file at all (SQLite's read-only mode would leave a WAL and its
    index behind); a store being written is opened in read-only mode, except on a read-only
    file system, where SQLite cannot make the WAL's index, and nothing can change the file.
    """
    if not read_only:
        return _connect(path, timeout, "mode=rw")
    if not Path(f"{path}-wal").exists() or not _writable_mount(path.parent):
        return _connect(path, timeout, "immutable=1")
    return _connect(path, timeout, "mode=ro")


def _writable_mount(directory: Path) -> bool:
    """False when ``directory`` is on a read-only file system."""
    try:
        return not (os.statvfs(directory).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):
        return True


def _create(directory: Path, path: Path, timeout: float) -> None:
    """Make a new store: built under a temporary name, then linked in place at once.

    The link fails when another opener made the file first (theirs is then used), so a
    ``fits.sqlite`` that exists is always complete: an empty or foreign file there is never
    mistaken for a new store.
    """
    tmp = directory / f".{FILENAME}.{os.getpid()}.{threading.get_ident()}.{os.urandom(4).hex()}"
    try:
        conn = _connect(tmp, timeout, "mode=rwc")
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
            os.link(tmp, path)
        except FileExistsError:
            pass  # another opener was first: use theirs
        except OSError:  # a file system without hard links: create without replacing
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
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


def writable(directory: Path) -> bool:
    """Whether a store in ``directory`` can be written: a writable mount, directory and file."""
    path = directory / FILENAME
    return (_writable_mount(directory) and os.access(directory, os.W_OK)
            and (not path.exists() or os.access(path, os.W_OK)))


def _check_header(path: Path) -> None:
    """Refuse, by reading its first bytes (no SQLite connection), a file that is not an SQLite
    database or is marked as another application's."""
    if path.is_dir():
        raise _unusable(path, "it is a directory")
    with open(path, "rb") as fh:
        head = fh.read(100)  # SQLite's file header
    if not head:
        raise _unusable(path, "it is an empty file, not made by raygrid")
    if head[:len(_SQLITE_MAGIC)] != _SQLITE_MAGIC:
        raise _unusable(path, "not an SQLite database")
    app_id = int.from_bytes(head[68:72], "big") if len(head) >= 72 else 0
    if app_id not in (0, APPLICATION_ID):
        raise _unusable(path, f"an SQLite database of another application (id {app_id:#x})")


def _tables(conn: sqlite3.Connection) -> set[str]:
    return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}


def _use_wal(conn: sqlite3.Connection, timeout: float) -> None:
    """Switch the file to WAL once (it stays so), waiting out other openers.

    While another connection is opening or switching the same new file, SQLite answers the
    switch with "database is locked" at once, without the busy timeout; so wait here.
    """
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        try:
            mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
            if mode.lower() == "wal" or conn.execute(
                    "PRAGMA journal_mode = WAL").fetchone()[0].lower() == "wal":
                return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
        if time.monotonic() >= deadline:
            raise sqlite3.OperationalError(
                f"database is locked: could not switch it to WAL in {timeout:g} s")
        time.sleep(delay)
        delay = min(delay * 2, 0.2)


def columns_of(conn: sqlite3.Connection, table: str) -> set[str]:
    return {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}


def _upgrade(conn: sqlite3.Connection) -> None:
    """Bring a validated store of an older schema version to this one: add the columns it lacks
    (each new column is empty for the fits already stored), then record the version; in one
    transaction, so that two openers at once upgrade it once."""
    version = int(dict(conn.execute("SELECT key, value FROM meta"))["schema_version"])
    if version >= SCHEMA_VERSION:
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        for (table, column), (_, kind) in ADDED.items():
            if column not in columns_of(conn, table):
                conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
        conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'",
                      (str(SCHEMA_VERSION),))
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _validate(conn: sqlite3.Connection, path: Path) -> None:
    """Refuse, before writing anything, a file that is not exactly a raygrid store.

    Its application id, meta table, schema version, tables and their columns must be
    raygrid's; triggers and views (SQL that would run on raygrid's reads and writes) are
    refused; and SQLite's own check must pass.
    """
    app_id = conn.execute("PRAGMA application_id").fetchone()[0]
    if app_id not in (0, APPLICATION_ID):
        raise _unusable(path, f"an SQLite database of another application (id {app_id:#x})")
    if "meta" not in _tables(conn):
        raise _unusable(path, "an SQLite database without raygrid's meta table")
    meta = dict(conn.execute("SELECT key, value FROM meta"))
    if meta.get("application") != APPLICATION:
        raise _unusable(path, f"its meta table names application {meta.get('application')!r}")
    try:
        version = int(meta.get("schema_version", ""))
    except ValueError:
        raise _unusable(path, f"bad schema_version {meta.get('schema_version')!r}") from None
    if version > SCHEMA_VERSION:
        raise _unusable(path, f"it has schema version {version}, written by a newer raygrid "
                              f"(this one reads {SCHEMA_VERSION}); upgrade raygrid")
    missing = set(COLUMNS) - _tables(conn)
    if missing:
        raise _unusable(path, f"tables {sorted(missing)} are missing")
    for table, columns in COLUMNS.items():
        have = columns_of(conn, table)
        lacking = [c for c in columns if c not in have
                   and ADDED.get((table, c), (0,))[0] <= version]
        if lacking:
            raise _unusable(path, f"table {table} lacks the columns {lacking}")
    extra = conn.execute("SELECT type, name FROM sqlite_master "
                         "WHERE type IN ('trigger', 'view') ORDER BY type, name").fetchall()
    if extra:
        raise _unusable(path, "it holds " + ", ".join(f"{kind} {name!r}" for kind, name in extra)
                        + " (raygrid's stores have none)")
    check = [r[0] for r in conn.execute("PRAGMA quick_check")]
    if check != ["ok"]:
        raise _unusable(path, "the database is damaged (" + "; ".join(check[:3]) + ")")
