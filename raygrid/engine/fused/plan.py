"""The driver's plan, made without Keras: which trials can fuse, into which lanes (candidates
differing only in epochs share one), with which seed, in which unit; and why the rest cannot."""
from __future__ import annotations

import dataclasses
import functools
import inspect
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from raygrid.engine.describe import Describer, digest
from raygrid.engine.fitting import Payload, take
from raygrid.engine.fused.options import TRAINING_ONLY, FitOptions, NotFusable, parse
from raygrid.engine.plan import Trial

#: Parameters that only change how ``fit`` runs (or nothing at all), never the built model.
_FIT_ONLY = frozenset({
    "epochs", "fit__epochs", "batch_size", "fit__batch_size", "shuffle", "fit__shuffle",
    "verbose", "fit__verbose", "predict__verbose", "predict__batch_size", "validation_batch_size",
    "steps_per_execution", "warm_start", "random_state",
}) | TRAINING_ONLY
#: Parameters a lane shares with candidates that differ only in them.
_LANE_FREE = frozenset({"epochs", "fit__epochs", "verbose", "fit__verbose", "predict__verbose",
                        "predict__batch_size", "validation_batch_size", "steps_per_execution"})


@dataclass
class Lane:
    """One (candidate, fold) training run; candidates differing only in epochs share it."""

    fold: int
    params: dict  # the candidate's parameters (any of the candidates sharing the lane)
    build_key: str  # the compiled model: every parameter that is not only about fit
    seed: int
    trials: dict[int, list[Trial]] = field(default_factory=dict)  # epochs -> trials
    model_key: str | None = None  # the model before compile, when optimizers can share it
    options: FitOptions | None = None  # validation, weights, early stopping (shared by its trials)

    @property
    def max_epochs(self) -> int:
        return max(self.trials)

    def all_trials(self) -> list[Trial]:
        return [t for ts in self.trials.values() for t in ts]


@dataclass
class GroupSpec:
    """Lanes trained by one program. Picklable: a Ray task rebuilds the models from it."""

    key: str
    batch_size: int  # -1: the whole training set in one batch
    shuffle: bool
    lanes: list[Lane]
    shared: tuple = ()  # FitOptions.shared() of its lanes

    def trials(self) -> list[Trial]:
        return [t for lane in self.lanes for t in lane.all_trials()]


def fingerprint(obj: Any, describer: Describer | None = None) -> str:
    """The identity the fit store uses too: user code (a model function in ``__main__`` or a
    notebook) by value, installed code by version."""
    return digest(obj, describer=describer)


def _effective_params(base: Mapping[str, Any], params: Mapping[str, Any]) -> dict:
    out = dict(base)
    out.update(params)
    return out


def _build_fn_takes(estimator: Any, *names: str) -> bool:
    """True when scikeras hands the build function one of ``names`` (or it takes ``**kw``)."""
    fn = estimator.model if estimator.model is not None else estimator.build_fn
    if fn is None or not callable(fn):
        return False
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return True
    return any(n in sig.parameters for n in names) or any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values()
    )


def _optimizer_param(key: str) -> bool:
    return key == "optimizer" or key.startswith("optimizer__")


def check_search(payload: Payload, here: bool = True) -> None:
    """Raise :class:`NotFusable` when nothing of this search can be fused (``here``: in this
    process, whose Keras backend must then be JAX)."""
    from raygrid.keras import is_scikeras_wrapper, keras_backend

    if not payload.keras or not is_scikeras_wrapper(payload.estimator):
        raise NotFusable("the estimator is not a scikeras model")
    if here and keras_backend() != "jax":
        raise NotFusable(f"the Keras backend is {keras_backend()!r}, not 'jax'")
    if payload.return_estimator:
        raise NotFusable("fitted estimators are requested")
    if payload.task.predict is not None or payload.task.partial_fit is not None:
        raise NotFusable("predictions or partial_fit are requested")
    if payload.pairwise:
        raise NotFusable("pairwise estimators are not supported")
    if payload.y is None:
        raise NotFusable("no target y")
    for key, value in (payload.fit_params or {}).items():
        if value is not None and key not in ("sample_weight", "validation_data"):
            raise NotFusable(f"the fit parameter {key} is not supported by the fused engine")
    from scipy.sparse import issparse

    if issparse(payload.X):
        raise NotFusable("sparse input is not supported")
    import scikeras.wrappers as w

    encoder = getattr(type(payload.estimator), "feature_encoder", None)
    if encoder is not w.BaseWrapper.feature_encoder:
        raise NotFusable("a custom feature_encoder is not supported")


