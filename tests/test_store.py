"""The fit store: fingerprints, resume and cache semantics, status, bad files, concurrent writers.

Every test counts the fits that really executed (``CountingClassifier`` logs each completed fit).
Most run on the serial executor (the store sits on the driver; the executor does not matter to
it); one 2,000-fit search checks the store on Ray.
"""
from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import sklearn
import pytest
from sklearn.exceptions import FitFailedWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import KFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from fault_helpers import CountingClassifier, data, fits_logged
from raygrid import GridSearchCV, RandomizedSearchCV, cross_validate
from raygrid.engine.fitting import FitResult
from raygrid.engine.plan import Trial
from raygrid.cli.status import format_status, status
from raygrid.engine.store import FILENAME, Fingerprinter, FitStore, StoreError

TESTS = Path(__file__).resolve().parent
SCORE_KEYS = ("params", "mean_test_score", "std_test_score", "rank_test_score",
              "split0_test_score", "split1_test_score")


def search(tmp_path, grid, *, log="log", storage="store", **kw):
    est = CountingClassifier(log=str(tmp_path / log))
    kw.setdefault("cv", 2)
    kw.setdefault("backend", "serial")
    kw.setdefault("refit", False)  # a refit would log one more fit
    return GridSearchCV(est, grid, storage=None if storage is None else str(tmp_path / storage), **kw)


def assert_same_scores(a, b):
    for key in SCORE_KEYS:
        if key == "params":
            assert a[key] == b[key]
        else:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)


# -- fingerprints --------------------------------------------------------------------------------
def _fp(estimator, params, X=None, y=None, splits=None, fold=0, **kw):
    X0, y0 = data()
    X = X0 if X is None else X
    y = y0 if y is None else y
    splits = splits or list(KFold(2).split(X))
    fpr = Fingerprinter(estimator=estimator, X=X, y=y, splits=splits, **kw)
    return fpr.trial(Trial(0, fold, params))


def test_fingerprint_is_stable_and_sensitive():
    est = CountingClassifier()
    base = _fp(est, {"a": 1})
    assert base == _fp(CountingClassifier(), {"a": 1})
    assert len(base) == 64 and int(base, 16) >= 0
    X, y = data()
    changed = [
        _fp(est, {"a": 2}),
        _fp(est, {"a": 1.0}),  # another type: another fit for an estimator that cares
        _fp(CountingClassifier(b=3), {"a": 1}),
        _fp(est, {"a": 1}, fold=1),
        _fp(est, {"a": 1}, X=X + 1e-9),
        _fp(est, {"a": 1}, y=1 - y),
        _fp(est, {"a": 1}, splits=list(KFold(2, shuffle=True, random_state=0).split(X))),
        _fp(est, {"a": 1}, scoring="accuracy"),
        _fp(est, {"a": 1}, error_score=0.0),
        _fp(est, {"a": 1}, return_train_score=True),
        _fp(est, {"a": 1}, fit_params={"sample_weight": np.ones(60)}),
    ]
    assert base not in changed and len(set(changed)) == len(changed)


def test_fingerprint_of_nested_estimators_functions_and_sets():
    pipe = Pipeline([("scale", StandardScaler()), ("clf", LogisticRegression())])
    a = _fp(pipe, {"clf__C": 1.0})
    assert a == _fp(Pipeline([("scale", StandardScaler()), ("clf", LogisticRegression())]),
                    {"clf__C": 1.0})
    assert a != _fp(pipe, {"clf__C": 2.0})
    assert a != _fp(pipe, {"clf": LogisticRegression(C=2.0)})
    assert _fp(pipe, {"clf": LogisticRegression(C=2.0)}) == _fp(pipe, {"clf__C": 2.0})

    def scorer_a(est, X, y):
        return 1.0

    def scorer_b(est, X, y):
        return 2.0

    scorer_b.__qualname__ = scorer_a.__qualname__  # same name, other code: another fingerprint
    assert _fp(CountingClassifier(), {}, scoring=scorer_a) != _fp(CountingClassifier(), {},
                                                                    scoring=scorer_b)


def test_fingerprint_is_the_same_in_another_process():
    code = textwrap.dedent("""
        import numpy as np
        from sklearn.feature_extraction.text import CountVectorizer
        from sklearn.model_selection import KFold
        from raygrid.engine.plan import Trial
        from raygrid.engine.store import Fingerprinter
        X, y = np.arange(40.0).reshape(20, 2), np.arange(20) % 2
        f = Fingerprinter(estimator=CountVectorizer(stop_words={"x", "y", "z", "w"}), X=X, y=y,
                          splits=list(KFold(2).split(X)), scoring=["accuracy", "roc_auc"])
        print(f.trial(Trial(0, 1, {"ngram_range": (1, 2), "vocabulary": {"k": 1, "j": 0}})))
    """)
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONHASHSEED": str(seed)}) for seed in (1, 2)]
    outs = {p.communicate(timeout=120)[0].strip() for p in procs}
    namespace: dict = {}
    exec(code.replace("print(", "result = ("), namespace)
    assert outs == {namespace["result"]} and len(namespace["result"]) == 64


