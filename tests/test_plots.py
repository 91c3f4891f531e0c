"""Plots on a list of grids (parameters that exist in one sub-grid only), small groups, long titles."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from raygrid.outputs import plots

pytest.importorskip("seaborn")

# The demo's grid: gamma only with rbf/sigmoid, degree only with poly; one real None (class_weight).
SUBGRIDS = [
    {"kernel": ["rbf", "sigmoid"], "C": [0.1, 1, 10, 100], "gamma": ["scale", 0.01, 0.001],
     "class_weight": [None, "balanced"]},
    {"kernel": ["linear"], "C": [0.01, 0.1, 1, 10]},
    {"kernel": ["poly"], "degree": [2, 3], "C": [0.1, 1, 10]},
]


def demo_summary(metric="accuracy"):
    from sklearn.model_selection import ParameterGrid

    candidates = list(ParameterGrid(SUBGRIDS))
    rng = np.random.default_rng(0)
    names = sorted({k for c in candidates for k in c})
    rows = []
    for i, params in enumerate(candidates):
        score = 0.9 + 0.02 * np.log10(params["C"]) + (0.03 if params["kernel"] == "rbf" else 0)
        row = {f"param_{n}": params.get(n) for n in names}
        row.update(params=params, **{f"mean_test_{metric}": score + rng.normal(0, 0.003),
                                     f"std_test_{metric}": 0.01, "mean_fit_time": 0.01 + rng.random() * 0.01})
        rows.append(row)
    summary = pd.DataFrame(rows)
    summary[f"rank_test_{metric}"] = summary[f"mean_test_{metric}"].rank(ascending=False, method="min").astype(int)
    summary.index.name = "candidate"
    return summary


def test_not_set_is_not_none():
    summary = demo_summary()
    labels = plots.param_labels(summary, "param_class_weight")
    assert set(labels) == {"None", "balanced", plots.NOT_SET}
    degree = plots.param_labels(summary, "param_degree")
    assert set(degree) == {"2", "3", plots.NOT_SET} and "None" not in set(degree)


def test_heatmap_pairs_parameters_set_together():
    summary = demo_summary()
    p1, p2 = plots.heatmap_pair(summary, "accuracy")
    assert {p1, p2} == {"param_C", "param_kernel"}  # set in every candidate, and influential
    fig = plots.heatmap_top_two(summary, None, "accuracy")
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_xticklabels() + ax.get_yticklabels()]
    assert plots.NOT_SET not in labels


def test_no_violins_from_a_few_points():
    from matplotlib.collections import PolyCollection

    summary = demo_summary()  # kernel=linear and kernel=poly: 4 and 6 candidates; C=100: 16
    fig = plots.violin_per_param(summary, "accuracy")
    few = [ax for ax in fig.axes if ax.get_visible() and ax.get_xlabel() == "degree"]
    assert few and not any(isinstance(c, PolyCollection) for c in few[0].collections)
    many = [ax for ax in fig.axes if ax.get_visible() and ax.get_xlabel() == "kernel"]
    assert any(isinstance(c, PolyCollection) for c in many[0].collections)


def test_titles_fit_inside_the_figure_and_pngs_are_150_dpi(tmp_path):
    from PIL import Image

    metric = "a_rather_long_custom_scorer_name_for_balanced_accuracy_on_held_out_rows"
    summary = demo_summary(metric)
    for name, draw in (("violin", lambda p: plots.violin_per_param(summary, metric, p)),
                       ("heatmap", lambda p: plots.heatmap_top_two(summary, None, metric, p)),
                       ("scatter", lambda p: plots.score_vs_fit_time(summary, metric, p))):
        fig = draw(None)
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        box = fig.bbox
        titles = [fig._suptitle] if fig._suptitle is not None else []
        titles += [ax.title for ax in fig.axes if ax.get_visible() and ax.get_title()]
        assert titles, name
        for title in titles:
            extent = title.get_window_extent(renderer)
            assert extent.x0 >= box.x0 - 1 and extent.x1 <= box.x1 + 1, (name, title.get_text())
        path = draw(tmp_path / f"{name}.png")
        with Image.open(path) as image:
            dpi = image.info.get("dpi", (0, 0))[0]
        assert round(dpi) >= 150, (name, dpi)


def test_a_log_time_axis_has_plain_tick_labels_and_mathtext_stays_on():
    """Fit times spanning 1000x: a logarithmic axis whose tick labels are plain numbers (no raw
    ``$\\mathdefault{10^{-2}}$``), with matplotlib's mathtext left on for everything else."""
    import matplotlib

    summary = demo_summary()
    summary["mean_fit_time"] = np.geomspace(0.002, 2.0, len(summary))  # 1000x
    fig = plots.score_vs_fit_time(summary, "accuracy")
    fig.canvas.draw()
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    labels = [t.get_text() for t in ax.get_xticklabels(which="both") if t.get_text()]
    assert labels and not any("$" in t or "mathdefault" in t for t in labels), labels
    assert {float(t) for t in labels} >= {0.01, 0.1, 1.0}, labels
    assert matplotlib.rcParams["text.parse_math"] is True


def test_dollar_signs_are_escaped_not_mathtext_turned_off():
    """A value ``$rbf$`` is drawn as those five characters (its ``$`` escaped), not as math."""
    import warnings

    summary = demo_summary()
    summary["param_kernel"] = summary["param_kernel"].map(lambda v: f"${v}$")
    summary["params"] = [dict(p, kernel=f"${p['kernel']}$") for p in summary["params"]]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fig = plots.violin_per_param(summary, "accuracy")
        fig.canvas.draw()  # a label read as math would be drawn as italic "rbf" (or fail)
    kernel = [ax for ax in fig.axes if ax.get_visible() and ax.get_xlabel() == "kernel"][0]
    labels = [t.get_text() for t in kernel.get_xticklabels()]
    assert r"\$rbf\$" in labels and r"\$linear\$" in labels, labels
    assert plots.text("a $x$ b") == r"a \$x\$ b"


def test_constant_scores_have_no_eta_squared():
    """Every candidate scoring the same explains nothing: η² is "n/a", never 1.00 (floating-point
    residue of equal scores summed in another order is no spread)."""
    summary = demo_summary()
    summary["mean_test_accuracy"] = 0.1 + 0.2  # 0.30000000000000004, as sums of equal folds give
    summary.loc[summary.index[::2], "mean_test_accuracy"] = 0.3
    influence = plots.param_influence(summary, "accuracy")
    assert influence.isna().all() and len(influence) == 5
    fig = plots.violin_per_param(summary, "accuracy")
    titles = [ax.get_title() for ax in fig.axes if ax.get_visible()]
    assert titles and all("η² n/a" in t for t in titles) and not any("1.00" in t for t in titles), titles
    heat = plots.heatmap_top_two(summary, None, "accuracy")
    assert "η² n/a" in heat.axes[0].get_xlabel()
    varied = demo_summary()
    assert plots.param_influence(varied, "accuracy").notna().all()
