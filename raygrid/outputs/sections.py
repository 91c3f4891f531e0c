"""The sections of the HTML report, each a plain function from the (display) frames and ``best``
to an HTML fragment (``""`` when the section does not apply): best configuration, data and
evaluation, run counts, top candidates, fits per node, failed fits, plots."""
from __future__ import annotations

import base64
import math
from pathlib import Path

import pandas as pd

from raygrid.engine.failures import failure_key
from raygrid.outputs.formatting import as_float, escape, format_score, format_seconds, rank_text, training_lines
from raygrid.outputs.frames import (best_first, fit_status, fixed_params, is_missing, metric_names,
                                    node_counts, param_columns, param_labels, short_name, value_label)

_PLOT_CAPTIONS = {
    "violin_per_param": "Distribution of the candidates' mean test {metric} for each value of each "
                        "varied hyperparameter (one point per candidate; η² = share of the score's "
                        "variance the hyperparameter explains).",
    "heatmap_top_two": "Mean test {metric} over the two most influential hyperparameters that are "
                       "set together, averaged over the others.",
    "score_vs_fit_time": "Mean test {metric} against mean fit time per fold; the star is the best candidate.",
    "fits_per_node": "Number of fits each node ran.",
}


def _kv_table(pairs, cls="kv") -> str:
    """A two-column table of ``(key, value)`` pairs."""
    rows = "".join(f'<tr><th scope="row">{escape(k)}</th><td>{escape(v)}</td></tr>' for k, v in pairs)
    return f'<table class="{cls}"><tbody>{rows}</tbody></table>'


def best_section(best: dict, summary: pd.DataFrame, metric: str, step: str = "") -> str:
    """The best configuration: its score, candidate, refit time, seed, hyperparameters and versions."""
    mean, std = best.get("mean_score"), best.get("std_score")
    if mean is None and len(summary):
        top_row = best_first(summary, metric).iloc[0]
        mean, std = top_row.get(f"mean_test_{metric}"), top_row.get(f"std_test_{metric}")
    seed = best.get("seed")
    cards = [
        (f"mean test {best.get('metric') or metric}", format_score(mean, std)),
        ("candidate", best.get("candidate", "—")),
        ("refit time", format_seconds(best.get("refit_time"))),
        ("seed", "—" if seed is None or (isinstance(seed, float) and math.isnan(seed)) else seed),
    ]
    cards_html = "".join(f'<div class="card"><div class="k">{escape(k)}</div><div class="v">{escape(v)}</div></div>'
                         for k, v in cards)
    params = best.get("params") or {}
    params_html = _kv_table([(k, value_label(v, None)) for k, v in params.items()]) if params else \
        '<p class="note">no hyperparameters</p>'
    versions = {("keras_backend (driver)" if k == "keras_backend" else k): v
                for k, v in (best.get("versions") or {}).items()}
    versions_html = _kv_table(list(versions.items())) if versions else '<p class="note">not recorded</p>'
    step_html = (f'<p class="note">Hyperparameters of pipeline step <code>{escape(step[:-2])}</code>: '
                 f'their names in scikit-learn carry the prefix <code>{escape(step)}</code>.</p>') if step else ""
    saved = best.get("best_model") or {}
    model_html = ('<p class="note">Best model, refitted on all the data: '
                  + ", ".join(f"<code>{escape(name)}</code>" for name in saved.values()) + "</p>") if saved else ""
    return (f'<section id="best"><h2>Best configuration</h2><div class="cards">{cards_html}</div>'
            f'{step_html}{model_html}<div class="grid2"><div><h3>Hyperparameters</h3>{params_html}</div>'
            f'<div><h3>Versions</h3>{versions_html}</div></div></section>')


def counts_section(results: pd.DataFrame, summary: pd.DataFrame, best: dict) -> str:
    """The run in numbers: candidates, fits, failures, cached fits, wall and fit time, nodes."""
    status = fit_status(results) if len(results) else pd.Series(dtype=object)
    times = pd.to_numeric(results.get("fit_time", pd.Series(dtype=float)), errors="coerce")
    busy = times.sum()
    wall = as_float(best.get("wall_time"))
    slots = as_float(best.get("slots"))
    pairs = [
        ("candidates", best.get("n_candidates", len(summary))),
        ("fits", best.get("n_fits", len(results))),
        ("failed fits", int((status == "failed").sum())),
    ]
    if "system_failure" in results.columns:
        pairs.append(("system failures", int(results["system_failure"].fillna(False).astype(bool).sum())))
    if "cached" in results.columns:
        pairs.append(("cached fits", int(results["cached"].fillna(False).astype(bool).sum())))
    pairs.append(("wall time", format_seconds(wall)))
    pairs.append(("fit time, all fits", format_seconds(times.sum(min_count=1))))
    if not math.isnan(wall) and wall > 0 and busy > 0:
        # Fit-seconds over wall time; never more than the fits that could run at once (fit times
        # are measured inside the fits, so overlaps with the search's own work can exceed it).
        parallel = busy / wall if math.isnan(slots) else min(busy / wall, slots)
        label = "fits in parallel (fit time ÷ wall time" + ("" if math.isnan(slots) else f", at most {slots:g}") + ")"
        pairs.append((label, f"{parallel:.2f}"))
    if "node" in results.columns:
        pairs.append(("nodes", results["node"].nunique()))
    pairs += training_lines(best.get("training"))
    return f'<section id="counts"><h2>Run</h2>{_kv_table(pairs)}</section>'


