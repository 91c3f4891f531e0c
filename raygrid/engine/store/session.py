"""What a search uses of a store: its plan recorded, stored fits reused, finished fits written,
and the line printed when it is interrupted.

Rerunning a search with the same ``storage`` runs only the fits whose fingerprint has no usable
row (failed fits run again unless ``cache="all"``).
"""
from __future__ import annotations

import contextlib
import os
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from raygrid.engine.fitting import FitResult
from raygrid.engine.plan import Trial
from raygrid.engine.store.fitstore import FitStore, params_text
from raygrid.engine.store.identity import Fingerprinter, digest, qualname
from raygrid.engine.store.schema import StoreError, check_directory

#: How to resume an interrupted search, in the words of what started it (see :func:`resume_advice`).
_ADVICE: ContextVar[str | None] = ContextVar("raygrid_resume_advice", default=None)


@contextlib.contextmanager
def resume_advice(text: str):
    """Inside the block, an interrupted search says ``text`` on how to resume instead of the
    Python wording (``storage=...``): the command line says "run the same command again"."""
    token = _ADVICE.set(text)
    try:
        yield
    finally:
        _ADVICE.reset(token)


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
        return self._store is not None and self._store.is_open

    def plan(self, trials: Sequence[Trial]) -> tuple[list[FitResult], list[Trial]]:
        """Record ``trials`` as planned; return (results reused from the store, trials to run)."""
        fps = [self.fingerprinter.trial(t) for t in trials]
        for t, fp in zip(trials, fps):
            self._fingerprints[(t.candidate, t.fold)] = fp
            if t.candidate not in self._params:
                self._params[t.candidate] = params_text(t.params)
        if self.store.read_only:
            return self._plan_read_only(trials, fps)
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
        return self._lookup(trials, fps)

    def _plan_read_only(self, trials: Sequence[Trial], fps: Sequence[str]
                        ) -> tuple[list[FitResult], list[Trial]]:
        """A store that cannot be written (a read-only mount): usable when it holds every fit
        of the plan; else an error before any of them runs (nothing could be kept)."""
        if self.search_id is None:
            self.search_id = digest("search", self.kind, self.fingerprinter.key, tuple(fps))[:16]
        self._trials.update({(t.candidate, t.fold): t for t in trials})
        hits, todo = self._lookup(trials, fps)
        if todo:
            self.reused -= len(hits)
            raise StoreError(
                f"The raygrid store {self.store.path} cannot be written (a read-only file system "
                f"or no write permission) and {len(todo)} of the {len(trials)} fits planned are "
                "not in it (or failed there): nothing was run. Give a writable storage "
                "directory (a copy of this one keeps its fits), or run without storage.")
        return hits, todo

    def _lookup(self, trials: Sequence[Trial], fps: Sequence[str]
                ) -> tuple[list[FitResult], list[Trial]]:
        """(results reused from the store, trials to run)."""
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
        if self.search_id is not None and not self.store.read_only:
            self.store.finish(self.search_id)

    def close(self) -> None:
        if self._store is not None:
            self._store.close()


def open_session(storage: str | os.PathLike, *, cache: bool, estimator: Any, X: Any, y: Any,
                 splits: Sequence, fit_params: Mapping[str, Any] | None, scoring: Any,
                 error_score: Any, return_train_score: bool, keras: bool, kind: str,
                 reuse: bool = True, task: Any = None) -> StoreSession:
    """Fingerprint this search's shared inputs (done once, on the driver) for ``storage``.

    The store itself is opened (made, if new) when the first fits are planned.
    """
    if not (isinstance(cache, (bool, np.bool_)) or cache == "all"):
        raise ValueError(f"cache must be True, False or 'all', got {cache!r}")
    directory = Path(storage).expanduser()
    check_directory(directory)
    fingerprinter = Fingerprinter(
        estimator=estimator, X=X, y=y, splits=splits, fit_params=fit_params, scoring=scoring,
        error_score=error_score, return_train_score=return_train_score, keras=keras, task=task)
    return StoreSession(directory, fingerprinter, cache=bool(cache) and reuse,
                        reuse_failures=cache == "all" and error_score != "raise", kind=kind,
                        estimator=qualname(type(estimator)), n_splits=len(splits))


def resume_hint(session: StoreSession) -> str:
    """The one line printed when a search with a store is interrupted."""
    n = session.store.count() if session.opened else session.written
    advice = _ADVICE.get() or (f"Run the same search again with storage={str(session.directory)!r} "
                               "to resume: only the missing fits will run.")
    return (f"raygrid: search interrupted; {session.written} new fits saved ({n} in the store) in "
            f"{str(session.directory)!r}. {advice}")

