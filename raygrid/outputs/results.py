"""From fit results to tables: pure functions keyed by (candidate, fold), never by completion order."""
from __future__ import annotations

import warnings
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
from numpy.ma import MaskedArray
from scipy.stats import rankdata
from sklearn.exceptions import FitFailedWarning

from raygrid.engine.failures import group_failures
from raygrid.engine.fitting import FitResult

ResultMap = Mapping[tuple[int, int], FitResult]


def _score(result: FitResult, side: str, metric: str, error_score: Any) -> float:
    scores = result.test_scores if side == "test" else result.train_scores
    fallback = np.nan if error_score == "raise" else error_score
    return (scores or {}).get(metric, fallback)


def _param_arrays(candidates: Sequence[Mapping[str, Any]]) -> dict[str, MaskedArray]:
    """One masked array per parameter name, masked where a candidate lacks that parameter."""
    n = len(candidates)
    by_name: dict[str, dict[int, Any]] = {}
    for i, params in enumerate(candidates):
        for name, value in params.items():
            by_name.setdefault(f"param_{name}", {})[i] = value
    out = {}
    for key, values in by_name.items():
        try:
            arr = np.array(list(values.values()))
        except ValueError:
            dtype = np.dtype(object)
        else:
            dtype = arr.dtype if arr.dtype.kind != "U" and arr.ndim == 1 else np.dtype(object)
        ma = MaskedArray(np.empty(n, dtype=dtype), mask=True)
        for i, value in values.items():
            ma[i] = value
        out[key] = ma
    return out


def _store(results: dict, key: str, array: np.ndarray, *, splits: bool = False,
           rank: bool = False) -> None:
    if splits:
        for s in range(array.shape[1]):
            results[f"split{s}_{key}"] = array[:, s]
    means = np.average(array, axis=1)
    results[f"mean_{key}"] = means
    if key.startswith(("train_", "test_")) and np.any(~np.isfinite(means)):
        warnings.warn(f"One or more of the {key.split('_')[0]} scores are non-finite: {means}",
                      category=UserWarning)
    results[f"std_{key}"] = np.sqrt(np.average((array - means[:, np.newaxis]) ** 2, axis=1))
    if rank:
        if np.isnan(means).all():
            ranks = np.ones_like(means, dtype=np.int32)
        else:
            filled = np.nan_to_num(means, nan=np.nanmin(means) - 1)
            ranks = rankdata(-filled, method="min").astype(np.int32, copy=False)
        results[f"rank_{key}"] = ranks


def cv_results(
    candidates: Sequence[Mapping[str, Any]],
    n_splits: int,
    results: ResultMap,
    metrics: Sequence[str],
    *,
    return_train_score: bool = False,
    error_score: Any = np.nan,
) -> dict[str, Any]:
    """``cv_results_`` with scikit-learn's keys and values, from per-(candidate, fold) results."""
    n = len(candidates)
    grid = [[results[(c, f)] for f in range(n_splits)] for c in range(n)]

    def matrix(get) -> np.ndarray:
        return np.array([[get(r) for r in row] for row in grid], dtype=np.float64).reshape(n, n_splits)

    out: dict[str, Any] = {}
    _store(out, "fit_time", matrix(lambda r: r.fit_time))
    _store(out, "score_time", matrix(lambda r: r.score_time))
    out.update(_param_arrays(candidates))
    out["params"] = list(candidates)
    for m in metrics:
        _store(out, f"test_{m}", matrix(lambda r, m=m: _score(r, "test", m, error_score)),
               splits=True, rank=True)
        if return_train_score:
            _store(out, f"train_{m}", matrix(lambda r, m=m: _score(r, "train", m, error_score)),
                   splits=True)
    return out


def metrics_seen(results: Iterable[FitResult]) -> tuple[str, ...] | None:
    """The metric names a callable scorer returned, from the first fit that was scored."""
    for r in results:
        if not r.failed and r.test_scores:
            return tuple(r.test_scores)
    return None


def warn_or_raise_about_failures(results: Sequence[FitResult], error_score: Any) -> None:
    """scikit-learn's rule: all fits failed -> ValueError; some -> one grouped FitFailedWarning."""
    errors = [r.error for r in results if r.error is not None]
    if not errors:
        return
    delimiter = "-" * 80 + "\n"
    summary = "\n".join(f"{delimiter}{n} fits failed with the following error:\n{e}"
                        for e, n in group_failures(errors))
    if len(errors) == len(results):
        raise ValueError(
            f"\nAll the {len(results)} fits failed.\n"
            "It is very likely that your model is misconfigured.\n"
            "You can try to debug the error by setting error_score='raise'.\n\n"
            f"Below are more details about the failures:\n{summary}"
        )
    warnings.warn(
        f"\n{len(errors)} fits failed out of a total of {len(results)}.\n"
        "The score on these train-test partitions for these parameters"
        f" will be set to {error_score}.\n"
        "If these failures are not expected, you can try to debug them "
        "by setting error_score='raise'.\n\n"
        f"Below are more details about the failures:\n{summary}",
        FitFailedWarning,
    )


def results_frame(
    candidates: Sequence[Mapping[str, Any]],
    results: ResultMap,
    metrics: Sequence[str],
    *,
    return_train_score: bool = False,
    error_score: Any = np.nan,
) -> pd.DataFrame:
    """One row per fit: candidate, fold, parameters, scores, times, where it ran, error text."""
    names = list(dict.fromkeys(k for p in candidates for k in p))
    rows = []
    stops = any(r.stopped_epoch is not None for r in results.values())
    for (c, f) in sorted(results):
        r = results[(c, f)]
        row: dict[str, Any] = {"candidate": c, "fold": f}
        for name in names:
            row[f"param_{name}"] = candidates[c].get(name)
        row["params"] = dict(candidates[c])
        for m in metrics:
            row[f"test_{m}"] = _score(r, "test", m, error_score)
        if return_train_score:
            for m in metrics:
                row[f"train_{m}"] = _score(r, "train", m, error_score)
        row.update(
            fit_time=r.fit_time, score_time=r.score_time, n_test_samples=r.n_test_samples,
            error=r.error, system_failure=r.system_failure, node=r.node, pid=r.pid,
            seed=r.seed, cached=r.cached,
        )
        if stops:  # Keras fits with EarlyStopping: the epoch each fit stopped at (its last)
            row["stopped_epoch"] = r.stopped_epoch
        rows.append(row)
    frame = pd.DataFrame(rows)
    if not rows:
        return frame
    frame["seed"] = frame["seed"].astype("Int64")
    if "stopped_epoch" in frame:
        frame["stopped_epoch"] = frame["stopped_epoch"].astype("Int64")
    return frame


def summary_frame(cv: Mapping[str, Any], results: pd.DataFrame, rank_metric: str) -> pd.DataFrame:
    """One row per candidate, best first (by ``rank_test_<rank_metric>``), with failed-fold counts."""
    columns = {k: (list(v) if k == "params" else np.asarray(v)) for k, v in cv.items()
               if not k.startswith("split")}
    for k, v in cv.items():
        if isinstance(v, MaskedArray):
            columns[k] = [None if masked else value for value, masked in
                          zip(v.data, np.ma.getmaskarray(v))]
    frame = pd.DataFrame(columns)
    frame.index.name = "candidate"
    if len(results):
        failed = results["error"].notna().groupby(results["candidate"]).sum()
        frame["n_failed"] = failed.reindex(frame.index, fill_value=0).astype(int)
    key = f"rank_test_{rank_metric}"
    if key in frame:
        frame = frame.sort_values(key, kind="stable")
    return frame
