"""What a Tune trial trains and when it reports: the schedulers raygrid knows, how an estimator
trains in increments, and the spec every trial of a search shares."""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
from sklearn.pipeline import Pipeline

OBJECTIVE = "objective"  # the key every trial reports and Tune optimises (the refit metric's mean)
BUDGET = "budget"  # units trained so far: epochs (Keras), passes or warm-start steps (scikit-learn)
FOLDS = "raygrid_folds"  # a report's fold results
MEMBERS = "raygrid_candidates"  # a report's fold results of each candidate of a shared trial


# ---------------------------------------------------------------------------------------------
# Early stopping specification
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ASHA:
    """Asynchronous successive halving (Ray's ``ASHAScheduler``) with reports only at its rungs.

    ``grace_period`` and ``max_t`` are in budget units (epochs for Keras models, increments for
    scikit-learn ones); rungs sit at ``grace_period * reduction_factor**k``. Because raygrid builds
    the scheduler it knows the rungs, so trials score their folds only there (and at the end),
    not after every unit. ``early_stopping=True`` means ``ASHA()``.
    """

    grace_period: int = 1
    reduction_factor: float = 3
    max_t: int | None = None

    def rungs(self, max_t: int) -> list[int]:
        """The budgets at which ASHA compares trials (the same formula as Ray's scheduler)."""
        n = int(np.log(max_t / self.grace_period) / np.log(self.reduction_factor) + 1)
        return [int(round(self.grace_period * self.reduction_factor**k)) for k in range(max(n, 0))]


_ASHA_NAMES = ("asha", "ashascheduler", "asynchyperband", "asynchyperbandscheduler")
_OTHER_SCHEDULERS = ("hyperband", "hyperbandscheduler", "medianstoppingrule", "median")


def scheduler_spec(early_stopping: Any) -> Any:
    """None, an ``ASHA`` spec, a scheduler name, or a Ray ``TrialScheduler`` object."""
    if early_stopping is None or early_stopping is False:
        return None
    if early_stopping is True:
        return ASHA()
    if isinstance(early_stopping, ASHA):
        return early_stopping
    if isinstance(early_stopping, str):
        key = early_stopping.lower().replace("_", "")
        if key in _ASHA_NAMES:
            return ASHA()
        if key in _OTHER_SCHEDULERS:
            return key
        raise ValueError(
            f"early_stopping={early_stopping!r} is not a scheduler raygrid knows. Use True or "
            "'ASHAScheduler' (asynchronous successive halving), 'HyperBandScheduler', "
            "'MedianStoppingRule', raygrid.tune.ASHA(...), or a ray.tune.schedulers object."
        )
    try:
        from ray.tune.schedulers import TrialScheduler
    except ImportError:  # pragma: no cover - ray[tune] is a dependency of this module
        TrialScheduler = ()  # type: ignore[assignment]
    if isinstance(early_stopping, TrialScheduler):
        return early_stopping
    raise ValueError(
        f"early_stopping must be a bool, a scheduler name, raygrid.tune.ASHA or a Ray Tune "
        f"TrialScheduler, got {early_stopping!r}"
    )


# ---------------------------------------------------------------------------------------------
# How a candidate trains in increments
# ---------------------------------------------------------------------------------------------
def final_step(estimator: Any) -> Any:
    return estimator.steps[-1][1] if isinstance(estimator, Pipeline) else estimator


def _is_keras(estimator: Any) -> bool:
    return any(cls.__module__.startswith("scikeras") for cls in type(estimator).__mro__)


def incremental_kind(estimator: Any) -> str | None:
    """How ``estimator`` (or a Pipeline's last step) can train in increments, if at all.

    ``"keras"``: a scikeras model, trained for some epochs at a time (``warm_start`` keeps the model
    between ``fit`` calls); ``"partial_fit"``; ``"max_iter"`` / ``"n_estimators"``: ``warm_start``
    estimators whose iterations or trees grow between ``fit`` calls; ``None``: none of these.
    """
    est = final_step(estimator)
    if _is_keras(est):
        return "keras"
    if hasattr(est, "partial_fit"):
        return "partial_fit"
    params = est.get_params(deep=False) if hasattr(est, "get_params") else {}
    if "warm_start" in params:
        if "max_iter" in params:
            return "max_iter"
        if "n_estimators" in params:
            return "n_estimators"
    return None


