"""TuneGridSearchCV and TuneSearchCV: the search spaces of tune-sklearn's two classes, on
``raygrid.search.tune.search.TuneBaseSearch``'s fit steps."""
from __future__ import annotations

import numbers
import warnings
from typing import Any, Mapping

from sklearn.base import clone
from sklearn.model_selection import ParameterGrid, ParameterSampler

import numpy as np

from raygrid.search.base import validate_candidates
from raygrid.search.tune.search import TuneBaseSearch
from raygrid.search.tune.spaces import (SEARCH_OPTIMIZATIONS, check_bayesian, check_searcher,
                                        grid_values, hyperopt_searcher, is_hyperopt_expression,
                                        make_searcher, sampler_dists, searcher_seed, tune_domain)
from raygrid.search.tune.spec import OBJECTIVE

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
        models use their own ``epochs`` as the budget. Without ``early_stopping``, a value
        above 1 warns and is taken as 1 (tune-sklearn's rule).
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
        first report are left out of ``cv_results_`` (if none reported, ``fit`` warns and
        returns with an empty ``cv_results_``, as tune-sklearn).
    error_score : "raise" (default, as in tune-sklearn) or a number
        A fit that fails stops the search with its error ("raise"), or scores this value.
        tune-sklearn's default is kept for its classes; raygrid's GridSearchCV and
        RandomizedSearchCV keep scikit-learn's (NaN).
    mode : "max" (default) or "min": whether the best candidate has the highest or lowest score.
    random_state : int or numpy RandomState: seeds the sampling and the search algorithm (a
        RandomState gives it one seed drawn at ``fit``); an int also seeds Keras fits (per
        candidate and fold).
    address : the Ray cluster to join; else ``RAY_ADDRESS``; else a local Ray.

    ``fit(X, y=None, groups=None, tune_params=None, **fit_params)``: ``tune_params`` are
    tune-sklearn's ``tune.run`` arguments, laid over the search's own on Ray Tune's Tuner API
    (``local_dir`` is ``storage_path``; ``fail_fast``, ``max_failures``, ``callbacks``...).

    Attributes beyond scikit-learn's: ``cv_results_["training_iteration"]`` (increments each
    candidate trained) and ``cv_results_["time_total_s"]`` (its trial's seconds), as in
    tune-sklearn, and ``best_params``, ``best_index``, ``best_score``, ``best_estimator``
    (tune-sklearn's names of the ``best_*_`` attributes); ``results_`` (one row per fold at the last increment a
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
      ``high``. ``"hyperopt"`` also takes hyperopt expressions (``hp.choice(...)``,
      ``hp.uniformint(...)``). ``search_kwargs`` go to the searcher.
    - A Ray Tune ``Searcher`` object, used as given. One created with its own space searches
      that space (``param_distributions`` is then not used); its ``metric`` must be
      ``"average_test_<metric>"`` (``"average_test_score"`` with one metric) and its ``mode``
      the search's, as in tune-sklearn. Every trial reports ``average_test_<metric>`` and
      ``mean_test_<metric>``; Tune's own metric is ``"objective"``.
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
        error_score="raise",
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

        mode = self.mode or "max"
        metric = spec.objective_metric or "score"
        if not isinstance(optimizer, str):
            own = check_searcher(optimizer, metric, mode)
            if own is not None:  # the searcher's space, not param_distributions
                _check_names(estimator, own)
                return None, optimizer, int(self.n_trials)
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
        seed = searcher_seed(self.random_state)  # once: a RandomState gives one draw a fit
        if any(is_hyperopt_expression(v) for v in space.values()):
            _check_names(estimator, space)
            return None, hyperopt_searcher(space, OBJECTIVE, mode, seed, self.search_kwargs), \
                int(self.n_trials)
        rng = np.random.default_rng(0)
        probe = spec.params_of({k: d.sample(random_state=rng) for k, d in space.items()})
        validate_candidates(estimator, [probe], "param_distributions")
        search_alg = make_searcher(optimizer, seed, self.search_kwargs)
        return space, search_alg, int(self.n_trials)


def _check_names(estimator, space: Mapping[str, Any]) -> None:
    """Every parameter of a space the searcher samples (hyperopt expressions, a Searcher's own
    space) is one the estimator has, checked before any trial."""
    current = clone(estimator).get_params(deep=True)
    validate_candidates(estimator, [{k: current.get(k) for k in space}], "param_distributions")


__all__ = ["TuneSearchCV", "TuneGridSearchCV"]
