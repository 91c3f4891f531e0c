"""The driver's side of a Tune search: the experiment (stoppers, loggers, storage, resume), and
its results as raygrid's fit results keyed by (candidate, fold)."""
from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from raygrid.engine.fitting import Payload, system_failure
from raygrid.engine.plan import Trial, fit_seed, params_key
from raygrid.search.tune.run_args import RunArgs
from raygrid.search.tune.spec import BUDGET, FOLDS, MEMBERS, OBJECTIVE, TrialSpec
from raygrid.search.tune.trial import fit_result, run_candidate


# ---------------------------------------------------------------------------------------------
# Driver side: stoppers and callbacks
# ---------------------------------------------------------------------------------------------
def make_stoppers(user_stopper: Any, raise_on_error: bool):
    from ray.tune import Stopper
    from ray.tune.stopper import CombinedStopper, FunctionStopper

    class StopOnError(Stopper):
        """With error_score='raise', the first failed fit stops the whole search."""

        def __init__(self):
            self.failed = False

        def __call__(self, trial_id, result):
            if raise_on_error and result.get("n_failed_folds"):
                self.failed = True
            return False

        def stop_all(self):
            return self.failed

    class StopAt(Stopper):
        def __init__(self, limits):
            self.limits = dict(limits)

        def __call__(self, trial_id, result):
            return any(k in result and result[k] >= v for k, v in self.limits.items())

        def stop_all(self):
            return False

    stoppers = [StopOnError()]
    if user_stopper is None:
        pass
    elif isinstance(user_stopper, Stopper):
        stoppers.append(user_stopper)
    elif isinstance(user_stopper, Mapping):
        stoppers.append(StopAt(user_stopper))
    elif callable(user_stopper):
        stoppers.append(FunctionStopper(user_stopper))
    else:
        raise ValueError("stopper must be a ray.tune.Stopper, a dict or a callable, got "
                         f"{user_stopper!r}")
    return CombinedStopper(*stoppers)


def history_callback(history: list):
    from ray.tune import Callback

    class History(Callback):
        def on_trial_result(self, iteration, trials, trial, result, **info):
            history.append({
                "trial_id": trial.trial_id,
                "config": dict(trial.config),
                BUDGET: result.get(BUDGET),
                OBJECTIVE: result.get(OBJECTIVE),
                "time_total_s": result.get("time_total_s"),
                **{k: v for k, v in result.items() if k.startswith("mean_test_")},
                "fit_time": sum(f["fit_time"] for f in result.get(FOLDS, [])),
                "score_time": sum(f["score_time"] for f in result.get(FOLDS, [])),
            })

    return History()


def progress_callback(spec: TrialSpec, progress: Any, live: set):
    """Each finished trial's fold results into the search's progress as they arrive (the ids of
    those trials go into ``live``; a resumed experiment's earlier trials are added later)."""
    from ray.tune import Callback

    class Progress(Callback):
        def __init__(self, sink):
            self.sink = sink

        def __getstate__(self):  # Tune saves its callbacks: the display stays in this process
            return {"sink": None}

        def on_trial_complete(self, iteration, trials, trial, **info):
            result = trial.last_result or {}
            folds, snapshots = result.get(FOLDS), result.get(MEMBERS) or {}
            if self.sink is None or not folds:
                return
            shown, seen = self.sink
            seen.add(trial.trial_id)
            for cid, _ in spec.members(trial.config):
                # Progress only groups folds by candidate: a trial's own number will do until
                # the candidates are numbered (cid is None: one candidate a trial).
                key = cid if cid is not None else len(seen)
                records = (snapshots.get(str(cid)) if cid is not None else None) or folds
                params = spec.params_of(trial.config) if cid is None else spec.candidates[cid]
                for rec in records:
                    shown.add(fit_result(key, rec), params=params)

    return Progress((progress, live))


