"""Plots of a search's results: plain functions over the results and summary DataFrames.

matplotlib and seaborn are optional (``pip install "raygrid[plots]"``) and are imported only
inside the functions that draw. Figures are built with matplotlib's object API on an Agg canvas
(``matplotlib.figure.Figure``), so drawing never touches pyplot's global state or switches the
backend of a running notebook, and nothing needs closing afterwards.

Every plotting function takes ``path``: given, the PNG is written there and its ``Path`` returned;
``None`` returns the ``Figure`` (handy in a notebook).

What the plots read from the frames (varied hyperparameters, value labels, metrics, fit status,
fits per node) is frames.py; the names are importable from here too.
"""
from __future__ import annotations

import functools
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from raygrid.outputs.frames import (NOT_SET, fit_status, metric_names, node_counts, node_names,
                                    ordered_labels, param_columns, param_influence, param_labels, score_column,
                                    short_name, value_label)

__all__ = [
    "param_columns",
    "param_influence",
    "value_label",
    "param_labels",
    "NOT_SET",
    "score_column",
    "metric_names",
    "violin_per_param",
    "heatmap_top_two",
    "score_vs_fit_time",
    "fits_per_node",
    "node_counts",
    "fit_status",
    "save_all",
    "PLOT_NAMES",
]

#: Names (and PNG file stems) of the plots ``save_all`` can write, in report order.
PLOT_NAMES = ("violin_per_param", "heatmap_top_two", "score_vs_fit_time", "fits_per_node")

_INSTALL_HINT = 'plotting needs matplotlib and seaborn: pip install "raygrid[plots]"'
_DPI = 150
#: Fewer points than this in any group of a subplot: a box and the points, not a violin.
_VIOLIN_MIN_POINTS = 4


# ----------------------------------------------------------------------------- drawing helpers
def _libs():
    """Import matplotlib's Figure and seaborn, or fail with the install hint."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        import seaborn as sns
    except ImportError as exc:  # pragma: no cover - exercised by a test that hides the modules
        raise ImportError(_INSTALL_HINT) from exc
    return Figure, FigureCanvasAgg, sns


def text(value: Any) -> str:
    """``value`` as matplotlib draws it literally: every ``$`` escaped.

    Labels hold the user's strings (hyperparameter values and names, metric names), where a
    ``$...$`` pair would be read as mathtext (and fail on what is not valid math). Escaping them,
    rather than turning mathtext off, keeps matplotlib's own tick labels (``10^{-2}``) working.
    """
    return str(value).replace("$", r"\$")


def _styled(draw):
    """Run a plotting function with seaborn's deprecation chatter held back."""
    @functools.wraps(draw)
    def wrapper(*args, **kwargs):
        try:
            import matplotlib  # noqa: F401 - the install hint when it is missing
        except ImportError as exc:
            raise ImportError(_INSTALL_HINT) from exc
        with warnings.catch_warnings():
            # seaborn's own calls of matplotlib APIs deprecated after its release: not the user's to fix
            warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"seaborn\.")
            return draw(*args, **kwargs)
    return wrapper


def _new_figure(width: float, height: float):
    Figure, FigureCanvasAgg, sns = _libs()
    fig = Figure(figsize=(width, height), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig, sns


def _finish(fig, path):
    if path is None:
        return fig
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=_DPI)
    return path


def _rotate(ax, labels: list[str]) -> None:
    longest = max((len(s) for s in labels), default=0)
    if len(labels) > 4 or longest > 6:
        for tick in ax.get_xticklabels():
            tick.set_rotation(30)
            tick.set_horizontalalignment("right")


def _scored(summary: pd.DataFrame, col: str) -> pd.DataFrame:
    """The candidates with a test score; ``ValueError`` when every candidate failed."""
    frame = summary.copy()
    frame[col] = pd.to_numeric(frame[col], errors="coerce")
    frame = frame[frame[col].notna()]
    if frame.empty:
        raise ValueError(f"no candidate has a {col}: every fit failed")
    return frame


