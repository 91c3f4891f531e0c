"""The Python calls behind the CLI: run a spec, and save any fitted search's outputs and report.

    >>> from raygrid import GridSearchCV
    >>> from raygrid.cli.api import save_search
    >>> search = GridSearchCV(SVC(), {"C": [0.1, 1, 10]}, cv=3).fit(X, y)
    >>> save_search(search, "out/svc")          # results.parquet/.csv, summary.csv, best.json,
    ...                                          # plots and report.html
"""
from __future__ import annotations

import math
import platform
import warnings
from importlib import metadata
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from raygrid.cli.spec import Prepared, apply_overrides, default_out_dir, load_spec, prepare

__all__ = ["run_spec", "save_search", "save_best_model", "baseline_score", "best_config", "training",
           "node_names", "parallel_slots", "library_versions", "check_spec", "DEMO_SPEC", "SPEC_FILE", "OutputDirError",
           "check_out_dir"]

#: The spec a run leaves beside its results (after ``--set`` overrides), for the record.
SPEC_FILE = "spec.yaml"

#: What ``raygrid demo`` runs: a seed-style grid (kernel x C x gamma, 34 candidates x 3 folds) of
#: SVC on scikit-learn's bundled breast-cancer data, scaled per fold. Needs no download and
#: finishes in seconds on two cores.
DEMO_SPEC: dict = {
    "title": "raygrid demo: SVC on breast cancer",
    "data": {"name": "breast_cancer"},
    "preprocessing": "standard",
    "estimator": {"import": "sklearn.svm:SVC"},
    "search": {
        "kind": "grid",
        "grid": [
            {"kernel": ["rbf", "sigmoid"], "C": [0.1, 1, 10, 100], "gamma": ["scale", 0.01, 0.001]},
            {"kernel": ["linear"], "C": [0.01, 0.1, 1, 10]},
            {"kernel": ["poly"], "degree": [2, 3], "C": [0.1, 1, 10]},
        ],
    },
    "cv": {"kind": "stratified", "n_splits": 3, "shuffle": True, "random_state": 0},
    "scoring": ["accuracy", "roc_auc"],
    "refit": "accuracy",
    "random_state": 0,
}

_VERSIONED = ("raygrid", "scikit-learn", "ray", "numpy", "pandas", "keras")
_KERAS_EXTRA = ("scikeras", "tensorflow", "jax", "torch")


def library_versions(keras: bool = False) -> dict[str, str]:
    """Installed versions of Python, raygrid and the libraries a search depends on (no imports)."""
    versions = {"python": platform.python_version()}
    for name in _VERSIONED + (_KERAS_EXTRA if keras else ()):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    if "raygrid" not in versions:  # running from a source tree that is not installed
        from raygrid.version import __version__

        versions["raygrid"] = __version__
    if keras:
        from raygrid.keras import keras_backend

        versions["keras_backend"] = keras_backend()
    return versions


def _metric(search: Any) -> str:
    """The metric the search ranks by, as named in ``cv_results_`` (``score`` for one metric)."""
    if not getattr(search, "multimetric_", False):
        return "score"
    if isinstance(search.refit, str):
        return search.refit
    names = [k[len("mean_test_"):] for k in search.cv_results_ if k.startswith("mean_test_")]
    return names[0]


def _float(value: Any) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(out) else out


def best_config(search: Any) -> dict:
    """The ``best`` record of a fitted raygrid search, as ``best.json`` and the report hold it."""
    from raygrid.keras import uses_keras

    cv = search.cv_results_
    metric = _metric(search)
    index = getattr(search, "best_index_", None)
    if index is None:  # refit=False with several metrics: the summary's top row
        index = int(search.summary_.index[0])
    index = int(index)
    seed = getattr(search, "random_state", None)
    keras = uses_keras(search.estimator)
    scoring = search.scoring if isinstance(search.scoring, (str, list, tuple, type(None))) else repr(search.scoring)
    return {
        "params": dict(cv["params"][index]),
        "metric": metric,
        "scoring": list(scoring) if isinstance(scoring, tuple) else scoring,
        "mean_score": _float(cv[f"mean_test_{metric}"][index]),
        "std_score": _float(cv[f"std_test_{metric}"][index]),
        "candidate": index,
        "refit_time": _float(getattr(search, "refit_time_", None)),
        "seed": int(seed) if isinstance(seed, (int, np.integer)) else None,
        "versions": library_versions(keras=keras),
        "n_candidates": len(cv["params"]),
        "n_fits": int(len(search.results_)),
        "wall_time": _float(getattr(search, "wall_time_", None)),
        "training": training(search) if keras else None,
    }


