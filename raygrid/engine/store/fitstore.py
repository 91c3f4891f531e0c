"""The store object: one row per finished fit, written as fits finish, read back for reuse and
for ``raygrid status``.

Every finished fit is written the moment its result reaches the driver and committed within
``COMMIT_INTERVAL_S`` (0.2 s): a crash of the driver's process loses at most the fits of that last
moment, never one committed before. What the file holds, and how it is opened and checked, is
``schema.py``'s; how a fit is identified, ``identity.py``'s.
"""
from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from raygrid.engine.fitting import FitResult
from raygrid.engine.plan import Trial
from raygrid.engine.store.schema import (BUSY_TIMEOUT_S, COLUMNS, FILENAME, StoreError, columns_of,
                                         open_store, writable)
from raygrid.engine.store.summary import SearchSummary, StoreSummary

COMMIT_INTERVAL_S = 0.2  # a finished fit is committed at most this long after it arrives
_CHUNK = 500  # fingerprints per lookup query (SQLite's variable limit is far above this)

_FIT_COLUMNS = COLUMNS["fits"]
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
    stopped_epoch: int | None = None

    def to_result(self, trial: Trial, engine: str = "standard") -> FitResult:
        """This fit as the result of ``trial`` of the current search (marked ``cached``)."""
        return FitResult(
            trial.candidate, trial.fold, dict(self.test_scores),
            None if self.train_scores is None else dict(self.train_scores),
            self.fit_time, self.score_time, self.n_test_samples, error=self.error,
            system_failure=self.system_failure, node=self.node or "unknown", pid=self.pid or 0,
            seed=trial.seed, cached=True, engine=engine, stopped_epoch=self.stopped_epoch,
        )


def _json(value: Any) -> str | None:
    if value is None:
        return None
    return json.dumps({k: float(v) for k, v in value.items()}, allow_nan=True)


def params_text(params: Mapping[str, Any]) -> str:
    """A candidate's parameters as JSON text (kept for people reading the store)."""
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
        # A store that exists on a read-only mount (or without write permission) is opened
        # read-only: its fits can be reused, nothing can be added (see StoreSession.plan).
        self.read_only = not create or (self.path.exists() and not writable(self.directory))
        self._lock = threading.RLock()  # the connection is shared with the commit timer
        self._buffer: list[tuple] = []
        self._last_commit = 0.0
        self._timer: threading.Timer | None = None
        self._conn: sqlite3.Connection | None = None
        self._conn = open_store(self.directory, create=not self.read_only, timeout=timeout)
        # A version-1 store opened read-only has no stopped_epoch column: its fits read None.
        self._stopped_epoch = ("stopped_epoch" if "stopped_epoch" in columns_of(self._conn, "fits")
                               else "NULL")

    @property
    def is_open(self) -> bool:
        """False once closed."""
        return self._conn is not None

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
                    f"n_test_samples, error, system_failure, node, pid, {self._stopped_epoch} "
                    f"FROM fits WHERE fingerprint IN ({','.join('?' * len(chunk))})",
                    chunk).fetchall()
            for fp, test, train, fit_t, score_t, n_test, error, sysfail, node, pid, epoch in rows:
                out[fp] = StoredFit(fp, json.loads(test), None if train is None else json.loads(train),
                                    fit_t, score_t, n_test, error, bool(sysfail), node, pid,
                                    epoch)
        return out

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        """The rows of ``sql`` (what waits is committed first)."""
        self.flush()
        with self._lock:
            return self._execute(sql, params).fetchall()

    def summary(self) -> StoreSummary:
        """Counts of the fits stored, and per search plan what is done, failed and missing."""
        fits, done, failed, system = self.query(
            "SELECT COUNT(*), "
            "COALESCE(SUM(error IS NULL), 0), "
            "COALESCE(SUM(error IS NOT NULL AND system_failure = 0), 0), "
            "COALESCE(SUM(system_failure = 1), 0) FROM fits")[0]
        planned, missing = self.query(
            "SELECT COUNT(*), COALESCE(SUM(f.fingerprint IS NULL), 0) FROM "
            "(SELECT DISTINCT fingerprint FROM planned) AS p "
            "LEFT JOIN fits AS f ON f.fingerprint = p.fingerprint")[0]
        rows = self.query(
            "SELECT s.search_id, s.kind, s.estimator, s.n_candidates, s.n_splits, "
            "COUNT(p.fingerprint), "
            "COALESCE(SUM(f.fingerprint IS NOT NULL AND f.error IS NULL), 0), "
            "COALESCE(SUM(f.error IS NOT NULL AND f.system_failure = 0), 0), "
            "COALESCE(SUM(f.system_failure = 1), 0), "
            "COALESCE(SUM(f.fingerprint IS NULL), 0), "
            "s.runs, s.created_at, s.updated_at, s.finished_at "
            "FROM searches AS s LEFT JOIN planned AS p ON p.search_id = s.search_id "
            "LEFT JOIN fits AS f ON f.fingerprint = p.fingerprint "
            "GROUP BY s.search_id ORDER BY s.created_at")
        return StoreSummary(str(self.path), fits, done, failed, system, planned, missing,
                            tuple(SearchSummary(*row) for row in rows))

    # -- writing -----------------------------------------------------------------------------
    def put(self, fingerprint: str, result: FitResult, *, search_id: str | None = None,
            params: Mapping[str, Any] | str | None = None) -> None:
        """Write (or replace) one fit: committed now, or within ``commit_interval``.

        ``params`` (the candidate's parameters, or their JSON text) is kept for people reading
        the store; fingerprints alone decide reuse.
        """
        if params is not None and not isinstance(params, str):
            params = params_text(params)
        row = (fingerprint, search_id, result.candidate, result.fold, params,
               _json(result.test_scores) or "{}",
               _json(result.train_scores), float(result.fit_time), float(result.score_time),
               int(result.n_test_samples), result.error, int(bool(result.system_failure)),
               result.node, int(result.pid or 0), result.seed, time.time(),
               None if result.stopped_epoch is None else int(result.stopped_epoch))
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