# ----------------------------------------------------------------------------- plots
@_styled
def violin_per_param(summary: pd.DataFrame, metric: str | None = "score", path=None):
    """One violin per value of each varied hyperparameter: the distribution of the candidates'
    ``mean_test_<metric>`` (each point is one candidate, marginalising over the other parameters).
    Subplots are ordered by :func:`param_influence`, most influential first.

    Candidates whose every fold failed (NaN mean) are left out. Raises ``ValueError`` if no
    hyperparameter varies.
    """
    metric, col = score_column(summary, metric)
    influence = param_influence(summary, metric)
    params = list(influence.index)
    if not params:
        raise ValueError("no hyperparameter takes more than one value; nothing to compare")
    data = _scored(summary, col)
    ncols = min(3, len(params))
    nrows = math.ceil(len(params) / ncols)
    fig, sns = _new_figure(4.6 * ncols, 3.9 * nrows + 0.5)
    axes = np.atleast_1d(fig.subplots(nrows, ncols, sharey=True, squeeze=False)).ravel()
    for ax, pcol in zip(axes, params):
        order = [text(v) for v in ordered_labels(summary, pcol)]
        frame = pd.DataFrame({"value": param_labels(data, pcol).map(text).to_numpy(),
                              "score": data[col].to_numpy()})
        # ``order`` lists every value, so one whose candidates all failed keeps an empty slot.
        smallest = frame.groupby("value").size().min() if len(frame) else 0
        if smallest >= _VIOLIN_MIN_POINTS:
            sns.violinplot(data=frame, x="value", y="score", order=order, ax=ax, cut=0,
                           inner="quart", color="#9ecae1", linewidth=1, density_norm="width")
        else:  # a density from 1-3 points says nothing: the box and the points themselves
            sns.boxplot(data=frame, x="value", y="score", order=order, ax=ax, color="#c6dbef",
                        linewidth=1, showfliers=False, width=0.5)
        sns.stripplot(data=frame, x="value", y="score", order=order, ax=ax, size=3,
                      color="#08306b", alpha=0.6, jitter=0.15)
        ax.set_title(text(_wrap(f"{short_name(pcol)}  ({eta_text(influence[pcol])})", 4.6)))
        ax.set_xlabel(text(short_name(pcol)))
        ax.set_ylabel(text(f"mean test {metric}"))
        ax.grid(axis="y", alpha=0.3)
        _rotate(ax, order)
    for ax in axes[len(params):]:
        ax.set_visible(False)
    fig.suptitle(text(_wrap(f"mean test {metric} per hyperparameter value ({len(data)} candidates)",
                            4.6 * ncols, size=13)))
    return _finish(fig, path)


def _wrap(text: str, width_in: float, size: float = 12.0) -> str:
    """``text`` broken into lines that fit ``width_in`` inches at font ``size`` points (an average
    glyph is about 0.6 of the font size wide): titles are wrapped, never clipped."""
    import textwrap

    chars = max(12, int(width_in * 72 / (0.6 * size)) - 2)
    return "\n".join(textwrap.wrap(text, chars, break_long_words=True)) or text


def set_together(summary: pd.DataFrame, p1: str, p2: str) -> pd.Series:
    """Which candidates set both ``p1`` and ``p2`` (neither belongs to another sub-grid)."""
    return (param_labels(summary, p1) != NOT_SET) & (param_labels(summary, p2) != NOT_SET)