def training(search: Any) -> dict:
    """How a Keras search's fits were trained: fits per engine, the fused groups, and the Keras
    backend each engine trained on (fused groups report their worker's; standard fits run with
    the driver's ``KERAS_BACKEND``, which raygrid passes to every worker)."""
    from raygrid.keras import keras_backend

    results = search.results_
    engines = (results["engine"].value_counts().to_dict() if "engine" in results.columns
               else {"standard": len(results)})
    groups = list(getattr(search, "fused_groups_", None) or [])
    backends: dict[str, str] = {}
    if engines.get("fused"):
        seen = sorted({str(g["keras_backend"]) for g in groups if g.get("keras_backend")})
        backends["fused"] = ", ".join(seen) or "jax"  # fused programs are JAX programs
    if engines.get("standard"):
        backends["standard"] = keras_backend()
    return {"engines": {str(k): int(v) for k, v in engines.items()},
            "fused_groups": len(groups),
            "fused_lanes": int(sum(int(g.get("lanes", 0)) for g in groups)),
            "keras_backend": backends,
            "driver_keras_backend": keras_backend()}



def baseline_score(search: Any, X, y, groups=None) -> dict | None:
    """The score a model that ignores the features gets under the search's cv and ranking metric:
    ``DummyClassifier(strategy="most_frequent")`` for a classifier (the majority class),
    ``DummyRegressor()`` (the training mean) for a regressor. ``None`` without ``y``.

    Returns ``{"estimator", "metric", "mean_score", "std_score"}``."""
    from sklearn.base import is_classifier
    from sklearn.dummy import DummyClassifier, DummyRegressor
    from sklearn.model_selection import cross_validate

    if y is None:
        return None
    dummy = DummyClassifier(strategy="most_frequent") if is_classifier(search.estimator) else DummyRegressor()
    metric = _metric(search)
    scoring = search.scoring
    if isinstance(scoring, (list, tuple, set, dict)):
        scoring = {metric: (scoring[metric] if isinstance(scoring, dict) else metric)}
    try:
        scores = cross_validate(dummy, X, y, groups=groups, cv=search.cv, scoring=scoring)
    except Exception as exc:  # noqa: BLE001 - e.g. a group splitter without groups: say why, go on
        return {"estimator": repr(dummy), "metric": metric, "error": f"{type(exc).__name__}: {exc}"}
    values = scores[f"test_{metric}" if isinstance(scoring, dict) else "test_score"]
    return {"estimator": repr(dummy), "metric": metric, "mean_score": _float(np.mean(values)),
            "std_score": _float(np.std(values))}


def _cv_text(search: Any, y) -> str:
    from sklearn.base import is_classifier
    from sklearn.model_selection import check_cv

    cv = search.cv
    if y is None and (cv is None or isinstance(cv, int)):  # the splitter depends on y: not known here
        n = getattr(search, "n_splits_", cv or 5)
        return f"{n} folds (stratified for a classifier, as scikit-learn's cv={cv!r})"
    try:
        return repr(check_cv(cv, y, classifier=is_classifier(search.estimator)))
    except (TypeError, ValueError):
        return repr(cv)


#: In-process fits carry this prefix and the host's name (see ``engine.fitting.location``).
_LOCAL = "local:"


def _label(node_id: str, host: str | None, ip: str | None) -> str:
    """A Ray node as people read it: host and IP, and its id shortened (nodes of one machine,
    as ``ray.cluster_utils.Cluster`` makes, differ only by it)."""
    where = f"{host} ({ip})" if host and ip and host != ip else (ip or host or "")
    return f"{where} · {node_id[:8]}" if where else f"node {node_id[:8]}"


def node_names(results, earlier: dict[str, str] | None = None) -> dict[str, str]:
    """Each node of ``results["node"]`` -> how the report names it.

    A node is a Ray node: ``host (IP) · id[:8]``, looked up among the nodes of the Ray this
    process is connected to (dead ones included). Fits run in this process (``local:<host>``,
    the auto backend's first fits, the serial backend) ran on the driver's node: they get its
    name when Ray runs here, else ``<host> (driver)``. Ids Ray no longer knows (fits stored by
    an earlier Ray session) keep the name ``earlier`` gave them (a previous ``best.json`` of the
    same folder), else ``node <id[:8]> (earlier Ray session)``: never a raw 56-digit id."""
    import sys

    if "node" not in getattr(results, "columns", ()):
        return {}
    wanted = set(results["node"].dropna().astype(str))
    names: dict[str, str] = {}
    driver = None
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        for node in ray.nodes():
            node_id = node.get("NodeID")
            names[node_id] = _label(node_id, node.get("NodeManagerHostname"), node.get("NodeManagerAddress"))
        driver = names.get(ray.get_runtime_context().get_node_id())
    out = {}
    for node in wanted:
        if node.startswith(_LOCAL):
            host = node[len(_LOCAL):]
            out[node] = driver if driver and driver.startswith(host + " ") else f"{host} (driver)"
        elif node in names:
            out[node] = names[node]
        elif earlier and node in earlier and earlier[node] != node:
            out[node] = earlier[node]
        elif node != "unknown":
            out[node] = f"node {node[:8]} (earlier Ray session)"
    return out


