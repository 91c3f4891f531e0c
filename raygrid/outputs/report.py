"""Saved outputs of a search and its self-contained HTML report.

Plain functions over the search's two DataFrames (``results``: one row per fit; ``summary``: one
row per candidate, best first) and its ``best`` dict:

- :func:`write_outputs` writes ``results.parquet``, ``results.csv``, ``summary.csv``,
  ``best.json``, the PNG plots and ``report.html`` into a directory, all or nothing;
- :func:`load_outputs` reads them back (``raygrid report DIR`` / ``raygrid show DIR``);
- :func:`write_report` writes ``report.html`` alone: one file, plots embedded as ``data:`` URIs,
  CSS inline, no external URL, every piece of text escaped;
- :func:`rich_table` is the top candidates as a ``rich`` table for the terminal.

Hyperparameter values can be anything (strings, numbers, ``None``, tuples, estimators). On disk
the ``params`` column of both CSVs and the parquet file, and ``best.json``, hold JSON written by
:func:`to_jsonable`, which keeps tuples, non-string dict keys and non-finite floats (tagged as
``{"__tuple__": [...]}`` etc.); objects JSON cannot hold are kept as ``{"__repr__": "..."}`` and
come back as that text. The ``param_*`` columns are written readable (mixed or non-scalar columns
as text) and, on loading, rebuilt from the decoded ``params``, so they round-trip exactly.
"""
from __future__ import annotations

import base64
import html
import json
import math
import os
import re
import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from raygrid.outputs import plots
from raygrid.engine.failures import failure_key
from raygrid.outputs.plots import fit_status, metric_names, node_counts, param_columns, score_column, value_label

__all__ = [
    "write_outputs",
    "load_outputs",
    "write_report",
    "rich_table",
    "terminal_text",
    "to_jsonable",
    "from_jsonable",
    "OUTPUT_FILES",
]

RESULTS_PARQUET = "results.parquet"
RESULTS_CSV = "results.csv"
SUMMARY_CSV = "summary.csv"
BEST_JSON = "best.json"
REPORT_HTML = "report.html"
#: The data files :func:`write_outputs` always writes (plots and the report come on top).
OUTPUT_FILES = (RESULTS_PARQUET, RESULTS_CSV, SUMMARY_CSV, BEST_JSON)

_PLOT_CAPTIONS = {
    "violin_per_param": "Distribution of the candidates' mean test {metric} for each value of each "
                        "varied hyperparameter (one point per candidate; η² = share of the score's "
                        "variance the hyperparameter explains).",
    "heatmap_top_two": "Mean test {metric} over the two most influential hyperparameters that are "
                       "set together, averaged over the others.",
    "score_vs_fit_time": "Mean test {metric} against mean fit time per fold; the star is the best candidate.",
    "fits_per_node": "Number of fits each node ran.",
}


# ----------------------------------------------------------------------------- JSON codec
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


def _dumps(value: Any, **kwargs) -> str:
    return json.dumps(to_jsonable(value), allow_nan=False, ensure_ascii=False, **kwargs)


def _loads(text: Any) -> Any:
    if not isinstance(text, str):
        return {} if text is None or (isinstance(text, float) and math.isnan(text)) else text
    return from_jsonable(json.loads(text))