@pytest.mark.keras
def test_keras_wrapper_fingerprint_is_stable_across_processes(tmp_path):
    pytest.importorskip("scikeras")
    code = textwrap.dedent(f"""
        import os, sys
        sys.path.insert(0, {str(TESTS)!r})
        import keras
        from scikeras.wrappers import KerasClassifier
        from sklearn.base import clone
        from sklearn.model_selection import KFold
        from fault_helpers import data
        from raygrid.engine.plan import Trial
        from raygrid.engine.store import Fingerprinter

        def build(hidden=8, activation="relu"):
            model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(hidden, activation=activation),
                                      keras.layers.Dense(1, activation="sigmoid")])
            return model

        def make():
            return KerasClassifier(model=build, loss="binary_crossentropy",
                                   optimizer=keras.optimizers.Adam(learning_rate=0.01),
                                   callbacks=[keras.callbacks.EarlyStopping(patience=2)],
                                   epochs=2, verbose=0)
        X, y = data()
        fps = set()
        for est in (make(), make(), clone(make())):
            f = Fingerprinter(estimator=est, X=X, y=y, splits=list(KFold(2).split(X)), keras=True)
            fps.add(f.trial(Trial(0, 0, {{"model__hidden": 4, "batch_size": 8}}, seed=7)))
        assert len(fps) == 1, fps
        print(fps.pop())
    """)
    env = {**os.environ, "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "3"}
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True,
                              env={**env, "PYTHONHASHSEED": str(seed)}) for seed in (1, 2)]
    outs = []
    for proc in procs:
        out, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err[-3000:]
        outs.append(out.strip().splitlines()[-1])
    assert outs[0] == outs[1] and len(outs[0]) == 64


# -- resume and cache ----------------------------------------------------------------------------
def test_rerun_reuses_every_fit(tmp_path):
    X, y = data()
    first = search(tmp_path, {"a": [1, 2, 3]}).fit(X, y)
    assert len(fits_logged(tmp_path / "log")) == 6
    assert not first.results_["cached"].any()
    again = search(tmp_path, {"a": [1, 2, 3]}).fit(X, y)
    assert len(fits_logged(tmp_path / "log")) == 6  # nothing ran
    assert again.results_["cached"].all()
    assert_same_scores(first.cv_results_, again.cv_results_)
    np.testing.assert_array_equal(first.cv_results_["mean_fit_time"], again.cv_results_["mean_fit_time"])
    assert again.best_params_ == {"a": 3}


def test_extended_grid_runs_only_new_candidates(tmp_path):
    X, y = data()
    search(tmp_path, {"a": [1, 2], "b": [0]}).fit(X, y)
    assert len(fits_logged(tmp_path / "log")) == 4
    # More values of both parameters: candidate numbers shift, fingerprints do not.
    wide = search(tmp_path, {"a": [0, 1, 2], "b": [0, 5]}).fit(X, y)
    ran = fits_logged(tmp_path / "log")[4:]
    assert sorted({(a, b) for a, b, *_ in ran}) == [("0", "0"), ("0", "5"), ("1", "5"), ("2", "5")]
    assert len(ran) == 8
    assert wide.results_["cached"].sum() == 4
    fresh = search(tmp_path, {"a": [0, 1, 2], "b": [0, 5]}, log="other", storage=None).fit(X, y)
    assert_same_scores(wide.cv_results_, fresh.cv_results_)


def test_changed_data_or_split_reuses_nothing(tmp_path):
    X, y = data()
    search(tmp_path, {"a": [1, 2]}).fit(X, y)
    search(tmp_path, {"a": [1, 2]}).fit(X[:-2], y[:-2])
    assert len(fits_logged(tmp_path / "log")) == 8
    X2 = X.copy()
    X2[0, 0] += 1e-12
    search(tmp_path, {"a": [1, 2]}).fit(X2, y)
    assert len(fits_logged(tmp_path / "log")) == 12
    search(tmp_path, {"a": [1, 2]}, cv=KFold(2, shuffle=True, random_state=1)).fit(X, y)
    assert len(fits_logged(tmp_path / "log")) == 16
    search(tmp_path, {"a": [1, 2]}, cv=KFold(2, shuffle=True, random_state=1)).fit(X, y)
    assert len(fits_logged(tmp_path / "log")) == 16  # the same shuffled split: reused


def test_cache_false_reruns_and_still_records(tmp_path):
    X, y = data()
    search(tmp_path, {"a": [1, 2]}).fit(X, y)
    before = {r[0]: r[1] for r in _rows(tmp_path / "store", "fingerprint, finished_at")}
    rerun = search(tmp_path, {"a": [1, 2]}, cache=False).fit(X, y)
    assert len(fits_logged(tmp_path / "log")) == 8
    assert not rerun.results_["cached"].any()
    after = {r[0]: r[1] for r in _rows(tmp_path / "store", "fingerprint, finished_at")}
    assert after.keys() == before.keys() and all(after[k] > before[k] for k in before)
    with pytest.raises(ValueError, match="cache"):
        search(tmp_path, {"a": [1]}, cache="yes").fit(X, y)