def parallel_slots(results) -> int | None:
    """How many fits could run at once: 1 when every fit ran in this process, the CPUs of the
    connected Ray cluster otherwise (None when neither is known)."""
    import sys

    nodes = results["node"].dropna().astype(str) if "node" in getattr(results, "columns", ()) else None
    if nodes is not None and len(nodes) and nodes.str.startswith(_LOCAL).all():
        return 1
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        cpus = ray.cluster_resources().get("CPU", 0)
        return max(1, int(cpus)) if cpus else None
    return None


def save_best_model(search: Any, out_dir) -> dict[str, str]:
    """Write the refitted best model into ``out_dir``: ``best_model.joblib`` (any estimator that
    pickles, pipelines included) and, for a Keras model, ``best_model.keras`` (Keras' own format,
    the network alone). Returns ``{format: file name}`` of what was written (empty with
    ``refit=False``)."""
    import joblib

    from raygrid.keras import uses_keras

    model = getattr(search, "best_estimator_", None)
    if model is None:
        return {}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    savers = [("joblib", "best_model.joblib", ".best_model.joblib.partial", lambda path: joblib.dump(model, path))]
    if uses_keras(search.estimator):
        last = model.steps[-1][1] if hasattr(model, "steps") else model
        network = getattr(last, "model_", None)
        if network is not None:
            savers.append(("keras", "best_model.keras", ".best_model.partial.keras", network.save))
    for kind, name, temporary, save in savers:
        partial = out_dir / temporary
        try:
            save(partial)
        except Exception as exc:  # noqa: BLE001 - a model that cannot be saved costs only its file
            partial.unlink(missing_ok=True)
            warnings.warn(f"the best model could not be saved as {name} ({type(exc).__name__}: {exc}); "
                          "the results and the report are written", RuntimeWarning, stacklevel=3)
            continue
        partial.replace(out_dir / name)
        written[kind] = name
    return written


def save_search(search: Any, out_dir, *, title: str | None = None, X=None, y=None, groups=None,
                data: str | None = None) -> dict[str, Path]:
    """Write a fitted raygrid search's outputs into ``out_dir``; return ``{file name: path}``.

    ``results.parquet`` and ``results.csv`` (one row per fit), ``summary.csv`` (one row per
    candidate, best first), ``best.json`` (best parameters, mean and std score, candidate, refit
    time, seed, library versions, counts, wall time, the cv scheme, the saved model's file name),
    ``best_model.joblib`` (and ``best_model.keras`` for Keras) when the search refitted, the
    plots and a self-contained ``report.html`` -- the same files ``raygrid run`` writes.

    With ``X`` and ``y`` (the data the search was fitted on) ``best.json`` and the report also
    hold the data's shape and a baseline: the score of a model that ignores the features under
    the same cv and metric (majority class, or the mean for a regressor), flagged when the best
    candidate is not clearly above it. ``data`` names the data set in the report.
    """
    from raygrid.outputs.report import write_outputs

    for attr in ("cv_results_", "results_", "summary_"):
        if not hasattr(search, attr):
            raise ValueError(f"save_search needs a fitted raygrid search (no {attr}); call fit first")
    if title is None:
        est = search.estimator
        last = est.steps[-1][1] if hasattr(est, "steps") else est
        title = f"{type(search).__name__}: {type(last).__name__}"
    best = best_config(search)
    best["cv"] = _cv_text(search, y)
    if X is not None:
        shape = getattr(X, "shape", None)
        best["data"] = {"name": data, "n_samples": int(shape[0]) if shape else len(X),
                        "n_features": int(shape[1]) if shape is not None and len(shape) > 1 else None}
    elif data is not None:
        best["data"] = {"name": data}
    baseline = baseline_score(search, X, y, groups) if X is not None else None
    if baseline is not None and "mean_score" in baseline and best.get("mean_score") is not None:
        margin = max(best.get("std_score") or 0.0, 0.01)
        baseline["clearly_beaten"] = best["mean_score"] - baseline["mean_score"] > margin
    best["baseline"] = baseline
    best["nodes"] = node_names(search.results_, _earlier_names(Path(out_dir)))
    best["slots"] = parallel_slots(search.results_)
    best["best_model"] = save_best_model(search, out_dir)
    paths = write_outputs(search.results_, search.summary_, best, Path(out_dir), title=title)
    for name in best["best_model"].values():
        paths[name] = Path(out_dir) / name
    return paths