def keras_epochs(estimator: Any) -> int:
    est = final_step(estimator)
    epochs = getattr(est, "fit__epochs", None) or getattr(est, "epochs", 1)
    return max(1, int(epochs))


@dataclass
class TrialSpec:
    """What every trial needs besides the data: how to train, when to report, which candidate."""

    kind: str  # "plain", "keras", "partial_fit", "max_iter", "n_estimators"
    max_iters: int
    rungs: list[int] | None  # ASHA rungs: report only there (and at the end); None: every unit
    every_unit: bool  # report after every unit (a scheduler or a stopper watches every report)
    objective_metric: str | None  # the metric whose mean Tune optimises (None: the first one)
    mode: str
    random_state: int | None
    classes: Any = None
    candidates: list[dict] | None = None  # grid / random search: every candidate, known up front
    budgets: list[int] | None = None  # each candidate's full budget (grid / random search)
    groups: list[list[int]] | None = None  # the config is {"trial": g}: candidates trained together
    decoders: dict[str, list] = field(default_factory=dict)  # adaptive search: choice index -> value
    worker_env: dict = field(default_factory=dict)  # set in the actor before TensorFlow loads
    checkpoint: bool = False  # the scheduler may pause trials: save the folds at every report

    # -- driver and worker ------------------------------------------------------------------------
    def members(self, config: Mapping[str, Any]) -> list[tuple[int | None, int | None]]:
        """(candidate, budget) of every candidate a trial trains, smallest budget first."""
        if self.groups is None:
            return [(None, None)]
        return [(c, self.budgets[c]) for c in self.groups[int(config["trial"])]]

    def params_of(self, config: Mapping[str, Any]) -> dict:
        """What the trial trains: its candidate's parameters (the largest budget of a group)."""
        if self.groups is not None:
            return dict(self.candidates[self.groups[int(config["trial"])][-1]])
        params = {}
        for key, value in config.items():
            if key in self.decoders:
                value = self.decoders[key][int(value)]
            elif isinstance(value, np.generic):
                value = value.item()
            params[key] = value
        return params

    def budget_of(self, estimator: Any) -> int:
        if self.kind == "plain":
            return 1
        if self.kind == "keras":
            return keras_epochs(estimator)
        return self.max_iters

    def report_points(self, budget: int, member_budgets: Sequence[int] = ()) -> list[int]:
        """Where a trial scores its folds and reports: ASHA's rungs (or every unit when another
        scheduler or a stopper watches), each member candidate's budget, and the end."""
        if self.kind == "plain":
            return [1]
        points = {budget, *(b for b in member_budgets if b)}
        if self.every_unit:  # a stopper sees every increment, ASHA's rungs among them
            points.update(range(1, budget + 1))
        elif self.rungs is not None:
            points.update(r for r in self.rungs if r < budget)
        return sorted(points)


def is_epochs_key(key: str) -> bool:
    return key.split("__")[-1] == "epochs"


def group_by_epochs(candidates: Sequence[Mapping[str, Any]], budgets: Sequence[int]) -> list[list[int]]:
    """Candidates equal but for their epochs, as groups ordered by budget (smallest first).

    One Keras run trained to the largest epochs passes through every smaller one, so a group is
    one trial: the 5-epoch candidate is scored at epoch 5 of the 25-epoch run.
    """
    groups: dict[str, list[int]] = {}
    for i, params in enumerate(candidates):
        key = repr(sorted((k, repr(v)) for k, v in params.items() if not is_epochs_key(k)))
        groups.setdefault(key, []).append(i)
    return [sorted(g, key=lambda i: (budgets[i], i)) for g in groups.values()]


