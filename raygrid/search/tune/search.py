"""TuneSearchCV and TuneGridSearchCV: raygrid's search steps with Ray Tune trials as the run step."""
from __future__ import annotations

import numbers
import warnings
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from sklearn.base import clone, is_classifier
from sklearn.model_selection import ParameterGrid, ParameterSampler

from raygrid.engine.executors.worker_env import keras_env
from raygrid.engine.runner import reraise
from raygrid.search.base import BaseSearch, validate_candidates
from raygrid.search.prepare import RunOptions, SearchRun
from raygrid.search.tune.experiment import collect, history_frame, run_experiment
from raygrid.search.tune.spaces import (SEARCH_OPTIMIZATIONS, check_bayesian, grid_values,
                                 make_searcher, sampler_dists, tune_domain)
from raygrid.search.tune.spec import (ASHA, BUDGET, TrialSpec, group_by_epochs, is_epochs_key,
                               keras_epochs, plan_kind, scheduler_spec)


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
        error_score=np.nan,
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

    # -- raygrid's fit steps: Tune's own checks, the run step, its frames -------------------------
    def _prepare(self, X, y, params) -> SearchRun:
        if self.mode not in (None, "max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', got {self.mode!r}")
        if self.sk_n_jobs not in (None, 1):
            raise ValueError("sk_n_jobs is not supported: folds of a candidate run one after "
                             "another inside its trial; use n_jobs for parallel trials")
        if not isinstance(self.max_iters, numbers.Integral) or self.max_iters < 1:
            raise ValueError(f"max_iters must be a positive integer, got {self.max_iters!r}")
        if self.storage is not None and Path(self.storage).expanduser().is_file():
            raise ValueError(f"storage={str(self.storage)!r} is a file, not a directory")
        return super()._prepare(X, y, params)

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
        tune_scheduler = self._build_scheduler(scheduler, spec, estimator)
        n_candidates = len(spec.candidates) if spec.candidates is not None else n_samples
        run.progress.total += n_candidates * run.n_splits
        run.progress.announce(n_candidates)
        grid, history, live = run_experiment(self, payload, spec, param_space, search_alg,
                                             tune_scheduler, n_samples, resources, run.progress)
        collected = collect(grid, spec, payload, run.n_splits)
        if not collected.candidates:
            raise RuntimeError("No Tune trial reported a result (time_budget_s too short?)")
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
        run.notes.update(collected=collected, history=history)

    def _cv_results(self, run: SearchRun, scoring, warn: bool) -> dict:
        cv = super()._cv_results(run, scoring, warn)
        if self.mode == "min":
            _rank_ascending(cv)
        return cv

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

    def _build_scheduler(self, scheduler, spec: TrialSpec, estimator):
        if scheduler is None:
            return None
        from ray.tune.schedulers import ASHAScheduler, HyperBandScheduler, MedianStoppingRule

        max_budget = self._max_budget(spec, estimator)
        if isinstance(scheduler, ASHA):
            max_t = scheduler.max_t or max_budget
            if scheduler.grace_period > max_t:
                raise ValueError(f"ASHA grace_period={scheduler.grace_period} exceeds the largest "
                                 f"budget {max_t}")
            spec.rungs = scheduler.rungs(max_t)
            return ASHAScheduler(time_attr=BUDGET, max_t=max_t, grace_period=scheduler.grace_period,
                                 reduction_factor=scheduler.reduction_factor, brackets=1)
        from ray.tune.schedulers import AsyncHyperBandScheduler, FIFOScheduler

        if scheduler in ("hyperband", "hyperbandscheduler"):
            scheduler = HyperBandScheduler(time_attr=BUDGET, max_t=max_budget)
        elif scheduler in ("medianstoppingrule", "median"):
            scheduler = MedianStoppingRule(time_attr=BUDGET, grace_period=1)
        # Schedulers other than ASHA and FIFO may pause a trial and resume it later: each report
        # then carries a checkpoint of the folds, so a resumed trial goes on where it stopped.
        # (MedianStoppingRule and HyperBand derive from FIFOScheduler, hence the exact type.)
        spec.checkpoint = not (isinstance(scheduler, AsyncHyperBandScheduler)
                               or type(scheduler) is FIFOScheduler)
        return scheduler

    def _max_budget(self, spec: TrialSpec, estimator) -> int:
        if spec.kind != "keras":
            return spec.max_iters if spec.kind != "plain" else 1
        if spec.budgets is not None:
            return max(spec.budgets)
        values = [v for k, v in spec.decoders.items() if is_epochs_key(k)]
        if values:
            return max(int(v) for vs in values for v in vs)
        return keras_epochs(estimator)


def _rank_ascending(cv: dict) -> None:
    """mode='min': the smallest mean score ranks first."""
    from scipy.stats import rankdata

    for key in [k for k in cv if k.startswith("rank_test_")]:
        means = np.asarray(cv["mean_test_" + key[len("rank_test_"):]], dtype=float)
        if np.isnan(means).all():
            continue
        filled = np.nan_to_num(means, nan=np.nanmax(means) + 1)
        cv[key] = rankdata(filled, method="min").astype(np.int32)


