"""The fused engine (raygrid.engine.fused): Keras on JAX, many fits in one vectorised program.

The Keras checks run in a subprocess with ``KERAS_BACKEND=jax``: this pytest process may have
imported Keras with TensorFlow already. Each script prints one JSON line; the asserts are here.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]

PRELUDE = """
import json, os, sys, warnings
import numpy as np
from sklearn.base import clone
from sklearn.metrics import check_scoring
from sklearn.model_selection import StratifiedKFold
from sklearn.preprocessing import minmax_scale
from raygrid import GridSearchCV
from raygrid.engine import fused
from raygrid.engine.fitting import Payload
from raygrid.keras import seed_classifier
from raygrid.engine.plan import Trial

data = np.loadtxt(sys.argv[1], delimiter=",", skiprows=1)
"""


class JaxScript:
    """A script started in its own process with KERAS_BACKEND=jax; ``result()`` waits for it."""

    def __init__(self, script: str, pima, timeout: int = 300):
        env = dict(os.environ, KERAS_BACKEND="jax", TF_CPP_MIN_LOG_LEVEL="3",
                   PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self.timeout = timeout
        self.proc = subprocess.Popen(
            [sys.executable, "-c", PRELUDE + textwrap.dedent(script), str(pima)], cwd=ROOT,
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def result(self) -> dict:
        try:
            stdout, stderr = self.proc.communicate(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            stdout, stderr = self.proc.communicate()
            raise AssertionError(f"script timed out:\n{stderr[-6000:]}") from None
        if self.proc.returncode != 0:
            raise AssertionError(f"script failed ({self.proc.returncode}):\n{stderr[-6000:]}")
        lines = [line for line in stdout.splitlines() if line.startswith("{")]
        assert lines, f"no JSON from the script:\n{stdout[-3000:]}\n{stderr[-3000:]}"
        return json.loads(lines[-1])


@pytest.fixture(scope="module")
def jax_scripts(pima_csv):
    """The two Keras checks, started together: each is mostly one busy thread, so on a
    machine with two cores or more they overlap."""
    started = {"parity": JaxScript(PARITY, pima_csv), "grid": JaxScript(GRID, pima_csv)}
    yield started
    for script in started.values():
        if script.proc.poll() is None:
            script.proc.kill()
            script.proc.communicate()


PARITY = """
# 767 rows: the folds train on 511, 511 and 512 rows; batch 10 leaves a short last batch.
data = data[:-1]
X = minmax_scale(data[:, :8]); y = data[:, 8].astype(int)
splits = list(StratifiedKFold(3).split(X, y))
out = {"train_sizes": [len(tr) for tr, _ in splits]}


def payload_for(est):
    return Payload(estimator=est, X=X, y=y, splits=splits, scorer=check_scoring(est),
                   metrics=("score",), keras=True)


def keras_fit(model, init, fold, encoder, **fit):
    for v, value in zip(list(model.trainable_variables) + list(model.non_trainable_variables), init):
        v.assign(value)
    tr = splits[fold][0]
    model.fit(X[tr], encoder.transform(y[tr]), verbose=0, **fit)
    return [np.asarray(v.value) for v in model.trainable_variables]


def max_diff(a, b):
    return float(max(np.abs(np.asarray(x) - np.asarray(z)).max() for x, z in zip(a, b)))


# 1. One lane, no shuffling, against Keras' own fit from the same initial weights.
est = seed_classifier(model__activation="tanh", optimizer="adam", batch_size=10, epochs=1,
                      shuffle=False)
payload = payload_for(est)
plan = fused.plan_fusion(payload, [Trial(0, 1, {}, 7)])
spec = plan.groups[0]
run = fused.GroupRun(payload, spec, plan.members)
init = run.weights()[0]
run.train_to(1)
member = plan.members[spec.lanes[0].build_key]
want = keras_fit(member.model, init, 1, member.encoders[1], batch_size=10, epochs=1,
                 shuffle=False)
out["single_lane"] = max_diff(run.weights()[0][:len(want)], want)
out["single_lane_moved"] = max_diff(run.weights()[0][:len(want)], init[:len(want)])