def _final_step(estimator: Any) -> str | None:
    """The name of a scikit-learn Pipeline's last step when it is a scikeras model, else None."""
    from raygrid.keras import is_scikeras_wrapper

    steps = getattr(estimator, "steps", None)
    if (type(estimator).__name__ != "Pipeline" or not isinstance(steps, list) or not steps
            or not is_scikeras_wrapper(steps[-1][1])):
        return None
    return steps[-1][0]


def final_step_view(payload: Payload, trials: Sequence[Trial], transform: bool = False
                    ) -> tuple[Payload, list[Trial]]:
    """A Pipeline(preprocessing..., scikeras model) search seen as a search of the model alone.

    The grid may only set the model's parameters (``<step>__<param>``). With ``transform``, the
    preprocessing steps are fitted on each fold's training rows (as the pipeline does) and the
    folds' transformed copies of X are stacked, each fold's indices pointing into its own copy;
    without, X is left as it is (enough to plan lanes). Other estimators come back unchanged.
    """
    name = _final_step(payload.estimator)
    if name is None:
        return payload, list(trials)
    prefix = name + "__"
    out = []
    for t in trials:
        if any(not k.startswith(prefix) for k in t.params):
            raise NotFusable("the grid sets parameters of the pipeline's other steps")
        out.append(dataclasses.replace(t, params={k[len(prefix):]: v
                                                  for k, v in t.params.items()}))
    pipe = payload.estimator
    final = pipe.steps[-1][1]
    X, splits = payload.X, payload.splits
    if transform and len(pipe.steps) > 1:
        from sklearn.base import clone

        from raygrid.engine.fitting import num_samples

        n = num_samples(payload.X)
        blocks, splits = [], []
        for f, (train, test) in enumerate(payload.splits):
            pre = clone(pipe[:-1]).fit(take(payload.X, train), take(payload.y, train))
            blocks.append(np.asarray(pre.transform(payload.X)))
            splits.append((np.asarray(train) + f * n, np.asarray(test) + f * n))
        X = np.concatenate(blocks)
        y = np.concatenate([np.asarray(payload.y)] * len(payload.splits))
        fit_params = dict(payload.fit_params or {})
        if fit_params.get("sample_weight") is not None:  # one value per row of each copy
            fit_params["sample_weight"] = np.concatenate(
                [np.asarray(fit_params["sample_weight"])] * len(payload.splits))
        return dataclasses.replace(payload, estimator=final, X=X, y=y, splits=splits,
                                   fit_params=fit_params), out
    return dataclasses.replace(payload, estimator=final, X=X, splits=splits), out


def plan_lanes(payload: Payload, trials: Sequence[Trial], leave) -> tuple[dict[str, Lane], dict]:
    """Lanes of ``trials`` (candidates differing only in epochs share one), without Keras:
    (lane key -> Lane, lane key -> what its program shares, batch size first: see
    ``FitOptions.shared``). ``leave(trials, why)`` gets the rest."""
    est = payload.estimator
    base = est.get_params(deep=False)
    takes_all = _build_fn_takes(est, "params")
    # Candidates that differ only in the optimizer can share one built model (and differ in
    # their optimizer) unless the build function sees the optimizer.
    share_models = not _build_fn_takes(est, "params", "compile_kwargs")
    lanes: dict[str, Lane] = {}
    lane_opts: dict[str, tuple[int, bool]] = {}
    key = functools.partial(fingerprint, describer=Describer())  # user code described once
    for trial in trials:
        eff = _effective_params(base, trial.params)
        try:
            options = parse(eff, payload.fit_params)
            free = _LANE_FREE if not takes_all else frozenset({"verbose", "fit__verbose"})
            lane_key = key((trial.fold, sorted((k, v) for k, v in eff.items() if k not in free)))
            build_skip = _FIT_ONLY if not takes_all else frozenset({"verbose", "fit__verbose",
                                                                    "random_state"})
            build_key = key(sorted((k, v) for k, v in eff.items() if k not in build_skip))
            model_key = key(sorted((k, v) for k, v in eff.items() if k not in build_skip
                             and not _optimizer_param(k))) if share_models else None
        except NotFusable as exc:
            leave([trial], str(exc))
            continue
        except Exception as exc:  # noqa: BLE001 - e.g. parameters that cannot be hashed
            leave([trial], f"a parameter value cannot be identified ({type(exc).__name__}: "
                           f"{exc}); pass values raygrid can describe (numbers, strings, "
                           "functions, Keras objects)")
            continue
        lane = lanes.get(lane_key)
        if lane is None:
            lane = lanes[lane_key] = Lane(trial.fold, dict(trial.params), build_key, -1,
                                          model_key=model_key, options=options)
            lane_opts[lane_key] = options.shared()
        lane.trials.setdefault(options.epochs, []).append(trial)
    return lanes, lane_opts