_TUNE_PARAMS_DOC = """
    early_stopping : bool, str, raygrid.tune.ASHA or ray.tune.schedulers.TrialScheduler
        Stop weak candidates early. ``True`` / ``"ASHAScheduler"``: asynchronous successive
        halving whose trials score their folds only at its rungs; ``"HyperBandScheduler"``,
        ``"MedianStoppingRule"`` or a scheduler object: trials report after every unit. Needs an
        estimator that trains in increments: a scikeras Keras model (units are epochs, up to the
        model's ``epochs``), ``partial_fit`` (units are passes, up to ``max_iters``) or
        ``warm_start`` with ``max_iter`` / ``n_estimators`` (that budget split into ``max_iters``
        steps). A Pipeline's last step may be the incremental one (``pipeline_auto_early_stop``).
    max_iters : int, default=1
        Increments per candidate for scikit-learn estimators (see ``early_stopping``); Keras
        models use their own ``epochs`` as the budget.
    n_jobs : int, default=None
        At most this many trials at once; None or -1: as many as the resources allow.
    resources_per_trial : dict, default={"cpu": 1}
        Ray Tune resources of one trial (``{"cpu": 1, "gpu": 0.25}``); ``use_gpu=True`` adds a GPU.
    local_dir, name : where Tune keeps its experiment (Ray's ``storage_path`` and experiment
        name); a temporary folder, removed after ``fit``, when ``local_dir`` is not given.
    storage : str or path, default=None
        A directory that keeps the experiment, named by a digest of everything that decides
        the results (estimator, its classes' source, the space, data, cv, scoring, settings):
        running the same search again resumes it (finished trials are kept; unfinished and
        errored ones run); another search gets a folder of its own.
    max_retries : int, default=3
        How often a trial whose actor or node died runs again (Tune's ``max_failures``).
    loggers : list of "csv", "json", "tensorboard" or ray.tune.Callback objects.
    stopper : ray.tune.Stopper, dict or callable, passed to Tune.
    time_budget_s : seconds (or timedelta) for the whole search; trials cut off before their
        first report are left out of ``cv_results_``.
    mode : "max" (default) or "min": whether the best candidate has the highest or lowest score.
    random_state : int, seeds the sampling, the search algorithm and Keras fits (per candidate
        and fold).
    address : the Ray cluster to join; else ``RAY_ADDRESS``; else a local Ray.

    Attributes beyond scikit-learn's: ``results_`` (one row per fold at the last increment a
    candidate reached, with its ``budget``), ``summary_`` (one row per candidate, with
    ``budget``, ``max_budget`` and ``stopped_early``), ``history_`` (every report of every
    trial), ``fit_seconds_`` and ``score_seconds_`` (training and scoring seconds summed over
    every trial, fold and increment). In ``results_`` a candidate's ``fit_time`` is what it took
    to reach its budget; candidates sharing a trial (``share_epochs``) share those seconds, so the
    column can sum to more than ``fit_seconds_``.
"""