def _rows(storage, columns):
    conn = sqlite3.connect(str(Path(storage) / FILENAME))
    try:
        return conn.execute(f"SELECT {columns} FROM fits").fetchall()
    finally:
        conn.close()


def test_failed_fits_rerun_unless_cache_all_system_failures_always(tmp_path):
    X, y = data()
    est = CountingClassifier(log=str(tmp_path / "log"), fail_on=2)
    make = lambda **kw: GridSearchCV(est, {"a": [1, 2, 3]}, cv=2, backend="serial",  # noqa: E731
                                     storage=str(tmp_path / "store"), refit=False, **kw)
    with pytest.warns(FitFailedWarning):
        first = make().fit(X, y)
    assert first.results_["error"].notna().sum() == 2
    assert len(fits_logged(tmp_path / "log")) == 4
    # Turn one stored fit of a=3 into a system failure (as if its worker had died every time).
    with FitStore(tmp_path / "store") as store:
        fp = next(f for f, c, fold in store.query("SELECT fingerprint, candidate, fold FROM fits")
                  if (c, fold) == (2, 0))
        store.put(fp, FitResult(2, 0, {"score": np.nan}, None, 0.0, 0.0, 0, error="worker died",
                                system_failure=True), search_id=None)
    assert status(tmp_path / "store")["system_failures"] == 1
    with pytest.warns(FitFailedWarning):
        second = make().fit(X, y)
    ran = fits_logged(tmp_path / "log")[4:]
    assert [(a, n) for a, _, n, _ in ran] == [("3", "30")]  # the system failure ran again
    failed = second.results_["candidate"] == 1
    assert not second.results_.loc[failed, "cached"].any()  # the failed fits ran again
    assert second.results_.loc[failed, "error"].notna().all()
    assert second.results_["cached"].sum() == 3
    assert status(tmp_path / "store")["system_failures"] == 0
    # cache="all": the stored failures are reused too.
    with pytest.warns(FitFailedWarning):
        third = make(cache="all").fit(X, y)
    assert third.results_["cached"].all()
    assert third.results_.loc[failed, "error"].notna().all()
    # error_score="raise": a stored failure is run again, so its own exception is raised.
    with pytest.raises(ValueError, match="planned failure"):
        make(error_score="raise", cache="all").fit(X, y)
    with pytest.raises(ValueError, match="cache must be True, False or 'all'"):
        make(cache="yes").fit(X, y)


def test_a_changed_fit_with_the_same_class_name_and_parameters_reuses_nothing(tmp_path,
                                                                                monkeypatch):
    import importlib

    module = tmp_path / "changing_estimator.py"
    source = textwrap.dedent("""
        import numpy as np
        from sklearn.base import BaseEstimator, ClassifierMixin

        class Changing(ClassifierMixin, BaseEstimator):
            def __init__(self, a=0):
                self.a = a

            def fit(self, X, y):
                self.classes_ = np.unique(y)
                self.offset_ = OFFSET
                return self

            def predict(self, X):
                return np.full(len(X), self.classes_[0])

            def score(self, X, y=None):
                return self.a + self.offset_
    """)
    module.write_text(source.replace("OFFSET", "0.0"))
    monkeypatch.syspath_prepend(str(tmp_path))
    mod = importlib.import_module("changing_estimator")
    X, y = data()
    grid = {"a": [1, 2]}
    make = lambda: GridSearchCV(mod.Changing(), grid, cv=2, backend="serial",  # noqa: E731
                                storage=str(tmp_path / "store"), refit=False)
    first = make().fit(X, y)
    assert make().fit(X, y).results_["cached"].all()
    module.write_text(source.replace("OFFSET", "100.0"))  # the same class name and parameters
    mod = importlib.reload(mod)
    second = make().fit(X, y)
    assert not second.results_["cached"].any()
    assert (second.cv_results_["mean_test_score"] == first.cv_results_["mean_test_score"] + 100).all()


def test_classes_are_known_by_version_when_installed_by_their_code_when_in_main():
    from sklearn.svm import SVC

    from raygrid.engine.store import class_identity

    assert class_identity(SVC) == ("class", "sklearn.svm._classes.SVC",
                                   ("dist", "scikit-learn", sklearn.__version__))
    source = ("from sklearn.base import BaseEstimator\nclass Mine(BaseEstimator):\n"
              "    def fit(self, X, y):\n        return self\n")
    mine = class_identity(_main_namespace(source)["Mine"])
    assert mine[:2] == ("class", "__main__.Mine")
    assert mine == class_identity(_main_namespace(source)["Mine"])
    assert mine != class_identity(_main_namespace(source.replace("self\n", "None\n"))["Mine"])