@contextlib.contextmanager
def _environ(values: Mapping[str, str]):
    """Set environment variables that Ray Tune reads while it runs, and restore them after."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class _DropMissingMetrics(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Failed to fetch metrics")


@contextlib.contextmanager
def _quiet_missing_metrics():
    """Without logger callbacks Tune warns that it found no result files; raygrid needs none."""
    log = logging.getLogger("ray.tune.analysis.experiment_analysis")
    flt = _DropMissingMetrics()
    log.addFilter(flt)
    try:
        yield
    finally:
        log.removeFilter(flt)


def logger_callbacks(loggers: Any) -> list:
    """Tune's result loggers: none by default (raygrid keeps what it needs in memory)."""
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback, TBXLoggerCallback

    if loggers is None:
        return []
    known = {"csv": CSVLoggerCallback, "json": JsonLoggerCallback, "tensorboard": TBXLoggerCallback}
    out = []
    for item in loggers if isinstance(loggers, (list, tuple)) else [loggers]:
        if isinstance(item, str):
            if item.lower() not in known:
                raise ValueError(f"Unknown logger {item!r}; raygrid knows {sorted(known)} or takes "
                                 "ray.tune.Callback objects")
            out.append(known[item.lower()]())
        else:
            out.append(item)
    return out


#: Parameters that do not change a search's results: a stored experiment is resumed whatever
#: they are.
NOT_IDENTITY = ("verbose", "n_jobs", "storage", "local_dir", "name", "loggers", "address",
                 "max_retries")


@contextlib.contextmanager
def _signal_handlers_kept():
    """Restore the SIGINT (and SIGUSR1) handlers after the block: Ray Tune installs its own for
    a run and leaves them, so a later search's Ctrl-C would only log Tune's message."""
    names = [n for n in ("SIGINT", "SIGUSR1") if hasattr(signal, n)]
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = {n: signal.getsignal(getattr(signal, n)) for n in names}
    try:
        yield
    finally:
        for name, handler in saved.items():
            if handler is not None:
                signal.signal(getattr(signal, name), handler)


def experiment_name(search: Any, payload: Payload) -> str | None:
    """The experiment's folder under ``storage``: named by a digest of everything that
    decides the search's results, so only the same search resumes it (None: not resumable)."""
    from raygrid.engine.store import Fingerprinter, Unhashable, digest

    fingerprinter = Fingerprinter(
        estimator=payload.estimator, X=payload.X, y=payload.y, splits=payload.splits,
        fit_params=payload.fit_params, scoring=search.scoring, error_score=search.error_score,
        return_train_score=search.return_train_score, keras=payload.keras)
    why = "the data, fit parameters or scoring"
    if fingerprinter.reusable:
        settings = {k: v for k, v in search.get_params(deep=False).items()
                    if k not in NOT_IDENTITY}
        folds = [(np.asarray(tr), np.asarray(te)) for tr, te in payload.splits]
        try:
            return f"{type(search).__name__}-{digest(fingerprinter.key, settings, folds)[:16]}"
        except Unhashable as exc:
            why = f"its settings ({exc})"
    warnings.warn(f"raygrid cannot fingerprint this Tune search ({why}): it runs afresh "
                  "and cannot be resumed from storage.", UserWarning)
    return None


