"""Report, plots and saved outputs over a realistic synthetic search (no Ray, no Keras needed)."""
from __future__ import annotations

import base64
import itertools
import json
import re
import sys

import numpy as np
import pandas as pd
import pytest

from raygrid.outputs import plots, report

NODE_A = "a3f1" + "0" * 52
NODE_B = "7c29" + "1" * 52
METRICS = ("accuracy", "roc_auc")
N_FOLDS = 3
# Distinct effect sizes so the most influential hyperparameters are known: optimizer > hidden > activation.
GRID = {
    "activation": {"tanh": 0.02, "relu": 0.03, "sigmoid": 0.0},
    "optimizer": {"adam": 0.10, "rmsprop": 0.08, "sgd": 0.0},
    "hidden": {(12, 8): 0.05, (30, 15): 0.04, None: 0.0},
}
BATCH = {8: 0.01, 16: 0.0}  # with GRID: 3 x 3 x 3 x 2 = 54 candidates
ALL_FAILED = 7  # every fold of this candidate raises
PARTIAL = {(3, 1): "user", (12, 2): "system"}  # (candidate, fold) -> kind of failure
NASTY = "<script>alert('x')</script> & see https://example.invalid/help"


def make_frames(metrics=METRICS, two_nodes=True):
    """(results, summary, best) shaped like raygrid's search output: one row per fit, one per candidate."""
    rng = np.random.default_rng(0)
    names = list(GRID) + ["batch_size"]
    values = [list(GRID[n]) for n in GRID] + [list(BATCH)]
    rows = []
    for cand, combo in enumerate(itertools.product(*values)):
        params = dict(zip(names, combo), epochs=10)
        base = 0.60 + sum(GRID[n][v] for n, v in zip(GRID, combo)) + BATCH[combo[-1]]
        for fold in range(N_FOLDS):
            failure = "user" if cand == ALL_FAILED else PARTIAL.get((cand, fold))
            row = {"candidate": cand, "fold": fold}
            row.update({f"param_{k}": v for k, v in params.items()})
            row["params"] = dict(params)
            for i, m in enumerate(metrics):
                score = np.nan if failure else base + 0.05 * i + rng.normal(0, 0.01)
                row[f"test_{m}"] = score
                row[f"train_{m}"] = np.nan if failure else score + 0.03
            row["fit_time"] = 0.5 + 0.1 * combo[-1] + rng.random()
            row["score_time"] = 0.01 + 0.01 * rng.random()
            row["n_test_samples"] = 256
            row["error"] = (
                None if failure is None else
                f"Traceback (most recent call last):\nValueError: bad {NASTY}" if failure == "user" else
                "ray.exceptions.WorkerCrashedError: worker died"
            )
            row["system_failure"] = failure == "system"
            row["node"] = (NODE_A if (cand + fold) % 3 else NODE_B) if two_nodes else "local"
            row["pid"] = 4000 + (cand + fold) % 4
            row["seed"] = 1000 * cand + fold
            row["cached"] = cand in (0, 1) and failure is None
            rows.append(row)
    results = pd.DataFrame(rows)
    summary = summarize(results, metrics)
    first = metrics[0]
    top = summary.iloc[0]
    best = {
        "params": top["params"],
        "metric": first,
        "mean_score": float(top[f"mean_test_{first}"]),
        "std_score": float(top[f"std_test_{first}"]),
        "candidate": int(summary.index[0]),
        "refit_time": 1.25,
        "seed": 42,
        "versions": {"raygrid": "0.1.0", "scikit-learn": "1.9.1", "ray": "2.60.0", "python": "3.11"},
        "n_candidates": len(summary),
        "n_fits": len(results),
        "wall_time": 73.4,
    }
    return results, summary, best