def _main_namespace(source: str) -> dict:
    namespace = {"__name__": "__main__"}
    exec(source, namespace)
    return namespace


def test_cross_validate_and_randomized_search_use_the_store(tmp_path):
    X, y = data()
    est = CountingClassifier(a=4, log=str(tmp_path / "log"))
    r1 = cross_validate(est, X, y, cv=3, backend="serial", storage=str(tmp_path / "store"))
    r2 = cross_validate(est, X, y, cv=3, backend="serial", storage=str(tmp_path / "store"))
    assert len(fits_logged(tmp_path / "log")) == 3
    np.testing.assert_array_equal(r1["test_score"], r2["test_score"])
    cross_validate(est, X, y, cv=3, backend="serial", storage=str(tmp_path / "store"),
                   return_estimator=True)  # models are not stored: these fits run
    assert len(fits_logged(tmp_path / "log")) == 6
    assert {(s["kind"], s["n_splits"]) for s in status(tmp_path / "store")["searches"]} == {
        ("cross_validate", 3)}

    make = lambda: RandomizedSearchCV(CountingClassifier(log=str(tmp_path / "rlog")),  # noqa: E731
                                      {"a": list(range(50))}, n_iter=4, cv=2, random_state=0,
                                      backend="serial", storage=str(tmp_path / "store"),
                                      refit=False)
    a, b = make().fit(X, y), make().fit(X, y)
    assert len(fits_logged(tmp_path / "rlog")) == 8
    assert_same_scores(a.cv_results_, b.cv_results_)


def test_status_counts_done_failed_and_missing(tmp_path):
    X, y = data()
    storage = tmp_path / "store"
    with pytest.warns(FitFailedWarning):
        GridSearchCV(CountingClassifier(fail_on=1), {"a": [1, 2, 3]}, cv=2, backend="serial",
                     storage=str(storage)).fit(X, y)
    info = status(storage)
    assert (info["fits"], info["done"], info["failed"], info["system_failures"]) == (6, 4, 2, 0)
    assert (info["planned"], info["missing"]) == (6, 0)
    [s] = info["searches"]
    assert (s["kind"], s["n_candidates"], s["n_splits"], s["planned"], s["complete"]) == (
        "GridSearchCV", 3, 2, 6, True)
    # An interrupted search: its plan is recorded, two of its fits are not.
    with FitStore(storage) as store:
        store.add_plan("interrupted", kind="GridSearchCV", estimator="x", n_splits=2,
                       planned=[(0, 0, "f" * 64), (0, 1, "e" * 64)])
    info = status(storage)
    assert (info["planned"], info["missing"]) == (8, 2)
    assert {s["search_id"]: s["missing"] for s in info["searches"]}["interrupted"] == 2
    text = format_status(info)
    assert str(storage) in text and "missing 2" in text and "Resume" in text
    with pytest.raises(StoreError, match="No raygrid store"):
        status(tmp_path / "nowhere")
    assert not (tmp_path / "nowhere").exists()


def test_summary_counts_fits_by_outcome_and_search(tmp_path):
    """``FitStore.summary()``, the read API ``raygrid status`` is built on: a fit shared by two
    searches counts once in the store's totals and once in each search."""
    def fit(candidate, fold, **kw):
        return FitResult(candidate, fold, {"score": 0.5}, None, 0.1, 0.0, 3, **kw)

    with FitStore(tmp_path / "store") as store:
        store.add_plan("one", kind="GridSearchCV", estimator="e.A", n_splits=2,
                       planned=[(0, 0, "a" * 64), (0, 1, "b" * 64), (1, 0, "c" * 64), (1, 1, "d" * 64)])
        store.start_run("one")
        store.add_plan("two", kind="cross_validate", estimator="e.B", n_splits=2,
                       planned=[(0, 0, "a" * 64), (0, 1, "e" * 64)])
        store.put("a" * 64, fit(0, 0), search_id="one")
        store.put("b" * 64, fit(0, 1, error="ValueError: bad"), search_id="one")
        store.put("c" * 64, fit(1, 0, error="worker died", system_failure=True), search_id="one")
        store.finish("two")
        summary = store.summary()
    assert summary.path == str(tmp_path / "store" / FILENAME)
    assert (summary.fits, summary.done, summary.failed, summary.system_failures) == (3, 1, 1, 1)
    assert (summary.planned, summary.missing) == (5, 2)  # "d" and "e" have no row
    one, two = sorted(summary.searches, key=lambda s: s.search_id)
    assert (one.search_id, one.kind, one.estimator, one.n_candidates, one.n_splits) == (
        "one", "GridSearchCV", "e.A", 2, 2)
    assert (one.planned, one.done, one.failed, one.system_failures, one.missing) == (4, 1, 1, 1, 1)
    assert (one.runs, one.complete, one.finished_at) == (1, False, None)
    assert (two.search_id, two.planned, two.done, two.missing, two.runs) == ("two", 2, 1, 1, 0)
    assert two.finished_at is not None and two.updated_at >= two.created_at
    assert not two.complete
    with FitStore(tmp_path / "store") as store:
        store.put("d" * 64, fit(1, 1), search_id="one")
        store.put("e" * 64, fit(0, 1), search_id="two")
    with FitStore(tmp_path / "store", create=False) as store:  # read-only, as status opens it
        searches = {s.search_id: (s.missing, s.complete) for s in store.summary().searches}
    assert searches == {"one": (0, False), "two": (0, True)}  # "one" still has a system failure