def heatmap_pair(summary: pd.DataFrame, metric: str | None = "score") -> tuple[str, str]:
    """The two hyperparameters the heatmap shows: an influential pair that is set together.

    A pair qualifies when, over the candidates that set both, each still takes at least two
    values. Qualifying pairs are ranked by their combined :func:`param_influence` times the share
    of candidates that set both, so a pair that exists in one sub-grid only (``C`` × ``degree``,
    where ``degree`` belongs to the ``poly`` kernel's sub-grid) loses to one set everywhere
    (``C`` × ``kernel``) unless it explains far more. Raises ``ValueError`` when no pair qualifies.
    """
    influence = param_influence(summary, metric).fillna(0.0)  # equal scores: any pair, in order
    names = list(influence.index)
    best = None
    for i, p1 in enumerate(names):
        for p2 in names[i + 1:]:
            both = set_together(summary, p1, p2)
            if min(param_labels(summary[both], p1).nunique(), param_labels(summary[both], p2).nunique()) < 2:
                continue
            share = float(both.mean()) if len(both) else 0.0
            key = (round((influence[p1] + influence[p2]) * share, 6), int(both.sum()))
            if best is None or key > best[0]:
                best = (key, p1, p2)
    if best is None:
        raise ValueError("a heatmap needs two hyperparameters that are set together and vary")
    _, p1, p2 = best
    return (p1, p2) if influence[p1] >= influence[p2] else (p2, p1)


def _cell_means(summary, results, col, metric, p1, p2) -> pd.DataFrame:
    """Mean score per (p1 value, p2 value): over the candidates' means, or over the individual
    successful fits when ``results`` is given (a candidate with failed folds then weighs less)."""
    fit_col = f"test_{metric}"
    if results is not None and fit_col in results.columns and {p1, p2} <= set(results.columns):
        frame = results
        score = pd.to_numeric(frame[fit_col], errors="coerce")
    else:
        frame = summary
        score = pd.to_numeric(frame[col], errors="coerce")
    table = pd.DataFrame({p1: param_labels(frame, p1).to_numpy(),
                          p2: param_labels(frame, p2).to_numpy(),
                          "score": score.to_numpy()})
    table = table[(table[p1] != NOT_SET) & (table[p2] != NOT_SET)]
    means = table.groupby([p1, p2])["score"].mean().unstack(p2)
    both = summary[set_together(summary, p1, p2)]
    rows, cols = ordered_labels(both, p1), ordered_labels(both, p2)
    return means.reindex(index=rows, columns=cols).astype(float)


@_styled
def heatmap_top_two(summary: pd.DataFrame, results: pd.DataFrame | None = None,
                    metric: str | None = "score", path=None):
    """Heatmap of the mean test score over the values of the two most influential hyperparameters
    that are set together (:func:`heatmap_pair`), over the candidates that set both.

    "Most influential" is :func:`param_influence` (eta squared of ``mean_test_<metric>`` over the
    candidates). Each cell averages over the other hyperparameters: over the successful fits in
    ``results`` when it is given, else over the candidates' means. Raises ``ValueError`` when fewer
    than two hyperparameters vary.
    """
    metric, col = score_column(summary, metric)
    _scored(summary, col)
    influence = param_influence(summary, metric)
    if len(influence) < 2:
        raise ValueError("a heatmap needs at least two varied hyperparameters")
    p1, p2 = heatmap_pair(summary, metric)
    means = _cell_means(summary, results, col, metric, p1, p2)
    means.index, means.columns = [text(v) for v in means.index], [text(v) for v in means.columns]
    fig_width = max(5.5, 1.1 * means.shape[1] + 3.0)
    fig, sns = _new_figure(fig_width, max(4.0, 0.6 * means.shape[0] + 2.2))
    ax = fig.add_subplot()
    sns.heatmap(means, ax=ax, annot=True, fmt=".3f", cmap="viridis", linewidths=0.5,
                cbar_kws={"label": f"mean test {metric}"})
    ax.set_xlabel(text(f"{short_name(p2)} ({eta_text(influence[p2])})"))
    ax.set_ylabel(text(f"{short_name(p1)} ({eta_text(influence[p1])})"))
    ax.set_title(text(_wrap(f"mean test {metric}: {short_name(p1)} × {short_name(p2)}", fig_width - 1.5)) + "\n"
                 + _wrap("(averaged over the other hyperparameters)", fig_width - 1.5))
    ax.tick_params(axis="y", labelrotation=0)
    _rotate(ax, list(means.columns))
    return _finish(fig, path)


