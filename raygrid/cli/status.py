"""What a fit store holds: fits done, failed, system failures, and per search what is missing."""
from __future__ import annotations

import datetime as _dt
import os
from typing import Any

from raygrid.engine.store import FitStore


def status(storage: str | os.PathLike) -> dict[str, Any]:
    """Counts for the store in ``storage`` (a directory holding ``fits.sqlite``).

    Returns a JSON-serialisable dict:

    - ``fits``: rows stored; ``done`` (scored), ``failed`` (the estimator raised) and
      ``system_failures`` (a worker or node died; a rerun runs these again);
    - ``planned``: distinct fits planned by the searches recorded in the store, ``missing``:
      those with no row yet (what a resumed search would run, with the system failures);
    - ``searches``: one dict per search plan (``pandas.DataFrame(info["searches"])`` tabulates
      them): ``search_id, kind, estimator, n_candidates, n_splits, planned, done, failed,
      system_failures, missing, complete, runs, created_at, updated_at, finished_at``.

    Raises :class:`raygrid.engine.store.StoreError` when there is no store or it is not raygrid's.
    """
    with FitStore(storage, create=False) as store:
        summary = store.summary()
    searches = [{
        "search_id": s.search_id, "kind": s.kind, "estimator": s.estimator,
        "n_candidates": s.n_candidates, "n_splits": s.n_splits, "planned": s.planned,
        "done": s.done, "failed": s.failed, "system_failures": s.system_failures,
        "missing": s.missing, "complete": s.complete, "runs": s.runs,
        "created_at": _iso(s.created_at), "updated_at": _iso(s.updated_at),
        "finished_at": _iso(s.finished_at),
    } for s in summary.searches]
    return {
        "storage": str(storage), "path": summary.path, "fits": summary.fits, "done": summary.done,
        "failed": summary.failed, "system_failures": summary.system_failures,
        "planned": summary.planned, "missing": summary.missing, "searches": searches,
    }


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return _dt.datetime.fromtimestamp(ts).isoformat(timespec="seconds")


def format_status(info: dict[str, Any]) -> str:
    """``status()`` as a few lines of text (what ``raygrid status DIR`` prints)."""
    lines = [
        f"{info['path']}",
        f"fits stored: {info['fits']}  done: {info['done']}  failed: {info['failed']}  "
        f"system failures: {info['system_failures']}",
        f"planned: {info['planned']}  missing: {info['missing']}",
    ]
    for s in info["searches"]:
        state = "complete" if s["complete"] else "incomplete"
        lines.append(
            f"  search {s['search_id']} {s['kind']} {s['estimator']}: {s['n_candidates']} "
            f"candidates x {s['n_splits']} folds = {s['planned']} fits; done {s['done']}, "
            f"failed {s['failed']}, system failures {s['system_failures']}, missing "
            f"{s['missing']} ({state}; runs {s['runs']}, last {s['updated_at']})"
        )
    if any(not s["complete"] for s in info["searches"]):
        lines.append(f"Resume: run the same search again with storage={info['storage']!r}.")
    return "\n".join(lines)


__all__ = ["status", "format_status"]