# ----------------------------------------------------------------------------- files
def _storable(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy that parquet and CSV can hold: ``params`` as JSON; object columns that pyarrow cannot
    type as one scalar type (mixed types, tuples, objects) as text."""
    import pyarrow as pa

    out = frame.copy()
    if "params" in out.columns:
        out["params"] = out["params"].map(_dumps)
    for col in out.columns:
        if col == "params" or out[col].dtype != object:
            continue
        try:
            kind = pa.array(out[col], from_pandas=True).type
            scalar = (pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind)
                      or pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_null(kind))
        except (pa.ArrowException, TypeError, ValueError, OverflowError):
            scalar = False
        if not scalar:
            out[col] = out[col].map(lambda v: None if plots.is_missing(v) else v if isinstance(v, str) else repr(v))
    return out


def _restore(frame: pd.DataFrame) -> pd.DataFrame:
    """Decode ``params`` and rebuild every ``param_<name>`` column from it."""
    if "params" not in frame.columns:
        return frame
    frame["params"] = [p if isinstance(p, dict) else {} for p in frame["params"].map(_loads)]
    for col in frame.columns:
        if isinstance(col, str) and col.startswith("param_"):
            name = col[len("param_"):]
            frame[col] = pd.Series([p.get(name) for p in frame["params"]], index=frame.index)
    return frame


def write_outputs(results: pd.DataFrame, summary: pd.DataFrame, best: dict, out_dir, *,
                  title: str = "raygrid search", top: int = 20) -> dict[str, Path]:
    """Write a search's results into ``out_dir``; return ``{file name: path}``.

    Files: ``results.parquet`` and ``results.csv`` (one row per fit), ``summary.csv`` (one row per
    candidate, best first, indexed by ``candidate``), ``best.json``, the PNG plots that apply (see
    :func:`raygrid.outputs.plots.save_all`; skipped without matplotlib) and ``report.html``.

    Everything is first written into a temporary directory inside ``out_dir`` and then moved into
    place, so a failure while writing leaves ``out_dir`` as it was. Plots an earlier run left there
    that this run does not draw are removed, so the directory always describes one search.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".raygrid-partial-", dir=out_dir))
    try:
        stored = _storable(results)
        stored.to_parquet(tmp / RESULTS_PARQUET, index=False)
        stored.to_csv(tmp / RESULTS_CSV, index=False)
        _storable(summary).to_csv(tmp / SUMMARY_CSV, index=True)
        (tmp / BEST_JSON).write_text(_dumps(best, indent=2) + "\n", encoding="utf-8")
        write_report(results, summary, best, tmp, title=title, top=top)
        names = [n for n in OUTPUT_FILES] + sorted(n for n in os.listdir(tmp) if n.endswith(".png")) + [REPORT_HTML]
        for name in plots.PLOT_NAMES:
            if f"{name}.png" not in names:
                (out_dir / f"{name}.png").unlink(missing_ok=True)
        for name in names:  # the report last: it describes the files beside it
            os.replace(tmp / name, out_dir / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {name: out_dir / name for name in names}


def load_outputs(out_dir) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Read back what :func:`write_outputs` wrote: ``(results, summary, best)``.

    ``results`` comes from ``results.parquet`` (``results.csv`` if the parquet file is missing),
    ``summary`` from ``summary.csv`` (indexed by ``candidate``, in its saved order); ``params`` and
    the ``param_*`` columns are decoded back to Python values.
    """
    out_dir = Path(out_dir)
    if not (out_dir / BEST_JSON).exists():
        raise FileNotFoundError(f"{out_dir} holds no raygrid results ({BEST_JSON} is missing)")
    if (out_dir / RESULTS_PARQUET).exists():
        results = pd.read_parquet(out_dir / RESULTS_PARQUET)
    else:
        results = pd.read_csv(out_dir / RESULTS_CSV)
    summary = pd.read_csv(out_dir / SUMMARY_CSV, index_col="candidate")
    best = from_jsonable(json.loads((out_dir / BEST_JSON).read_text(encoding="utf-8")))
    return _restore(results), _restore(summary), best


# ----------------------------------------------------------------------------- formatting
def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _num(value: Any) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return math.nan
    return out


def _fmt_score(mean: Any, std: Any = None) -> str:
    mean = _num(mean)
    if math.isnan(mean):
        return "—"
    std = _num(std)
    return f"{mean:.4f}" if math.isnan(std) else f"{mean:.4f} ± {std:.4f}"


def _fmt_seconds(value: Any) -> str:
    seconds = _num(value)
    if math.isnan(seconds):
        return "—"
    if seconds < 60:
        return f"{seconds:.3g} s"
    if seconds < 3600:
        minutes, rest = divmod(round(seconds), 60)
        return f"{minutes} min {rest} s"
    hours, rest = divmod(round(seconds), 3600)
    return f"{hours} h {rest // 60} min"


def _primary_metric(summary: pd.DataFrame, best: dict | None, metric: str | None = None) -> str:
    names = metric_names(summary)
    for candidate in (metric, (best or {}).get("metric")):
        if candidate is not None:
            try:
                return score_column(summary, candidate)[0]
            except KeyError:
                continue
    return score_column(summary, names[0] if names else None)[0]


def _ranked(summary: pd.DataFrame, metric: str) -> pd.DataFrame:
    rank_col = f"rank_test_{metric}"
    key = rank_col if rank_col in summary.columns else f"mean_test_{metric}"
    order = pd.to_numeric(summary[key], errors="coerce")
    if key != rank_col:
        order = -order
    return summary.iloc[np.argsort(order.fillna(np.inf).to_numpy(), kind="stable")]


def _rank(row: pd.Series, metric: str, position: int) -> str:
    rank = _num(row.get(f"rank_test_{metric}"))
    return str(int(rank)) if not math.isnan(rank) else str(position)


def _fixed_params(summary: pd.DataFrame) -> dict[str, Any]:
    varied = set(param_columns(summary))
    return {c[len("param_"):]: summary[c].iloc[0] for c in summary.columns
            if isinstance(c, str) and c.startswith("param_") and c not in varied and len(summary)}


# ----------------------------------------------------------------------------- HTML
_CSS = """
:root { --fg: #1d2330; --muted: #5b6476; --line: #dde1e8; --accent: #2b6cb0; --bad: #c0392b; --good: #e8f4ea; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 -apple-system, "Segoe UI", Roboto, "DejaVu Sans", Helvetica, Arial, sans-serif;
       color: var(--fg); background: #f6f7f9; }
main { max-width: 1180px; margin: 0 auto; padding: 24px 28px 48px; background: #fff; }
h1 { margin: 0 0 4px; font-size: 26px; }
h2 { margin: 32px 0 10px; padding-bottom: 4px; font-size: 19px; border-bottom: 2px solid var(--line); }
.sub, .note, figcaption { color: var(--muted); }
nav { margin: 10px 0 0; font-size: 13px; }
nav a { color: var(--accent); text-decoration: none; margin-right: 14px; }
.cards { display: flex; flex-wrap: wrap; gap: 12px; margin: 8px 0 16px; }
.card { border: 1px solid var(--line); border-radius: 8px; padding: 10px 16px; min-width: 150px; }
.card .v { font-size: 22px; font-weight: 600; }
.card .k { color: var(--muted); font-size: 12px; text-transform: uppercase; letter-spacing: .04em; }
.grid2 { display: grid; grid-template-columns: repeat(auto-fit, minmax(320px, 1fr)); gap: 8px 28px; }
table { border-collapse: collapse; margin: 6px 0 10px; font-variant-numeric: tabular-nums; }
th, td { padding: 4px 10px; border-bottom: 1px solid var(--line); text-align: left; vertical-align: top; }
thead th { background: #eef1f5; font-weight: 600; white-space: nowrap; }
tbody tr:nth-child(even) { background: #fafbfc; }
tr.best td { background: var(--good); font-weight: 600; }
td.num, th.num { text-align: right; white-space: nowrap; }
td.bad { color: var(--bad); font-weight: 600; }
p.warn { color: var(--bad); font-weight: 600; }
table.kv th { font-weight: 500; color: var(--muted); white-space: nowrap; }
table.ranked td { white-space: nowrap; }
table.ranked thead th { white-space: normal; vertical-align: bottom; }
.wide { overflow-x: auto; }
code, pre { font-family: "DejaVu Sans Mono", Menlo, Consolas, monospace; font-size: 12px; }
pre { background: #f3f4f6; padding: 8px; overflow-x: auto; white-space: pre-wrap; max-height: 320px; }
figure { margin: 18px 0 26px; }
figure img { display: block; max-width: 100%; height: auto; border: 1px solid var(--line); }
"""


def _kv_table(pairs, cls="kv") -> str:
    rows = "".join(f'<tr><th scope="row">{_e(k)}</th><td>{_e(v)}</td></tr>' for k, v in pairs)
    return f'<table class="{cls}"><tbody>{rows}</tbody></table>'


def _best_section(best: dict, summary: pd.DataFrame, metric: str, step: str = "") -> str:
    mean, std = best.get("mean_score"), best.get("std_score")
    if mean is None and len(summary):
        top_row = _ranked(summary, metric).iloc[0]
        mean, std = top_row.get(f"mean_test_{metric}"), top_row.get(f"std_test_{metric}")
    seed = best.get("seed")
    cards = [
        (f"mean test {best.get('metric') or metric}", _fmt_score(mean, std)),
        ("candidate", best.get("candidate", "—")),
        ("refit time", _fmt_seconds(best.get("refit_time"))),
        ("seed", "—" if seed is None or (isinstance(seed, float) and math.isnan(seed)) else seed),
    ]
    cards_html = "".join(f'<div class="card"><div class="k">{_e(k)}</div><div class="v">{_e(v)}</div></div>'
                         for k, v in cards)
    params = best.get("params") or {}
    params_html = _kv_table([(k, value_label(v, None)) for k, v in params.items()]) if params else \
        '<p class="note">no hyperparameters</p>'
    versions = best.get("versions") or {}
    versions_html = _kv_table(list(versions.items())) if versions else '<p class="note">not recorded</p>'
    step_html = (f'<p class="note">Hyperparameters of pipeline step <code>{_e(step[:-2])}</code>: '
                 f'their names in scikit-learn carry the prefix <code>{_e(step)}</code>.</p>') if step else ""
    saved = best.get("best_model") or {}
    model_html = ('<p class="note">Best model, refitted on all the data: '
                  + ", ".join(f"<code>{_e(name)}</code>" for name in saved.values()) + "</p>") if saved else ""
    return (f'<section id="best"><h2>Best configuration</h2><div class="cards">{cards_html}</div>'
            f'{step_html}{model_html}<div class="grid2"><div><h3>Hyperparameters</h3>{params_html}</div>'
            f'<div><h3>Versions</h3>{versions_html}</div></div></section>')


def _counts_section(results: pd.DataFrame, summary: pd.DataFrame, best: dict) -> str:
    status = fit_status(results) if len(results) else pd.Series(dtype=object)
    times = pd.to_numeric(results.get("fit_time", pd.Series(dtype=float)), errors="coerce")
    busy = times.sum() + pd.to_numeric(results.get("score_time", pd.Series(dtype=float)), errors="coerce").sum()
    wall = _num(best.get("wall_time"))
    pairs = [
        ("candidates", best.get("n_candidates", len(summary))),
        ("fits", best.get("n_fits", len(results))),
        ("failed fits", int((status == "failed").sum())),
    ]
    if "system_failure" in results.columns:
        pairs.append(("system failures", int(results["system_failure"].fillna(False).astype(bool).sum())))
    if "cached" in results.columns:
        pairs.append(("cached fits", int(results["cached"].fillna(False).astype(bool).sum())))
    pairs.append(("wall time", _fmt_seconds(wall)))
    pairs.append(("fit time, all fits", _fmt_seconds(times.sum(min_count=1))))
    if not math.isnan(wall) and wall > 0 and busy > 0:
        pairs.append(("fits in parallel (busy ÷ wall time)", f"{busy / wall:.2f}"))
    if "node" in results.columns:
        pairs.append(("nodes", results["node"].nunique()))
    return f'<section id="counts"><h2>Run</h2>{_kv_table(pairs)}</section>'


def _top_section(summary: pd.DataFrame, metric: str, top: int) -> str:
    ranked = _ranked(summary, metric).head(top)
    varied = param_columns(summary)
    metrics = [metric] + [m for m in metric_names(summary) if m != metric]
    head = ["rank", "candidate"] + [_short(c) for c in varied] + ([] if varied else ["params"])
    head += [f"test {m}\nmean ± std" for m in metrics] + ["fit time\nmean", "failed\nfolds"]
    num_from = 2 + max(len(varied), 1)
    thead = "".join(f'<th{" class=num" if i >= num_from or i < 2 else ""}>{_e(h).replace(chr(10), "<br>")}</th>'
                    for i, h in enumerate(head))
    body = []
    full = {c: plots.param_labels(ranked, c, None) for c in varied}  # "(not set)" is not None
    for position, (cand, row) in enumerate(ranked.iterrows(), start=1):
        cells = [f'<td class="num">{_e(_rank(row, metric, position))}</td>', f'<td class="num">{_e(cand)}</td>']
        if varied:
            cells += [f"<td>{_e(full[c][cand])}</td>" for c in varied]
        else:
            cells.append(f"<td>{_e(value_label(row.get('params'), None))}</td>")
        cells += [f'<td class="num">{_e(_fmt_score(row.get(f"mean_test_{m}"), row.get(f"std_test_{m}")))}</td>'
                  for m in metrics]
        cells.append(f'<td class="num">{_e(_fmt_seconds(row.get("mean_fit_time")))}</td>')
        failed = _num(row.get("n_failed"))
        failed_text = "—" if math.isnan(failed) else str(int(failed))
        cells.append(f'<td class="num{" bad" if failed > 0 else ""}">{_e(failed_text)}</td>')
        body.append(f'<tr{" class=best" if position == 1 else ""}>{"".join(cells)}</tr>')
    fixed = _fixed_params(summary)
    fixed_html = ("<p class=note>Same for every candidate: "
                  + ", ".join(f"<code>{_e(k)}={_e(value_label(v, None))}</code>" for k, v in fixed.items())
                  + "</p>") if fixed else ""
    return (f'<section id="top"><h2>Top {len(ranked)} of {len(summary)} candidates by mean test {_e(metric)}</h2>'
            f'{fixed_html}<div class="wide"><table class="ranked"><thead><tr>{thead}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table></div></section>')


def _short(col: str) -> str:
    return col[len("param_"):] if col.startswith("param_") else col


def _nodes_section(results: pd.DataFrame) -> str:
    if "node" not in results.columns or not len(results):
        return ""
    counts = node_counts(results)
    cols = ["fits", "failed", "cached", "fit_time"] + (["workers"] if "workers" in counts.columns else [])
    titles = {"fit_time": "fit time", "workers": "worker processes"}
    thead = "<th>node</th>" + "".join(f"<th class=num>{_e(titles.get(c, c))}</th>" for c in cols)
    rows = []
    for node, row in counts.iterrows():
        cells = [f"<td><code>{_e(node)}</code></td>"]
        for c in cols:
            text = _fmt_seconds(row[c]) if c == "fit_time" else str(int(row[c]))
            cells.append(f'<td class="num">{_e(text)}</td>')
        rows.append(f"<tr>{''.join(cells)}</tr>")
    return (f'<section id="nodes"><h2>Fits per node</h2><div class="wide"><table><thead><tr>{thead}</tr>'
            f'</thead><tbody>{"".join(rows)}</tbody></table></div></section>')


def _last_line(text: str) -> str:
    lines = [line.strip() for line in str(text).strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _failures_section(results: pd.DataFrame) -> str:
    if not len(results):
        return ""
    failed = results[(fit_status(results) == "failed").to_numpy()]
    if not len(failed):
        return ""
    errors = failed["error"] if "error" in failed.columns else pd.Series(None, index=failed.index)
    system = failed["system_failure"].fillna(False).astype(bool) if "system_failure" in failed.columns \
        else pd.Series(False, index=failed.index)
    groups: dict[str, dict] = {}
    for idx in failed.index:
        text = errors[idx]
        text = "" if plots.is_missing(text) else str(text)
        shown = _last_line(text) or "(no error text)"
        # One group per failure, however a worker ordered the sets in its message (failures.py).
        group = groups.setdefault(failure_key(shown), {"count": 0, "candidates": [], "system": False,
                                                       "traceback": text, "shown": shown})
        group["count"] += 1
        group["system"] |= bool(system[idx])
        cand = failed.at[idx, "candidate"] if "candidate" in failed.columns else None
        if cand is not None and cand not in group["candidates"]:
            group["candidates"].append(cand)
    rows = []
    for g in sorted(groups.values(), key=lambda g: -g["count"]):
        key = g["shown"]
        cands = ", ".join(str(c) for c in g["candidates"][:12]) + (" …" if len(g["candidates"]) > 12 else "")
        detail = (f"<details><summary><code>{_e(key)}</code></summary><pre>{_e(g['traceback'])}</pre></details>"
                  if g["traceback"] else f"<code>{_e(key)}</code>")
        rows.append(f'<tr><td class="num">{g["count"]}</td><td>{"system" if g["system"] else "fit"}</td>'
                    f"<td>{_e(cands)}</td><td>{detail}</td></tr>")
    return ('<section id="failures"><h2>Failed fits</h2><div class="wide"><table><thead><tr>'
            '<th class=num>fits</th><th>kind</th><th>candidates</th><th>error</th></tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table></div></section>')


def _plots_section(images: dict[str, Path], note: str | None, metric: str = "score") -> str:
    figures = []
    for name, path in images.items():
        data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
        caption = _PLOT_CAPTIONS.get(name, name).format(metric=metric)
        figures.append(f'<figure id="plot-{_e(name)}"><img src="data:image/png;base64,{data}" '
                       f'alt="{_e(name)}"><figcaption>{_e(caption)}</figcaption></figure>')
    if note:
        figures.append(f'<p class="note">{_e(note)}</p>')
    if not figures:
        return ""
    return f'<section id="plots"><h2>Plots</h2>{"".join(figures)}</section>'


def _display(results: pd.DataFrame, summary: pd.DataFrame, best: dict):
    """The frames and ``best`` as the report shows them: one name for the metric (the scorer's,
    e.g. ``accuracy``, instead of ``score``), a pipeline step prefix shared by every hyperparameter
    (``model__``) dropped (said once on the page), and node ids replaced by host names / IPs.

    Returns ``(results, summary, best, step)``; the saved files keep scikit-learn's names."""
    results, summary, best = results.copy(), summary.copy(), dict(best)
    scoring = best.get("scoring")
    if best.get("metric") == "score" and isinstance(scoring, str) and f"mean_test_{scoring}" not in summary.columns:
        rename = {c: c[:-len("score")] + scoring for c in list(summary.columns) + list(results.columns)
                  if isinstance(c, str) and c.endswith("_score")
                  and c.split("_")[0] in ("mean", "std", "rank", "test", "train")
                  and c not in ("mean_score_time", "std_score_time")}
        summary = summary.rename(columns=rename)
        results = results.rename(columns=rename)
        best["metric"] = scoring
        if isinstance(best.get("baseline"), dict):
            best["baseline"] = dict(best["baseline"], metric=scoring)
    names = [c[len("param_"):] for c in summary.columns if isinstance(c, str) and c.startswith("param_")]
    step = _common_step(names) if names else ""
    if step:
        strip = {f"param_{n}": f"param_{n[len(step):]}" for n in names}
        summary = summary.rename(columns=strip)
        results = results.rename(columns=strip)

        def unprefixed(params):
            return {k[len(step):] if k.startswith(step) else k: v for k, v in params.items()} \
                if isinstance(params, dict) else params
        for frame in (summary, results):
            if "params" in frame.columns:
                frame["params"] = frame["params"].map(unprefixed)
        best["params"] = unprefixed(best.get("params") or {})
    nodes = best.get("nodes") or {}
    if nodes and "node" in results.columns:
        results["node"] = results["node"].map(lambda n: nodes.get(n, n))
    return results, summary, best, step


def _data_section(best: dict, metric: str) -> str:
    data = best.get("data") or {}
    pairs = []
    if data.get("name"):
        pairs.append(("data set", data["name"]))
    if data.get("n_samples") is not None:
        shape = f"{data['n_samples']} rows" + (f" × {data['n_features']} features" if data.get("n_features") else "")
        pairs.append(("data", shape))
    if best.get("cv"):
        pairs.append(("cross-validation", best["cv"]))
    pairs.append(("metric", metric))
    baseline = best.get("baseline")
    note = ""
    if isinstance(baseline, dict) and baseline.get("mean_score") is not None:
        pairs.append((f"baseline ({baseline.get('estimator', 'dummy')})",
                      _fmt_score(baseline.get("mean_score"), baseline.get("std_score"))))
        if baseline.get("clearly_beaten") is False:
            note = ('<p class="warn">The best candidate is not clearly above the baseline (by less '
                    "than its standard deviation across folds, or 0.01): the features may carry "
                    "little signal for this model, or the grid misses the region that works.</p>")
    elif isinstance(baseline, dict) and baseline.get("error"):
        pairs.append(("baseline", f"not computed: {baseline['error']}"))
    else:
        pairs.append(("baseline", "not computed (save_search was not given X and y)"))
    return f'<section id="data"><h2>Data and evaluation</h2>{_kv_table(pairs)}{note}</section>'


def write_report(results: pd.DataFrame, summary: pd.DataFrame, best: dict, out_dir, *,
                 title: str = "raygrid search", top: int = 20) -> Path:
    """Write ``<out_dir>/report.html``, one self-contained page, and return its path.

    The page holds the best configuration (hyperparameters, mean ± std test score, refit time,
    seed, library versions), run counts (candidates, fits, failed, cached, wall time), the ``top``
    candidates ranked by the best's metric with every metric's mean ± std, fits per node, the
    distinct errors of failed fits, and the plots of :func:`raygrid.outputs.plots.save_all` (also left as
    PNG files in ``out_dir``), embedded as ``data:image/png;base64`` URIs. CSS is inline and the
    page refers to no external URL. Without matplotlib the page says so and carries no plots.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results, summary, best, step = _display(results, summary, best)
    metric = _primary_metric(summary, best)
    note = None
    try:
        images = plots.save_all(results, summary, metric, out_dir)
    except ImportError as exc:
        images, note = {}, f"No plots: {exc}"
    images = {name: images[name] for name in plots.PLOT_NAMES if name in images}
    if not images and note is None:
        note = ("No plot applies to this search: the score plots need a candidate with a test score "
                "(and a varied hyperparameter or fit times), the node plot a node column.")
    sections = [
        ("best", "best", _best_section(best, summary, metric, step)),
        ("data", "data", _data_section(best, metric)),
        ("counts", "run", _counts_section(results, summary, best)),
        ("top", "top candidates", _top_section(summary, metric, top)),
        ("nodes", "nodes", _nodes_section(results)),
        ("failures", "failures", _failures_section(results)),
        ("plots", "plots", _plots_section(images, note, metric)),
    ]
    # Only sections the page has get a link: no dead anchors.
    nav = "".join(f'<a href="#{anchor}">{_e(text)}</a>' for anchor, text, html_ in sections if html_)
    version = (best.get("versions") or {}).get("raygrid")
    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    sub = f"generated {generated}" + (f" by raygrid {version}" if version else "")
    page = (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body><main>"
        f"<h1>{_e(title)}</h1><p class=\"sub\">{_e(sub)}</p><nav>{nav}</nav>"
        + "".join(html_ for _, _, html_ in sections)
        + "</main></body></html>\n"
    )
    path = out_dir / REPORT_HTML
    partial = out_dir / (REPORT_HTML + ".partial")
    partial.write_text(page, encoding="utf-8")
    os.replace(partial, path)
    return path


# ----------------------------------------------------------------------------- terminal
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def terminal_text(value: Any, style: str = ""):
    """``value`` as a :class:`rich.text.Text` shown exactly as written: never read as rich markup
    (``[bold]``, ``[/]``), control characters (escape sequences, bells) shown as ``\\x1b``-style
    escapes instead of reaching the terminal."""
    from rich.text import Text

    text = _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), str(value))
    return Text(text, style=style)


def _common_step(names: list[str]) -> str:
    """The pipeline step every name belongs to (``"model__"`` for ``model__C``, ``model__gamma``), or ``""``."""
    steps = {n.split("__", 1)[0] + "__" for n in names if "__" in n}
    return steps.pop() if len(steps) == 1 and all("__" in n for n in names) else ""


def rich_table(summary: pd.DataFrame, metric: str | None = "score", top: int = 10,
               label: str | None = None):
    """The ``top`` candidates as a :class:`rich.table.Table`: rank, candidate, the varied
    hyperparameters, mean ± std test score, mean fit time and (when any) failed folds.

    Made to be read in 80 columns: no vertical rules, a pipeline step prefix shared by every
    hyperparameter (``model__``) said once in the caption instead of in every header, long names
    and values folded onto more lines rather than cut, the score never broken.
    ``metric`` absent from the summary (e.g. the default ``"score"`` on a multi-metric search)
    falls back to its first metric; ``label`` names it on screen (e.g. ``accuracy`` for a
    single metric that scikit-learn calls ``score``). Every value is :func:`terminal_text`."""
    from rich import box
    from rich.table import Table

    metric = _primary_metric(summary, None, metric)
    ranked = _ranked(summary, metric).head(top)
    varied = param_columns(summary)
    names = [_short(c) for c in varied]
    step = _common_step(names)
    t = terminal_text
    shown = label or metric
    table = Table(title=t(f"top {len(ranked)} of {len(summary)} candidates by mean test {shown}"),
                  caption=t(f"hyperparameters of pipeline step {step[:-2]!r} ({step}...)") if step else None,
                  box=box.SIMPLE_HEAD, padding=0, show_edge=False,
                  title_justify="left", caption_justify="left")
    table.add_column("rank", justify="right", no_wrap=True)
    table.add_column("cand.", justify="right", no_wrap=True)
    for name in names:
        table.add_column(t(name[len(step):]), overflow="fold")
    if not varied:
        table.add_column("params", overflow="fold")
    table.add_column(t(f"test {shown}"), justify="right", no_wrap=True, min_width=15)
    table.add_column("fit time", justify="right", no_wrap=True)
    labels = {c: plots.param_labels(ranked, c) for c in varied}  # "(not set)" is not None
    any_failed = "n_failed" in ranked.columns and bool((pd.to_numeric(ranked["n_failed"], errors="coerce") > 0).any())
    if any_failed:  # a column of zeros says nothing
        table.add_column("failed", justify="right", no_wrap=True)
    for position, (cand, row) in enumerate(ranked.iterrows(), start=1):
        params = [labels[c][cand] for c in varied] or [value_label(row.get("params"), 60)]
        failed = _num(row.get("n_failed"))
        table.add_row(
            _rank(row, metric, position), t(cand), *(t(p) for p in params),
            _fmt_score(row.get(f"mean_test_{metric}"), row.get(f"std_test_{metric}")),
            _fmt_seconds(row.get("mean_fit_time")),
            *(["—" if math.isnan(failed) else str(int(failed))] if any_failed else []),
            style="bold green" if position == 1 else ("red" if failed > 0 else None),
        )
    return table