@_styled
def score_vs_fit_time(summary: pd.DataFrame, metric: str | None = "score", path=None):
    """Scatter of each candidate's mean test score against its mean fit time.

    Points are coloured by the most influential hyperparameter (when one varies), the best
    candidate is marked with a star, and the time axis is logarithmic when fit times span more than
    a factor of 20. Raises ``ValueError`` without a ``mean_fit_time`` column.
    """
    metric, col = score_column(summary, metric)
    if "mean_fit_time" not in summary.columns:
        raise ValueError("the summary has no mean_fit_time column")
    data = _scored(summary, col)
    data = data[pd.to_numeric(data["mean_fit_time"], errors="coerce").notna()]
    fig, sns = _new_figure(7.5, 5.0)
    ax = fig.add_subplot()
    influence = param_influence(summary, metric)
    hue = influence.index[0] if len(influence) else None
    x = pd.to_numeric(data["mean_fit_time"]).to_numpy(dtype=float)
    y = data[col].to_numpy(dtype=float)
    if hue is not None:
        order = [text(v) for v in ordered_labels(summary, hue)]
        sns.scatterplot(x=x, y=y, hue=param_labels(data, hue).map(text).to_numpy(), hue_order=order,
                        ax=ax, s=40, alpha=0.8)
        ax.legend(title=text(short_name(hue)), fontsize="small", title_fontsize="small")
    else:
        ax.scatter(x, y, s=40, alpha=0.8)
    if len(data):
        best = data[col].astype(float).idxmax()
        rank_col = f"rank_test_{metric}"
        if rank_col in data.columns:
            best = pd.to_numeric(data[rank_col]).astype(float).idxmin()
        ax.scatter([float(data.loc[best, "mean_fit_time"])], [float(data.loc[best, col])],
                   marker="*", s=260, color="#d62728", edgecolor="black", zorder=5, label="best")
        ax.annotate("best", (float(data.loc[best, "mean_fit_time"]), float(data.loc[best, col])),
                    textcoords="offset points", xytext=(8, 6), fontsize="small")
        if x.min() > 0 and x.max() / x.min() > 20:
            _log_seconds(ax.xaxis)
    ax.set_xlabel("mean fit time per fold (s)")
    ax.set_ylabel(text(f"mean test {metric}"))
    ax.set_title(text(_wrap(f"mean test {metric} vs mean fit time ({len(data)} candidates)", 7.0)))
    ax.grid(alpha=0.3)
    return _finish(fig, path)


def _log_seconds(axis) -> None:
    """A logarithmic time axis labelled in plain seconds (0.01, 0.1, 1, 10): decades as numbers
    a reader takes in at a glance, and never overlapping (minor ticks carry no label)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    axis.axes.set_xscale("log")
    axis.set_major_locator(LogLocator(base=10))
    axis.set_major_formatter(FuncFormatter(lambda value, _pos: f"{value:g}"))
    axis.set_minor_formatter(NullFormatter())


def eta_text(value: float) -> str:
    """``η² = 0.42``, or ``η² n/a`` when it is not defined (every candidate scored the same)."""
    return "η² n/a" if value is None or not np.isfinite(value) else f"η² = {value:.2f}"


def _node_label(node: Any) -> str:
    """A node's tick label: its name on two lines (``host (IP)`` over its short id)."""
    return text(value_label(node, None).replace(" · ", "\n"))


