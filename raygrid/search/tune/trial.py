"""The Tune trial (runs in a Tune actor): every fold of one candidate, fitted and scored with
raygrid's fitting steps, in increments when a scheduler may stop it early."""
from __future__ import annotations

import contextlib
import inspect
import math
import numbers
import os
import pickle
import shutil
import sys
import tempfile
import time
import traceback
import warnings
from typing import Any, Mapping, Sequence

import numpy as np
from sklearn.base import clone
from sklearn.pipeline import Pipeline

from raygrid.engine.fitting import (FitResult, Payload, fit_and_score, fold_data, pickles, score,
                             set_error_scores)
from raygrid.keras import fit_context
from raygrid.engine.plan import Trial, fit_seed, params_key
from raygrid.search.tune.spec import BUDGET, FOLDS, MEMBERS, OBJECTIVE, TrialSpec, final_step


# ---------------------------------------------------------------------------------------------
# The trial: every fold of one candidate, trained in increments (runs in a Tune actor)
# ---------------------------------------------------------------------------------------------
def _accepts(method, name: str) -> bool:
    """Whether ``method`` takes ``name``; ``inspect.signature`` follows ``__wrapped__``, so it sees
    through scikit-learn's fit-context decorator (``getfullargspec`` sees only ``*args, **kwargs``)."""
    try:
        params = inspect.signature(method).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def _names(method, name: str) -> bool:
    """Whether ``method`` has a parameter called ``name`` (not merely ``**kwargs``)."""
    try:
        return name in inspect.signature(method).parameters
    except (TypeError, ValueError):
        return False


def _only_accepted(method, kwargs: Mapping[str, Any]) -> dict:
    return {k: v for k, v in kwargs.items() if _accepts(method, k)}


