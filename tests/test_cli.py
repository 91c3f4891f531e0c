"""The ``raygrid`` command and the spec runner behind it.

Every output file is checked against the fitted search (and, for a deterministic sklearn spec,
against scikit-learn's own GridSearchCV); bad specs are answered with every problem, its key path,
exit code 2 and nothing written. Most specs run on the serial backend to stay fast; the demo and
the Keras spec run on the session's Ray.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
import yaml
from click.testing import CliRunner
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV as SkGridSearchCV
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

import raygrid
from raygrid.cli.api import DEMO_SPEC, best_config, run_spec, save_search
from raygrid.cli.main import main
from raygrid.outputs.report import load_outputs
from raygrid.cli.spec import SpecError, apply_overrides, prepare

C_VALUES = [0.01, 0.1, 1.0]
SK_SPEC = {
    "title": "logistic regression on breast cancer",
    "data": {"name": "breast_cancer"},
    "preprocessing": "standard",
    "estimator": {"import": "sklearn.linear_model:LogisticRegression", "params": {"max_iter": 500}},
    "search": {"kind": "grid", "grid": {"C": C_VALUES}},
    "cv": 3,
    "scoring": "accuracy",
    "backend": "serial",
}


def write_spec(directory: Path, spec: dict, name: str = "spec.yaml") -> Path:
    path = Path(directory) / name
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return path


def invoke(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def run_cli(monkeypatch, *args: str):
    """``raygrid run ...`` in process; returns the CLI result and the search it fitted."""
    import raygrid.cli.api

    fitted = []
    real = raygrid.cli.api.run_spec

    def spy(*a, **kw):
        search, out = real(*a, **kw)
        fitted.append(search)
        return search, out

    monkeypatch.setattr(raygrid.cli.api, "run_spec", spy)
    result = invoke("run", *args)
    return result, (fitted[0] if fitted else None)


def check_outputs(out: Path, search) -> None:
    """Every saved file agrees with the fitted search."""
    cv = search.cv_results_
    n_candidates, n_splits = len(cv["params"]), search.n_splits_
    metric = best_config(search)["metric"]
    for name in ("results.parquet", "results.csv", "summary.csv", "best.json", "report.html",
                 "spec.yaml"):
        assert (out / name).is_file(), name

    for frame in (pd.read_csv(out / "results.csv"), pd.read_parquet(out / "results.parquet")):
        assert len(frame) == n_candidates * n_splits
        assert sorted(zip(frame["candidate"], frame["fold"])) == [
            (c, f) for c in range(n_candidates) for f in range(n_splits)]
        for row in frame.itertuples():
            assert getattr(row, f"test_{metric}") == pytest.approx(
                cv[f"split{row.fold}_test_{metric}"][row.candidate], abs=1e-12)

    summary = pd.read_csv(out / "summary.csv", index_col="candidate")
    assert len(summary) == n_candidates
    assert sorted(summary.index) == list(range(n_candidates))
    for cand, row in summary.iterrows():
        assert row[f"mean_test_{metric}"] == pytest.approx(cv[f"mean_test_{metric}"][cand], abs=1e-12)
        assert row[f"rank_test_{metric}"] == cv[f"rank_test_{metric}"][cand]
    assert summary.index[0] == search.best_index_  # ranked, best first

    best = json.loads((out / "best.json").read_text())
    _, _, loaded = load_outputs(out)
    assert loaded["params"] == search.best_params_
    assert best["mean_score"] == pytest.approx(search.best_score_, abs=1e-12)
    assert best["std_score"] == pytest.approx(cv[f"std_test_{metric}"][search.best_index_], abs=1e-12)
    assert best["candidate"] == search.best_index_
    assert best["n_candidates"] == n_candidates and best["n_fits"] == n_candidates * n_splits
    assert best["refit_time"] == pytest.approx(search.refit_time_)
    assert best["wall_time"] == pytest.approx(search.wall_time_)
    assert {"raygrid", "scikit-learn", "ray", "python"} <= set(best["versions"])

    html = (out / "report.html").read_text(encoding="utf-8")
    assert "Best configuration" in html and "http://" not in html.replace("http://www.w3.org", "")


# ----------------------------------------------------------------------------- run
def test_run_sklearn_spec_matches_sklearn(tmp_path, monkeypatch):
    spec = write_spec(tmp_path, SK_SPEC)
    out = tmp_path / "out"
    result, search = run_cli(monkeypatch, spec, "--out", out)
    assert result.exit_code == 0, result.output
    check_outputs(out, search)
    assert "best configuration" in result.stdout
    assert f"report: {out / 'report.html'}" in result.stdout

    X, y = load_breast_cancer(return_X_y=True)
    oracle = SkGridSearchCV(
        Pipeline([("scaler", StandardScaler()), ("model", LogisticRegression(max_iter=500))]),
        {"model__C": C_VALUES}, cv=3, scoring="accuracy").fit(X, y)
    results, summary, best = load_outputs(out)
    assert best["params"] == oracle.best_params_
    assert best["mean_score"] == pytest.approx(oracle.best_score_, abs=1e-12)
    assert len(results) == 3 * 3 and len(summary) == 3
    for row in results.itertuples():
        assert row.test_score == pytest.approx(
            oracle.cv_results_[f"split{row.fold}_test_score"][row.candidate], abs=1e-12)
    assert yaml.safe_load((out / "spec.yaml").read_text())["search"]["grid"]["C"] == C_VALUES


def test_run_spec_api_outputs_match_search(tmp_path):
    spec = dict(SK_SPEC, scoring=["accuracy", "roc_auc"], refit="roc_auc",
                cv={"kind": "stratified", "n_splits": 4, "shuffle": True, "random_state": 1})
    search, out = run_spec(spec, out=tmp_path / "api", verbose=0)
    assert out == tmp_path / "api"
    assert isinstance(search.cv, StratifiedKFold) and search.n_splits_ == 4
    assert set(search.best_params_) == {"model__C"}
    check_outputs(out, search)
    assert json.loads((out / "best.json").read_text())["metric"] == "roc_auc"


def test_randomized_spec_with_distributions(tmp_path):
    spec = dict(SK_SPEC, search={"kind": "random", "n_iter": 3, "distributions": {
        "C": {"dist": "loguniform", "low": 0.001, "high": 10},
        "class_weight": [None, "balanced"]}}, random_state=0)
    search, out = run_spec(spec, out=tmp_path / "random", verbose=0)
    assert type(search).__name__ == "RandomizedSearchCV"
    assert len(search.cv_results_["params"]) == 3
    assert all(0.001 <= p["model__C"] <= 10 for p in search.cv_results_["params"])
    check_outputs(out, search)


def test_set_overrides_and_check(tmp_path):
    spec = write_spec(tmp_path, SK_SPEC)
    out = tmp_path / "set"
    result = invoke("run", spec, "--out", out, "-q", "--set", "search.grid.C=[0.5, 2]",
                    "--set", "cv=2")
    assert result.exit_code == 0, result.output
    results, summary, best = load_outputs(out)
    assert sorted(summary["param_model__C"]) == [0.5, 2]
    assert len(results) == 2 * 2
    assert yaml.safe_load((out / "spec.yaml").read_text())["search"]["grid"]["C"] == [0.5, 2]

    checked = invoke("check", spec, "--set", "search.grid.C=[1, 2, 3, 4]")
    assert checked.exit_code == 0 and "4 candidates x 3 folds = 12 fits" in checked.output
    bad = invoke("check", spec, "--set", "search.grid.C")
    assert bad.exit_code == 2 and "KEY=VALUE" in bad.output


def test_apply_overrides_paths():
    raw = {"search": {"grid": [{"C": [1]}, {"C": [2]}]}}
    out = apply_overrides(raw, ["search.grid.1.C=[3, 4]", "cv.n_splits=4", 'title="x: y"'])
    assert out["search"]["grid"][1]["C"] == [3, 4] and out["cv"] == {"n_splits": 4}
    assert out["title"] == "x: y" and raw["search"]["grid"][1]["C"] == [2]  # input untouched
    with pytest.raises(SpecError, match=r"--set search\.grid\.C\.x: search\.grid is a list"):
        apply_overrides(raw, ["search.grid.C.x=1"])


def test_report_and_show_from_saved_results(tmp_path):
    out = tmp_path / "saved"
    search, _ = run_spec(SK_SPEC, out=out, verbose=0)
    for path in [out / "report.html", *out.glob("*.png")]:
        path.unlink()

    result = invoke("report", out)
    assert result.exit_code == 0, result.output
    html = (out / "report.html").read_text(encoding="utf-8")
    assert SK_SPEC["title"] in html  # the title comes back from the saved spec.yaml
    assert "data:image/png;base64," in html and list(out.glob("*.png"))

    shown = invoke("show", out, "--top", "2")
    assert shown.exit_code == 0, shown.output
    assert "top 2 of 3 candidates" in shown.stdout
    assert "model__C" in shown.stdout and f"{search.best_score_:.4f}" in shown.stdout

    missing = invoke("show", tmp_path)
    assert missing.exit_code == 1 and "best.json is missing" in missing.output


def test_save_search_on_a_fitted_search(tmp_path):
    from raygrid import GridSearchCV

    X, y = load_breast_cancer(return_X_y=True)
    X = StandardScaler().fit_transform(X)
    search = GridSearchCV(LogisticRegression(), {"C": [0.1, 1.0]}, cv=3,
                          backend="serial", random_state=3).fit(X, y)
    files = save_search(search, tmp_path / "saved", title="by hand")
    assert {"results.parquet", "results.csv", "summary.csv", "best.json", "report.html"} <= set(files)
    assert all(Path(p).is_file() for p in files.values())
    best = json.loads((tmp_path / "saved" / "best.json").read_text())
    assert best["seed"] == 3 and best["params"] == search.best_params_
    assert "by hand" in (tmp_path / "saved" / "report.html").read_text(encoding="utf-8")
    with pytest.raises(ValueError, match="fitted"):
        save_search(GridSearchCV(LogisticRegression(), {"C": [1]}), tmp_path / "unfitted")


# ----------------------------------------------------------------------------- bad specs
def _bad_run(tmp_path, spec: dict, *extra: str):
    path = write_spec(tmp_path, spec, "bad.yaml")
    out = tmp_path / "never"
    result = invoke("run", path, "--out", out, *extra)
    assert result.exit_code == 2, result.output
    assert not out.exists(), "a bad spec must not create the output directory"
    assert result.stdout == ""
    return result.stderr


def test_bad_spec_lists_every_problem_with_its_path(tmp_path):
    spec = {
        "data": {"csv": str(tmp_path / "missing.csv"), "target": "y", "colour": "red"},
        "estimator": {"import": "sklearn.svm:SVX"},
        "search": {"kind": "grid", "grid": {"C": [1]}},
        "cv": {"n_splits": "three"},
        "scoring": "accuracy",
        "serach": {},
    }
    err = _bad_run(tmp_path, spec)
    assert "5 problems" in err
    lines = [line.strip() for line in err.splitlines() if line.strip().startswith("- ")]
    assert len(lines) == 5, err
    expected = {
        "data.colour": "unknown key (expected one of: name, path, csv, target, features)",
        "serach": "unknown key; did you mean 'search'?",
        "cv.n_splits": "expected a valid integer, got 'three'",
        "data.csv": "file not found",
        "estimator.import": "'sklearn.svm' has no attribute 'SVX'; did you mean",
    }
    for path, text in expected.items():
        assert any(line.startswith(f"- {path}: ") and text in line for line in lines), (path, err)
    assert "No search was run and no file was written." in err
    assert "A spec is code" in err and "only specs you trust" in err


def test_bad_grid_parameter_and_more(tmp_path):
    csv = tmp_path / "d.csv"
    pd.DataFrame({"a": [0.1, 0.2, 0.3, 0.4], "b": [1, 2, 3, 4], "label": [0, 1, 0, 1]}).to_csv(csv, index=False)
    spec = {
        "data": {"csv": str(csv), "target": "lable"},
        "preprocessing": "minmax",
        "estimator": {"import": "sklearn.linear_model:LogisticRegression"},
        "search": {"grid": {"C": [1], "Cee": [2], "model__tol": [0.1], "penalty": "l2"}},
        "scoring": ["accuracy", "roc_aucc"],
        "refit": True,
        "error_score": "nope",
    }
    err = _bad_run(tmp_path, spec)
    expected = {
        "data.target": "no column 'lable'",
        "search.grid.Cee": "not a parameter of LogisticRegression",
        "search.grid.penalty": "expected a list of values",
        "scoring.1": "unknown metric 'roc_aucc'; did you mean 'roc_auc'",
        "refit": "with several metrics, refit must name one of them",
        "error_score": "expected 'raise' or a number",
    }
    for path, text in expected.items():
        assert f"- {path}: " in err and text in err, (path, err)
    assert "model__tol" not in err  # a name already written for the pipeline is accepted
    assert "search.grid.C:" not in err


@pytest.mark.parametrize("change, path, text", [
    ({"backend": "dask"}, "backend", "expected 'auto', 'ray' or 'serial'"),
    ({"cv": {"kind": "stratified", "n_splits": 1}}, "cv.n_splits", "greater than or equal to 2"),
    ({"estimator": {"import": "no_such_module_xyz:Thing"}}, "estimator.import", "cannot import module"),
    ({"estimator": {"import": "sklearn.linear_model:LogisticRegression", "params": {"Cc": 1}}},
     "estimator.params.Cc", "not a parameter of LogisticRegression"),
    ({"data": {"name": "pima", "path": "/no/such/pima.csv"}}, "data.path", "file not found"),
    ({"data": {"name": "iris"}}, "data.name", "expected 'breast_cancer' or 'pima'"),
    ({"search": {"kind": "random", "grid": {"C": [1]}}}, "search.grid", "applies to kind: grid"),
    ({"search": {"kind": "random", "distributions": {"C": {"dist": "uniform", "low": 2, "high": 1}}}},
     "search.distributions.C", "expected low < high"),
    ({"search": {"kind": "random", "distributions": {"C": {"dist": "normal", "low": 0, "high": 1}}}},
     "search.distributions.C.dist", "expected 'uniform', 'loguniform' or 'randint'"),
    ({"ray_remote_args": {"num_gpu": 1}}, "ray_remote_args.num_gpu", "did you mean 'num_gpus'"),
    ({"preprocessing": {"scaler": "none", "scale_before_split": True}},
     "preprocessing.scale_before_split", "needs a scaler"),
    ({"n_jobs": "2"}, "n_jobs", "expected a valid integer"),
    ({"search": {"grid": {"C": [1]}, "n_iter": 5}}, "search.n_iter", "applies to kind: random"),
])
def test_each_kind_of_bad_spec(tmp_path, change, path, text):
    err = _bad_run(tmp_path, {**SK_SPEC, **change})
    assert f"- {path}: " in err and text in err, err


def test_unreadable_spec_files(tmp_path):
    missing = invoke("run", tmp_path / "nope.yaml")
    assert missing.exit_code == 2 and "spec file not found" in missing.stderr
    broken = tmp_path / "broken.yaml"
    broken.write_text("data: {name: [\n")
    assert invoke("check", broken).exit_code == 2
    listing = tmp_path / "list.yaml"
    listing.write_text("- 1\n- 2\n")
    result = invoke("check", listing)
    assert result.exit_code == 2 and "expected a mapping at the top level" in result.stderr


def test_prepare_scale_before_split_scales_once():
    prepared = prepare({**SK_SPEC, "preprocessing": {"scaler": "minmax", "scale_before_split": True},
                        "search": {"grid": {"model__C": [1.0]}}}, check_out=False)
    assert prepared.space == {"C": [1.0]}  # no pipeline: the step prefix is dropped
    assert type(prepared.estimator).__name__ == "LogisticRegression"
    assert prepared.X.min() == pytest.approx(0) and prepared.X.max() == pytest.approx(1)


def test_example_specs_are_valid():
    examples = Path(__file__).resolve().parents[1] / "examples" / "specs"
    specs = sorted(examples.glob("*.yaml"))
    assert {p.name for p in specs} >= {"breast_cancer_svc.yaml", "pima_seed_mlp.yaml", "pima_quick.yaml"}
    from raygrid.cli.spec import Spec, load_spec

    for path in specs:
        raw, _ = load_spec(path)
        Spec.model_validate(raw)  # the schema; the Keras ones are run (or not) elsewhere
    prepared = prepare(load_spec(examples / "breast_cancer_svc.yaml")[0], check_out=False)
    assert prepared.n_candidates == 16


# ----------------------------------------------------------------------------- demo, status
def test_demo_end_to_end(tmp_path, ray_local):
    out = tmp_path / "demo"
    result = invoke("demo", "--out", out, "--backend", "ray")
    assert result.exit_code == 0, result.output
    results, summary, best = load_outputs(out)
    assert best["n_candidates"] == len(summary) == 34
    assert best["n_fits"] == len(results) == 34 * 3
    assert best["metric"] == "accuracy" and best["mean_score"] > 0.9
    assert results["error"].isna().all()
    assert (out / "report.html").is_file()
    assert "raygrid demo" in (out / "report.html").read_text(encoding="utf-8")
    assert yaml.safe_load((out / "spec.yaml").read_text()) == json.loads(json.dumps(DEMO_SPEC))


def test_status_of_a_run(tmp_path):
    import inspect

    from raygrid.search.grid import GridSearchCV

    if "storage" not in inspect.signature(GridSearchCV).parameters:
        pytest.skip("the search has no storage keyword")
    out = tmp_path / "stored"
    run_spec(SK_SPEC, out=out, verbose=0)
    result = invoke("status", out)
    assert result.exit_code == 0, result.output
    assert "missing: 0" in result.output
    info = json.loads(invoke("status", out, "--json").output)
    assert info["done"] == 9 and info["missing"] == 0
    assert invoke("status", tmp_path).exit_code == 1


# ----------------------------------------------------------------------------- Keras
@pytest.mark.keras
def test_run_keras_spec(tmp_path, pima_csv, monkeypatch):
    """The seed MLP through the spec runner: 2 candidates x 2 folds of one epoch, in process.

    No ``random_state`` here: seeded Keras fits in this process turn on TensorFlow's op
    determinism, after which the search's unseeded refit fails (see the CLI report); that would
    also leak into every later test of the session.
    """
    pytest.importorskip("scikeras")
    spec = {
        "data": {"csv": str(pima_csv), "target": "Outcome"},
        "preprocessing": "minmax",
        "estimator": {"builtin": "seed_mlp", "params": {"epochs": 1, "batch_size": 64}},
        "search": {"grid": {"model__activation": ["relu", "tanh"]}},
        "cv": 2,
        "scoring": "accuracy",
        "backend": "serial",
    }
    out = tmp_path / "keras"
    result, search = run_cli(monkeypatch, write_spec(tmp_path, spec), "--out", out, "-q")
    assert result.exit_code == 0, result.output
    assert "model__model__activation" in result.stdout
    assert set(search.best_params_) == {"model__model__activation"}
    assert type(search.best_estimator_.named_steps["model"]).__name__ == "KerasClassifier"
    check_outputs(out, search)
    results, _, best = load_outputs(out)
    assert results["error"].isna().all()
    assert "scikeras" in best["versions"] and "keras" in best["versions"]
    assert math.isfinite(best["mean_score"])


def test_out_in_an_unrelated_folder_is_refused_unless_forced(tmp_path):
    """A run never overwrites or removes files of a folder that is not a raygrid run's."""
    spec = write_spec(tmp_path, {**SK_SPEC, "search": {"kind": "grid", "grid": {"C": [1.0]}}})
    folder = tmp_path / "mine"
    folder.mkdir()
    mine = {"results.csv": b"my,data\n1,2\n", "spec.yaml": b"mine: true\n",
            "violin_per_param.png": b"\x89PNG not really"}
    for name, data in mine.items():
        (folder / name).write_bytes(data)
    result = invoke("run", spec, "--out", folder, "-q")
    assert result.exit_code == 2
    assert "not a raygrid output directory" in result.output and "--force" in result.output
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == mine
    forced = invoke("run", spec, "--out", folder, "-q", "--force")
    assert forced.exit_code == 0, forced.output
    assert (folder / "best.json").is_file()
    again = invoke("run", spec, "--out", folder, "-q")  # now a raygrid output folder
    assert again.exit_code == 0, again.output