# -- bad files -----------------------------------------------------------------------------------
def _fit_with(storage):
    X, y = data()
    return GridSearchCV(CountingClassifier(), {"a": [1]}, cv=2, backend="serial",
                        storage=str(storage)).fit(X, y)


def test_foreign_and_corrupt_files_are_refused_untouched(tmp_path):
    cases = {}
    not_sqlite = tmp_path / "text" / FILENAME
    not_sqlite.parent.mkdir()
    not_sqlite.write_text("name,score\nx,1\n" * 100)
    cases["text"] = "not an SQLite database"

    foreign = tmp_path / "foreign" / FILENAME
    foreign.parent.mkdir()
    conn = sqlite3.connect(foreign)
    conn.execute("CREATE TABLE fits (fingerprint TEXT, score REAL)")
    conn.execute("INSERT INTO fits VALUES ('x', 1.0)")
    conn.commit()
    conn.close()
    cases["foreign"] = "without raygrid's meta table"

    newer = tmp_path / "newer"
    _fit_with(newer)
    conn = sqlite3.connect(newer / FILENAME)
    conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    cases["newer"] = "schema version 99"

    corrupt = tmp_path / "corrupt"
    _fit_with(corrupt)
    with FitStore(corrupt):  # checkpoint the WAL into the main file, then damage the file
        pass
    raw = bytearray((corrupt / FILENAME).read_bytes())
    for i in range(4096 + 100, len(raw), 7):
        raw[i] = 0xAB
    (corrupt / FILENAME).write_bytes(bytes(raw))
    for wal in (corrupt / (FILENAME + "-wal"), corrupt / (FILENAME + "-shm")):
        wal.unlink(missing_ok=True)
    cases["corrupt"] = "not a usable raygrid store"

    for name, why in cases.items():
        path = tmp_path / name / FILENAME
        before = path.read_bytes()
        with pytest.raises(StoreError) as info:
            _fit_with(path.parent)
        assert str(path) in str(info.value), name
        assert why in str(info.value), (name, str(info.value))
        assert path.read_bytes() == before, f"{name}: the file was changed"
        with pytest.raises(StoreError, match=str(path)):
            status(path.parent)

    a_file = tmp_path / "plain-file"
    a_file.write_text("x")
    with pytest.raises(StoreError, match="not a directory"):
        _fit_with(a_file)


def _listing(directory):
    return {p.name: p.read_bytes() for p in sorted(Path(directory).iterdir())}


def _planted(tmp_path, name, *sql):
    """A real store with ``sql`` run on it by someone else."""
    directory = tmp_path / name
    _fit_with(directory)
    conn = sqlite3.connect(directory / FILENAME)
    for statement in sql:
        conn.execute(statement)
    conn.commit()
    conn.close()
    conn = sqlite3.connect(directory / FILENAME)  # fold the WAL in: bytes to compare
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    for wal in (directory / (FILENAME + "-wal"), directory / (FILENAME + "-shm")):
        wal.unlink(missing_ok=True)
    return directory


def test_empty_view_only_trigger_and_short_column_stores_are_refused_untouched(tmp_path):
    """Nothing is written to a file that is not exactly a raygrid store, by a search or by
    ``status``: not an empty file, a foreign database with only a view, a store whose table
    lacks a column, nor one with a planted trigger or view."""
    cases = {}
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / FILENAME).write_bytes(b"")
    cases["empty"] = "an empty file"

    view = tmp_path / "view"
    view.mkdir()
    conn = sqlite3.connect(view / FILENAME)
    conn.execute("CREATE VIEW v AS SELECT 1 AS x")
    conn.commit()
    conn.close()
    cases["view"] = "without raygrid's meta table"

    _planted(tmp_path, "column", "ALTER TABLE fits DROP COLUMN seed")
    cases["column"] = "table fits lacks the columns ['seed']"
    _planted(tmp_path, "trigger", "CREATE TRIGGER t AFTER INSERT ON fits BEGIN "
             "UPDATE fits SET test_scores = '{\"score\": 1.0}'; END")
    cases["trigger"] = "trigger 't'"
    _planted(tmp_path, "planted-view", "CREATE VIEW best AS SELECT * FROM fits")
    cases["planted-view"] = "view 'best'"

    for name, why in cases.items():
        directory = tmp_path / name
        before = _listing(directory)
        with pytest.raises(StoreError) as info:
            _fit_with(directory)
        assert why in str(info.value), (name, str(info.value))
        assert _listing(directory) == before, f"{name}: the store was changed by a search"
        with pytest.raises(StoreError, match=why.replace("[", r"\[").replace("]", r"\]")):
            status(directory)
        assert _listing(directory) == before, f"{name}: the store was changed by status"
    with sqlite3.connect(view / FILENAME) as conn:
        assert conn.execute("PRAGMA application_id").fetchone()[0] == 0


