"""A search's top candidates in the terminal: a ``rich`` table, every value shown as written."""
from __future__ import annotations

import math
import re
from typing import Any

import pandas as pd

from raygrid.outputs.formatting import as_float, format_score, format_seconds, rank_text
from raygrid.outputs.frames import (best_first, common_step, param_columns, param_labels, primary_metric,
                                    short_name, value_label)

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def terminal_text(value: Any, style: str = ""):
    """``value`` as a :class:`rich.text.Text` shown exactly as written: never read as rich markup
    (``[bold]``, ``[/]``), control characters (escape sequences, bells) shown as ``\\x1b``-style
    escapes instead of reaching the terminal."""
    from rich.text import Text

    text = _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), str(value))
    return Text(text, style=style)


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

    metric = primary_metric(summary, None, metric)
    ranked = best_first(summary, metric).head(top)
    varied = param_columns(summary)
    names = [short_name(c) for c in varied]
    step = common_step(names)
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
    labels = {c: param_labels(ranked, c) for c in varied}  # "(not set)" is not None
    any_failed = "n_failed" in ranked.columns and bool((pd.to_numeric(ranked["n_failed"], errors="coerce") > 0).any())
    if any_failed:  # a column of zeros says nothing
        table.add_column("failed", justify="right", no_wrap=True)
    for position, (cand, row) in enumerate(ranked.iterrows(), start=1):
        params = [labels[c][cand] for c in varied] or [value_label(row.get("params"), 60)]
        failed = as_float(row.get("n_failed"))
        table.add_row(
            rank_text(row, metric, position), t(cand), *(t(p) for p in params),
            format_score(row.get(f"mean_test_{metric}"), row.get(f"std_test_{metric}")),
            format_seconds(row.get("mean_fit_time")),
            *(["—" if math.isnan(failed) else str(int(failed))] if any_failed else []),
            style="bold green" if position == 1 else ("red" if failed > 0 else None),
        )
    return table