def test_a_folder_with_a_best_json_of_another_tool_is_refused(tmp_path):
    """Only raygrid's own marker makes a folder a raygrid output folder, not a best.json."""
    spec = write_spec(tmp_path, {**SK_SPEC, "search": {"kind": "grid", "grid": {"C": [1.0]}}})
    folder = tmp_path / "other-tool"
    folder.mkdir()
    theirs = {"best.json": b'{"model": "theirs"}', "report.html": b"<html>theirs</html>",
              "results.csv": b"a,b\n1,2\n", "summary.csv": b"x\n1\n",
              "violin_per_param.png": b"\x89PNG theirs"}
    for name, data in theirs.items():
        (folder / name).write_bytes(data)
    refused = invoke("run", spec, "--out", folder, "-q")
    assert refused.exit_code == 2
    assert "not a raygrid output directory" in refused.output, refused.output
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == theirs
    ours = tmp_path / "ours"
    first = invoke("run", spec, "--out", ours, "-q")
    assert first.exit_code == 0, first.output
    assert json.loads((ours / "raygrid-output.json").read_text())["raygrid"] == raygrid.__version__
    again = invoke("run", spec, "--out", ours, "-q")
    assert again.exit_code == 0, again.output


def test_check_says_a_spec_is_trusted_code(tmp_path):
    """Checking a spec imports and calls its module:callable names: the output says so and
    does not claim that nothing ran."""
    spec = write_spec(tmp_path, SK_SPEC)
    checked = invoke("check", spec)
    assert checked.exit_code == 0, checked.output
    assert "A spec is code" in checked.output and "only specs you trust" in checked.output
    bad = invoke("check", write_spec(tmp_path, {**SK_SPEC, "cv": "three"}, "bad.yaml"))
    assert bad.exit_code == 2
    assert "Nothing was run" not in bad.output and "A spec is code" in bad.output


def test_run_takes_a_fit_timeout(tmp_path, monkeypatch):
    """--fit-timeout reaches the search (seconds per fit); zero or a word is a usage error."""
    import raygrid.cli.api as api

    spec = write_spec(tmp_path, {**SK_SPEC, "search": {"kind": "grid", "grid": {"C": [1.0]}}})
    seen = []
    original = api.run_spec

    def spy(*args, **kwargs):
        search, out_dir = original(*args, **kwargs)
        seen.append(search.fit_timeout)
        return search, out_dir

    monkeypatch.setattr(api, "run_spec", spy)
    ok = invoke("run", spec, "--out", tmp_path / "out", "-q", "--fit-timeout", "120")
    assert ok.exit_code == 0, ok.output
    assert seen == [120.0]
    for bad in ("0", "soon"):
        refused = invoke("run", spec, "--out", tmp_path / "bad", "-q", "--fit-timeout", bad)
        assert refused.exit_code == 2 and "--fit-timeout" in refused.output
    assert not (tmp_path / "bad").exists()