def lane_seed(payload: Payload, lane: Lane) -> int:
    """The seed every trial of ``lane`` trains with: the raygrid seed of its longest trial,
    else the estimator's own ``random_state``, else one derived from the lane's parameters and
    fold (so that a resumed search finds the fits it stored)."""
    from raygrid.engine.plan import fit_seed, params_key

    rep = lane.trials[lane.max_epochs][0]
    if rep.seed is not None:
        return int(rep.seed)
    rs = _effective_params(payload.estimator.get_params(deep=False), lane.params).get(
        "random_state")
    if isinstance(rs, (int, np.integer)) and not isinstance(rs, bool):
        return int(rs)
    shared = {k: v for k, v in lane.params.items() if k not in _LANE_FREE}
    return fit_seed(0x5EED, params_key(shared), lane.fold)


@dataclass
class Assignment:
    """The driver's plan, made without Keras: which trials train fused, in which unit."""

    trials: list[Trial]  # every trial; the fused ones with engine="fused" and their lane's seed
    units: dict[tuple[int, int], str]  # (candidate, fold) of a fused trial -> its unit's key
    reasons: dict[str, int]  # why trials stay on the standard engine -> how many
    costs: dict[str, float] = field(default_factory=dict)  # unit key -> training steps of its lanes


def assign(payload: Payload, trials: Sequence[Trial], engine: str = "fused",
           in_process: bool = False) -> Assignment:
    """Mark the trials the fused engine will train (``engine="fused"``, the lane's seed).

    Runs on the driver without building any model: the Keras models are built once, in the
    task that trains them (on JAX, whatever the driver's Keras backend). One unit per batch
    size and shuffling; the task splits it into programs by model structure. ``in_process``:
    the units would run in this process, whose Keras backend must then be JAX.
    """
    reasons: dict[str, int] = {}
    rest: set[tuple[int, int]] = set()

    def leave(trial_list, why: str):
        reasons[why] = reasons.get(why, 0) + len(trial_list)
        rest.update((t.candidate, t.fold) for t in trial_list)

    try:
        payload, plain = final_step_view(payload, trials)
        check_search(payload, here=False)
        from raygrid.keras import keras_backend

        if in_process and keras_backend() != "jax":
            raise NotFusable(
                f"the serial backend trains in this process, whose Keras backend is "
                f"{keras_backend()!r} (fused programs run on JAX: use backend='ray', whose fused "
                "workers run Keras on JAX, or set KERAS_BACKEND=jax)")
        import importlib.util

        if importlib.util.find_spec("jax") is None:
            raise NotFusable("JAX is not installed (pip install 'raygrid[keras]')")
        if in_process and engine == "auto" and len(trials) < 2:
            raise NotFusable("a single fit")
    except NotFusable as exc:
        return Assignment(list(trials), {}, {str(exc): len(trials)})
    costs: dict[str, float] = {}
    originals = {(t.candidate, t.fold): t for t in trials}
    lanes, lane_opts = plan_lanes(payload, plain, leave)
    by_unit: dict[str, list[Lane]] = {}
    for key, lane in lanes.items():
        by_unit.setdefault(fingerprint(lane_opts[key]), []).append(lane)
    changed: dict[tuple[int, int], Trial] = {}
    units: dict[tuple[int, int], str] = {}
    for ukey, unit_lanes in by_unit.items():
        if engine == "auto" and len(unit_lanes) < 2:
            leave([t for lane in unit_lanes for t in lane.all_trials()],
                  "a group of one lane (engine='auto' fuses two or more)")
            continue
        batch = lane_opts[next(k for k, v in lanes.items() if v is unit_lanes[0])][0]
        for lane in unit_lanes:
            n_train = len(payload.splits[lane.fold][0])
            steps = -(-n_train // (n_train if batch == -1 else batch))
            costs[ukey] = costs.get(ukey, 0.0) + steps * max(lane.max_epochs, 1)
            seed = lane_seed(payload, lane)
            for t in lane.all_trials():
                key = (t.candidate, t.fold)
                changed[key] = dataclasses.replace(originals[key], engine="fused", seed=seed)
                units[key] = ukey
    out = [changed.get((t.candidate, t.fold), t) for t in trials]
    return Assignment(out, units, reasons, costs)