class Fold:
    """One fold of one candidate: its estimator, its data, and what it has trained so far."""

    def __init__(self, payload: Payload, spec: TrialSpec, params: dict, fold: int, seed):
        self.payload, self.spec, self.fold, self.seed = payload, spec, fold, seed
        data = fold_data(payload, fold)
        self.X_train, self.y_train, self.X_test, self.y_test = (
            data.X_train, data.y_train, data.X_test, data.y_test)
        self.n_test = data.n_test
        self.fit_params = data.fit_params
        self.score_test, self.score_train = data.score_test, data.score_train
        self.estimator = clone(payload.estimator).set_params(**clone(params, safe=False))
        self.done = 0  # budget units trained
        self.fit_time = 0.0
        self.score_time = 0.0
        self.test_scores: dict[str, float] = {}
        self.train_scores: dict[str, float] | None = None
        self.error: str | None = None
        self.exception: BaseException | None = None
        self.train_loss: float | None = None  # the learner's last training loss, if it keeps one
        self._Xt = None  # the Pipeline's transformed training rows (fitted once)

    # -- training ------------------------------------------------------------------------------
    def _learner_and_data(self):
        est = self.estimator
        if not isinstance(est, Pipeline):
            return est, self.X_train, self.fit_params
        last_name = est.steps[-1][0]
        last_params = {k.split("__", 1)[1]: v for k, v in self.fit_params.items()
                       if k.startswith(last_name + "__")}
        if self._Xt is None and self.done > 0:  # restored from a checkpoint: the head is fitted
            self._Xt = est[:-1].transform(self.X_train)
        if self._Xt is None:
            head = est[:-1]
            head_params = {k: v for k, v in self.fit_params.items()
                           if not k.startswith(last_name + "__")}
            self._Xt = head.fit_transform(self.X_train, self.y_train, **head_params)
        return est.steps[-1][1], self._Xt, last_params

    def advance_to(self, point: int, budget: int) -> None:
        if self.error is not None or point <= self.done:
            return
        start = time.perf_counter()
        try:
            self._seed(point)
            self._train(point, budget)
            self.train_loss = _last_loss(final_step(self.estimator))
            self.done = point
            self.fit_time += time.perf_counter() - start
        except Exception as exc:  # noqa: BLE001 - errors are data; error_score decides
            self.fit_time += time.perf_counter() - start
            self._fail(exc)
            return
        start = time.perf_counter()
        try:  # raygrid's scoring: a failing scorer gives error_score, as in every search
            p = self.payload
            self.test_scores = score(self.estimator, self.X_test, self.y_test, p, self.score_test)
            if p.return_train_score:
                self.train_scores = score(self.estimator, self.X_train, self.y_train, p,
                                          self.score_train)
        except Exception as exc:  # noqa: BLE001 - error_score="raise": the fold's error
            self._fail(exc)
        self.score_time += time.perf_counter() - start

    def _seed(self, point: int) -> None:
        """Keras: the fold's seed (raygrid's rule) for its first increment, then one derived
        from it and the increment, so a trial resumed from a checkpoint trains the same."""
        if self.seed is None or self.spec.kind != "keras" or not self.payload.keras:
            return
        import keras

        seed = self.seed if self.done == 0 else int(
            np.random.SeedSequence([int(self.seed), int(point)]).generate_state(1)[0] & 0x7FFFFFFF)
        keras.utils.set_random_seed(seed)

    def _train(self, point: int, budget: int) -> None:
        kind = self.spec.kind
        learner, X, fit_params = self._learner_and_data()
        step = point - self.done
        if kind == "keras":
            # warm_start keeps the model between fit calls, but scikeras' KerasClassifier.fit
            # resets classes_ to None on every call and derives it again only when it builds a
            # new model: put it back, or the warm model can no longer predict. (partial_fit keeps
            # both but trains one epoch per call.)
            if self.done == 0:
                learner.set_params(warm_start=True)
            classes = getattr(learner, "classes_", None)
            learner.fit(X, self.y_train, epochs=step, initial_epoch=self.done, **fit_params)
            if classes is not None and getattr(learner, "classes_", None) is None:
                learner.classes_ = classes
        elif kind == "partial_fit":
            kwargs = _only_accepted(learner.partial_fit, fit_params)
            if self.done == 0 and self.spec.classes is not None and _names(learner.partial_fit,
                                                                           "classes"):
                kwargs["classes"] = self.spec.classes
            for _ in range(step):
                learner.partial_fit(X, self.y_train, **kwargs)
                kwargs.pop("classes", None)
        else:
            self._warm_start_fit(learner, X, fit_params, point, budget)

    def _warm_start_fit(self, learner, X, fit_params, point: int, budget: int) -> None:
        from sklearn.exceptions import ConvergenceWarning

        key = self.spec.kind  # "max_iter" or "n_estimators"
        if self.done == 0:
            self._total = int(learner.get_params()[key])
        total = self._total
        with warnings.catch_warnings():
            if point < budget:
                warnings.simplefilter("ignore", ConvergenceWarning)
            if key == "n_estimators":
                n = max(1, int(math.ceil(total * point / budget)))
                learner.set_params(warm_start=True, n_estimators=n)
                learner.fit(X, self.y_train, **fit_params)
            else:
                done_iters = int(math.ceil(total * self.done / budget))
                n = max(1, int(math.ceil(total * point / budget)) - done_iters)
                learner.set_params(warm_start=True, max_iter=n)
                learner.fit(X, self.y_train, **fit_params)

    def _fail(self, exc: BaseException) -> None:
        self.error = traceback.format_exc()
        self.exception = pickles(exc)  # one that does not pickle travels as its text alone
        set_error_scores(self, self.payload)

    _STATE = ("estimator", "done", "fit_time", "score_time", "test_scores", "train_scores",
              "error", "exception", "train_loss", "_total")

    def state(self) -> dict:
        return {k: getattr(self, k) for k in self._STATE if hasattr(self, k)}

    def restore(self, state: Mapping[str, Any]) -> None:
        for k, v in state.items():
            setattr(self, k, v)

    def record(self, node: str, pid: int) -> dict:
        return fold_record(FitResult(
            0, self.fold, dict(self.test_scores), self.train_scores, self.fit_time,
            self.score_time, self.n_test, error=self.error, exception=self.exception, node=node,
            pid=pid, seed=self.seed), self.done)