# 2. Three lanes in one program: activations and optimizers switched per lane, unequal folds.
trials = [Trial(0, 0, {"model__activation": "tanh", "optimizer": "adam"}, 1),
          Trial(1, 1, {"model__activation": "relu", "optimizer": "rmsprop"}, 2),
          Trial(2, 2, {"model__activation": "sigmoid", "optimizer": "sgd"}, 3)]
plan = fused.plan_fusion(payload, trials)
out["lanes_groups"] = len(plan.groups)
spec = plan.groups[0]
run = fused.GroupRun(payload, spec, plan.members)
inits = run.weights()
run.train_to(1)
out["lanes_switches"] = len(run.switches)
out["lanes_optimizers"] = len(run.optimizers)
diffs = []
for lane, init, got in zip(spec.lanes, inits, run.weights()):
    m = plan.members[lane.build_key]
    want = keras_fit(m.model, init, lane.fold, m.encoders[lane.fold], batch_size=10, epochs=1,
                     shuffle=False)
    diffs.append(max_diff(got[:len(want)], want))
out["lanes"] = diffs

# 3. Shuffled and seeded: each lane equals scikeras' own fit with random_state=seed (same
#    initial weights, same batch order), two epochs.
est = seed_classifier(model__activation="relu", optimizer="rmsprop", batch_size=10, epochs=2)
payload = payload_for(est)
plan = fused.plan_fusion(payload, [Trial(0, f, {}, 100 + f) for f in range(3)])
spec = plan.groups[0]
run = fused.GroupRun(payload, spec, plan.members)
run.train_to(2)
diffs = []
for lane, got in zip(spec.lanes, run.weights()):
    tr = splits[lane.fold][0]
    e = clone(est).set_params(random_state=lane.seed).fit(X[tr], y[tr])
    diffs.append(max_diff(got, [np.asarray(v.value) for v in e.model_.trainable_variables]))
out["seeded"] = diffs

# 4. What cannot be fused runs on the standard engine in the same search.
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    s = GridSearchCV(seed_classifier(epochs=1, batch_size=64, validation_split=0.25),
                     {"fit__validation_freq": [1, 2]}, cv=StratifiedKFold(2), backend="serial",
                     engine="fused", refit=False, random_state=0).fit(X, y)
out["mixed_engines"] = s.results_.groupby("param_fit__validation_freq")["engine"].agg(set).apply(
    sorted).to_dict()
out["mixed_errors"] = int(s.results_["error"].notna().sum())
out["mixed_warning"] = any("validation_freq" in str(w.message) for w in caught)
out["mixed_scores"] = s.results_["test_score"].tolist()
print(json.dumps({k: ({str(a): b for a, b in v.items()} if isinstance(v, dict) else v)
                  for k, v in out.items()}))
"""

GRID = """
X = minmax_scale(data[:, :8]); y = data[:, 8].astype(int)
grid = {"model__activation": ["tanh", "relu"], "optimizer": ["adam", "rmsprop"],
        "model__init": ["glorot_uniform", "uniform"], "batch_size": [16], "epochs": [1, 2]}
out = {}
for engine in ("fused", "standard"):
    s = GridSearchCV(seed_classifier(optimizer__learning_rate=0.02), grid, cv=StratifiedKFold(3),
                     scoring=["accuracy", "roc_auc"], refit="accuracy", backend="serial",
                     engine=engine, random_state=0)
    s.fit(X, y)
    cv = s.cv_results_
    out[engine] = {
        "params": [dict(p) for p in cv["params"]],
        "mean": cv["mean_test_accuracy"].tolist(), "std": cv["std_test_accuracy"].tolist(),
        "splits": [cv[f"split{i}_test_accuracy"].tolist() for i in range(3)],
        "auc": cv["mean_test_roc_auc"].tolist(),
        "engines": sorted(set(s.results_.get("engine", ["standard"]))),
        "seeds": s.results_["seed"].astype(float).tolist(),
        "fit_time": s.results_["fit_time"].tolist(),
        "best": dict(s.best_params_), "refit_score": float(s.score(X, y)),
    }
out["stats"] = fused.last_stats()
print(json.dumps(out, default=str))
"""

RAY = """
import ray
X = minmax_scale(data[:, :8]); y = data[:, 8].astype(int)
grid = {"model__activation": ["tanh", "relu"], "epochs": [1, 2]}
out = {}
for backend in ("serial", "ray"):
    s = GridSearchCV(seed_classifier(batch_size=32), grid, cv=StratifiedKFold(3),
                     backend=backend, engine="fused", random_state=3, refit=False)
    s.fit(X, y)
    out[backend] = {"scores": s.results_["test_score"].tolist(),
                    "engines": sorted(set(s.results_["engine"])),
                    "nodes": sorted(set(s.results_["node"])),
                    "in_driver": bool((s.results_["pid"] == os.getpid()).all())}