class TuneGridSearchCV(TuneBaseSearch):
    __doc__ = (
        """Exhaustive search over ``param_grid`` on Ray Tune, one trial per candidate.

    Same interface as tune-sklearn's ``TuneGridSearchCV`` and scikit-learn's ``GridSearchCV``;
    ``param_grid`` is a dict of lists (or ``tune.grid_search``) or a list of such dicts.
"""
        + _TUNE_PARAMS_DOC
    )

    def __init__(
        self,
        estimator,
        param_grid,
        early_stopping=None,
        scoring=None,
        n_jobs=None,
        cv=None,
        refit=True,
        verbose=0,
        error_score=np.nan,
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
        super().__init__(
            estimator, early_stopping=early_stopping, scoring=scoring, n_jobs=n_jobs, cv=cv,
            refit=refit, verbose=verbose, error_score=error_score,
            return_train_score=return_train_score, local_dir=local_dir, name=name,
            max_iters=max_iters, use_gpu=use_gpu, loggers=loggers,
            pipeline_auto_early_stop=pipeline_auto_early_stop, stopper=stopper,
            time_budget_s=time_budget_s, sk_n_jobs=sk_n_jobs, mode=mode,
            resources_per_trial=resources_per_trial, address=address,
            random_state=random_state, share_epochs=share_epochs, max_retries=max_retries,
            storage=storage,
        )
        self.param_grid = param_grid

    def _space(self, estimator, spec):
        grid = self.param_grid
        grids = [grid] if isinstance(grid, Mapping) else list(grid)
        cleaned = []
        for g in grids:
            if not isinstance(g, Mapping):
                raise TypeError(f"param_grid must be a dict or a list of dicts, got {grid!r}")
            cleaned.append({k: grid_values(k, v) for k, v in g.items()})
        candidates = [dict(p) for p in ParameterGrid(cleaned)]
        validate_candidates(estimator, candidates, "param_grid")
        spec.candidates = candidates
        return None, None, 1


class TuneSearchCV(TuneBaseSearch):
    __doc__ = (
        """Random or adaptive search over ``param_distributions`` on Ray Tune, one trial per candidate.

    Same interface as tune-sklearn's ``TuneSearchCV``. ``search_optimization``:

    - ``"random"``: scikit-learn's ``ParameterSampler`` draws ``n_trials`` candidates (the same
      ones as ``RandomizedSearchCV`` with the same ``random_state``); values are lists, scipy
      distributions, ``(low, high[, "uniform" | "log-uniform"])`` ranges or ray.tune domains; a
      list of dicts is allowed.
    - ``"bayesian"`` (Ray's ``BayesOptSearch``; continuous float ranges only), ``"hyperopt"``
      (``HyperOptSearch``) and ``"optuna"`` (``OptunaSearch``): a dict of lists (categorical),
      ranges, scipy uniform/loguniform/randint or ray.tune domains. Integer ranges include
      ``high``. A Ray Tune ``Searcher`` object is used as given. ``search_kwargs`` go to the
      searcher.
"""
        + _TUNE_PARAMS_DOC
    )

    def __init__(
        self,
        estimator,
        param_distributions,
        early_stopping=None,
        n_trials=10,
        scoring=None,
        n_jobs=None,
        refit=True,
        cv=None,
        verbose=0,
        random_state=None,
        error_score=np.nan,
        return_train_score=False,
        local_dir=None,
        name=None,
        max_iters=1,
        search_optimization="random",
        use_gpu=False,
        loggers=None,
        pipeline_auto_early_stop=True,
        stopper=None,
        time_budget_s=None,
        sk_n_jobs=None,
        mode=None,
        search_kwargs=None,
        resources_per_trial=None,
        address=None,
        share_epochs=True,
        max_retries=3,
        storage=None,
    ):
        super().__init__(
            estimator, early_stopping=early_stopping, scoring=scoring, n_jobs=n_jobs, cv=cv,
            refit=refit, verbose=verbose, error_score=error_score,
            return_train_score=return_train_score, local_dir=local_dir, name=name,
            max_iters=max_iters, use_gpu=use_gpu, loggers=loggers,
            pipeline_auto_early_stop=pipeline_auto_early_stop, stopper=stopper,
            time_budget_s=time_budget_s, sk_n_jobs=sk_n_jobs, mode=mode,
            resources_per_trial=resources_per_trial, address=address,
            random_state=random_state, share_epochs=share_epochs, max_retries=max_retries,
            storage=storage,
        )
        self.param_distributions = param_distributions
        self.n_trials = n_trials
        self.search_optimization = search_optimization
        self.search_kwargs = search_kwargs

    @property
    def _space_name(self) -> str:
        return "param_distributions"

    def _space(self, estimator, spec):
        if not isinstance(self.n_trials, numbers.Integral) or self.n_trials < 1:
            raise ValueError(f"n_trials must be a positive integer, got {self.n_trials!r}")
        optimizer = self.search_optimization
        if isinstance(optimizer, str):
            optimizer = optimizer.lower()
            if optimizer == "bohb":
                raise ValueError(
                    "search_optimization='bohb' is not supported (Ray 2.60's TuneBOHB needs the "
                    "unmaintained hpbandster); use 'optuna', 'hyperopt', 'bayesian' or 'random'."
                )
            if optimizer not in SEARCH_OPTIMIZATIONS:
                raise ValueError(f"search_optimization must be one of {SEARCH_OPTIMIZATIONS} or a "
                                 f"ray.tune Searcher, got {self.search_optimization!r}")
        dists = self.param_distributions
        if optimizer == "random":
            spaces = [dists] if isinstance(dists, Mapping) else list(dists)
            if not spaces or not all(isinstance(s, Mapping) for s in spaces):
                raise TypeError("param_distributions must be a dict or a list of dicts, got "
                                f"{dists!r}")
            converted = [{k: sampler_dists(k, v) for k, v in s.items()} for s in spaces]
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*is smaller than n_iter.*")
                candidates = [dict(p) for p in ParameterSampler(
                    converted, self.n_trials, random_state=self.random_state)]
            validate_candidates(estimator, candidates, "param_distributions")
            spec.candidates = candidates
            return None, None, 1

        if not isinstance(dists, Mapping):
            raise ValueError(
                f"search_optimization={optimizer if isinstance(optimizer, str) else 'a Searcher'!r} "
                "takes one dict of parameter distributions, not a list of dicts (only "
                "search_optimization='random' samples from a list of dicts)."
            )
        decoders: dict[str, list] = {}
        space = {k: tune_domain(k, v, str(optimizer), decoders) for k, v in dists.items()}
        if optimizer == "bayesian":
            check_bayesian(space, decoders)
        spec.decoders = decoders
        rng = np.random.default_rng(0)
        probe = spec.params_of({k: d.sample(random_state=rng) for k, d in space.items()})
        validate_candidates(estimator, [probe], "param_distributions")
        search_alg = make_searcher(optimizer, self.random_state, self.search_kwargs)
        return space, search_alg, int(self.n_trials)


__all__ = ["TuneSearchCV", "TuneGridSearchCV", "TuneBaseSearch"]