def fold_record(result: FitResult, budget: int) -> dict:
    """A fold's result as a trial reports it to Tune (plain values; the candidate is the
    driver's to number)."""
    return dict(fold=result.fold, test=dict(result.test_scores), train=result.train_scores,
                fit_time=result.fit_time, score_time=result.score_time,
                n_test=result.n_test_samples, error=result.error, exception=result.exception,
                node=result.node, pid=result.pid, seed=result.seed, budget=budget,
                warnings=result.warnings)


def fit_result(c: int, rec: Mapping[str, Any]) -> FitResult:
    return FitResult(c, rec["fold"], dict(rec["test"]),
                     dict(rec["train"]) if rec.get("train") is not None else None,
                     rec["fit_time"], rec["score_time"], rec["n_test"], error=rec["error"],
                     exception=rec.get("exception"), node=rec["node"], pid=rec["pid"],
                     seed=rec["seed"], warnings=rec.get("warnings"))


def _prepare_worker_env(spec: TrialSpec) -> None:
    """Before TensorFlow loads in this actor: the environment raygrid's Keras workers get
    (``raygrid.engine.executors.worker_env.keras_env``: threads capped to the trial's CPUs, quiet
    logs, the driver's Keras backend)."""
    if "tensorflow" not in sys.modules:
        os.environ.update(spec.worker_env)


def _last_loss(learner: Any) -> float | None:
    """The last training loss a learner keeps (scikeras ``history_``, scikit-learn ``loss_``)."""
    history = getattr(learner, "history_", None)
    loss = None
    if isinstance(history, Mapping) and history.get("loss"):
        loss = history["loss"][-1]
    elif isinstance(getattr(learner, "loss_", None), numbers.Real):
        loss = learner.loss_
    try:
        loss = float(loss)
    except (TypeError, ValueError):
        return None
    return loss if math.isfinite(loss) else None


TIE_BREAK = 1e-6  # weight of the training loss in the objective: far below any score difference


def trial_objective(folds: Sequence[Any], spec: TrialSpec) -> tuple[float, dict[str, float]]:
    """The mean CV score Tune optimises, and every metric's mean.

    Scores tie often early on (every candidate that still predicts the majority class has the same
    accuracy), and ASHA keeps every trial tied with its cutoff. So ties are broken by the mean
    training loss, weighted by TIE_BREAK: too small to reorder different scores, enough to let
    ASHA stop two thirds of a tied rung. ``cv_results_`` holds the plain scores.
    """
    metrics = list(folds[0].test_scores) if folds and folds[0].test_scores else []
    means = {}
    for m in metrics:
        values = [f.test_scores.get(m, np.nan) for f in folds]
        means[m] = float(np.mean(values))
    key = spec.objective_metric if spec.objective_metric in means else (metrics[0] if metrics else None)
    objective = means[key] if key is not None else float("nan")
    losses = [getattr(f, "train_loss", None) for f in folds]
    if math.isfinite(objective) and all(loss is not None for loss in losses):
        sign = -1.0 if spec.mode == "max" else 1.0
        objective += sign * TIE_BREAK * float(np.mean(losses))
    return objective, means


def mean_keys(means: Mapping[str, float]) -> dict[str, float]:
    """Every metric's mean CV score under raygrid's name (``mean_test_<metric>``) and
    tune-sklearn's (``average_test_<metric>``: what its users' stoppers, schedulers and searchers
    name as their ``metric``)."""
    return {**{f"mean_test_{m}": v for m, v in means.items()},
            **{f"average_test_{m}": v for m, v in means.items()}}