def plan_kind(estimator, scheduler, max_iters, pipeline_auto_early_stop) -> str:
    """How the trials train: "plain" (one fit per fold) or in increments of ``incremental_kind``.

    As in tune-sklearn, increments come with early stopping only: ``max_iters > 1`` without it
    warns and trains each candidate once (``max_iters=1``)."""
    if scheduler is None:
        if max_iters > 1:
            warnings.warn(
                f"max_iters is set > 1 ({max_iters}) but incremental/partial training is not "
                "enabled: set early_stopping (True or a scheduler) with an estimator that has "
                "partial_fit or warm_start, or a Keras model. Automatically setting max_iters=1.",
                UserWarning,
            )
        return "plain"
    kind = incremental_kind(estimator)
    what = "early_stopping"
    if kind is None:
        raise ValueError(
            f"{what} needs an estimator that trains in increments: one with partial_fit, with "
            "warm_start and max_iter or n_estimators, or a scikeras Keras model. "
            f"{type(final_step(estimator)).__name__} has none of these; drop {what} "
            "(max_iters=1, early_stopping=None) to run a plain cross-validated search."
        )
    if isinstance(estimator, Pipeline) and not pipeline_auto_early_stop:
        raise ValueError(
            f"{what} with a Pipeline needs pipeline_auto_early_stop=True (the transformers are "
            "fitted once per fold and the last step trains in increments)."
        )
    if kind != "keras" and max_iters <= 1:
        warnings.warn(
            "early_stopping is enabled but max_iters = 1: each candidate trains in a single "
            "increment, so nothing can be stopped early. Set max_iters > 1 to train in "
            "increments.",
            UserWarning,
        )
        return "plain"
    return kind


def build_scheduler(scheduler, spec: TrialSpec, estimator):
    """Ray Tune's scheduler for ``scheduler_spec``'s answer (None: none); sets the spec's rungs
    (ASHA) or checkpointing (schedulers that pause trials)."""
    if scheduler is None:
        return None
    from ray.tune.schedulers import ASHAScheduler, HyperBandScheduler, MedianStoppingRule

    largest = max_budget(spec, estimator)
    if isinstance(scheduler, ASHA):
        max_t = scheduler.max_t or largest
        if scheduler.grace_period > max_t:
            raise ValueError(f"ASHA grace_period={scheduler.grace_period} exceeds the largest "
                             f"budget {max_t}")
        spec.rungs = scheduler.rungs(max_t)
        return ASHAScheduler(time_attr=BUDGET, max_t=max_t, grace_period=scheduler.grace_period,
                             reduction_factor=scheduler.reduction_factor, brackets=1)
    from ray.tune.schedulers import AsyncHyperBandScheduler, FIFOScheduler

    if scheduler in ("hyperband", "hyperbandscheduler"):
        scheduler = HyperBandScheduler(time_attr=BUDGET, max_t=largest)
    elif scheduler in ("medianstoppingrule", "median"):
        scheduler = MedianStoppingRule(time_attr=BUDGET, grace_period=1)
    # Schedulers other than ASHA and FIFO may pause a trial and resume it later: each report
    # then carries a checkpoint of the folds, so a resumed trial goes on where it stopped.
    # (MedianStoppingRule and HyperBand derive from FIFOScheduler, hence the exact type.)
    spec.checkpoint = not (isinstance(scheduler, AsyncHyperBandScheduler)
                           or type(scheduler) is FIFOScheduler)
    return scheduler


def max_budget(spec: TrialSpec, estimator) -> int:
    """The largest budget a trial of the search can reach."""
    if spec.kind != "keras":
        return spec.max_iters if spec.kind != "plain" else 1
    if spec.budgets is not None:
        return max(spec.budgets)
    values = [v for k, v in spec.decoders.items() if is_epochs_key(k)]
    if values:
        return max(int(v) for vs in values for v in vs)
    return keras_epochs(estimator)
