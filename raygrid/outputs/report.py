"""Saved outputs of a search and its self-contained HTML report.

Plain functions over the search's two DataFrames (``results``: one row per fit; ``summary``: one
row per candidate, best first) and its ``best`` dict:

- :func:`write_outputs` writes ``results.parquet``, ``results.csv``, ``summary.csv``,
  ``best.json``, the PNG plots and ``report.html`` into a directory, all or nothing;
- :func:`load_outputs` reads them back (``raygrid report DIR`` / ``raygrid show DIR``);
- :func:`write_report` (page.py) writes ``report.html`` alone: one file, plots embedded as
  ``data:`` URIs, CSS inline, no external URL, every piece of text escaped;
- :func:`rich_table` (terminal.py) is the top candidates as a ``rich`` table for the terminal.

Hyperparameter values can be anything (strings, numbers, ``None``, tuples, estimators). On disk
the ``params`` column of both CSVs and the parquet file, and ``best.json``, hold JSON written by
:func:`to_jsonable` (codec.py), which keeps tuples, non-string dict keys and non-finite floats (tagged as
``{"__tuple__": [...]}`` etc.); objects JSON cannot hold are kept as ``{"__repr__": "..."}`` and
come back as that text. The ``param_*`` columns are written readable (mixed or non-scalar columns
as text) and, on loading, rebuilt from the decoded ``params``, so they round-trip exactly.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import pandas as pd

from raygrid.outputs import plots
from raygrid.outputs.codec import dumps, from_jsonable, loads, to_jsonable
from raygrid.outputs.frames import is_missing
from raygrid.outputs.page import REPORT_HTML, write_report
from raygrid.outputs.terminal import rich_table, terminal_text

__all__ = [
    "write_outputs",
    "load_outputs",
    "write_report",
    "rich_table",
    "terminal_text",
    "to_jsonable",
    "from_jsonable",
    "OUTPUT_FILES",
    "OUTPUT_MARKER",
    "is_output_dir",
    "write_marker",
]

RESULTS_PARQUET = "results.parquet"
RESULTS_CSV = "results.csv"
SUMMARY_CSV = "summary.csv"
BEST_JSON = "best.json"

#: raygrid's mark on a folder it writes outputs into (JSON: {"raygrid": version}): only a folder
#: that holds it is taken for a raygrid output folder, never one that merely has a best.json.
OUTPUT_MARKER = "raygrid-output.json"

#: The data files :func:`write_outputs` always writes (plots and the report come on top).
OUTPUT_FILES = (RESULTS_PARQUET, RESULTS_CSV, SUMMARY_CSV, BEST_JSON, OUTPUT_MARKER)


def marker_text() -> str:
    from raygrid.version import __version__

    return json.dumps({"raygrid": __version__, "what": "a raygrid output folder"}) + "\n"


def write_marker(out_dir) -> None:
    """Mark ``out_dir`` as a raygrid output folder (before a run writes anything else there)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if not is_output_dir(out_dir):
        (out_dir / OUTPUT_MARKER).write_text(marker_text(), encoding="utf-8")


def is_output_dir(out_dir) -> bool:
    """Whether ``out_dir`` holds raygrid's marker (a JSON object naming raygrid's version)."""
    try:
        mark = json.loads((Path(out_dir) / OUTPUT_MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(mark, dict) and isinstance(mark.get("raygrid"), str)


def _storable(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy that parquet and CSV can hold: ``params`` as JSON; object columns that pyarrow cannot
    type as one scalar type (mixed types, tuples, objects) as text."""
    import pyarrow as pa

    out = frame.copy()
    if "params" in out.columns:
        out["params"] = out["params"].map(dumps)
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
            out[col] = out[col].map(lambda v: None if is_missing(v) else v if isinstance(v, str) else repr(v))
    return out


def _restore(frame: pd.DataFrame) -> pd.DataFrame:
    """Decode ``params`` and rebuild every ``param_<name>`` column from it."""
    if "params" not in frame.columns:
        return frame
    frame["params"] = [p if isinstance(p, dict) else {} for p in frame["params"].map(loads)]
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
        (tmp / BEST_JSON).write_text(dumps(best, indent=2) + "\n", encoding="utf-8")
        (tmp / OUTPUT_MARKER).write_text(marker_text(), encoding="utf-8")
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