def run_experiment(search: Any, payload: Payload, spec: TrialSpec, param_space, search_alg,
                   scheduler, num_samples_: int, resources: Mapping[str, Any], progress: Any,
                   tune_params: Mapping[str, Any] | None = None):
    """Run the Tune experiment of ``search``: its trials, stoppers, loggers, storage (resumed
    when the same search ran there before), ``tune_params`` (tune.run's arguments) over them.
    Returns Tune's result grid, every report, and the ids of the trials whose results went into
    ``progress`` as they finished."""
    import ray
    from ray import tune

    from raygrid.engine.executors.cluster import connect
    from raygrid.engine.executors.worker_env import driver_paths

    connect(search.address)
    n_jobs = search.n_jobs if search.n_jobs is not None and search.n_jobs > 0 else None
    history: list = []
    live: set = set()
    root = search.storage if search.storage is not None else search.local_dir
    made = tempfile.mkdtemp(prefix="raygrid-tune-") if root is None else None  # removed after
    root = made or os.path.abspath(os.path.expanduser(str(root)))
    name = search.name or f"{type(search).__name__}-{time.strftime('%Y%m%d-%H%M%S')}"
    stored = experiment_name(search, payload) if search.storage is not None else None
    if stored is not None:
        name = stored
    args = RunArgs(
        tune_config=dict(search_alg=search_alg, scheduler=scheduler, num_samples=num_samples_,
                         max_concurrent_trials=n_jobs, time_budget_s=search.time_budget_s,
                         reuse_actors=True),
        run_config=dict(name=name, storage_path=root,
                        verbose=int(min(max(search.verbose, 0), 3)),
                        stop=search.stopper,
                        callbacks=[history_callback(history),
                                   progress_callback(spec, progress, live),
                                   *logger_callbacks(search.loggers)]),
        # A trial whose actor or node dies runs again (fold errors are data, not failures).
        failure_config=dict(max_failures=search.max_retries, fail_fast=False),
        checkpoint_config=dict(num_to_keep=1), resources=dict(resources))
    args.override(tune_params)
    if args.run_config["storage_path"] != root:  # tune_params chose where the experiment lives
        args.run_config["storage_path"] = os.path.abspath(
            os.path.expanduser(str(args.run_config["storage_path"])))
    args.run_config["stop"] = make_stoppers(args.run_config["stop"], search.error_score == "raise")
    shared = [ray.put(payload), ray.put(spec), driver_paths()]
    trainable = tune.with_resources(tune.with_parameters(run_candidate, shared=shared),
                                    args.resources)
    tune_config = tune.TuneConfig(metric=OBJECTIVE, mode=search.mode or "max",
                                  **args.tune_config)
    run_config = tune.RunConfig(
        **args.run_config, failure_config=tune.FailureConfig(**args.failure_config),
        checkpoint_config=tune.CheckpointConfig(**args.checkpoint_config))
    name = run_config.name
    env = {"TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1"}
    if search.verbose <= 0:
        env["RAY_AIR_NEW_OUTPUT"] = "0"  # the new output prints a header even when silent
    try:
        with _environ(env), _quiet_missing_metrics(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", module=r"ray\.tune.*")
            path = os.path.join(run_config.storage_path, name)
            if stored is not None and tune.Tuner.can_restore(path):
                # The same search ran here before: finished trials are kept, the rest run.
                tuner = tune.Tuner.restore(path, trainable=trainable, param_space=param_space,
                                           resume_unfinished=True, restart_errored=True)
            else:
                tuner = tune.Tuner(trainable, param_space=param_space,
                                   tune_config=tune_config, run_config=run_config)
            with _signal_handlers_kept():  # Tune's SIGINT handler outlives its run otherwise
                grid = tuner.fit()
            if stored is not None and not history:
                # A restored experiment keeps the callbacks it was made with (in the process
                # that made it): read its reports back from what Tune stored.
                history.extend(_stored_history(grid))
    finally:
        if made is not None:
            shutil.rmtree(made, ignore_errors=True)
    return grid, history, live


@dataclass
class Collected:
    candidates: list = field(default_factory=list)
    results: dict = field(default_factory=dict)
    budgets: dict = field(default_factory=dict)  # candidate -> (budget reached, full budget)
    times: dict = field(default_factory=dict)  # candidate -> its trial's seconds at that budget
    trial_of: dict = field(default_factory=dict)  # candidate -> trial number
    members_of: dict = field(default_factory=dict)  # Tune trial id -> candidates
    fit_seconds: float = 0.0  # training seconds of every trial, each counted once
    score_seconds: float = 0.0  # scoring seconds of every trial (every report), each counted once
    skipped: int = 0  # trials that reported nothing (time budget, stopper)


def collect(grid, spec: TrialSpec, payload: Payload, n_splits: int,
            history: Sequence[Mapping[str, Any]] = ()) -> Collected:
    """Candidates, FitResults keyed by (candidate, fold), (budget reached, budget) each, and the
    seconds its trial had run when it reached that budget (Tune's ``time_total_s`` of that
    report, from ``history``; else the trial's last)."""
    seconds = {(h["trial_id"], h[BUDGET]): h["time_total_s"] for h in history}
    trials = []
    skipped = 0
    for result in grid:
        config = result.config or {}
        metrics = result.metrics or {}
        if not config or not (metrics.get(FOLDS) or result.error is not None):
            skipped += 1
            continue
        members = spec.members(config)
        order = members[0][0] if members[0][0] is not None else len(trials)
        trials.append((order, config, metrics, result.error))
    trials.sort(key=lambda t: t[0])
    entries = []
    out = Collected(skipped=skipped)
    for t, (_, config, metrics, error) in enumerate(trials):
        folds = metrics.get(FOLDS)
        snapshots = metrics.get(MEMBERS) or {}
        for cid, budget in spec.members(config):
            records = (snapshots.get(str(cid)) if cid is not None else None) or folds
            params = spec.params_of(config) if cid is None else dict(spec.candidates[cid])
            budget = int(budget or metrics.get("max_budget") or 0)
            entries.append((cid if cid is not None else t, params, records, error, budget, t,
                            metrics.get("trial_id"), metrics.get("time_total_s")))
        out.fit_seconds += float(sum(r["fit_time"] for r in folds or ()))
        out.score_seconds += float(sum(r["score_time"] for r in folds or ()))
    entries.sort(key=lambda e: e[0])  # candidates in the order of the grid / the trials
    for c, (_, params, records, error, budget, t, trial_id, last_s) in enumerate(entries):
        out.candidates.append(params)
        out.trial_of[c] = t
        out.members_of.setdefault(trial_id, []).append(c)
        if not records:  # the trial itself died (after Tune's retries): every fold a failure
            for f in range(n_splits):
                trial = Trial(c, f, params, fit_seed(spec.random_state, params_key(params), f))
                out.results[(c, f)] = system_failure(
                    trial, error if isinstance(error, BaseException) else str(error),
                    payload.metrics or ("score",), payload.return_train_score, payload.error_score)
            out.budgets[c] = (0, budget)
            out.times[c] = float(last_s) if last_s is not None else np.nan
            continue
        for rec in records:
            out.results[(c, rec["fold"])] = fit_result(c, rec)
        reached = max(int(r.get("budget") or 0) for r in records)
        out.budgets[c] = (reached, budget)
        at = seconds.get((trial_id, reached), last_s)
        out.times[c] = float(at) if at is not None else np.nan
    return out


def _stored_history(grid) -> list[dict]:
    """The reports Tune stored for every trial of a result grid, as ``history_callback`` records
    them: every report where Tune's loggers kept them, else (raygrid turns those loggers off
    unless ``loggers`` asks for them) each trial's last one. Training and scoring seconds are
    not kept per report: NaN."""
    rows = []
    for result in grid:
        frame = result.metrics_dataframe
        trial_id = (result.metrics or {}).get("trial_id")
        reports = [r for _, r in frame.iterrows()] if frame is not None and len(frame) else (
            [result.metrics] if result.metrics else [])
        for report in reports:
            rows.append({
                "trial_id": report.get("trial_id", trial_id),
                "config": dict(result.config or {}),
                BUDGET: report.get(BUDGET),
                OBJECTIVE: report.get(OBJECTIVE),
                "time_total_s": report.get("time_total_s"),
                **{k: v for k, v in report.items()
                   if isinstance(k, str) and k.startswith("mean_test_")},
                "fit_time": np.nan,
                "score_time": np.nan,
            })
    return rows


def history_frame(history: list, members_of: Mapping[str, list]) -> pd.DataFrame:
    """Every report of every trial: its candidates, budget, objective and mean test scores."""
    if not history:
        return pd.DataFrame()
    frame = pd.DataFrame(history).drop(columns=["config"])
    frame.insert(0, "candidates", [members_of.get(t, []) for t in frame["trial_id"]])
    frame.insert(0, "candidate", [m[-1] if m else -1 for m in frame["candidates"]])
    return frame
