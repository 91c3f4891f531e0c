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
        fits, done, failed, system = store.query(
            "SELECT COUNT(*), "
            "COALESCE(SUM(error IS NULL), 0), "
            "COALESCE(SUM(error IS NOT NULL AND system_failure = 0), 0), "
            "COALESCE(SUM(system_failure = 1), 0) FROM fits")[0]
        planned, missing = store.query(
            "SELECT COUNT(*), COALESCE(SUM(f.fingerprint IS NULL), 0) FROM "
            "(SELECT DISTINCT fingerprint FROM planned) AS p "
            "LEFT JOIN fits AS f ON f.fingerprint = p.fingerprint")[0]
        rows = store.query(
            "SELECT s.search_id, s.kind, s.estimator, s.n_candidates, s.n_splits, s.runs, "
            "s.created_at, s.updated_at, s.finished_at, COUNT(p.fingerprint), "
            "COALESCE(SUM(f.fingerprint IS NOT NULL AND f.error IS NULL), 0), "
            "COALESCE(SUM(f.error IS NOT NULL AND f.system_failure = 0), 0), "
            "COALESCE(SUM(f.system_failure = 1), 0), "
            "COALESCE(SUM(f.fingerprint IS NULL), 0) "
            "FROM searches AS s LEFT JOIN planned AS p ON p.search_id = s.search_id "
            "LEFT JOIN fits AS f ON f.fingerprint = p.fingerprint "
            "GROUP BY s.search_id ORDER BY s.created_at")
        path = str(store.path)
    searches = []
    for (sid, kind, est, n_cand, n_splits, runs, created, updated, finished, n_planned, s_done,
         s_failed, s_system, s_missing) in rows:
        searches.append({
            "search_id": sid, "kind": kind, "estimator": est, "n_candidates": n_cand,
            "n_splits": n_splits, "planned": n_planned, "done": s_done, "failed": s_failed,
            "system_failures": s_system, "missing": s_missing,
            "complete": s_missing == 0 and s_system == 0, "runs": runs,
            "created_at": _iso(created), "updated_at": _iso(updated), "finished_at": _iso(finished),
        })
    return {
        "storage": str(storage), "path": path, "fits": fits, "done": done, "failed": failed,
        "system_failures": system, "planned": planned, "missing": missing, "searches": searches,
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