def top_section(summary: pd.DataFrame, metric: str, top: int) -> str:
    """The ``top`` candidates ranked by ``metric``, every metric's mean ± std, fit time, failed folds."""
    ranked = best_first(summary, metric).head(top)
    varied = param_columns(summary)
    metrics = [metric] + [m for m in metric_names(summary) if m != metric]
    head = ["rank", "candidate"] + [short_name(c) for c in varied] + ([] if varied else ["params"])
    head += [f"test {m}\nmean ± std" for m in metrics] + ["fit time\nmean", "failed\nfolds"]
    num_from = 2 + max(len(varied), 1)
    thead = "".join(f'<th{" class=num" if i >= num_from or i < 2 else ""}>{escape(h).replace(chr(10), "<br>")}</th>'
                    for i, h in enumerate(head))
    body = []
    full = {c: param_labels(ranked, c, None) for c in varied}  # "(not set)" is not None
    for position, (cand, row) in enumerate(ranked.iterrows(), start=1):
        cells = [f'<td class="num">{escape(rank_text(row, metric, position))}</td>', f'<td class="num">{escape(cand)}</td>']
        if varied:
            cells += [f"<td>{escape(full[c][cand])}</td>" for c in varied]
        else:
            cells.append(f"<td>{escape(value_label(row.get('params'), None))}</td>")
        cells += [f'<td class="num">{escape(format_score(row.get(f"mean_test_{m}"), row.get(f"std_test_{m}")))}</td>'
                  for m in metrics]
        cells.append(f'<td class="num">{escape(format_seconds(row.get("mean_fit_time")))}</td>')
        failed = as_float(row.get("n_failed"))
        failed_text = "—" if math.isnan(failed) else str(int(failed))
        cells.append(f'<td class="num{" bad" if failed > 0 else ""}">{escape(failed_text)}</td>')
        body.append(f'<tr{" class=best" if position == 1 else ""}>{"".join(cells)}</tr>')
    fixed = fixed_params(summary)
    fixed_html = ("<p class=note>Same for every candidate: "
                  + ", ".join(f"<code>{escape(k)}={escape(value_label(v, None))}</code>" for k, v in fixed.items())
                  + "</p>") if fixed else ""
    return (f'<section id="top"><h2>Top {len(ranked)} of {len(summary)} candidates by mean test {escape(metric)}</h2>'
            f'{fixed_html}<div class="wide"><table class="ranked"><thead><tr>{thead}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table></div></section>')


def nodes_section(results: pd.DataFrame) -> str:
    """Fits, failures, cached fits, fit time and worker processes per node."""
    if "node" not in results.columns or not len(results):
        return ""
    counts = node_counts(results)
    cols = ["fits", "failed", "cached", "fit_time"] + (["workers"] if "workers" in counts.columns else [])
    titles = {"fit_time": "fit time", "workers": "worker processes"}
    thead = "<th>node</th>" + "".join(f"<th class=num>{escape(titles.get(c, c))}</th>" for c in cols)
    rows = []
    for node, row in counts.iterrows():
        cells = [f"<td><code>{escape(node)}</code></td>"]
        for c in cols:
            text = format_seconds(row[c]) if c == "fit_time" else str(int(row[c]))
            cells.append(f'<td class="num">{escape(text)}</td>')
        rows.append(f"<tr>{''.join(cells)}</tr>")
    return (f'<section id="nodes"><h2>Fits per node</h2><div class="wide"><table><thead><tr>{thead}</tr>'
            f'</thead><tbody>{"".join(rows)}</tbody></table></div></section>')


def _last_line(text: str) -> str:
    lines = [line.strip() for line in str(text).strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def failures_section(results: pd.DataFrame) -> str:
    """The distinct errors of failed fits, most frequent first, each with its traceback."""
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
        text = "" if is_missing(text) else str(text)
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
        detail = (f"<details><summary><code>{escape(key)}</code></summary><pre>{escape(g['traceback'])}</pre></details>"
                  if g["traceback"] else f"<code>{escape(key)}</code>")
        rows.append(f'<tr><td class="num">{g["count"]}</td><td>{"system" if g["system"] else "fit"}</td>'
                    f"<td>{escape(cands)}</td><td>{detail}</td></tr>")
    return ('<section id="failures"><h2>Failed fits</h2><div class="wide"><table><thead><tr>'
            '<th class=num>fits</th><th>kind</th><th>candidates</th><th>error</th></tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table></div></section>')


def plots_section(images: dict[str, Path], note: str | None, metric: str = "score") -> str:
    """The plots embedded as ``data:`` URIs with their captions, or ``note`` saying why there are none."""
    figures = []
    for name, path in images.items():
        data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
        caption = _PLOT_CAPTIONS.get(name, name).format(metric=metric)
        figures.append(f'<figure id="plot-{escape(name)}"><img src="data:image/png;base64,{data}" '
                       f'alt="{escape(name)}"><figcaption>{escape(caption)}</figcaption></figure>')
    if note:
        figures.append(f'<p class="note">{escape(note)}</p>')
    if not figures:
        return ""
    return f'<section id="plots"><h2>Plots</h2>{"".join(figures)}</section>'


def data_section(best: dict, metric: str) -> str:
    """The data, the cross-validation, the metric and the baseline the best candidate is measured against."""
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
                      format_score(baseline.get("mean_score"), baseline.get("std_score"))))
        if baseline.get("clearly_beaten") is False:
            note = ('<p class="warn">The best candidate is not clearly above the baseline (by less '
                    "than its standard deviation across folds, or 0.01): the features may carry "
                    "little signal for this model, or the grid misses the region that works.</p>")
    elif isinstance(baseline, dict) and baseline.get("error"):
        pairs.append(("baseline", f"not computed: {baseline['error']}"))
    else:
        pairs.append(("baseline", "not computed (save_search was not given X and y)"))
    return f'<section id="data"><h2>Data and evaluation</h2>{_kv_table(pairs)}{note}</section>'