def summarize(results, metrics):
    """A test-local summary (one row per candidate, best first) built from the fits."""
    pcols = [c for c in results.columns if c.startswith("param_")]
    out = results.groupby("candidate", sort=True).first()[pcols + ["params"]]
    groups = results.groupby("candidate", sort=True)
    for m in metrics:
        for kind in ("test", "train"):
            out[f"mean_{kind}_{m}"] = groups[f"{kind}_{m}"].mean()
            out[f"std_{kind}_{m}"] = groups[f"{kind}_{m}"].std(ddof=0)
        out[f"rank_test_{m}"] = out[f"mean_test_{m}"].rank(ascending=False, method="min", na_option="bottom").astype(int)
    for t in ("fit_time", "score_time"):
        out[f"mean_{t}"] = groups[t].mean()
        out[f"std_{t}"] = groups[t].std(ddof=0)
    out["n_failed"] = groups["error"].apply(lambda s: int(s.notna().sum()))
    out = out.sort_values(f"rank_test_{metrics[0]}", kind="stable")
    out.index.name = "candidate"
    return out


@pytest.fixture(scope="module")
def frames():
    return make_frames()


@pytest.fixture(scope="module")
def written(frames, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    results, summary, best = frames
    return out, report.write_outputs(results, summary, best, out)


# ----------------------------------------------------------------------------- plots
def test_param_columns_are_the_varied_ones(frames):
    results, summary, _ = frames
    expected = ["param_activation", "param_optimizer", "param_hidden", "param_batch_size"]
    assert plots.param_columns(results) == expected  # epochs (one value) and params are not
    assert plots.param_columns(summary) == expected
    unhashable = pd.DataFrame({"param_layers": [[1, 2], [1, 2], [3]], "param_d": [{"a": 1}] * 3})
    assert plots.param_columns(unhashable) == ["param_layers"]


def test_value_labels():
    assert [plots.value_label(v) for v in (None, np.nan, "relu", 8, 1e-3, (12, 8), True)] == [
        "None", "None", "relu", "8", "0.001", "(12, 8)", "True"]


def test_param_influence_ranks_by_effect(frames):
    _, summary, _ = frames
    influence = plots.param_influence(summary, "accuracy")
    assert list(influence.index[:2]) == ["param_optimizer", "param_hidden"]
    assert ((influence >= 0) & (influence <= 1)).all()


def test_save_all_skips_what_does_not_apply(tmp_path):
    results, summary, _ = make_frames(metrics=("score",), two_nodes=False)
    keep = ["param_optimizer"]  # one varied hyperparameter, one node
    summary = summary.drop(columns=[c for c in plots.param_columns(summary) if c not in keep])
    written = plots.save_all(results, summary, "score", tmp_path)
    assert set(written) == {"violin_per_param", "score_vs_fit_time", "fits_per_node"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fits_per_node.png", "score_vs_fit_time.png",
                                                          "violin_per_param.png"]


def test_plots_need_matplotlib_with_a_hint(frames, monkeypatch):
    _, summary, _ = frames
    monkeypatch.setitem(sys.modules, "seaborn", None)
    with pytest.raises(ImportError, match=r'pip install "raygrid\[plots\]"'):
        plots.violin_per_param(summary, "accuracy")


def test_dollar_signs_in_values_are_drawn_as_text(tmp_path):
    """A ``$...$`` in a value is not matplotlib math: an invalid formula must not stop a plot."""
    import warnings

    results, summary, _ = make_frames()
    for frame in (results, summary):
        frame["param_activation"] = frame["param_activation"].map(lambda v: "$\\frac{" + v + "$")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        written = plots.save_all(results, summary, "accuracy", tmp_path)
    assert set(written) == set(plots.PLOT_NAMES)


def test_one_failing_plot_warns_and_the_others_are_written(frames, tmp_path, monkeypatch):
    results, summary, best = frames

    def broken(*args, **kwargs):
        raise ValueError("cannot draw this")

    monkeypatch.setattr(plots, "heatmap_top_two", broken)
    with pytest.warns(RuntimeWarning, match=r"heatmap_top_two plot \(ValueError: cannot draw this\)"):
        paths = report.write_outputs(results, summary, best, tmp_path)
    assert "heatmap_top_two.png" not in paths and not (tmp_path / "heatmap_top_two.png").exists()
    for name in ("violin_per_param", "score_vs_fit_time", "fits_per_node"):
        assert (tmp_path / f"{name}.png").exists(), name
    assert (tmp_path / "report.html").exists()


# ----------------------------------------------------------------------------- files
def test_every_output_file_exists(written):
    out, paths = written
    expected = {"results.parquet", "results.csv", "summary.csv", "best.json", "report.html",
                "violin_per_param.png", "heatmap_top_two.png", "score_vs_fit_time.png", "fits_per_node.png",
                "raygrid-output.json"}  # the marker that makes the folder raygrid's
    assert set(paths) == expected
    assert sorted(p.name for p in out.iterdir()) == sorted(expected)  # no temporary directory left
    for name, path in paths.items():
        assert path == out / name and path.stat().st_size > 0
    for name in expected:
        if name.endswith(".png"):
            assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_results_have_one_row_per_fit(frames, written):
    results, _, _ = frames
    out, _ = written
    for frame in (pd.read_parquet(out / "results.parquet"), pd.read_csv(out / "results.csv")):
        assert len(frame) == len(results) == 54 * N_FOLDS
        assert frame[["candidate", "fold"]].drop_duplicates().shape[0] == len(results)


def test_summary_csv_is_ranked(frames, written):
    _, summary, best = frames
    out, _ = written
    saved = pd.read_csv(out / "summary.csv", index_col="candidate")
    assert len(saved) == len(summary)
    ranks = saved["rank_test_accuracy"].tolist()
    assert ranks == sorted(ranks) and ranks[0] == 1
    assert saved.index[0] == best["candidate"]
    assert np.isnan(saved.loc[ALL_FAILED, "mean_test_accuracy"]) and saved.index[-1] == ALL_FAILED


def test_best_json_matches_the_top_candidate(frames, written):
    _, summary, _ = frames
    out, _ = written
    raw = json.loads((out / "best.json").read_text())
    assert raw["candidate"] == int(summary.index[0])
    _, _, best = report.load_outputs(out)
    assert best["params"] == summary.iloc[0]["params"]  # tuples come back as tuples
    assert best["params"]["hidden"] == (12, 8)


def test_load_outputs_round_trips(frames, written):
    results, summary, best = frames
    out, _ = written
    r2, s2, b2 = report.load_outputs(out)
    assert len(r2) == len(results) and len(s2) == len(summary)
    for m in METRICS:
        np.testing.assert_allclose(r2[f"test_{m}"], results[f"test_{m}"], equal_nan=True)
        np.testing.assert_allclose(s2[f"mean_test_{m}"], summary[f"mean_test_{m}"], equal_nan=True)
    assert list(s2.index) == list(summary.index)
    assert list(r2["params"]) == list(results["params"])
    assert list(s2["params"]) == list(summary["params"])
    assert list(s2["param_hidden"]) == list(summary["param_hidden"])
    assert b2["params"] == best["params"] and b2["mean_score"] == pytest.approx(best["mean_score"])
    assert b2["versions"] == best["versions"]
    # and the report rebuilds from what was loaded
    page = report.write_report(r2, s2, b2, out / "again")
    assert page.read_text().count("<img ") == 4


def test_a_failed_write_leaves_the_directory_as_it_was(frames, tmp_path, monkeypatch):
    results, summary, best = frames
    (tmp_path / "results.csv").write_text("old\n")

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(report, "write_report", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        report.write_outputs(results, summary, best, tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["results.csv"]
    assert (tmp_path / "results.csv").read_text() == "old\n"


# ----------------------------------------------------------------------------- report
def test_report_is_self_contained_and_escaped(written):
    out, paths = written
    page = (out / "report.html").read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.I)
    assert "<link" not in page and "@import" not in page and "url(" not in page
    images = re.findall(r'<img [^>]*src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == 4 == page.count("<img ")
    on_disk = {p.read_bytes() for name, p in paths.items() if name.endswith(".png")}
    assert {base64.b64decode(b) for b in images} == on_disk  # embeds every plot
    assert "<script>alert" not in page and "&lt;script&gt;alert" in page
    for text in ("Best configuration", "adam", "(12, 8)", "0.1.0", "Fits per node", "a3f10000",
                 "Failed fits", "WorkerCrashedError"):
        assert text in page, text


def test_report_counts(frames, tmp_path, monkeypatch):
    results, summary, best = frames
    monkeypatch.setattr(plots, "save_all", lambda *args, **kwargs: {})  # counts only; plots are tested above
    page = report.write_report(results, summary, best, tmp_path, title="Pima <MLP>", top=5).read_text()
    assert "<title>Pima &lt;MLP&gt;</title>" in page
    counts = dict(re.findall(r'<th scope="row">([^<]+)</th><td>([^<]+)</td>', page))
    assert counts["candidates"] == "54" and counts["fits"] == "162"
    assert counts["failed fits"] == "5" and counts["cached fits"] == "6"
    assert counts["wall time"] == "1 min 13 s"
    ranked = page.split('id="top"')[1].split("</table>")[0]
    assert ranked.count("<tr") == 1 + 5


def test_rich_table(frames):
    from rich.console import Console

    _, summary, _ = frames
    table = report.rich_table(summary, "accuracy", top=3)
    assert table.row_count == 3
    console = Console(record=True, width=200)
    console.print(table)
    text = console.export_text()
    assert "adam" in text and "(12, 8)" in text and "±" in text


def _terminal_output(summary, best, width=80, top=6):
    import io

    from rich.console import Console

    from raygrid.cli.main import print_results

    buffer = io.StringIO()
    console = Console(file=buffer, width=width, force_terminal=True, color_system=None)
    print_results(summary, best, None, top=top, console=console)
    return buffer.getvalue()


def test_terminal_tables_show_values_as_written(frames):
    """Values reach rich as text: ``[/]`` does not crash, ``[bold]`` is not markup, control
    characters are shown escaped instead of reaching the terminal."""
    _, summary, best = frames
    summary = summary.copy()
    nasty = {"tanh": "[/]", "relu": "[bold]x", "sigmoid": "a\x1b[31mred\x07"}
    summary["param_activation"] = summary["param_activation"].map(nasty)
    best = dict(best, params=dict(best["params"], activation="[/]", optimizer="[red]"))
    text = _terminal_output(summary, best, width=120, top=len(summary))
    assert "[/]" in text and "[bold]x" in text and "'[red]'" in text
    assert "\x1b" not in text and "\x07" not in text
    assert "a\\x1b[31mred\\x07" in text


def test_terminal_table_names_the_metric_as_the_report_does(frames):
    _, summary, best = frames
    single = summary.rename(columns=lambda c: c.replace("_accuracy", "_score"))
    text = _terminal_output(single, dict(best, metric="score", scoring="accuracy"))
    assert "by mean test accuracy" in text and "mean test accuracy" in text and "test score" not in text


def test_raygrid_show_prints_markup_like_values(frames, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from raygrid.cli.main import main

    results, summary, best = frames
    monkeypatch.setattr(plots, "save_all", lambda *args, **kwargs: {})
    params = dict(best["params"], activation="[/]")
    report.write_outputs(results, summary, dict(best, params=params), tmp_path)
    outcome = CliRunner().invoke(main, ["show", str(tmp_path), "--top", "3"])
    assert outcome.exit_code == 0, outcome.output
    assert "'[/]'" in outcome.output


def test_terminal_table_fits_80_columns_with_whole_names(frames):
    _, summary, best = frames
    summary = summary.rename(columns=lambda c: "param_model__" + c[6:] if c.startswith("param_") else c)
    text = _terminal_output(summary, best)
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 80
    header = next(line for line in lines if "rank" in line)
    for name in ("activation", "optimizer", "hidden", "batch_size", "test accuracy"):
        assert name in header, header
    assert "model__" not in header and "pipeline step 'model' (model__...)" in text
    assert "0.7949 ± 0.0076" in text  # the best row's score, unbroken


@pytest.mark.slow
def test_report_images_load_in_headless_chromium(written, tmp_path):
    from browser import screenshot_and_check_images

    out, _ = written
    check = screenshot_and_check_images(out / "report.html", tmp_path / "report.png")
    assert check["total"] == 4, check
    assert check["ok"] and check["loaded"] == 4, check
    assert check["screenshot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
