"""Reading a search's two frames (``results``: one row per fit; ``summary``: one row per
candidate) as the plots, the report and the terminal table show them: the varied hyperparameters
and their value labels, the metrics, each fit's status, fits per node, the candidates ranked.

Hyperparameter values are shown as strings: ``None`` (and a missing value, NaN, which is what
pandas makes of ``None`` in a numeric column) as ``"None"``, floats in ``%g`` form, strings as
they are, anything else (tuples, estimators) by its ``repr``, shortened for the axes. A
hyperparameter that a candidate does not set at all (a list of grids where it belongs to
another sub-grid, e.g. ``degree`` outside the ``poly`` kernel's) is ``"(not set)"``, read from
the frame's ``params`` column, so it is never confused with a real ``None``.
"""
from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np
import pandas as pd

_LABEL_MAX = 32
#: The label of a hyperparameter a candidate does not set (it belongs to another sub-grid).
NOT_SET = "(not set)"


def is_missing(value: Any) -> bool:
    """Whether ``value`` is missing: ``None``, ``pd.NA``, ``pd.NaT`` or a float NaN."""
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    return isinstance(value, float) and math.isnan(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def value_label(value: Any, max_len: int | None = _LABEL_MAX) -> str:
    """How a hyperparameter value is shown on axes and in tables (shortened to ``max_len``
    characters with an ellipsis; ``None`` keeps it whole)."""
    if is_missing(value):
        return "None"
    if isinstance(value, str):
        text = value
    elif isinstance(value, (bool, np.bool_)):
        text = str(bool(value))
    elif isinstance(value, numbers.Integral):
        text = str(int(value))
    elif isinstance(value, numbers.Real):
        text = format(float(value), "g")
    else:
        text = repr(value)
    return text if max_len is None or len(text) <= max_len else text[: max_len - 1] + "…"


def _key(value: Any) -> Any:
    """A hashable stand-in for a value: the value itself when hashable, else its repr."""
    if is_missing(value):
        return ("<missing>",)
    try:
        hash(value)
    except TypeError:
        return ("<repr>", repr(value))
    return value


def param_columns(frame: pd.DataFrame) -> list[str]:
    """The varied hyperparameters: ``param_*`` columns with more than one distinct value.

    Works on the results frame and the summary alike; the ``params`` dict column is not one of
    them. Unhashable values (lists, dicts) are compared by their ``repr``; ``None`` and NaN count as
    one value.
    """
    out = []
    for col in frame.columns:
        if not isinstance(col, str) or not col.startswith("param_"):
            continue
        if len({_key(v) for v in frame[col].tolist()}) > 1:
            out.append(col)
    return out


def param_labels(frame: pd.DataFrame, pcol: str, max_len: int | None = _LABEL_MAX) -> pd.Series:
    """Each row's label for ``pcol``: :func:`value_label`, or :data:`NOT_SET` where the row's
    ``params`` dict (when the frame has one) does not hold the hyperparameter."""
    name = pcol[len("param_"):] if pcol.startswith("param_") else pcol
    labels = frame[pcol].map(lambda v: value_label(v, max_len))
    if "params" in frame.columns:
        unset = frame["params"].map(lambda p: isinstance(p, dict) and name not in p).astype(bool)
        labels = labels.where(~unset, NOT_SET)
    return labels


def ordered_labels(frame: pd.DataFrame, pcol: str) -> list[str]:
    """Distinct labels in a natural order: numbers ascending, then other values by label, None,
    then "(not set)"."""
    seen: dict[str, Any] = {}
    for label, v in zip(param_labels(frame, pcol).tolist(), frame[pcol].tolist()):
        seen.setdefault(label, v)

    def sort_key(item):
        label, v = item
        if label == NOT_SET:
            return (3, 0.0, "")
        if is_missing(v):
            return (2, 0.0, "")
        if _is_number(v):
            return (0, float(v), label)
        return (1, 0.0, label)

    return [label for label, _ in sorted(seen.items(), key=sort_key)]


def short_name(col: str) -> str:
    """A ``param_<name>`` column's hyperparameter name."""
    return col[len("param_"):] if col.startswith("param_") else col


def metric_names(frame: pd.DataFrame) -> list[str]:
    """The metrics of a summary, from its ``mean_test_<metric>`` columns, in column order."""
    return [c[len("mean_test_"):] for c in frame.columns if isinstance(c, str) and c.startswith("mean_test_")]


def score_column(summary: pd.DataFrame, metric: str | None) -> tuple[str, str]:
    """Resolve a metric name against the summary: ``(metric, "mean_test_<metric>")``.

    Accepts ``"accuracy"``, ``"test_accuracy"`` or ``"mean_test_accuracy"``; ``None`` picks the
    first ``mean_test_*`` column. Raises ``KeyError`` naming the metrics present.
    """
    names = metric_names(summary)
    if metric is None:
        if not names:
            raise KeyError("the summary has no mean_test_* column")
        metric = names[0]
    for prefix in ("mean_test_", "test_"):
        if metric.startswith(prefix) and metric[len(prefix):] in names:
            metric = metric[len(prefix):]
    if metric not in names:
        raise KeyError(f"no column mean_test_{metric} in the summary; metrics present: {names}")
    return metric, f"mean_test_{metric}"


def param_influence(summary: pd.DataFrame, metric: str | None = "score") -> pd.Series:
    """How much of the spread of the candidates' mean test score each varied hyperparameter explains.

    For each varied ``param_*`` column this is the one-way ANOVA effect size, eta squared: the
    between-value sum of squares of ``mean_test_<metric>`` divided by its total sum of squares over
    the candidates that scored (0 = the value does not matter, 1 = it alone decides the score).
    Returned sorted, most influential first, indexed by the column names. When the scores do not
    vary at all (every candidate scored the same, or fewer than two scored) nothing explains any
    spread: every value is NaN ("n/a"), never a ratio of rounding errors.
    """
    _, col = score_column(summary, metric)
    scores = pd.to_numeric(summary[col], errors="coerce")
    ok = scores.notna()
    y = scores[ok].to_numpy(dtype=float)
    total = float(((y - y.mean()) ** 2).sum()) if len(y) else 0.0
    # Equal scores leave only floating-point residue in ``total`` (0.9 summed in another order):
    # below this the spread is not real and the ratio would be noise (often 1.00).
    if len(y) < 2 or float(np.ptp(y)) <= 1e-12 * max(1.0, float(np.abs(y).max())):
        total = 0.0
    out = {}
    for pcol in param_columns(summary):
        labels = param_labels(summary, pcol)[ok]
        groups = pd.Series(y, index=labels.index).groupby(labels.to_numpy())
        between = float((groups.count() * (groups.mean() - y.mean()) ** 2).sum()) if len(y) else 0.0
        out[pcol] = between / total if total > 0 else math.nan
    return pd.Series(out, dtype=float, name="eta_squared").sort_values(ascending=False, kind="stable")


def fit_status(results: pd.DataFrame) -> pd.Series:
    """Each fit's status: ``"failed"`` (error text or a system failure), else ``"from cache"`` when
    it was read from the store, else ``"succeeded"``."""
    failed = pd.Series(False, index=results.index)
    if "error" in results.columns:
        failed |= results["error"].map(lambda v: not is_missing(v) and str(v) != "").astype(bool)
    if "system_failure" in results.columns:
        failed |= results["system_failure"].fillna(False).astype(bool)
    cached = pd.Series(False, index=results.index)
    if "cached" in results.columns:
        cached |= results["cached"].fillna(False).astype(bool)
    status = pd.Series("succeeded", index=results.index, dtype=object)
    status[cached] = "from cache"
    status[failed] = "failed"
    return status


def node_names(results: pd.DataFrame) -> np.ndarray:
    """Each fit's node as text (``"unknown"`` where it is missing)."""
    return results["node"].map(lambda v: "unknown" if is_missing(v) else str(v)).to_numpy()


def node_counts(results: pd.DataFrame) -> pd.DataFrame:
    """Fits per node, busiest first: ``fits``, ``failed``, ``cached`` (read from the store, failed
    or not), ``fit_time`` (sum, s) and, with a ``pid`` column, ``workers`` (distinct pids)."""
    if "node" not in results.columns:
        raise ValueError("the results frame has no node column")
    nodes = node_names(results)
    cached = results["cached"].fillna(False).astype(bool) if "cached" in results.columns else False
    fit_time = results["fit_time"] if "fit_time" in results.columns else np.nan
    frame = pd.DataFrame({
        "failed": (fit_status(results) == "failed").to_numpy(),
        "cached": pd.Series(cached, index=results.index).to_numpy(),
        "fit_time": pd.to_numeric(pd.Series(fit_time, index=results.index), errors="coerce").to_numpy(),
    }, index=pd.Index(nodes, name="node"))
    grouped = frame.groupby(level="node", sort=False)
    out = pd.DataFrame({
        "fits": grouped.size(),
        "failed": grouped["failed"].sum().astype(int),
        "cached": grouped["cached"].sum().astype(int),
        "fit_time": grouped["fit_time"].sum(min_count=1),
    })
    if "pid" in results.columns:
        out["workers"] = pd.Series(results["pid"].to_numpy(), index=frame.index).groupby(level="node").nunique()
    return out.sort_values("fits", ascending=False, kind="stable")


def primary_metric(summary: pd.DataFrame, best: dict | None, metric: str | None = None) -> str:
    """The metric the report ranks by: ``metric``, else ``best["metric"]``, else the first present."""
    names = metric_names(summary)
    for candidate in (metric, (best or {}).get("metric")):
        if candidate is not None:
            try:
                return score_column(summary, candidate)[0]
            except KeyError:
                continue
    return score_column(summary, names[0] if names else None)[0]


def best_first(summary: pd.DataFrame, metric: str) -> pd.DataFrame:
    """The summary's candidates ordered by ``rank_test_<metric>`` (by the mean score without one)."""
    rank_col = f"rank_test_{metric}"
    key = rank_col if rank_col in summary.columns else f"mean_test_{metric}"
    order = pd.to_numeric(summary[key], errors="coerce")
    if key != rank_col:
        order = -order
    return summary.iloc[np.argsort(order.fillna(np.inf).to_numpy(), kind="stable")]


def fixed_params(summary: pd.DataFrame) -> dict[str, Any]:
    """The hyperparameters every candidate sets to the same value: ``{name: value}``."""
    varied = set(param_columns(summary))
    return {c[len("param_"):]: summary[c].iloc[0] for c in summary.columns
            if isinstance(c, str) and c.startswith("param_") and c not in varied and len(summary)}


def common_step(names: list[str]) -> str:
    """The pipeline step every name belongs to (``"model__"`` for ``model__C``, ``model__gamma``), or ``""``."""
    steps = {n.split("__", 1)[0] + "__" for n in names if "__" in n}
    return steps.pop() if len(steps) == 1 and all("__" in n for n in names) else ""
