"""TuneBaseSearch: raygrid's search steps with Ray Tune trials as the run step (the two public
classes, with their search spaces, are in ``raygrid.search.tune.estimators``)."""
from __future__ import annotations

import numbers
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import clone, is_classifier

from raygrid.engine.executors.worker_env import keras_env
from raygrid.engine.runner import reraise
from raygrid.search.base import BaseSearch
from raygrid.search.prepare import RunOptions, SearchRun
from raygrid.search.tune.experiment import collect, history_frame, run_experiment
from raygrid.search.tune.spec import (ASHA, BUDGET, TrialSpec, build_scheduler, group_by_epochs,
                                      plan_kind, scheduler_spec)


# ---------------------------------------------------------------------------------------------
# The sklearn-facing searches
# ---------------------------------------------------------------------------------------------
class TuneBaseSearch(BaseSearch):
    """What TuneSearchCV and TuneGridSearchCV share: raygrid's fit steps, with Ray Tune trials
    (one per candidate, every fold) as the run step."""

    # Tune runs on Ray, each trial's resources given by resources_per_trial: not parameters.
    backend = "ray"
    ray_remote_args = None

    def __init__(
        self,
        estimator,
        early_stopping=None,
        scoring=None,
        n_jobs=None,
        cv=None,
        refit=True,
        verbose=0,
        error_score="raise",
        return_train_score=False,
        local_dir=None,
        name=None,
        max_iters=1,
        use_gpu=False,
        loggers=None,
        pipeline_auto_early_stop=True,
        stopper=None,
        time_budget_s=None,
        sk_n_jobs=None,
        mode=None,
        resources_per_trial=None,
        address=None,
        random_state=None,
        share_epochs=True,
        max_retries=3,
        storage=None,
    ):
        self.estimator = estimator
        self.early_stopping = early_stopping
        self.scoring = scoring
        self.n_jobs = n_jobs
        self.cv = cv
        self.refit = refit
        self.verbose = verbose
        self.error_score = error_score
        self.return_train_score = return_train_score
        self.local_dir = local_dir
        self.name = name
        self.max_iters = max_iters
        self.use_gpu = use_gpu
        self.loggers = loggers
        self.pipeline_auto_early_stop = pipeline_auto_early_stop
        self.stopper = stopper
        self.time_budget_s = time_budget_s
        self.sk_n_jobs = sk_n_jobs
        self.mode = mode
        self.resources_per_trial = resources_per_trial
        self.address = address
        self.random_state = random_state
        self.share_epochs = share_epochs
        self.max_retries = max_retries
        self.storage = storage

    # -- subclasses ------------------------------------------------------------------------------
    def _space(self, estimator, spec: TrialSpec) -> tuple[dict, Any, int]:
        """(param_space, search_alg, num_samples); fills spec.candidates or spec.decoders."""
        raise NotImplementedError  # pragma: no cover

    def _run_search(self, evaluate_candidates):  # pragma: no cover - Tune drives the search
        raise NotImplementedError("Tune searches run their trials in _run")

    # -- tune-sklearn's names of the best candidate ----------------------------------------------
    @property
    def best_params(self) -> dict:
        """``best_params_`` under tune-sklearn's name."""
        return self.best_params_

    @property
    def best_index(self) -> int:
        """``best_index_`` under tune-sklearn's name."""
        return self.best_index_

    @property
    def best_score(self) -> float:
        """``best_score_`` under tune-sklearn's name."""
        return self.best_score_

    @property
    def best_estimator(self):
        """``best_estimator_`` under tune-sklearn's name."""
        return self.best_estimator_

    # -- raygrid's fit steps: Tune's own checks, the run step, its frames -------------------------
    def fit(self, X, y=None, groups=None, tune_params=None, **fit_params):
        """Run one Tune trial per candidate, then refit the best on all of ``X, y``.

        As tune-sklearn's: ``groups`` for group-aware splitters, ``tune_params`` a dict of
        ``tune.run`` arguments laid over the search's own (on Ray 2.60's Tuner API: see
        ``raygrid.search.tune.run_args``), ``fit_params`` for the estimator's ``fit``.
        """
        if groups is not None:
            fit_params["groups"] = groups
        if tune_params is not None:
            fit_params[_TUNE_PARAMS] = tune_params
        return super().fit(X, y, **fit_params)

    def _prepare(self, X, y, params) -> SearchRun:
        tune_params = params.pop(_TUNE_PARAMS, None)
        if self.mode not in (None, "max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', got {self.mode!r}")
        if self.sk_n_jobs not in (None, 1):
            raise ValueError("sk_n_jobs is not supported: folds of a candidate run one after "
                             "another inside its trial; use n_jobs for parallel trials")
        if not isinstance(self.max_iters, numbers.Integral) or self.max_iters < 1:
            raise ValueError(f"max_iters must be a positive integer, got {self.max_iters!r}")
        if self.storage is not None and Path(self.storage).expanduser().is_file():
            raise ValueError(f"storage={str(self.storage)!r} is a file, not a directory")
        run = super()._prepare(X, y, params)
        run.notes["tune_params"] = tune_params
        return run

    def _run_options(self) -> RunOptions:
        """No fit store: Tune keeps its experiment under ``storage`` itself (see
        ``_experiment_name``)."""
        return RunOptions(backend=self.backend, address=self.address,
                          ray_remote_args=self.ray_remote_args, max_retries=self.max_retries,
                          n_jobs=self.n_jobs)

    def _run(self, run: SearchRun) -> None:
        """One Tune trial per candidate (or per group sharing epochs) trains every fold; their
        fold results become ``run.results``, keyed by (candidate, fold)."""
        estimator, payload = self.estimator, run.payload
        scheduler = scheduler_spec(self.early_stopping)
        kind = plan_kind(estimator, scheduler, int(self.max_iters), self.pipeline_auto_early_stop)
        resources = self._resources()
        spec = TrialSpec(
            kind=kind, max_iters=max(1, int(self.max_iters)), rungs=None,
            every_unit=(scheduler is not None and not isinstance(scheduler, ASHA))
            or self.stopper is not None,
            objective_metric=(self.refit if isinstance(self.refit, str) else run.scoring.metrics[0])
            if run.scoring.multimetric else "score",
            mode=self.mode or "max", random_state=run.seed_state,
            classes=np.unique(run.y) if (kind == "partial_fit" and is_classifier(estimator)
                                         and run.y is not None) else None,
            worker_env=keras_env(resources.get("cpu", 1)) if run.payload.keras else {},
        )
        param_space, search_alg, n_samples = self._space(estimator, spec)
        if spec.candidates is not None:
            spec.budgets = [spec.budget_of(clone(estimator).set_params(**clone(p, safe=False)))
                            if kind == "keras" else spec.budget_of(estimator)
                            for p in spec.candidates]
            if kind == "keras" and self.share_epochs:
                spec.groups = group_by_epochs(spec.candidates, spec.budgets)
            else:
                spec.groups = [[i] for i in range(len(spec.candidates))]
            from ray import tune

            param_space = {"trial": tune.grid_search(list(range(len(spec.groups))))}
        tune_scheduler = build_scheduler(scheduler, spec, estimator)
        n_candidates = len(spec.candidates) if spec.candidates is not None else n_samples
        run.progress.total += n_candidates * run.n_splits
        run.progress.announce(n_candidates)
        grid, history, live = run_experiment(self, payload, spec, param_space, search_alg,
                                             tune_scheduler, n_samples, resources, run.progress,
                                             run.notes.get("tune_params"))
        collected = collect(grid, spec, payload, run.n_splits, history)
        run.notes.update(collected=collected, history=history)
        if not collected.candidates:  # _finish_empty says so; as tune-sklearn, fit returns
            return
        run.candidates.extend(collected.candidates)
        run.first_split.extend([0] * len(collected.candidates))
        shown = {c for trial_id in live for c in collected.members_of.get(trial_id, ())}
        for key in sorted(collected.results):
            result = collected.results[key]
            run.results[key] = result
            if key[0] not in shown:  # a resumed experiment's earlier trials, a trial that died
                run.progress.add(result, params=collected.candidates[key[0]])
            result.reissue_warnings()
        if self.error_score == "raise":
            for key in sorted(run.results):
                if run.results[key].failed:
                    reraise(run.results[key])
        if collected.skipped:
            warnings.warn(f"{collected.skipped} Tune trial(s) reported no result (time_budget_s "
                          "or a stopper ended them first); their candidates are left out of "
                          "cv_results_.", UserWarning)

    def _cv_results(self, run: SearchRun, scoring, warn: bool) -> dict:
        """scikit-learn's keys, and tune-sklearn's: ``training_iteration`` (the increments each
        candidate trained: partial_fit passes, warm-start steps or epochs; 1 for a plain fit)
        and ``time_total_s`` (its Tune trial's seconds when it got there)."""
        cv = super()._cv_results(run, scoring, warn)
        if self.mode == "min":
            _rank_ascending(cv)
        collected = run.notes["collected"]
        n = len(run.candidates)
        cv["training_iteration"] = np.array([collected.budgets[c][0] for c in range(n)])
        cv["time_total_s"] = np.array([collected.times[c] for c in range(n)], dtype=float)
        return cv

    def _finish_empty(self, run: SearchRun) -> None:
        """No trial reported before ``time_budget_s`` ran out (or a stopper ended every one):
        as tune-sklearn, a warning and an empty ``cv_results_``; nothing is refitted."""
        warnings.warn(
            "No Tune trial reported a result before time_budget_s ran out or a stopper ended "
            "it: cv_results_ is empty and no best estimator was refitted (raise time_budget_s).",
            UserWarning)
        self.cv_results_ = {}
        self.n_splits_ = run.n_splits
        self.results_ = pd.DataFrame()
        self.summary_ = pd.DataFrame()
        self.history_ = history_frame(run.notes.get("history", []), {})
        self.fit_seconds_ = self.score_seconds_ = 0.0

    def _finish_frames(self, run: SearchRun) -> None:
        """Each candidate's budget reached and trial, every report (``history_``), and the
        training and scoring seconds of every trial."""
        collected = run.notes["collected"]
        budgets = collected.budgets
        if len(self.results_):
            self.results_[BUDGET] = [budgets[c][0] for c in self.results_["candidate"]]
        self.summary_[BUDGET] = [budgets[c][0] for c in self.summary_.index]
        self.summary_["max_budget"] = [budgets[c][1] for c in self.summary_.index]
        self.summary_["stopped_early"] = self.summary_[BUDGET] < self.summary_["max_budget"]
        self.summary_["trial"] = [collected.trial_of[c] for c in self.summary_.index]
        self.history_ = history_frame(run.notes["history"], collected.members_of)
        self.fit_seconds_ = collected.fit_seconds
        self.score_seconds_ = collected.score_seconds

    def _resources(self) -> dict:
        resources = dict(self.resources_per_trial or {"cpu": 1})
        resources.setdefault("cpu", 1)
        if self.use_gpu and not resources.get("gpu"):
            resources["gpu"] = 1
        return resources


#: The key ``fit`` passes tune_params under to ``_prepare`` (never an estimator's parameter).
_TUNE_PARAMS = "__raygrid_tune_params__"


def _rank_ascending(cv: dict) -> None:
    """mode='min': the smallest mean score ranks first."""
    from scipy.stats import rankdata

    for key in [k for k in cv if k.startswith("rank_test_")]:
        means = np.asarray(cv["mean_test_" + key[len("rank_test_"):]], dtype=float)
        if np.isnan(means).all():
            continue
        filled = np.nan_to_num(means, nan=np.nanmax(means) + 1)
        cv[key] = rankdata(filled, method="min").astype(np.int32)


__all__ = ["TuneBaseSearch"]
