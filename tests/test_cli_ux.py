"""The command line as a new user meets it: a starter spec, hints, resume advice."""
from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from raygrid.cli.main import main

ROOT = Path(__file__).resolve().parents[1]


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_init_writes_a_commented_spec_that_checks(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    written = invoke("init")
    assert written.exit_code == 0, written.output
    text = (tmp_path / "spec.yaml").read_text()
    assert text.count("\n#") >= 5 and "docs/spec.md" in text
    checked = invoke("check", "spec.yaml")
    assert checked.exit_code == 0 and "6 candidates x 5 folds = 30 fits" in checked.output
    again = invoke("init")
    assert again.exit_code == 1 and "--force" in again.output
    assert invoke("init", "--force").exit_code == 0


def test_set_on_a_list_of_grids_suggests_an_index():
    result = invoke("check", ROOT / "examples" / "specs" / "breast_cancer_svc.yaml",
                    "--set", "search.grid.C=[1]")
    assert result.exit_code == 2
    assert "did you mean search.grid.0.C?" in result.output


def test_csv_example_spec_checks(monkeypatch):
    monkeypatch.chdir(ROOT)
    result = invoke("check", "examples/specs/wine_csv.yaml")
    assert result.exit_code == 0 and "12 candidates x 4 folds = 48 fits" in result.output


def test_an_unreachable_address_then_status(tmp_path):
    """`raygrid run --address` to a port where nothing listens fails within seconds; `raygrid
    status` of its output directory then speaks the command line's language."""
    import os
    import subprocess
    import sys

    out = tmp_path / "run"
    # A fresh process: a Ray already running in this one would be used whatever the address.
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("RAY_ADDRESS", None)
    failed = subprocess.run([sys.executable, "-m", "raygrid.cli.main", "run", "examples/specs/breast_cancer_svc.yaml",
                             "--out", str(out), "--address", "127.0.0.1:1", "-q"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert failed.returncode == 1 and "Cannot reach the Ray cluster at '127.0.0.1:1'" in failed.stderr
    status = invoke("status", out)
    if (out / "fits.sqlite").exists():  # a store planned before the address was tried
        assert status.exit_code == 0, status.output
        assert "missing: 80" in status.output
        assert f"raygrid run SPEC --out {out}" in status.output
    else:  # nothing was created before the address answered
        assert status.exit_code == 1 and str(out) in status.output


def test_status_of_a_finished_run_gives_no_resume_advice(tmp_path):
    from sklearn.datasets import load_breast_cancer
    from sklearn.svm import SVC

    from raygrid import GridSearchCV

    X, y = load_breast_cancer(return_X_y=True)
    GridSearchCV(SVC(), {"C": [1, 10]}, cv=2, backend="serial", storage=str(tmp_path)).fit(X[:60], y[:60])
    done = invoke("status", tmp_path)
    assert done.exit_code == 0 and "missing: 0" in done.output and "Resume" not in done.output


def test_status_of_an_interrupted_store_advises_the_resuming_command(tmp_path):
    import numpy as np
    import pytest
    from sklearn.base import BaseEstimator, ClassifierMixin

    from raygrid import GridSearchCV

    class FailsForTwo(ClassifierMixin, BaseEstimator):
        def __init__(self, c=1):
            self.c = c

        def fit(self, X, y):
            if self.c == 2:
                raise RuntimeError("stopped here")
            self.classes_ = np.unique(y)
            return self

        def predict(self, X):
            return np.full(len(X), self.classes_[0])

    X, y = np.arange(40.0).reshape(20, 2), np.array([0, 1] * 10)
    with pytest.raises(RuntimeError, match="stopped here"):
        GridSearchCV(FailsForTwo(), {"c": [1, 2, 3]}, cv=2, backend="serial", error_score="raise",
                     storage=str(tmp_path)).fit(X, y)
    result = invoke("status", tmp_path)
    assert result.exit_code == 0 and "incomplete" in result.output
    assert f"Resume: run the same `raygrid run SPEC --out {tmp_path}` again" in result.output
    (tmp_path / "spec.yaml").write_text("title: t\n")  # what a run leaves beside its results
    result = invoke("status", tmp_path)
    assert f"Resume: raygrid run {tmp_path / 'spec.yaml'} --out {tmp_path}" in result.output


HEAVY = ("sklearn", "pandas", "scipy", "ray", "tensorflow", "keras", "jax", "numpy", "pydantic")


def _modules_after(*argv, expect=0):
    """The top-level modules a fresh ``raygrid`` process imported while answering ``argv``."""
    import os
    import subprocess
    import sys

    probe = ("import sys, runpy\n"
             "sys.argv = ['raygrid'] + sys.argv[1:]\n"
             "try:\n"
             "    runpy.run_module('raygrid.cli', run_name='__main__')\n"
             "except SystemExit as exc:\n"
             "    code = exc.code\n"
             "else:\n"
             "    code = 0\n"
             "print('MODULES', ' '.join(sorted({m.split('.')[0] for m in sys.modules})))\n"
             "sys.exit(code)\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-c", probe, *map(str, argv)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == expect, done.stdout + done.stderr
    line = [ln for ln in done.stdout.splitlines() if ln.startswith("MODULES ")][-1]
    return set(line.split()[1:]), done


def test_help_and_version_import_nothing_heavy():
    """`raygrid --help`, `--version` and a command's `--help` import click and raygrid's command
    module only: no scikit-learn, pandas, NumPy, Ray or TensorFlow (benchmarks/bench_cli.py
    measures the time)."""
    from raygrid.version import __version__

    for argv in (["--help"], ["--version"], ["run", "--help"], ["demo", "--help"]):
        modules, done = _modules_after(*argv)
        assert not modules & set(HEAVY), (argv, sorted(modules & set(HEAVY)))
    assert __version__ in _modules_after("--version")[1].stdout


def test_check_of_a_spec_that_is_not_yaml_imports_nothing_heavy(tmp_path):
    spec = tmp_path / "bad.yaml"
    spec.write_text("data: {name: breast_cancer\nestimator: [\n")
    modules, done = _modules_after("check", spec, expect=2)
    assert "not valid YAML" in done.stderr
    assert not modules & {"sklearn", "pandas", "scipy", "ray", "tensorflow", "keras", "jax"}, modules


def test_import_raygrid_imports_no_search_until_a_name_is_used():
    import subprocess
    import sys

    code = ("import sys, raygrid\n"
            "assert 'sklearn' not in sys.modules and 'raygrid.search.grid' not in sys.modules\n"
            "from raygrid import GridSearchCV, cross_val_score, save_search\n"
            "assert GridSearchCV.__module__ == 'raygrid.search.grid' and 'sklearn' in sys.modules\n"
            "assert set(raygrid.__all__) <= set(dir(raygrid))\n"
            "try:\n    raygrid.NoSuchThing\nexcept AttributeError as exc:\n    print('OK', exc)\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0 and "OK module 'raygrid' has no attribute 'NoSuchThing'" in done.stdout, done.stderr


SLOW_SPEC = """\
title: slow fits
data: {name: breast_cancer}
estimator: {import: "fault_helpers:CountingClassifier", params: {sleep: 0.25}}
search: {kind: grid, grid: {a: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]}}
cv: {kind: kfold, n_splits: 2}
backend: serial
"""


def test_ctrl_c_in_raygrid_run_speaks_cli_and_the_rerun_says_what_it_reused(tmp_path):
    """Ctrl-C in `raygrid run`: "run the same command again" (not Python's storage=...); the
    rerun of the same command says how many stored fits it reused and how many it runs."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from fault_helpers import store_rows

    spec, out = tmp_path / "slow.yaml", tmp_path / "out"
    spec.write_text(SLOW_SPEC)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "tests")]))
    env.pop("RAY_ADDRESS", None)
    command = [sys.executable, "-m", "raygrid.cli", "run", str(spec), "--out", str(out)]
    proc = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while store_rows(out) < 4:
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    hint = [line for line in err.splitlines() if line.startswith("raygrid: search interrupted")]
    assert len(hint) == 1 and "Run the same command again to resume" in hint[0], err
    assert "storage=" not in err
    saved = store_rows(out)
    assert 4 <= saved < 20

    again = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert f"reused {saved} stored fits from {str(out)!r}, running {20 - saved}" in again.stderr, again.stderr


def test_verbose_search_says_how_many_stored_fits_it_reused(tmp_path, capsys):
    from fault_helpers import CountingClassifier, data

    from raygrid import GridSearchCV

    X, y = data()
    storage = str(tmp_path / "store")
    GridSearchCV(CountingClassifier(), {"a": [0, 1, 2]}, cv=2, backend="serial", storage=storage).fit(X, y)
    capsys.readouterr()
    GridSearchCV(CountingClassifier(), {"a": [0, 1, 2, 3, 4]}, cv=2, backend="serial", storage=storage,
                 verbose=1).fit(X, y)
    assert f"reused 6 stored fits from {storage!r}, running 4" in capsys.readouterr().err