def run_candidate(config: dict, shared: list) -> None:
    """The Tune function trainable: every fold of one candidate, reporting after each increment."""
    import ray
    from ray import tune

    # A stopped trial's thread must end before Tune reuses this actor for the next trial; Tune
    # waits 2 s by default, too little for a Keras trial on a busy machine (the next trial then
    # fails instead of starting a fresh actor). Tune reads this in the actor at every reuse.
    os.environ["TUNE_FUNCTION_THREAD_TIMEOUT_S"] = "120"
    _add_driver_paths(shared[2])  # before anything of the driver's is unpickled here
    spec: TrialSpec = ray.get(shared[1])
    _prepare_worker_env(spec)
    payload: Payload = ray.get(shared[0])
    params = spec.params_of(config)
    # raygrid's seeding rule: (random_state, the candidate's parameter values, fold).
    seeds = [fit_seed(spec.random_state, params_key(params), f) for f in range(len(payload.splits))]
    if spec.kind == "plain":  # one fit per fold, exactly as raygrid's other searches fit them
        results = [fit_and_score(payload, Trial(0, f, params, seed)) for f, seed in enumerate(seeds)]
        objective, means = trial_objective(results, spec)
        records = [fold_record(r, 1) for r in results]
        tune.report({OBJECTIVE: objective, BUDGET: 1, "max_budget": 1,
                     **mean_keys(means),
                     "n_failed_folds": sum(r.failed for r in results), FOLDS: records,
                     MEMBERS: {}})
        return
    members = spec.members(config)
    node, pid = ray.get_runtime_context().get_node_id(), os.getpid()
    folds = [Fold(payload, spec, params, f, seed) for f, seed in enumerate(seeds)]
    budget = members[-1][1] or spec.budget_of(folds[0].estimator)
    member_budgets = [b for _, b in members if b]
    snapshots: dict[str, list] = {}  # a member's fold records at its own budget
    start = 0
    checkpoint = tune.get_checkpoint() if spec.checkpoint else None
    if checkpoint is not None:  # a paused trial resumes where it stopped
        with checkpoint.as_directory() as path:
            with open(os.path.join(path, "folds.pkl"), "rb") as fh:
                saved = pickle.load(fh)
            for fold, state in zip(folds, saved["folds"]):
                fold.restore(state)
            snapshots.update(saved["snapshots"])
        start = min(f.done for f in folds if f.error is None) if any(
            f.error is None for f in folds) else budget
    # raygrid's Keras hygiene around the whole trial (its models live from one increment to the
    # next): GPU memory growth, the session cleared when the trial ends.
    with fit_context(payload.estimator) if payload.keras else contextlib.nullcontext():
        for point in spec.report_points(budget, member_budgets):
            if point <= start:
                continue
            for fold in folds:
                fold.advance_to(point, budget)
            objective, means = trial_objective(folds, spec)
            failed = [f for f in folds if f.error is not None]
            records = [f.record(node, pid) for f in folds]
            for c, b in members:
                if c is not None and b == point:
                    snapshots[str(c)] = records
            report = {OBJECTIVE: objective, BUDGET: point, "max_budget": budget,
                      **mean_keys(means),
                      "n_failed_folds": len(failed), FOLDS: records, MEMBERS: dict(snapshots)}
            if spec.checkpoint:
                _report_with_checkpoint(report, folds, snapshots)
            else:
                tune.report(report)
            if len(failed) == len(folds) or (failed and payload.error_score == "raise"):
                break


def _add_driver_paths(paths: Sequence[str]) -> None:
    """The driver's own ``sys.path`` entries (see
    ``raygrid.engine.executors.worker_env.driver_paths``) first on this trial's path, so classes
    defined next to the driver's code unpickle here."""
    missing = [p for p in paths if p not in sys.path]
    sys.path[:0] = missing


def _report_with_checkpoint(report: dict, folds: Sequence[Fold], snapshots: dict) -> None:
    from ray import tune

    path = tempfile.mkdtemp(prefix="raygrid-ckpt-")
    try:
        with open(os.path.join(path, "folds.pkl"), "wb") as fh:
            pickle.dump({"folds": [f.state() for f in folds], "snapshots": snapshots}, fh)
        tune.report(report, checkpoint=tune.Checkpoint.from_directory(path))
    finally:
        shutil.rmtree(path, ignore_errors=True)