def _earlier_names(out_dir: Path) -> dict[str, str]:
    """The node names a previous ``best.json`` in ``out_dir`` recorded (a resumed run's folder)."""
    import json

    try:
        earlier = json.loads((out_dir / "best.json").read_text(encoding="utf-8")).get("nodes")
    except (OSError, ValueError, AttributeError):
        return {}
    return {str(k): str(v) for k, v in earlier.items()} if isinstance(earlier, dict) else {}


def check_spec(spec_or_path: Any, *, overrides: Sequence[str] = (), out=None) -> Prepared:
    """Check a spec completely (schema, data, estimator, parameter names) without running it.

    Raises :class:`raygrid.cli.spec.SpecError` listing every problem; writes nothing.
    """
    raw, source = load_spec(spec_or_path)
    raw = apply_overrides(raw, overrides)
    return prepare(raw, source=source, out=out)


class OutputDirError(ValueError):
    """The output directory holds files that are not a raygrid run's."""


def check_out_dir(out_dir: Path, force: bool = False) -> None:
    """Refuse to write into a non-empty directory that is not a raygrid output directory.

    A run replaces results.csv, spec.yaml, report.html and the plots it does not draw: in an
    unrelated folder that would destroy the user's files. A raygrid output directory is one that
    holds raygrid's own marker (``raygrid-output.json``, written by raygrid with its version), not
    any folder with a ``best.json``. ``force`` writes there anyway.
    """
    from raygrid.outputs.report import OUTPUT_MARKER, is_output_dir

    out_dir = Path(out_dir)
    if force or not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise OutputDirError(f"--out {str(out_dir)!r} is a file, not a directory")
    entries = [p.name for p in out_dir.iterdir()]
    if not entries or is_output_dir(out_dir):
        return
    shown = ", ".join(sorted(entries)[:5]) + (", ..." if len(entries) > 5 else "")
    raise OutputDirError(
        f"--out {str(out_dir)!r} is not empty ({shown}) and is not a raygrid output directory "
        f"(it has no {OUTPUT_MARKER}, which raygrid writes into its output folders): a run would "
        "overwrite or remove files there. Choose an empty or new directory, or pass --force "
        "(force=True) to write there anyway.")


def run_spec(spec_or_path: Any, *, overrides: Sequence[str] = (), out=None, address: str | None = None,
             backend: str | None = None, verbose: int = 1, title: str | None = None,
             force: bool = False, fit_timeout: float | None = None) -> tuple[Any, Path]:
    """Check and run a spec (a YAML path, a mapping, a :class:`~raygrid.cli.spec.Spec`, or what
    :func:`check_spec` returned for it, which is not checked again), write its outputs, and
    return ``(fitted search, output directory)``.

    ``overrides`` are ``"key.path=value"`` strings (values parsed as YAML); ``out``, ``address``,
    ``backend`` and ``fit_timeout`` (seconds per fit) take precedence over the spec. A spec with problems raises
    :class:`~raygrid.cli.spec.SpecError` before anything runs or is written. Where the search takes a
    ``storage`` keyword, finished fits are stored in the output directory as they arrive.
    A non-empty output directory that is not a raygrid run's raises :class:`OutputDirError`
    before anything runs, unless ``force``.
    """
    import yaml

    prepared = (spec_or_path if isinstance(spec_or_path, Prepared)
                else check_spec(spec_or_path, overrides=overrides, out=out))
    spec = prepared.spec
    out_dir = Path(out) if out is not None else (
        Path(spec.out) if spec.out else default_out_dir(prepared.source))
    check_out_dir(out_dir, force)
    from raygrid.outputs.report import OUTPUT_MARKER, write_marker

    created = not out_dir.exists()
    write_marker(out_dir)  # before the fit store: an interrupted run's folder is raygrid's
    # The fit store lives in the output directory: rerunning an interrupted run resumes it.
    extra = {} if fit_timeout is None else {"fit_timeout": fit_timeout}
    search = prepared.make_search(backend=backend, address=address, verbose=verbose,
                                  storage=str(out_dir), **extra)
    try:
        search.fit(prepared.X, prepared.y)
    except Exception:
        if [p.name for p in out_dir.iterdir()] == [OUTPUT_MARKER]:  # refused before any fit
            (out_dir / OUTPUT_MARKER).unlink()
            if created:
                out_dir.rmdir()
        raise
    data = spec.data.name or spec.data.csv
    save_search(search, out_dir, title=title or prepared.title, X=prepared.X, y=prepared.y, data=data)
    (out_dir / SPEC_FILE).write_text(
        yaml.safe_dump(_plain(prepared.raw), sort_keys=False, allow_unicode=True), encoding="utf-8")
    return search, out_dir


def _plain(value: Any) -> Any:
    """``value`` with only what YAML's safe dumper writes (other objects as their repr)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, np.generic):
        return value.item()
    return repr(value)