out["ray_node_ids"] = [n["NodeID"] for n in ray.nodes()]
print(json.dumps(out))
"""


@pytest.mark.keras
def test_fused_training_equals_keras_fit(jax_scripts):
    out = jax_scripts["parity"].result()
    assert sorted(out["train_sizes"]) == [511, 511, 512]  # unequal folds, short last batches
    # One lane, one epoch, no shuffling: Keras' own fit from the same initial weights.
    assert out["single_lane_moved"] > 1e-3  # it trained
    assert out["single_lane"] < 1e-5
    # Three lanes with switched activations and optimizers, each equal to its own Keras fit.
    assert out["lanes_groups"] == 1
    assert out["lanes_switches"] >= 2 and out["lanes_optimizers"] == 3
    assert max(out["lanes"]) < 1e-5, out["lanes"]
    # Seeded and shuffled: the weights scikeras' fit reaches with random_state=seed.
    assert max(out["seeded"]) < 1e-5, out["seeded"]
    # validation_freq=2 cannot be fused: it runs on the standard engine, in the same search.
    assert out["mixed_engines"] == {"1": ["fused"], "2": ["standard"]}
    assert out["mixed_errors"] == 0 and out["mixed_warning"]
    assert all(0.3 < s <= 1.0 for s in out["mixed_scores"])


@pytest.mark.keras
def test_reduced_seed_grid_agrees_with_standard_engine(jax_scripts):
    out = jax_scripts["grid"].result()
    fused, std = out["fused"], out["standard"]
    assert fused["params"] == std["params"]
    assert fused["engines"] == ["fused"] and std["engines"] == ["standard"]
    assert all(t > 0 for t in fused["fit_time"])
    mean_f, mean_s = np.array(fused["mean"]), np.array(std["mean"])
    std_f, std_s = np.array(fused["std"]), np.array(std["std"])
    # Every candidate agrees within fold-to-fold noise.
    tolerance = 2 * np.maximum(std_f, std_s) + 0.02
    assert np.all(np.abs(mean_f - mean_s) <= tolerance), np.c_[mean_f, mean_s, tolerance]
    # The longest candidate of each lane trains from the same seed as the standard engine:
    # the same fits, up to float rounding (at most one test row may flip).
    longest = [i for i, p in enumerate(fused["params"]) if p["epochs"] == 2]
    seeds_f, seeds_s = np.array(fused["seeds"]).reshape(-1, 3), np.array(std["seeds"]).reshape(-1, 3)
    np.testing.assert_array_equal(seeds_f[longest], seeds_s[longest])  # seeds are recorded
    shorter = [i for i, p in enumerate(fused["params"]) if p["epochs"] == 1]
    for i in shorter:  # a shorter candidate was read off its lane: it carries the lane's seed
        twin = fused["params"].index({**fused["params"][i], "epochs": 2})
        np.testing.assert_array_equal(seeds_f[i], seeds_f[twin])
    splits_f, splits_s = np.array(fused["splits"]), np.array(std["splits"])
    assert np.abs(splits_f[:, longest] - splits_s[:, longest]).max() <= 1 / 256 + 1e-9
    assert np.abs(np.array(fused["auc"])[longest] - np.array(std["auc"])[longest]).max() < 5e-3
    # The top region of the ranking is the same: each engine's best is near the other's top.
    top_f = {i for i in range(len(mean_f)) if mean_f[i] >= mean_f.max() - 0.02}
    top_s = {i for i in range(len(mean_s)) if mean_s[i] >= mean_s.max() - 0.02}
    assert int(np.argmax(mean_f)) in top_s and int(np.argmax(mean_s)) in top_f
    assert top_f & top_s
    # One program for the whole grid: activations and optimizers are lane values.
    assert [s["programs"] for s in out["stats"]] == [1]
    assert out["stats"][0]["lanes"] == 24 and out["stats"][0]["trials"] == 48


@pytest.mark.keras
@pytest.mark.slow
def test_fused_groups_as_ray_tasks(pima_csv):
    script = "import ray\nray.init(address='local', num_cpus=2, include_dashboard=False, " \
             "log_to_driver=False)\n" + RAY
    out = JaxScript(script, pima_csv, timeout=400).result()
    assert out["ray"]["engines"] == ["fused"]
    assert set(out["ray"]["nodes"]) <= set(out["ray_node_ids"])
    assert out["serial"]["in_driver"] and not out["ray"]["in_driver"]  # ran in a Ray task
    np.testing.assert_allclose(out["ray"]["scores"], out["serial"]["scores"], atol=1 / 256)


def test_non_keras_estimator_falls_back_to_standard_engine():
    from sklearn.datasets import load_iris
    from sklearn.tree import DecisionTreeClassifier

    from raygrid import GridSearchCV

    X, y = load_iris(return_X_y=True)
    grid = {"max_depth": [1, 2]}
    tree = DecisionTreeClassifier(random_state=0)
    standard = GridSearchCV(tree, grid, cv=3, backend="serial").fit(X, y)
    with pytest.warns(UserWarning, match="not a scikeras model"):
        fused = GridSearchCV(tree, grid, cv=3, backend="serial", engine="fused").fit(X, y)
    assert list(fused.results_["engine"]) == ["standard"] * 6
    np.testing.assert_array_equal(fused.cv_results_["mean_test_score"],
                                  standard.cv_results_["mean_test_score"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "auto" falls back silently
        GridSearchCV(tree, grid, cv=3, backend="serial", engine="auto").fit(X, y)


def test_unknown_engine_is_rejected():
    from sklearn.tree import DecisionTreeClassifier

    from raygrid import GridSearchCV

    with pytest.raises(ValueError, match="engine must be one of"):
        GridSearchCV(DecisionTreeClassifier(), {"max_depth": [1]}, cv=2, backend="serial",
                     engine="turbo").fit(np.eye(4), [0, 1, 0, 1])


@pytest.mark.parametrize("gpus, groups, share", [
    (0, 3, 0),        # no GPU: CPU tasks
    (1, 1, 1.0),      # one group, one GPU
    (1, 3, 0.3333),   # the seed grid's three groups share one GPU, all at once
    (2, 3, 0.5),      # two per GPU
    (4, 3, 1.0),      # more GPUs than groups: a whole one each
    (1, 7, 0.1428),   # rounded down to Ray's 4 decimals, so that all 7 fit on the GPU
    (0.5, 2, 0),      # no whole GPU in the cluster: CPU tasks
])
def test_fused_groups_share_the_gpus_evenly(gpus, groups, share):
    from raygrid.engine.fused import gpu_share

    assert gpu_share(gpus, groups) == share
    if share:  # the groups that share one GPU fit on it together
        assert (-(-groups // int(gpus))) * share <= 1.0


# -- fused groups as work units of the Ray executor, from this (TensorFlow-by-default) driver ----
def _pima(pima_csv, n=None):
    from sklearn.preprocessing import minmax_scale

    data = np.loadtxt(pima_csv, delimiter=",", skiprows=1)
    data = data if n is None else data[:n]
    return minmax_scale(data[:, :8]), data[:, 8].astype(int)


def _small_grid_search(**kwargs):
    from raygrid import GridSearchCV
    from raygrid.keras import seed_classifier

    grid = {"model__activation": ["tanh", "relu"], "epochs": [1, 2]}
    return GridSearchCV(seed_classifier(batch_size=32), grid, cv=2, random_state=5, refit=False,
                        **kwargs)


@pytest.mark.keras
def test_default_engine_trains_fused_on_jax_workers_whatever_the_driver_backend(
        ray_local, pima_csv, tmp_path):
    from raygrid.keras import keras_backend

    X, y = _pima(pima_csv, 300)
    driver_backend = keras_backend()
    first = _small_grid_search(storage=str(tmp_path)).fit(X, y)
    res = first.results_
    assert list(res["engine"]) == ["fused"] * 8 and first.n_fused_ == 8
    from raygrid.engine import fused

    stats = fused.last_stats()  # the groups' timings came back from the workers
    assert sum(s["trials"] for s in stats) == 8 and all(s["compile_s"] > 0 for s in stats)
    assert not (res["pid"] == os.getpid()).any()  # trained in Ray workers (Keras on JAX there)
    assert res["error"].isna().all() and res["test_score"].between(0.3, 1.0).all()
    # A shorter candidate is read off its lane: it carries the lane's seed (the longest's).
    by = res.set_index(["param_model__activation", "param_epochs", "fold"])["seed"]
    for act in ("tanh", "relu"):
        for fold in (0, 1):
            assert by[(act, 1, fold)] == by[(act, 2, fold)]
    # Stored and reused: still fused, with the lane's seed.
    again = _small_grid_search(storage=str(tmp_path)).fit(X, y)
    assert again.results_["cached"].all()
    assert list(again.results_["engine"]) == ["fused"] * 8 and again.n_fused_ == 8
    assert list(again.results_["seed"]) == list(res["seed"])
    np.testing.assert_array_equal(again.results_["test_score"], res["test_score"])
    # A standard search never takes the fused fits for its own.
    standard = _small_grid_search(storage=str(tmp_path), engine="standard").fit(X, y)
    assert not standard.results_["cached"].any()
    assert list(standard.results_["engine"]) == ["standard"] * 8 and standard.n_fused_ == 0
    assert driver_backend == keras_backend()  # the driver's Keras was left as it was
    # The report and `raygrid show` say how the fits were trained, not only the driver's backend.
    from click.testing import CliRunner

    from raygrid import save_search
    from raygrid.cli.main import main

    groups = len(first.fused_groups_)
    assert groups == len(stats) >= 1 and {g["keras_backend"] for g in first.fused_groups_} == {"jax"}
    for search, name, line in (
            (first, "fused", f"8 fits in {groups} fused group{'s' if groups > 1 else ''}, Keras on jax"),
            (standard, "standard", f"8 fits, Keras on {driver_backend}")):
        out = tmp_path / f"out-{name}"
        save_search(search, out)
        best = json.loads((out / "best.json").read_text())
        assert best["training"]["engines"] == {name: 8}
        assert best["training"]["driver_keras_backend"] == driver_backend
        html = (out / "report.html").read_text()
        assert f"{name} engine" in html and line in html, name
        assert "keras_backend (driver)" in html
        shown = CliRunner().invoke(main, ["show", str(out)])
        assert shown.exit_code == 0 and line in shown.output, shown.output


@pytest.mark.keras
def test_unit_that_cannot_train_fused_falls_back_with_its_reason(pima_csv):
    from raygrid.engine import fused
    from raygrid.engine.fitting import Payload
    from raygrid.keras import seed_classifier
    from raygrid.engine.plan import Trial
    from sklearn.metrics import check_scoring

    X, y = _pima(pima_csv, 120)
    est = seed_classifier(epochs=1)
    payload = Payload(estimator=est, X=X, y=y, splits=[(np.arange(60), np.arange(60, 120))],
                      scorer=check_scoring(est), metrics=("score",), keras=True)
    trials = [Trial(0, 0, {}, 1, "fused"), Trial(1, 0, {"epochs": 2}, 1, "fused")]
    from raygrid.keras import keras_backend

    if keras_backend() != "jax":  # this process: the fused program cannot run here
        rows = fused.run_unit(payload, trials)
        assert [r.engine for r in rows] == [fused.FALLBACK] * 2
        assert all("Keras backend of the worker is" in r.error for r in rows)
    rows = fused.unit_failed(trials, RuntimeError("worker died"))
    assert [r.engine for r in rows] == [fused.FALLBACK] * 2
    assert "its task failed (RuntimeError: worker died)" in rows[0].error
    # The executor warns once with the reasons and runs the fits on the standard engine.
    from raygrid.engine.executors import SerialExecutor

    class Failing(SerialExecutor):
        def run(self, shared, work):
            for item in work:
                if isinstance(item, fused.Unit):
                    yield from fused.unit_failed(item.trials, RuntimeError("no JAX here"))
                else:
                    yield from super().run(shared, [item])

    ex = fused.FusedExecutor(Failing(), "auto", payload)
    ex._units.update({(0, 0): "u", (1, 0): "u"})
    with pytest.warns(UserWarning, match=r"could not train 2 fits on the fused engine; they ran one "
                                         r"by one on the standard engine: 2 because its task "
                                         r"failed \(RuntimeError: no JAX here\)"):
        out = list(ex.run(ex.share(payload), trials))
    assert sorted(r.engine for r in out) == ["standard", "standard"]
    assert all(r.error is None for r in out)


FUSED_DRIVER = """
import sys
import numpy as np
from sklearn.preprocessing import minmax_scale
from raygrid import GridSearchCV
from raygrid.keras import seed_classifier
data = np.loadtxt(sys.argv[1], delimiter=",", skiprows=1)[:300]
X = minmax_scale(data[:, :8]); y = data[:, 8].astype(int)
GridSearchCV(seed_classifier(epochs=1), GRID, cv=2, random_state=1, refit=False, n_jobs=1,
             storage=sys.argv[2]).fit(X, y)