@_styled
def fits_per_node(results: pd.DataFrame, path=None):
    """Bar chart of the number of fits each node ran, stacked by :func:`fit_status`
    (succeeded / from cache / failed).

    Nodes are shown as the frame names them (the report names Ray nodes ``host (IP) · id[:8]``,
    each on two lines under its bar).
    """
    counts = node_counts(results)
    nodes = node_names(results)
    stacks = pd.crosstab(nodes, fit_status(results).to_numpy()).reindex(counts.index, fill_value=0)
    labels = [_node_label(n) for n in counts.index]
    fig, _ = _new_figure(max(5.0, 1.0 * len(counts) + 3.0), 4.5)
    ax = fig.add_subplot()
    x = np.arange(len(counts))
    bottom = np.zeros(len(counts))
    for name, color in (("succeeded", "#4c72b0"), ("from cache", "#8c8c8c"), ("failed", "#c44e52")):
        if name not in stacks.columns:
            continue
        values = stacks[name].to_numpy(dtype=float)
        ax.bar(x, values, bottom=bottom, label=name, color=color, width=0.6)
        bottom += values
    for xi, total in zip(x, counts["fits"]):
        ax.annotate(str(int(total)), (xi, total), textcoords="offset points", xytext=(0, 3),
                    ha="center", fontsize="small")
    ax.set_xticks(x, labels)
    _rotate(ax, labels)
    ax.set_xlabel("node")
    ax.set_ylabel("fits")
    ax.set_ylim(0, float(counts["fits"].max()) * 1.12 + 0.5)
    nodes = f"{len(counts)} node" + ("s" if len(counts) != 1 else "")
    ax.set_title(_wrap(f"fits per node ({int(counts['fits'].sum())} fits on {nodes})",
                       max(5.0, 1.0 * len(counts) + 3.0) - 1))
    ax.legend(fontsize="small")
    ax.grid(axis="y", alpha=0.3)
    return _finish(fig, path)


def _has_pair(summary: pd.DataFrame, metric: str) -> bool:
    try:
        heatmap_pair(summary, metric)
    except ValueError:
        return False
    return True


def save_all(results: pd.DataFrame, summary: pd.DataFrame, metric: str | None = "score",
             out_dir=".") -> dict[str, Path]:
    """Write every plot that applies as ``<out_dir>/<name>.png``; return ``{name: path}``.

    Skipped, by design: ``violin_per_param`` when no hyperparameter varies, ``heatmap_top_two``
    when no two varied hyperparameters are set together (see :func:`heatmap_pair`),
    ``score_vs_fit_time`` without fit times, ``fits_per_node`` without a node column (one node
    is one bar: a local run's fits and failures), and every score plot when no candidate has a
    test score (all fits failed). A plot that fails to
    draw is a ``RuntimeWarning`` naming it; the others are still written.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    metric, col = score_column(summary, metric)
    _libs()  # no plotting library: one ImportError with the install hint, not a warning per plot
    scored = pd.to_numeric(summary[col], errors="coerce").notna().any()
    n_params = len(param_columns(summary)) if scored else 0
    drawers = {}
    if n_params >= 1:
        drawers["violin_per_param"] = lambda path: violin_per_param(summary, metric, path)
    if n_params >= 2 and _has_pair(summary, metric):
        drawers["heatmap_top_two"] = lambda path: heatmap_top_two(summary, results, metric, path)
    if scored and "mean_fit_time" in summary.columns and pd.to_numeric(summary["mean_fit_time"], errors="coerce").notna().any():
        drawers["score_vs_fit_time"] = lambda path: score_vs_fit_time(summary, metric, path)
    if results is not None and "node" in results.columns and len(results):
        drawers["fits_per_node"] = lambda path: fits_per_node(results, path)
    written: dict[str, Path] = {}
    for name, draw in drawers.items():
        # One plot that cannot be drawn costs that plot, never the run or the other plots.
        try:
            written[name] = draw(out_dir / f"{name}.png")
        except Exception as exc:  # noqa: BLE001 - reported as a warning naming the plot
            warnings.warn(f"raygrid could not draw the {name} plot ({type(exc).__name__}: {exc}); "
                          "the other plots and the results are written", RuntimeWarning, stacklevel=2)
    return written