def test_status_opens_the_store_read_only(tmp_path):
    directory = _planted(tmp_path, "store")
    before = _listing(directory)
    assert status(directory)["fits"] == 2
    assert _listing(directory) == before
    with FitStore(directory, create=False) as store:
        with pytest.raises(StoreError, match="read-only"):
            store.start_run("x")
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            store._conn.execute("DELETE FROM fits")


READ_ONLY_STATUS = """
set -e
mount --bind "$1" "$1"
mount -o remount,ro,bind "$1"
touch "$1/probe" 2>/dev/null && exit 3
exec "$2" -c 'import sys; from raygrid.cli.status import status; print(status(sys.argv[1])["fits"])' "$1"
"""


def test_status_of_a_store_on_a_read_only_mount(tmp_path):
    """A read-only file system (a mount namespace of its own, bound read-only)."""
    directory = _planted(tmp_path, "store")
    proc = subprocess.run(["unshare", "-m", "sh", "-c", READ_ONLY_STATUS, "sh", str(directory),
                           sys.executable], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.split() == ["2"]


FOREIGN_WAL = """
import os, sqlite3, sys
conn = sqlite3.connect(sys.argv[1])
conn.execute("PRAGMA journal_mode = WAL")
conn.execute("PRAGMA wal_autocheckpoint = 0")
conn.execute("CREATE TABLE notes (body TEXT)")
conn.execute("INSERT INTO notes VALUES ('mine')")
conn.commit()
os._exit(0)  # the other application stops without closing: its WAL stays pending
"""


def test_a_foreign_wal_database_is_refused_without_a_checkpoint(tmp_path):
    """Another application's database in WAL mode, its last writes only in ``-wal``: refused,
    and neither the file nor its WAL is rewritten or removed (no connection that could
    checkpoint is opened before the file is known to be raygrid's)."""
    directory = tmp_path / "foreign"
    directory.mkdir()
    subprocess.run([sys.executable, "-c", FOREIGN_WAL, str(directory / FILENAME)], check=True)
    wal = directory / (FILENAME + "-wal")
    assert wal.stat().st_size > 0
    main_before, wal_before = (directory / FILENAME).read_bytes(), wal.read_bytes()
    with pytest.raises(StoreError, match="not a usable raygrid store"):
        _fit_with(directory)
    with pytest.raises(StoreError, match="not a usable raygrid store"):
        status(directory)
    assert (directory / FILENAME).read_bytes() == main_before
    assert wal.exists() and wal.read_bytes() == wal_before


READ_ONLY_SEARCH = """
set -e
mount --bind "$1" "$1"
mount -o remount,ro,bind "$1"
touch "$1/probe" 2>/dev/null && exit 3
exec "$2" -c '
import sys
from fault_helpers import CountingClassifier, data
from raygrid import GridSearchCV
from raygrid.engine.store import StoreError
X, y = data()
search = GridSearchCV(CountingClassifier(log=sys.argv[2]), {"a": [1, 2]}, cv=2, backend="serial",
                      storage=sys.argv[1], refit=False).fit(X, y)
print("SCORES", list(search.cv_results_["mean_test_score"]), int(search.results_["cached"].sum()))
try:
    GridSearchCV(CountingClassifier(log=sys.argv[2]), {"a": [1, 2, 3]}, cv=2, backend="serial",
                 storage=sys.argv[1], refit=False).fit(X, y)
except StoreError as exc:
    print("REFUSED", exc)
' "$1" "$3"
"""


def test_a_complete_store_on_a_read_only_mount_is_used(tmp_path):
    """Every fit stored: the search runs from a read-only mount (nothing written); a search that
    would need new fits is refused before any runs, without advising to resume."""
    X, y = data()
    directory = tmp_path / "store"
    log = tmp_path / "log"
    first = GridSearchCV(CountingClassifier(log=str(log)), {"a": [1, 2]}, cv=2,
                         backend="serial", storage=str(directory), refit=False).fit(X, y)
    before = _listing(directory)
    proc = subprocess.run(["unshare", "-m", "sh", "-c", READ_ONLY_SEARCH, "sh", str(directory),
                           sys.executable, str(log)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(
                              [str(Path(__file__).parents[1]), str(Path(__file__).parent)])})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    scores = [line for line in proc.stdout.splitlines() if line.startswith("SCORES")]
    assert scores == [f"SCORES {list(first.cv_results_['mean_test_score'])} 4"], proc.stdout
    refused = [line for line in proc.stdout.splitlines() if line.startswith("REFUSED")]
    assert len(refused) == 1 and "cannot be written" in refused[0] and "2 of the 6" in refused[0]
    assert "resume" not in refused[0]
    assert len(fits_logged(log)) == 4  # only the first search's fits ever ran
    assert _listing(directory) == before


def test_a_store_error_says_how_to_resume(tmp_path):
    directory = _planted(tmp_path, "store")
    with FitStore(directory) as store:
        store._conn.execute("PRAGMA query_only = ON")  # every write now fails
        with pytest.raises(StoreError, match=r"run the same search again with storage=.*resume"):
            store.start_run("x")


def test_rows_are_committed_within_the_commit_interval(tmp_path):
    def visible():
        conn = sqlite3.connect(tmp_path / FILENAME)
        try:
            return conn.execute("SELECT COUNT(*) FROM fits").fetchone()[0]
        finally:
            conn.close()

    def becomes_visible(n, within):
        deadline = time.monotonic() + within
        while visible() < n:
            assert time.monotonic() < deadline, f"{visible()} of {n} rows after {within} s"
            time.sleep(0.01)

    with FitStore(tmp_path, commit_interval=0.3) as store:
        for i in range(50):  # a burst: committed together, by the timer at the latest
            store.put(f"{i:064x}", FitResult(i, 0, {"score": 0.5}, None, 0.0, 0.0, 3))
        becomes_visible(50, within=0.3 + 2.0)  # generous slack for a loaded machine
        time.sleep(0.4)
        store.put("f" * 64, FitResult(99, 0, {"score": 0.5}, None, 0.0, 0.0, 3))
        becomes_visible(51, within=0.3 + 2.0)
        store.put("e" * 64, FitResult(98, 0, {"score": 0.5}, None, 0.0, 0.0, 3))
    assert visible() == 52  # close commits what waits


# -- two searches at once ------------------------------------------------------------------------
def test_two_concurrent_writers_both_complete(tmp_path):
    storage = tmp_path / "store"
    script = tmp_path / "writer.py"
    script.write_text(textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(TESTS)!r})
        from fault_helpers import CountingClassifier, data
        from raygrid import GridSearchCV
        start, log = int(sys.argv[1]), sys.argv[2]
        while time.time() < float(sys.argv[3]):  # start together
            time.sleep(0.005)
        X, y = data()
        g = GridSearchCV(CountingClassifier(log=log), {{"a": list(range(start, start + 150))}},
                         cv=2, backend="serial", refit=False, storage={str(storage)!r}).fit(X, y)
        print(int(g.results_["cached"].sum()))
    """))
    go = time.time() + 8.0  # after both have imported raygrid
    procs = [subprocess.Popen([sys.executable, str(script), str(start), str(tmp_path / "log"),
                               str(go)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for start in (0, 100)]
    outs = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err[-3000:]
        outs.append(int(out.split()[-1]))
    ran = len(fits_logged(tmp_path / "log"))
    # 2 x 150 candidates x 2 folds; candidates 100..149 are in both grids: each of their fits
    # ran once or twice (the searches race), none was lost.
    assert 500 <= ran <= 600 and ran + sum(outs) == 600
    info = status(storage)
    assert info["fits"] == 500 and info["done"] == 500 and info["missing"] == 0
    assert len(info["searches"]) == 2 and all(s["complete"] for s in info["searches"])
    conn = sqlite3.connect(storage / FILENAME)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()


# -- on Ray ----------------------------------------------------------------------------------------
def test_searches_opening_one_new_store_together_all_get_it(tmp_path):
    # The first opener makes the tables and switches the file to WAL while the others read it;
    # SQLite refuses that switch at once ("database is locked", no busy timeout) about once in
    # twenty such races, so the openers have to wait for each other themselves.
    errors = []

    def open_store(directory, barrier):
        barrier.wait()
        try:
            FitStore(directory).close()
        except StoreError as exc:
            errors.append(str(exc))

    for trial in range(100):
        barrier = threading.Barrier(3)
        threads = [threading.Thread(target=open_store, args=(tmp_path / str(trial), barrier))
                   for _ in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert errors == []
    conn = sqlite3.connect(tmp_path / "0" / FILENAME)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()


def test_store_on_ray_2000_fits(tmp_path, ray_local):
    X, y = data(n=40)
    grid = {"a": list(range(1000))}
    t0 = time.perf_counter()
    first = search(tmp_path, grid, backend="ray", log="ray-log").fit(X, y)
    t_first = time.perf_counter() - t0
    assert len(first.results_) == 2000 and not first.results_["cached"].any()
    assert len(fits_logged(tmp_path / "ray-log")) == 2000
    assert status(tmp_path / "store")["done"] == 2000
    again = search(tmp_path, grid, backend="ray", log="ray-log").fit(X, y)
    assert again.results_["cached"].all()
    assert len(fits_logged(tmp_path / "ray-log")) == 2000
    assert_same_scores(first.cv_results_, again.cv_results_)
    print(f"2000 fits on Ray with a store: {t_first:.1f} s")


def test_fit_seeds_follow_the_parameters_not_the_position_in_the_grid():
    # A grown grid renumbers candidates; their seeds (and so a seeded Keras fit's fingerprint)
    # stay, so an extended seeded grid also reruns only the new candidates.
    from sklearn.model_selection import ParameterGrid

    from raygrid.engine.plan import build_trials

    small = build_trials(list(ParameterGrid({"a": [1, 2], "b": [0]})), 3, random_state=7)
    wide = build_trials(list(ParameterGrid({"a": [0, 1, 2], "b": [0, 5]})), 3, random_state=7)
    seeds = {(t.params["a"], t.params["b"], t.fold): t.seed for t in wide}
    assert all(seeds[(t.params["a"], t.params["b"], t.fold)] == t.seed for t in small)
    assert len(set(seeds.values())) == len(seeds)  # every (candidate, fold) its own seed
    assert build_trials([{"a": 1}], 2, random_state=8)[0].seed != small[0].seed
    assert build_trials([{"a": 1}], 2)[0].seed is None


def test_engine_and_seed_are_part_of_a_fits_identity(tmp_path):
    """A fit planned fused is stored under the fused identity (with its lane's seed); a fused
    fit is never returned to a standard plan; a planned-fused fit that ran on the standard
    engine (a fallback) is found again as standard."""
    from raygrid.engine.store import open_session

    X, y = data()
    splits = list(KFold(2).split(X))

    def session():
        return open_session(tmp_path, cache=True, estimator=LogisticRegression(), X=X, y=y,
                            splits=splits, fit_params=None, scoring=None, error_score=np.nan,
                            return_train_score=False, keras=True, kind="GridSearchCV")

    def result(t, engine):
        return FitResult(t.candidate, t.fold, {"score": 0.5 + t.fold}, None, 0.1, 0.0, 30,
                         seed=t.seed, engine=engine)

    fused = [Trial(0, 0, {"C": 1.0}, 11, "fused"), Trial(0, 1, {"C": 1.0}, 11, "fused")]
    s = session()
    hits, todo = s.plan(fused)
    assert hits == [] and len(todo) == 2
    s.record(result(fused[0], "fused"))
    s.record(result(fused[1], "standard"))  # fell back: the standard engine ran it
    s.finish()
    s.close()

    s = session()
    hits, todo = s.plan(fused)
    assert todo == [] and sorted((h.fold, h.engine, h.seed, h.cached) for h in hits) == [
        (0, "fused", 11, True), (1, "standard", 11, True)]
    s.close()
    # The same candidates planned on the standard engine, with the lane's seed or their own:
    # the fused fit is never theirs; the fallback (a standard fit, seed 11) is.
    s = session()
    hits, todo = s.plan([Trial(0, 0, {"C": 1.0}, 11), Trial(0, 1, {"C": 1.0}, 11)])
    assert [t.fold for t in todo] == [0] and [(h.fold, h.engine) for h in hits] == [(1, "standard")]
    hits, todo = s.plan([Trial(0, 0, {"C": 1.0}, 12, "fused")])  # another lane seed
    assert hits == [] and len(todo) == 1
    s.close()


def _stored_fit(candidate: int, stopped_epoch=None) -> FitResult:
    return FitResult(candidate, 0, {"score": 0.5}, None, 0.1, 0.01, 10, node="n", pid=1,
                     stopped_epoch=stopped_epoch)


def test_the_epochs_an_early_stopped_fit_trained_are_kept(tmp_path):
    """results_["stopped_epoch"] of a reused fit is the epochs it trained when it ran."""
    with FitStore(tmp_path) as store:
        store.put("stopped", _stored_fit(0, stopped_epoch=7))
        store.put("plain", _stored_fit(1))
        found = store.lookup(["stopped", "plain"])
    assert found["stopped"].stopped_epoch == 7 and found["plain"].stopped_epoch is None
    trial = Trial(candidate=0, fold=0, params={})
    assert found["stopped"].to_result(trial).stopped_epoch == 7


def test_a_store_of_the_previous_schema_is_read_then_upgraded(tmp_path):
    """A version-1 store (no stopped_epoch column): read-only its fits read with none, opened
    for writing it gains the column and version 2, its fits kept."""
    with FitStore(tmp_path) as store:
        store.put("old", _stored_fit(0))
    with sqlite3.connect(tmp_path / FILENAME) as conn:
        conn.execute("ALTER TABLE fits DROP COLUMN stopped_epoch")
        conn.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    with FitStore(tmp_path, create=False) as store:
        assert store.lookup(["old"])["old"].stopped_epoch is None
    with sqlite3.connect(tmp_path / FILENAME) as conn:
        assert "stopped_epoch" not in {r[1] for r in conn.execute("PRAGMA table_info(fits)")}
    with FitStore(tmp_path) as store:
        store.put("new", _stored_fit(1, stopped_epoch=3))
        found = store.lookup(["old", "new"])
    assert found["old"].stopped_epoch is None and found["new"].stopped_epoch == 3
    with sqlite3.connect(tmp_path / FILENAME) as conn:
        version = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    assert version == ("2",)