print("DONE", flush=True)
"""
#: Five units (one per batch size) of four fits (2 activations x 2 folds), one at a time.
CTRL_C_GRID = {"batch_size": [8, 16, 32, 64, 128], "model__activation": ["tanh", "relu"]}


@pytest.mark.keras
@pytest.mark.slow
def test_ctrl_c_during_fused_search_then_resume_runs_no_group_twice(ray_local, pima_csv,
                                                                     tmp_path):
    import signal

    from fault_helpers import store_rows

    from raygrid import GridSearchCV
    from raygrid.keras import seed_classifier

    script = tmp_path / "driver.py"
    script.write_text(FUSED_DRIVER.replace("GRID", repr(CTRL_C_GRID)))
    storage = tmp_path / "store"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "tests"), env.get("PYTHONPATH", "")])
    proc = subprocess.Popen([sys.executable, str(script), str(pima_csv), str(storage)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    import time

    deadline = time.monotonic() + 400
    while store_rows(storage) < 4:  # the first unit is stored
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        assert time.monotonic() < deadline, "the first fused unit never finished"
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=300)
    assert "DONE" not in out and proc.returncode != 0, err[-3000:]
    saved = store_rows(storage)
    assert saved % 4 == 0 and 4 <= saved < 20  # whole units: the one in flight finished
    X, y = _pima(pima_csv, 300)
    resumed = GridSearchCV(seed_classifier(epochs=1), CTRL_C_GRID, cv=2, random_state=1,
                           refit=False, n_jobs=1, storage=str(storage)).fit(X, y)
    res = resumed.results_
    assert (res["engine"] == "fused").all() and resumed.n_fused_ == 20
    assert res["cached"].sum() == saved  # every stored fit reused: no fused group ran twice
    assert store_rows(storage) == 20


@pytest.mark.keras
def test_pipeline_with_a_keras_model_is_seen_as_the_model_on_preprocessed_folds(pima_csv):
    from sklearn.metrics import check_scoring
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import MinMaxScaler

    from raygrid.engine import fused
    from raygrid.engine.fitting import Payload
    from raygrid.keras import seed_classifier
    from raygrid.engine.plan import Trial

    X, y = _pima(pima_csv, 90)
    X = X * 7 + 3  # scaled per fold below
    pipe = Pipeline([("scale", MinMaxScaler()), ("mlp", seed_classifier(epochs=1))])
    splits = list(StratifiedKFold(3).split(X, y))
    payload = Payload(estimator=pipe, X=X, y=y, splits=splits, scorer=check_scoring(pipe),
                      metrics=("score",), keras=True)
    trials = [Trial(0, f, {"mlp__epochs": 2, "mlp__model__activation": "tanh"}, 9)
              for f in range(3)]
    view, plain = fused.final_step_view(payload, trials, transform=True)
    assert view.estimator is pipe.steps[-1][1]
    assert [t.params for t in plain] == [{"epochs": 2, "model__activation": "tanh"}] * 3
    assert [(t.candidate, t.fold, t.seed) for t in plain] == [(0, f, 9) for f in range(3)]
    n = len(X)
    for f, (train, test) in enumerate(splits):
        v_train, v_test = view.splits[f]
        np.testing.assert_array_equal(v_train, train + f * n)
        np.testing.assert_array_equal(v_test, test + f * n)
        want = MinMaxScaler().fit(X[train]).transform(X)  # fitted on the fold's training rows
        np.testing.assert_allclose(view.X[f * n:(f + 1) * n], want)
        np.testing.assert_array_equal(view.y[f * n:(f + 1) * n], y)
    # The driver plans lanes on the model's parameters alone (no preprocessing there).
    plan = fused.assign(payload, trials, "fused")
    assert [t.engine for t in plan.trials] == ["fused"] * 3
    assert plan.trials[0].params == trials[0].params  # the search's own parameters
    # In this process (the serial backend) only when its Keras runs on JAX.
    from raygrid.keras import keras_backend

    here = fused.assign(payload, trials, "fused", in_process=True)
    if keras_backend() == "jax":
        assert [t.engine for t in here.trials] == ["fused"] * 3
    else:
        assert [t.engine for t in here.trials] == ["standard"] * 3
        assert "use backend='ray'" in next(iter(here.reasons))
    # A grid over the preprocessing cannot be fused: those fits stay standard, with the reason.
    other = [Trial(0, 0, {"scale__clip": True}, 1)]
    plan = fused.assign(payload, other, "fused")
    assert plan.trials[0].engine == "standard"
    assert plan.reasons == {"the grid sets parameters of the pipeline's other steps": 1}


def test_progress_line_counts_fused_fits():
    from rich.console import Console

    from raygrid.engine.fitting import FitResult
    from raygrid.outputs.progress import SearchProgress

    progress = SearchProgress(3, 1, "score", console=Console(file=open(os.devnull, "w")))
    progress.add(FitResult(0, 0, {"score": 0.5}, None, 0.1, 0.0, 4, engine="fused"))
    progress.add(FitResult(1, 0, {"score": 0.6}, None, 0.1, 0.0, 4))
    assert progress.fused == 1 and " · 1 fused" in progress.render(120).plain


def test_ctrl_c_while_a_result_is_recorded_reaches_the_units_in_flight():
    """The runner throws the interrupt into the fused executor's stream: it must reach the
    inner executor (which lets the units in flight finish) and come back with their fits."""
    from raygrid.engine import fused
    from raygrid.engine.fitting import FitResult, Payload
    from raygrid.engine.plan import Trial
    from raygrid.engine.runner import _drain

    def row(c, engine="fused"):
        return FitResult(c, 0, {"score": 0.5}, None, 0.1, 0.0, 4, engine=engine)

    class Inner:
        in_process = True
        interrupted = False

        def share(self, payload):
            return payload

        def run(self, shared, work):
            try:
                yield row(0)
                yield row(1)  # never: the interrupt comes first
            except KeyboardInterrupt as exc:
                Inner.interrupted = True
                yield row(2)  # a unit in flight finished
                yield FitResult(3, 0, {}, None, 0, 0, 0, error="why", engine=fused.FALLBACK)
                raise exc

    payload = Payload(estimator=None, X=np.zeros((4, 1)), y=None, splits=[], scorer=None,
                      metrics=("score",))
    ex = fused.FusedExecutor(Inner(), "fused", payload)
    ex._units.update({(c, 0): "u" for c in range(4)})
    stream = ex.run(payload, [Trial(c, 0, {}, 1, "fused") for c in range(4)])
    assert next(stream).candidate == 0
    kept = list(_drain(stream, KeyboardInterrupt()))
    assert Inner.interrupted
    assert [r.candidate for r in kept] == [2]  # the finished unit's fit; no fallback row


@pytest.mark.keras
def test_cross_validate_trains_the_folds_fused_by_default(ray_local, pima_csv):
    import raygrid
    from raygrid.engine import fused
    from raygrid.keras import seed_classifier

    X, y = _pima(pima_csv, 240)
    out = raygrid.cross_validate(seed_classifier(epochs=2), X, y, cv=3, random_state=0,
                                 scoring=["accuracy", "roc_auc"])
    assert np.isfinite(out["test_roc_auc"]).all() and (out["test_accuracy"] > 0.3).all()
    stats = fused.last_stats()  # one program: the three folds as lanes
    assert [(s["lanes"], s["trials"]) for s in stats] == [(3, 3)]


def test_fused_engine_warns_once_about_the_fits_it_leaves():
    from sklearn.datasets import load_iris
    from sklearn.tree import DecisionTreeClassifier

    from raygrid import GridSearchCV

    X, y = load_iris(return_X_y=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        GridSearchCV(DecisionTreeClassifier(), {"max_depth": [1, 2]}, cv=3, backend="serial",
                     engine="fused").fit(X, y)
    assert len([w for w in caught if "not a scikeras model" in str(w.message)]) == 1
