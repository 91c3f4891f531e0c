"""The self-contained HTML report: one page, its sections (sections.py) in order, plots embedded as
``data:`` URIs, CSS inline, no external URL, every piece of text escaped."""
from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from raygrid.outputs import plots
from raygrid.outputs.formatting import escape
from raygrid.outputs.frames import common_step, primary_metric
from raygrid.outputs.sections import (best_section, counts_section, data_section, failures_section,
                                      nodes_section, plots_section, top_section)

REPORT_HTML = "report.html"

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
    step = common_step(names) if names else ""
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
    metric = primary_metric(summary, best)
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
        ("best", "best", best_section(best, summary, metric, step)),
        ("data", "data", data_section(best, metric)),
        ("counts", "run", counts_section(results, summary, best)),
        ("top", "top candidates", top_section(summary, metric, top)),
        ("nodes", "nodes", nodes_section(results)),
        ("failures", "failures", failures_section(results)),
        ("plots", "plots", plots_section(images, note, metric)),
    ]
    # Only sections the page has get a link: no dead anchors.
    nav = "".join(f'<a href="#{anchor}">{escape(text)}</a>' for anchor, text, html_ in sections if html_)
    version = (best.get("versions") or {}).get("raygrid")
    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    sub = f"generated {generated}" + (f" by raygrid {version}" if version else "")
    page = (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<title>{escape(title)}</title><style>{_CSS}</style></head><body><main>"
        f"<h1>{escape(title)}</h1><p class=\"sub\">{escape(sub)}</p><nav>{nav}</nav>"
        + "".join(html_ for _, _, html_ in sections)
        + "</main></body></html>\n"
    )
    path = out_dir / REPORT_HTML
    partial = out_dir / (REPORT_HTML + ".partial")
    partial.write_text(page, encoding="utf-8")
    os.replace(partial, path)
    return path
