"""The fused engine: many Keras fits trained at once as one vectorised JAX program.

A grid over a Keras model mostly repeats one computation: the same layers, the same loss and
batch size, with a different initializer, optimizer, learning rate, activation, fold or number
of epochs. The fused engine groups such trials and trains every (candidate, fold) of a group
together: parameters and optimizer variables are stacked along a leading *lane* axis and one
training step, written with Keras 3's own stateless API (``model.compute_loss_and_updates``,
which calls ``model.stateless_call``, under ``jax.value_and_grad``, then
``optimizer.stateless_apply``), is mapped over the lanes with ``jax.vmap``.

What is a lane value and what separates groups:

* a group shares the model's structure (layers, shapes, wiring), loss, batch size and shuffling;
* each lane has its own initial weights (from the lane's own model and initializers), its own
  training rows (the fold; folds of unequal size are padded and masked so that padding
  contributes nothing and each lane takes as many steps per epoch as Keras' own ``fit``
  would), its own optimizer variables (so the learning rate is a lane value), and, as
  data-dependent switches, its activation functions (for layers configured with a named
  activation; checked on a few rows, else activations separate groups) and its optimizer
  (each lane carries the variables of every optimizer in the group and keeps its own update);
* candidates that differ only in ``epochs`` share a lane: it trains to the largest value once,
  with one shuffling sequence, and is scored from the weights at each requested epoch count.

Seeds: a lane's seed is the raygrid seed of its longest trial (``random_state`` of the search),
else the estimator's own ``random_state``, else one derived from the lane's parameters and fold;
the driver plans it (``assign``) and every trial of the lane carries it, in ``results_`` and in
the fit store's identity. The lane replays what scikeras does with ``random_state=seed``: the
same initial weights (Keras draws an unseeded initializer's seed from Python's ``random`` as the
layer is created) and the same batch order (``np.random.permutation`` each epoch, after the one
Keras' ``fit`` draws to build the model), so a lane's weights equal scikeras' own ``fit`` with
that seed up to float rounding. A shorter trial read off the lane carries the lane's seed, not
the one the standard engine would have given it.

Predictions of every lane are computed inside the program; scores come from the search's own
scorer on the driver side of the group, through a small stand-in estimator that returns those
predictions through scikeras' own target decoding, so every metric the standard engine supports
works and the results are ``FitResult`` rows like the standard engine's (``engine="fused"``).

Whatever cannot be fused (another estimator, callbacks, validation splits, class or sample
weights, ``return_estimator``, a grid over a pipeline's preprocessing...) runs on the standard
executor in the same search. ``engine="auto"`` fuses only where a group has two lanes or more.

Where it runs: the driver plans lanes without building any model (``assign``); the lanes of one
batch size and shuffling form a *unit*, which the executor runs like any other work (see
``raygrid.engine.executors.base.Unit``): with the Ray backend, one task in a worker whose
``runtime_env`` sets ``KERAS_BACKEND=jax`` (whatever the driver's backend), with the executor's
retries, Ctrl-C grace and fit store; where the cluster has GPUs the units share them evenly. The
task builds each model once (and keeps it for the next unit of the same search), groups lanes by
model structure and trains one program per group; trials it cannot train come back as fallback
rows that the standard engine then runs, with one warning line saying why. With the serial
backend units run in this process, when its Keras backend is JAX. JAX's persistent compilation
cache (``~/.cache/raygrid/jax``, or ``RAYGRID_JAX_CACHE``; ``RAYGRID_JAX_CACHE=0`` turns it off)
makes a repeated search skip XLA compilation.
"""
from __future__ import annotations

import contextlib
import dataclasses
import inspect
import json
import os
import sys
import threading
import time
import traceback
import warnings
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from raygrid.engine.executors.base import Unit, gpu_share
from raygrid.engine.fitting import FitResult, Payload, location, split_fit_params, take
from raygrid.engine.plan import Trial

ENGINES = ("standard", "fused", "auto")

#: Parameters that only change how ``fit`` runs (or nothing at all), never the built model.
_FIT_ONLY = frozenset({
    "epochs", "fit__epochs", "batch_size", "fit__batch_size", "shuffle", "fit__shuffle",
    "verbose", "fit__verbose", "predict__verbose", "predict__batch_size", "validation_batch_size",
    "steps_per_execution", "warm_start", "random_state",
})
#: Parameters a lane shares with candidates that differ only in them.
_LANE_FREE = frozenset({"epochs", "fit__epochs", "verbose", "fit__verbose", "predict__verbose",
                        "predict__batch_size", "validation_batch_size", "steps_per_execution"})
#: ``fit__*`` parameters the fused engine honours.
_FIT_ROUTED_OK = frozenset({"epochs", "batch_size", "shuffle", "verbose"})
_KERAS_DEFAULT_BATCH = 32
#: The seed models are built under while planning; lanes replay Keras' seed draws for their own.
_BUILD_SEED = 1_000_003
#: Above this many (lane, epoch, row) entries, shuffling is drawn inside the program instead.
_HOST_ORDER_LIMIT = 64_000_000

_trace_lock = threading.RLock()  # Keras models are mutated while tracing: one trace at a time
_last_stats: list[dict] = []
#: Members built in this process for the search data last seen (digest -> build key -> member):
#: a worker that runs several units of one search (other batch sizes) builds each model once.
_members_cache: dict[str, dict] = {}


class NotFusable(Exception):
    """A trial (or a whole search) the fused engine leaves to the standard executor."""


def wrap(executor: Any, engine: str = "standard", payload: Payload | None = None) -> Any:
    """``executor`` itself for ``engine="standard"``, else a :class:`FusedExecutor` around it."""
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    if engine == "standard" or (engine == "auto" and payload is not None and not payload.keras):
        return executor
    return FusedExecutor(executor, engine, payload)


def last_stats() -> list[dict]:
    """Timings of the fused groups of the executor's last ``run`` in this process, wherever
    they ran (one dict per group)."""
    return [dict(s) for s in _last_stats]


def configure_compilation_cache() -> str | None:
    """Turn on JAX's persistent compilation cache (once per process); returns its directory.

    ``RAYGRID_JAX_CACHE`` chooses the directory (``0`` or ``off`` disables it); a cache
    directory the user configured in JAX already is left as it is.
    """
    import jax

    setting = os.environ.get("RAYGRID_JAX_CACHE", "")
    if setting.lower() in ("0", "off", "false", "no"):
        return None
    current = jax.config.jax_compilation_cache_dir
    if current:
        return current
    path = setting or os.path.join(os.path.expanduser("~"), ".cache", "raygrid", "jax")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError:
        return None
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return path


# --------------------------------------------------------------------------------------------
# The plan: which trials fuse, into which lanes and groups
# --------------------------------------------------------------------------------------------
@dataclass
class Lane:
    """One (candidate, fold) training run; candidates differing only in epochs share it."""

    fold: int
    params: dict  # the candidate's parameters (any of the candidates sharing the lane)
    build_key: str  # the compiled model: every parameter that is not only about fit
    seed: int
    trials: dict[int, list[Trial]] = field(default_factory=dict)  # epochs -> trials
    model_key: str | None = None  # the model before compile, when optimizers can share it

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

    def trials(self) -> list[Trial]:
        return [t for lane in self.lanes for t in lane.all_trials()]


@dataclass
class FusionPlan:
    groups: list[GroupSpec]
    rest: list[Trial]  # for the standard executor
    reasons: dict[str, int]  # why trials were left to the standard executor -> how many
    members: dict[str, "Member"]  # models built while planning (reused in this process)
    plan_s: float = 0.0
    why: dict[tuple[int, int], str] = field(default_factory=dict)  # (candidate, fold) -> reason


_tf_lock = threading.Lock()
_tf_depth = 0


@contextlib.contextmanager
def _without_tensorflow() -> Iterator[None]:
    """Keep Keras from importing TensorFlow (seconds) while the fused engine runs on JAX.

    Keras' config serialisation asks whether TensorFlow is available, which imports it when it
    is installed. While this is active such an import fails fast; afterwards Keras may ask again.
    Nothing is changed when TensorFlow is imported already.
    """
    global _tf_depth
    with _tf_lock:
        if "tensorflow" in sys.modules and sys.modules["tensorflow"] is not None:
            active = False
        else:
            active = True
            _tf_depth += 1
            if _tf_depth == 1:
                sys.modules["tensorflow"] = None  # type: ignore[assignment]
    try:
        yield
    finally:
        if active:
            with _tf_lock:
                _tf_depth -= 1
                if _tf_depth == 0:
                    if "tensorflow" in sys.modules and sys.modules["tensorflow"] is None:
                        del sys.modules["tensorflow"]
                    lazy = sys.modules.get("keras.src.utils.module_utils")
                    tf_lazy = getattr(lazy, "tensorflow", None)
                    if getattr(tf_lazy, "_available", None) is False:
                        tf_lazy._available = None  # let Keras look again, outside the engine


def _hash(obj: Any) -> str:
    import joblib

    return joblib.hash(obj)


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
    if payload.pairwise:
        raise NotFusable("pairwise estimators are not supported")
    if payload.y is None:
        raise NotFusable("no target y")
    if any(v is not None for v in (payload.fit_params or {}).values()):
        raise NotFusable("fit parameters (e.g. sample_weight) are not supported")
    from scipy.sparse import issparse

    if issparse(payload.X):
        raise NotFusable("sparse input is not supported")
    import scikeras.wrappers as w

    encoder = getattr(type(payload.estimator), "feature_encoder", None)
    if encoder is not w.BaseWrapper.feature_encoder:
        raise NotFusable("a custom feature_encoder is not supported")


def _trial_options(eff: Mapping[str, Any], n_train: int) -> tuple[int, int, bool]:
    """(epochs, batch size, shuffle) for one trial, or NotFusable."""
    for key, value in eff.items():
        if key.startswith("fit__") and key[5:] not in _FIT_ROUTED_OK and value is not None:
            raise NotFusable(f"{key} is not supported")
    if eff.get("callbacks") or eff.get("fit__callbacks"):
        raise NotFusable("callbacks are not supported")
    if eff.get("validation_split") or eff.get("fit__validation_split"):
        raise NotFusable("validation_split is not supported")
    if eff.get("class_weight") is not None:
        raise NotFusable("class_weight is not supported")
    if eff.get("initial_epoch"):
        raise NotFusable("initial_epoch is not supported")
    epochs = eff.get("fit__epochs", eff.get("epochs", 1))
    batch = eff.get("fit__batch_size", eff.get("batch_size"))
    shuffle = eff.get("fit__shuffle", eff.get("shuffle", True))
    if isinstance(epochs, bool) or not isinstance(epochs, (int, np.integer)) or epochs < 0:
        raise NotFusable(f"epochs={epochs!r} is not supported")
    if batch is None:
        batch = _KERAS_DEFAULT_BATCH
    if (isinstance(batch, bool) or not isinstance(batch, (int, np.integer))
            or (batch < 1 and batch != -1)):
        raise NotFusable(f"batch_size={batch!r} is not supported")
    if shuffle not in (True, False):
        raise NotFusable(f"shuffle={shuffle!r} is not supported")
    return int(epochs), int(batch), bool(shuffle)


def plan_fusion(payload: Payload, trials: Sequence[Trial], engine: str = "fused",
                members: dict | None = None) -> FusionPlan:
    """Split ``trials`` into fused groups and the rest (which the standard executor runs)."""
    with _without_tensorflow():
        if payload.keras:
            try:
                configure_compilation_cache()
            except Exception:  # noqa: BLE001 - no JAX here: check_search says why
                pass
        return _plan_fusion(payload, trials, engine, members)


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
        return dataclasses.replace(payload, estimator=final, X=X, y=y, splits=splits), out
    return dataclasses.replace(payload, estimator=final, X=X, splits=splits), out


def _lanes(payload: Payload, trials: Sequence[Trial], leave) -> tuple[dict[str, Lane], dict]:
    """Lanes of ``trials`` (candidates differing only in epochs share one), without Keras:
    (lane key -> Lane, lane key -> (batch size, shuffle)). ``leave(trials, why)`` gets the rest."""
    est = payload.estimator
    base = est.get_params(deep=False)
    takes_all = _build_fn_takes(est, "params")
    # Candidates that differ only in the optimizer can share one built model (and differ in
    # their optimizer) unless the build function sees the optimizer.
    share_models = not _build_fn_takes(est, "params", "compile_kwargs")
    lanes: dict[str, Lane] = {}
    lane_opts: dict[str, tuple[int, bool]] = {}
    for trial in trials:
        eff = _effective_params(base, trial.params)
        n_train = len(payload.splits[trial.fold][0])
        try:
            epochs, batch, shuffle = _trial_options(eff, n_train)
            free = _LANE_FREE if not takes_all else frozenset({"verbose", "fit__verbose"})
            lane_key = _hash((trial.fold, sorted((k, v) for k, v in eff.items() if k not in free)))
            build_skip = _FIT_ONLY if not takes_all else frozenset({"verbose", "fit__verbose",
                                                                    "random_state"})
            build_key = _hash(sorted((k, v) for k, v in eff.items() if k not in build_skip))
            model_key = _hash(sorted((k, v) for k, v in eff.items() if k not in build_skip
                                     and not _optimizer_param(k))) if share_models else None
        except NotFusable as exc:
            leave([trial], str(exc))
            continue
        except Exception as exc:  # noqa: BLE001 - e.g. parameters that cannot be hashed
            leave([trial], f"parameters cannot be fingerprinted ({type(exc).__name__})")
            continue
        lane = lanes.get(lane_key)
        if lane is None:
            lane = lanes[lane_key] = Lane(trial.fold, dict(trial.params), build_key, -1,
                                          model_key=model_key)
            lane_opts[lane_key] = (batch, shuffle)
        lane.trials.setdefault(epochs, []).append(trial)
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
    lanes, lane_opts = _lanes(payload, plain, leave)
    by_unit: dict[str, list[Lane]] = {}
    for key, lane in lanes.items():
        by_unit.setdefault(_hash(lane_opts[key]), []).append(lane)
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


def _plan_fusion(payload: Payload, trials: Sequence[Trial], engine: str,
                 members: dict | None) -> FusionPlan:
    started = time.perf_counter()
    reasons: dict[str, int] = {}
    why: dict[tuple[int, int], str] = {}
    members = {} if members is None else members

    def leave(trial_list, reason: str):
        reasons[reason] = reasons.get(reason, 0) + len(trial_list)
        rest.extend(trial_list)
        why.update({(t.candidate, t.fold): reason for t in trial_list})

    rest: list[Trial] = []
    try:
        check_search(payload)
    except NotFusable as exc:
        leave(list(trials), str(exc))
        return FusionPlan([], rest, reasons, members, time.perf_counter() - started, why)
    lanes, lane_opts = _lanes(payload, trials, leave)

    # Build one model per build key (from the first fold's training rows) to learn structures.
    by_group: dict[str, GroupSpec] = {}
    for lane_key, lane in lanes.items():
        try:
            member = member_for(payload, lane, members)
        except NotFusable as exc:
            member = members[lane.build_key] = _Unfusable(str(exc))
        except Exception as exc:  # noqa: BLE001 - the standard engine reports it properly
            member = members[lane.build_key] = _Unfusable(
                f"the model could not be built for fusion ({type(exc).__name__}: {exc})")
        if isinstance(member, _Unfusable):
            leave(lane.all_trials(), member.reason)
            continue
        lane.seed = lane_seed(payload, lane)
        batch, shuffle = lane_opts[lane_key]
        gkey = _hash((member.group_signature(lane.build_key), batch, shuffle))
        spec = by_group.get(gkey)
        if spec is None:
            spec = by_group[gkey] = GroupSpec(gkey, batch, shuffle, [])
        spec.lanes.append(lane)

    groups = []
    for spec in by_group.values():
        if engine == "auto" and len(spec.lanes) < 2:
            leave(spec.trials(), "a group of one lane (engine='auto' fuses two or more)")
        else:
            groups.append(spec)
    return FusionPlan(groups, rest, reasons, members, time.perf_counter() - started, why)


# --------------------------------------------------------------------------------------------
# Members: the Keras model of one build key, and what a lane takes from it
# --------------------------------------------------------------------------------------------
@dataclass
class _Unfusable:
    reason: str


def _flat_layers(model: Any) -> list:
    flatten = getattr(model, "_flatten_layers", None)
    if flatten is not None:
        return [layer for layer in flatten(include_self=False, recursive=True)]
    return list(getattr(model, "layers", []))


def _activation_slots(model: Any) -> list[tuple[Any, str]]:
    """Layers whose activation is configured by name (a switch can replace it), in order."""
    slots = []
    for layer in _flat_layers(model):
        try:
            act = layer.get_config().get("activation")
        except Exception:  # noqa: BLE001 - a layer without a usable config keeps its activation
            continue
        if isinstance(act, str) and callable(getattr(layer, "activation", None)):
            slots.append((layer, act))
    return slots


def _initializers(model: Any) -> dict[int, Any]:
    """id(variable) -> the initializer its layer created it with (``<name>_initializer``)."""
    found: dict[int, Any] = {}
    for layer in [model] + _flat_layers(model):
        for var in getattr(layer, "weights", []):
            init = getattr(layer, f"{var.name}_initializer", None)
            if init is not None and callable(init):
                found[id(var)] = init
    return found


def _canonical_config(model: Any, slot_layers: Sequence[Any]) -> str | None:
    """The model's config with names canonical, initializers and switchable activations out."""
    if type(model).__name__ not in ("Sequential", "Functional"):
        return None
    try:
        config = model.get_config()
    except Exception:  # noqa: BLE001
        return None
    names = {model.name: "M"}
    for i, layer in enumerate(_flat_layers(model)):
        names.setdefault(layer.name, f"L{i}")
    slots = {names[layer.name] for layer in slot_layers}

    def canon(obj):
        if isinstance(obj, dict):
            out = {}
            for k, v in obj.items():
                if k.endswith("_initializer"):
                    continue
                out[k] = canon(v)
            if out.get("name") in slots and "activation" in out:
                out["activation"] = "<switch>"
            return out
        if isinstance(obj, (list, tuple)):
            return [canon(v) for v in obj]
        if isinstance(obj, str):
            return names.get(obj, obj)
        return obj

    return json.dumps(canon(config), sort_keys=True, default=repr)


def _plain(obj: Any) -> Any:
    """A JSON-able description of a loss, optimizer or other config value (without Keras'
    serializer, which imports TensorFlow when it is installed)."""
    if obj is None or isinstance(obj, (str, bool, int, float)):
        return obj
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, np.generic):
        return obj.item()
    kind = type(obj).__module__ + "." + type(obj).__qualname__
    if hasattr(obj, "get_config") and not isinstance(obj, type):
        try:
            return [kind, _plain(obj.get_config())]
        except Exception:  # noqa: BLE001
            return [kind, repr(obj)]
    if callable(obj):
        return getattr(obj, "__module__", "") + "." + getattr(obj, "__qualname__", repr(obj))
    return repr(obj)


class Member:
    """A scikeras estimator initialised on the first fold, with its compiled Keras model."""

    def __init__(self, estimator: Any, encoders: list, seed_values: dict):

        self.estimator = estimator
        self.model = model = estimator.model_
        self.encoders = encoders  # target encoder per fold
        if getattr(model, "optimizer", None) is None:
            raise NotFusable("the model has no optimizer")
        policy = getattr(model, "dtype_policy", None)
        if policy is not None and getattr(policy, "name", "float32") != "float32":
            raise NotFusable(f"dtype policy {policy.name!r} is not supported")
        self._set_optimizer(model.optimizer)
        loss = getattr(model, "loss", None)
        self._check_loss(loss)
        compiled = getattr(getattr(model, "_compile_config", None), "config", None) or {}
        self.loss_key = json.dumps(_plain([loss, compiled.get("loss_weights")]), sort_keys=True,
                                   default=repr)
        slots = _activation_slots(model)
        self.slot_layers = [layer for layer, _ in slots]
        self.activations = tuple(name for _, name in slots)
        self.activation_fns = [layer.activation for layer, _ in slots]
        self.config_key = _canonical_config(model, self.slot_layers)
        shapes = [(tuple(v.shape), str(v.dtype), bool(v.trainable))
                  for v in list(model.trainable_variables) + list(model.non_trainable_variables)]
        self.shape_key = json.dumps(shapes)
        # How each variable got its initial value. Keras draws the seed of every unseeded
        # initializer from Python's random module as the layer is created, and scikeras seeds
        # that module with random_state around the build; the model was built here under
        # _BUILD_SEED, so an initializer's seed tells which draw it was, and a lane replays
        # that draw under its own seed: the weights scikeras would build with that random_state.
        inits = _initializers(model)
        variables = list(model.trainable_variables) + list(model.non_trainable_variables)
        self.n_draws = 8 * len(variables) + 64
        position = {}
        for j, value in enumerate(_draws(_BUILD_SEED, self.n_draws)):
            position.setdefault(value, j)
        # per variable: ("init", initializer, draw or None) or ("value", array, None)
        self.init_recipe = []
        for var in variables:
            init = inits.get(id(var))
            if init is None:
                self.init_recipe.append(("value", np.asarray(var.value), None))
                continue
            seed = getattr(init, "seed", None)
            draw = position.get(seed) if isinstance(seed, int) and getattr(
                init, "_init_seed", None) is None else None
            self.init_recipe.append(("init", init, draw))
        self.metrics_values = [np.asarray(v.value) for v in model.metrics_variables]
        # Keras' fit peeks at one batch to build a freshly compiled model's loss and metrics
        # (drawing one shuffling permutation that no epoch uses) when any part is unbuilt.
        self.fit_peeks = (
            not all(layer.built for layer in _flat_layers(model))
            or not getattr(getattr(model, "_compile_loss", None), "built", True)
            or not getattr(getattr(model, "_compile_metrics", None), "built", True)
        )

    def _set_optimizer(self, opt: Any) -> None:
        import keras

        if isinstance(opt, keras.optimizers.LossScaleOptimizer):
            raise NotFusable("LossScaleOptimizer is not supported")
        opt_config = opt.get_config()
        if opt_config.get("loss_scale_factor") is not None:
            raise NotFusable("loss_scale_factor is not supported")
        if not opt.built:
            opt.build(self.model.trainable_variables)
        self.optimizer = opt
        cfg = {k: v for k, v in opt_config.items() if k != "name"}
        if isinstance(cfg.get("learning_rate"), (float, int)):
            cfg.pop("learning_rate")  # a variable: a lane value
        self.opt_key = type(opt).__module__ + "." + type(opt).__qualname__ + json.dumps(
            cfg, sort_keys=True, default=repr)
        self.opt_values = [np.asarray(v.value) for v in opt.variables]

    def with_optimizer(self, payload: Payload, params: Mapping[str, Any]) -> "Member":
        """This member's model with the optimizer scikeras would compile for ``params``."""
        import copy

        from sklearn.base import clone

        est = clone(payload.estimator).set_params(**clone(dict(params), safe=False))
        opt = est._get_compile_kwargs()["optimizer"]  # what _ensure_compiled_model compiles
        if isinstance(opt, type):
            opt = opt()
        member = copy.copy(self)
        member._set_optimizer(opt)
        return member

    @staticmethod
    def _check_loss(loss: Any) -> None:
        losses = loss.values() if isinstance(loss, dict) else (
            loss if isinstance(loss, (list, tuple)) else [loss])
        for item in losses:
            reduction = getattr(item, "reduction", "sum_over_batch_size")
            if reduction not in ("sum_over_batch_size", "mean", "mean_with_sample_weight", None):
                raise NotFusable(f"loss reduction {reduction!r} is not supported")

    def group_signature(self, build_key: str) -> str:
        structure = self.config_key if self.config_key is not None else "build:" + build_key
        return _hash((structure, self.shape_key, self.loss_key))

    def initial_values(self, seed: int) -> list[np.ndarray]:
        """Every model variable's initial value for a lane with ``seed``: what scikeras builds
        with ``random_state=seed`` (initializers the user seeded keep their own seed)."""
        out = []
        draws = _draws(seed, self.n_draws)
        variables = list(self.model.trainable_variables) + list(self.model.non_trainable_variables)
        for var, (kind, what, draw) in zip(variables, self.init_recipe):
            if kind == "value":
                out.append(what)
                continue
            init = what
            if draw is not None:
                init = type(init).from_config({**init.get_config(), "seed": draws[draw]})
            out.append(np.asarray(init(tuple(var.shape), dtype=var.dtype)))
        return out


def _draws(seed: int, n: int) -> list[int]:
    """The first ``n`` default seeds Keras draws after ``random.seed(seed)``."""
    import random

    rng = random.Random(seed)
    return [rng.randint(1, int(1e9)) for _ in range(n)]


def member_for(payload: Payload, lane: Lane, members: dict) -> "Member":
    """The lane's member: built once per build key, or derived from a member with the same
    model and another optimizer (building a Keras model costs far more than an optimizer)."""
    member = members.get(lane.build_key)
    if member is not None:
        if isinstance(member, _Unfusable):
            raise NotFusable(member.reason)
        return member
    base = members.get("model:" + lane.model_key) if lane.model_key else None
    if isinstance(base, Member) and base.optimizer_from_params:
        member = base.with_optimizer(payload, lane.params)
    else:
        member = build_member(payload, lane.params)
        if lane.model_key:
            members["model:" + lane.model_key] = member
    members[lane.build_key] = member
    return member


def build_member(payload: Payload, params: Mapping[str, Any]) -> Member:
    """Initialise the candidate's scikeras estimator on the first fold (scikeras' own path)."""
    from sklearn.base import clone

    est = clone(payload.estimator).set_params(**clone(dict(params), safe=False))
    est.set_params(random_state=_BUILD_SEED)
    train0 = payload.splits[0][0]
    X0, y0 = take(payload.X, train0), take(payload.y, train0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est.initialize(X0, y0)
        compiled_by_build = bool(getattr(est.model_, "compiled", False))
        est._ensure_compiled_model()  # scikeras compiles in fit; the same call, without fitting
    # Each fold's target encoder, fitted as scikeras fits it; the folds must agree on its metadata
    # (the model built for the first fold must be the model of every fold).
    encoders = []
    meta0 = None
    for train, _ in payload.splits:
        probe = clone(est)
        probe.classes_ = None  # what scikeras' fit sets before it asks for the encoder
        encoder = probe.target_encoder.fit(_validated_y(est, take(payload.y, train)))
        meta = getattr(encoder, "get_metadata", dict)()
        if meta0 is None:
            meta0 = meta
        elif _hash(meta) != _hash(meta0):
            raise NotFusable("the folds' targets differ in kind (e.g. a class missing from a fold)")
        encoders.append(encoder)
    member = Member(est, encoders, {})
    member.optimizer_from_params = not compiled_by_build
    return member


def _validated_y(est: Any, y: Any) -> np.ndarray:
    from sklearn.utils import check_array

    return check_array(y, ensure_2d=False, allow_nd=False, dtype=None)


# --------------------------------------------------------------------------------------------
# The program: one vmapped, jitted training segment per group
# --------------------------------------------------------------------------------------------
class _Switch:
    """An activation chosen per lane by an integer code (a select under vmap)."""

    def __init__(self, fns: Sequence[Any]):
        self.fns = list(fns)
        self.code: Any = 0

    def __call__(self, x):
        from jax import lax

        if len(self.fns) == 1:
            return self.fns[0](x)
        return lax.switch(self.code, self.fns, x)


class _Installed:
    """Swap the template's named activations for switches while tracing."""

    def __init__(self, layers: Sequence[Any], switches: Sequence[_Switch]):
        self.layers, self.switches = list(layers), list(switches)
        self.saved: list = []

    def __enter__(self):
        self.saved = [layer.activation for layer in self.layers]
        for layer, sw in zip(self.layers, self.switches):
            layer.activation = sw
        return self

    def __exit__(self, *exc):
        for layer, fn in zip(self.layers, self.saved):
            layer.activation = fn
        for sw in self.switches:
            sw.code = 0


def _segment_fn(template, metric_values, template_opt_values, optimizers, switches,
                batch: int, steps: int, n_max: int, shuffle: bool):
    """The function ``(state, lanes, n_epochs, X, Y) -> (state, predictions)`` to jit."""
    import jax
    import jax.numpy as jnp
    from jax import lax

    multi_opt = len(optimizers) > 1
    span = steps * batch

    def set_codes(codes):
        for j, sw in enumerate(switches):
            sw.code = codes[j]

    def loss_fn(tv, ntv, x, y, w, codes):
        set_codes(codes)
        loss, aux = template.compute_loss_and_updates(
            tv, ntv, metric_values, x, y, w, training=True, optimizer_variables=template_opt_values)
        return loss, aux[2]

    def lane_train(tv, ntv, ov, lane, n_epochs, epoch0, X, Y):
        n, codes, ocode = lane["n"], lane["codes"], lane["ocode"]
        Yf = Y[lane["fold"]]
        positions = jnp.arange(span)

        def epoch(e, carry):
            if shuffle == "host":  # Keras' own order: np.random.permutation after the seed
                order = lane["orders"][epoch0 + e]
            elif shuffle:
                k = jax.random.fold_in(jax.random.wrap_key_data(lane["key"]), epoch0 + e)
                r = jax.random.uniform(k, (n_max,))
                r = jnp.where(jnp.arange(n_max) < n, r, 2.0)
                order = lane["idx"][jnp.argsort(r)]
            else:
                order = lane["idx"]
            rows = jnp.pad(order, (0, span - n_max)).reshape(steps, batch)
            valid = (positions < n).reshape(steps, batch)

            def step(carry, xs):
                tv, ntv, ov = carry
                r_, m_ = xs
                count = m_.sum()
                # Keras averages the loss over the rows of a batch; padding rows weigh 0 and the
                # real rows of a short last batch weigh batch/count, which gives the same mean.
                w = m_.astype("float32") * (batch / jnp.maximum(count, 1).astype("float32"))
                (_, ntv_new), grads = jax.value_and_grad(loss_fn, has_aux=True)(
                    tv, ntv, X[r_], Yf[r_], w, codes)
                tv_new, ov_new = tv, []
                for v, opt in enumerate(optimizers):
                    tv_v, ov_v = opt.stateless_apply(ov[v], grads, tv)
                    if multi_opt:
                        mine = ocode == v
                        tv_new = [jnp.where(mine, a, b) for a, b in zip(tv_v, tv_new)]
                        ov_new.append([jnp.where(mine, a, b) for a, b in zip(ov_v, ov[v])])
                    else:
                        tv_new, ov_new = tv_v, [ov_v]
                active = count > 0  # a lane with fewer steps than the longest skips the rest

                def keep(new, old):
                    return [jnp.where(active, a, b) for a, b in zip(new, old)]

                return (keep(tv_new, tv), keep(ntv_new, ntv),
                        [keep(a, b) for a, b in zip(ov_new, ov)]), None

            carry, _ = lax.scan(step, carry, (rows, valid))
            return carry

        return lax.fori_loop(0, n_epochs, epoch, (tv, ntv, ov))

    def predict(tv, ntv, codes, X):
        set_codes(codes)
        out, _ = template.stateless_call(tv, ntv, X, training=False)
        return out

    def segment(state, lanes, n_epochs, X, Y):
        tv, ntv, ov, epoch0 = state
        tv, ntv, ov = jax.vmap(lane_train, in_axes=(0, 0, 0, 0, None, None, None, None))(
            tv, ntv, ov, lanes, n_epochs, epoch0, X, Y)
        preds = jax.vmap(predict, in_axes=(0, 0, 0, None))(tv, ntv, lanes["codes"], X)
        return (tv, ntv, ov, epoch0 + n_epochs), preds

    return segment


# --------------------------------------------------------------------------------------------
# Scoring: a stand-in estimator that returns a lane's predictions
# --------------------------------------------------------------------------------------------
class _Frozen:
    """Answers ``predict``/``predict_proba``/``score`` for one lane's rows, like the fitted
    scikeras estimator would (scikeras' own target decoding), so the search's scorer applies."""

    def __init__(self, estimator: Any, encoder: Any, raw: Any, n: int, labels: Any = None):
        self._estimator = estimator
        self._encoder = encoder
        self._raw = raw
        self._n = n
        self._pred = labels
        if hasattr(estimator, "classes_"):
            self.classes_ = getattr(encoder, "classes_", None)
            if self.classes_ is None:
                self.classes_ = estimator.classes_
        self.n_features_in_ = getattr(estimator, "n_features_in_", None)

    def __sklearn_tags__(self):
        from sklearn.utils import get_tags

        return get_tags(self._estimator)

    def _check(self, X) -> None:
        from raygrid.engine.fitting import num_samples

        if num_samples(X) != self._n:
            raise ValueError("the fused engine's stand-in estimator only predicts its own rows")

    def predict(self, X):
        self._check(X)
        if self._pred is None:
            self._pred = self._encoder.inverse_transform(self._raw)
        return self._pred

    def score(self, X, y, sample_weight=None):
        self._check(X)
        y = _validated_y(self._estimator, y)
        params = self._estimator.get_params()
        score_args = {k[len("score__"):]: v for k, v in params.items() if k.startswith("score__")}
        return type(self._estimator).scorer(y, self.predict(X), sample_weight=sample_weight,
                                            **score_args)


class _FrozenClassifier(_Frozen):
    def predict_proba(self, X):
        self._check(X)
        return self._encoder.inverse_transform(self._raw, return_proba=True)


def _frozen(estimator, encoder, raw, n, labels=None) -> _Frozen:
    cls = _FrozenClassifier if hasattr(estimator, "predict_proba") else _Frozen
    return cls(estimator, encoder, raw, n, labels)


# --------------------------------------------------------------------------------------------
# Running one group
# --------------------------------------------------------------------------------------------
def _as_float32(a: Any) -> np.ndarray:
    a = np.asarray(a)
    if a.dtype.kind in "fc" or a.dtype.kind == "b":
        return a.astype(np.float32)
    if a.dtype.kind in "iu":
        return a.astype(np.int32)
    return a.astype(np.float32)


def _stack(rows: Sequence[Sequence[np.ndarray]]) -> list[np.ndarray]:
    if not rows or not rows[0]:
        return []
    return [np.stack(col) for col in zip(*rows)]


def run_group(payload: Payload, spec: GroupSpec, members: dict | None = None,
              where: tuple[str, int] | None = None) -> tuple[list[FitResult], dict]:
    """Train every lane of ``spec`` at once, score each of its trials: (results, stats)."""
    with _without_tensorflow():
        return _run_group(payload, spec, members, where)


def _run_group(payload: Payload, spec: GroupSpec, members: dict | None,
               where: tuple[str, int] | None) -> tuple[list[FitResult], dict]:
    configure_compilation_cache()  # before the models are built: their initializers compile too
    members = {} if members is None else members
    t0 = time.perf_counter()
    for lane in spec.lanes:
        member_for(payload, lane, members)
    lane_members = [members[lane.build_key] for lane in spec.lanes]
    variants = sorted({m.activations for m in lane_members})
    if len(variants) > 1 and not _switch_works(lane_members, variants):
        # The activations cannot be switched in this model: train each variant on its own.
        results, stats = [], []
        for variant in variants:
            sub = GroupSpec(spec.key + "/" + "-".join(variant), spec.batch_size, spec.shuffle,
                            [lane for lane, m in zip(spec.lanes, lane_members)
                             if m.activations == variant])
            r, s = _run_program(payload, sub, members, where, time.perf_counter() - t0)
            results += r
            stats.append(s)
            t0 = time.perf_counter()
        summed = ("lanes", "trials", "programs", "prep_s", "lower_s", "compile_s", "train_s",
                  "score_s")
        merged = {k: sum(s[k] for s in stats) if k in summed else stats[0][k] for k in stats[0]}
        return results, merged
    return _run_program(payload, spec, members, where, time.perf_counter() - t0)


def _switch_works(lane_members: Sequence[Member], variants) -> bool:
    """Check on a few rows that the switched template computes each variant's own model."""
    import jax.numpy as jnp

    template = lane_members[0]
    reps = {m.activations: m for m in lane_members}
    n_in = template.model.inputs[0].shape[1:] if getattr(template.model, "inputs", None) else None
    if n_in is None or any(d is None for d in n_in):
        return False
    x = np.random.default_rng(0).normal(size=(4, *n_in)).astype(np.float32)
    branches = _branches(lane_members)
    switches = [_Switch(fns) for fns in branches]
    with _trace_lock:
        try:
            for variant, m in reps.items():
                tv = [v.value for v in m.model.trainable_variables]
                ntv = [v.value for v in m.model.non_trainable_variables]
                want, _ = m.model.stateless_call(tv, ntv, jnp.asarray(x), training=False)
                with _Installed(template.slot_layers, switches):
                    for j, sw in enumerate(switches):
                        sw.code = _codes_of(variant, j, lane_members)
                    got, _ = template.model.stateless_call(tv, ntv, jnp.asarray(x), training=False)
                if not np.allclose(np.asarray(want), np.asarray(got), rtol=1e-5, atol=1e-6):
                    return False
        except Exception:  # noqa: BLE001 - anything unexpected: do not switch
            return False
    return True


def _branch_names(lane_members: Sequence[Member]) -> list[list[str]]:
    n_slots = len(lane_members[0].activations)
    return [sorted({m.activations[j] for m in lane_members}) for j in range(n_slots)]


def _branches(lane_members: Sequence[Member]) -> list[list[Any]]:
    names = _branch_names(lane_members)
    out = []
    for j, slot_names in enumerate(names):
        fns = []
        for name in slot_names:
            m = next(m for m in lane_members if m.activations[j] == name)
            fns.append(m.activation_fns[j])
        out.append(fns)
    return out


def _codes_of(variant: tuple[str, ...], j: int, lane_members: Sequence[Member]) -> int:
    return _branch_names(lane_members)[j].index(variant[j])


class _GroupRun:
    """One group's program: prepared lane values, the compiled segment, and its state."""

    def __init__(self, payload: Payload, spec: GroupSpec, members: dict):
        import jax
        import jax.numpy as jnp
        from sklearn.utils import check_array

        configure_compilation_cache()
        t_prep = time.perf_counter()
        self.payload, self.spec = payload, spec
        self.lane_members = lane_members = [members[lane.build_key] for lane in spec.lanes]
        self.template = template = lane_members[0]
        model = template.model
        L = len(spec.lanes)

        # Data: X once; each fold's encoded targets on its training rows.
        self.X = _as_float32(check_array(payload.X, dtype=None, allow_nd=True))
        n_rows = self.X.shape[0]
        folds = sorted({lane.fold for lane in spec.lanes})
        fold_pos = {f: i for i, f in enumerate(folds)}
        Y = None
        for f in folds:
            train = payload.splits[f][0]
            yt = _as_float32(template.encoders[f].transform(
                _validated_y(template.estimator, take(payload.y, train))))
            if Y is None:
                Y = np.zeros((len(folds), n_rows) + yt.shape[1:], dtype=yt.dtype)
            Y[fold_pos[f], train] = yt
        self.Y = Y
        n_train = [len(payload.splits[lane.fold][0]) for lane in spec.lanes]
        self.n_max = n_max = max(n_train)
        self.batch = batch = n_max if spec.batch_size == -1 else spec.batch_size
        self.steps = -(-n_max // batch)

        # Lane values: rows, initial weights, optimizer variables, switch codes, shuffling keys.
        idx = np.zeros((L, n_max), np.int32)
        for i, lane in enumerate(spec.lanes):
            train = payload.splits[lane.fold][0]
            idx[i, :len(train)] = train
        opt_keys = sorted({m.opt_key for m in lane_members})
        self.optimizers = optimizers = []
        with _trace_lock:
            for key in opt_keys:
                src = next(m for m in lane_members if m.opt_key == key).optimizer
                opt = type(src).from_config(src.get_config())
                opt.build(model.trainable_variables)
                optimizers.append(opt)
        self.n_tv = n_tv = len(model.trainable_variables)
        tv_rows, ntv_rows, ov_rows = [], [], [[] for _ in optimizers]
        for lane, m in zip(spec.lanes, lane_members):
            values = m.initial_values(lane.seed)
            tv_rows.append(values[:n_tv])
            ntv_rows.append(values[n_tv:])
            for v, opt in enumerate(optimizers):
                own = opt_keys[v] == m.opt_key
                ov_rows[v].append(m.opt_values if own
                                  else [np.asarray(x.value) for x in opt.variables])
        names = _branch_names(lane_members)
        self.switches = [_Switch(fns) for fns in _branches(lane_members)] if len(
            {m.activations for m in lane_members}) > 1 else []
        n_sw = len(self.switches)
        codes = np.array([[names[j].index(m.activations[j]) for j in range(n_sw)]
                          for m in lane_members], np.int32).reshape(L, n_sw)
        ocode = np.array([opt_keys.index(m.opt_key) for m in lane_members], np.int32)
        self.lanes_arr = {
            "idx": idx, "n": np.asarray(n_train, np.int32),
            "fold": np.array([fold_pos[lane.fold] for lane in spec.lanes], np.int32),
            "codes": codes, "ocode": ocode,
        }
        # Shuffling: Keras' fit draws np.random.permutation(n) each epoch, after scikeras seeded
        # NumPy with random_state; the same orders are drawn here per lane (same seed, same
        # order), unless that table would be too large: then keys shuffle inside the program.
        self.shuffle: Any = spec.shuffle
        epochs_max = max(lane.max_epochs for lane in spec.lanes)
        if spec.shuffle and L * max(epochs_max, 1) * n_max <= _HOST_ORDER_LIMIT:
            self.shuffle = "host"
            orders = np.zeros((L, max(epochs_max, 1), n_max), np.int32)
            for i, lane in enumerate(spec.lanes):
                train = payload.splits[lane.fold][0]
                rs = np.random.RandomState(lane.seed)
                if lane_members[i].fit_peeks:
                    rs.permutation(len(train))
                for e in range(epochs_max):
                    orders[i, e, :len(train)] = train[rs.permutation(len(train))]
            self.lanes_arr["orders"] = orders
        elif spec.shuffle:
            self.lanes_arr["key"] = np.asarray(jax.random.key_data(jax.vmap(jax.random.key)(
                jnp.asarray([lane.seed for lane in spec.lanes], dtype=jnp.uint32))))
        self.state = (_stack(tv_rows), _stack(ntv_rows), [_stack(rows) for rows in ov_rows],
                      np.int32(0))
        self.template_opt_values = [np.asarray(v.value) for v in model.optimizer.variables]
        self.prep_s = time.perf_counter() - t_prep
        self.lower_s = self.compile_s = self.train_s = 0.0
        self.compiled = None
        self.epochs_done = 0

    def compile(self) -> None:
        """Trace (one group at a time: templates are shared) and compile (in parallel)."""
        import jax

        t = time.perf_counter()
        template = self.template
        with _trace_lock:
            fn = _segment_fn(template.model, template.metrics_values, self.template_opt_values,
                             self.optimizers, self.switches, self.batch, self.steps, self.n_max,
                             self.shuffle)
            with _Installed(template.slot_layers if self.switches else [], self.switches):
                lowered = jax.jit(fn).lower(self.state, self.lanes_arr, np.int32(0), self.X,
                                            self.Y)
        self.lower_s = time.perf_counter() - t
        t = time.perf_counter()
        self.compiled = lowered.compile()
        self.compile_s = time.perf_counter() - t

    def train_to(self, epochs: int) -> Any:
        """Train every lane up to ``epochs`` in all; returns each lane's predictions on all rows."""
        import jax

        if self.compiled is None:
            self.compile()
        t = time.perf_counter()
        self.state, preds = self.compiled(self.state, self.lanes_arr,
                                          np.int32(epochs - self.epochs_done), self.X, self.Y)
        preds = jax.tree.map(np.asarray, preds)
        self.epochs_done = epochs
        self.train_s += time.perf_counter() - t
        return preds

    def weights(self) -> list[list[np.ndarray]]:
        """Each lane's trainable then non-trainable variables, in the model's order."""
        tv, ntv = self.state[0], self.state[1]
        return [[np.asarray(a[i]) for a in list(tv) + list(ntv)]
                for i in range(len(self.spec.lanes))]


def _run_program(payload: Payload, spec: GroupSpec, members: dict, where, prep_before: float
                 ) -> tuple[list[FitResult], dict]:
    node, pid = where or location()
    run = _GroupRun(payload, spec, members)
    run.compile()
    scorer = _GroupScorer(payload, run.lane_members[0].estimator)
    # Train in segments between the requested epoch counts; score after each.
    boundaries = sorted({e for lane in spec.lanes for e in lane.trials})
    scored: list[tuple[FitResult, int]] = []
    score_s = 0.0
    for target in boundaries:
        preds = run.train_to(target)
        t_score = time.perf_counter()
        items = [(i, trial) for i, lane in enumerate(spec.lanes)
                 for trial in lane.trials.get(target, ())]
        for result in scorer.score(preds, items, run.lane_members, spec.lanes, node, pid):
            scored.append((result, target))
        score_s += time.perf_counter() - t_score
    # fit_time: the group's own time (preparation, tracing, compilation, training) apportioned
    # to its trials by the epochs each trained.
    prep_s = run.prep_s + prep_before
    fit_total = prep_s + run.lower_s + run.compile_s + run.train_s
    weight = sum(max(e, 1) for _, e in scored)
    results = []
    for result, e in scored:
        result.fit_time = fit_total * max(e, 1) / weight
        results.append(result)
    stats = dict(lanes=len(spec.lanes), trials=len(results), programs=1, batch_size=run.batch,
                 steps=run.steps, epochs=max(boundaries), optimizers=len(run.optimizers),
                 switches=len(run.switches), prep_s=prep_s, lower_s=run.lower_s,
                 compile_s=run.compile_s, train_s=run.train_s, score_s=score_s,
                 vectorised_scoring=scorer.accuracy, node=node)
    return results, stats


def _is_accuracy(payload: Payload, estimator: Any) -> bool:
    """True when the search's scorer is plain accuracy on ``predict`` (then scored vectorised)."""
    if payload.metrics != ("score",) or payload.score_params:
        return False
    scorer = payload.scorer
    try:
        import scikeras.wrappers as w
        from sklearn.metrics import accuracy_score

        if type(scorer).__name__ == "_PassthroughScorer":
            score_params = [k for k in estimator.get_params() if k.startswith("score__")]
            return (type(estimator).scorer is w.KerasClassifier.scorer and not score_params
                    and getattr(type(estimator), "score", None) is w.BaseWrapper.score)
        return (type(scorer).__name__ == "_Scorer"
                and getattr(scorer, "_score_func", None) is accuracy_score
                and not getattr(scorer, "_kwargs", {"?": 1})
                and getattr(scorer, "_sign", None) == 1
                and getattr(scorer, "_response_method", None) == "predict")
    except Exception:  # noqa: BLE001 - anything unexpected: the scorer itself is called
        return False


class _GroupScorer:
    """Scores a group's trials from the lanes' predictions: decoded per fold in one call,
    then plain accuracy as one vectorised comparison, or the search's own scorer per trial."""

    def __init__(self, payload: Payload, estimator: Any):
        from raygrid.engine.fitting import num_samples

        self.payload = payload
        self.accuracy = _is_accuracy(payload, estimator)
        self.n = num_samples(payload.X)
        self._rows: dict[tuple[str, int], tuple] = {}

    def _side(self, side: str, fold: int) -> tuple:
        key = (side, fold)
        if key not in self._rows:
            train, test = self.payload.splits[fold]
            rows = test if side == "test" else train
            self._rows[key] = (rows, take(self.payload.X, rows), take(self.payload.y, rows),
                               split_fit_params(self.payload.score_params, self.n, rows))
        return self._rows[key]

    def score(self, preds: Any, items, lane_members, lanes, node, pid) -> list[FitResult]:
        import jax

        payload = self.payload
        results = {}
        for i, trial in items:
            r = FitResult(trial.candidate, trial.fold, {}, None, 0.0, 0.0,
                          len(payload.splits[trial.fold][1]), node=node, pid=pid,
                          seed=lanes[i].seed)
            r.engine = "fused"
            results[(i, id(trial))] = r
        sides = ("test", "train") if payload.return_train_score else ("test",)
        single = isinstance(preds, np.ndarray)
        for side in sides:
            by_fold: dict[tuple[int, int], list] = {}
            for i, trial in items:
                encoder = lane_members[i].encoders[trial.fold]
                by_fold.setdefault((trial.fold, id(encoder)), []).append((i, trial))
            for (fold, _), members_items in by_fold.items():
                rows, X_side, y_side, params = self._side(side, fold)
                encoder = lane_members[members_items[0][0]].encoders[fold]
                lane_idx = [i for i, _ in members_items]
                labels = None
                t0 = time.perf_counter()
                if single:
                    raw = preds[lane_idx][:, rows]
                    try:
                        flat = encoder.inverse_transform(raw.reshape(-1, *raw.shape[2:]))
                        labels = np.asarray(flat).reshape(len(lane_idx), len(rows),
                                                          *np.shape(flat)[1:])
                    except Exception:  # noqa: BLE001 - decoded per trial below, errors as data
                        labels = None
                if self.accuracy and labels is not None and labels.ndim == 2:
                    y_arr = np.asarray(y_side)
                    accs = (labels == y_arr.reshape(1, -1)).mean(axis=1)
                    each = (time.perf_counter() - t0) / len(members_items)
                    for (i, trial), acc in zip(members_items, accs):
                        r = results[(i, id(trial))]
                        self._put(r, side, {"score": float(acc)})
                        r.score_time += each
                    continue
                for k, (i, trial) in enumerate(members_items):
                    start = time.perf_counter()
                    r = results[(i, id(trial))]
                    if r.error is not None:
                        continue
                    raw_i = jax.tree.map(lambda a: a[i][rows], preds)
                    frozen = _frozen(lane_members[i].estimator, encoder, raw_i, len(rows),
                                     None if labels is None else labels[k])
                    self._score_one(r, side, frozen, X_side, y_side, params)
                    r.score_time += time.perf_counter() - start
        return list(results.values())

    @staticmethod
    def _put(result: FitResult, side: str, scores: dict) -> None:
        if side == "test":
            result.test_scores = scores
        else:
            result.train_scores = scores

    def _score_one(self, result, side, frozen, X_side, y_side, params) -> None:
        from raygrid.engine.fitting import pickles, score, set_error_scores

        try:
            self._put(result, side, score(frozen, X_side, y_side, self.payload, params))
        except Exception as exc:  # noqa: BLE001 - errors are data, as in the standard engine
            result.error = traceback.format_exc()
            result.exception = pickles(exc)
            set_error_scores(result, self.payload)


# --------------------------------------------------------------------------------------------
# A unit: what one task runs (on a JAX worker), and the executor that hands units to the seam
# --------------------------------------------------------------------------------------------
#: The ``engine`` of a row that says "not trained here: run me on the standard engine".
FALLBACK = "fallback"
#: Environment of the workers that run fused units: Keras on JAX whatever the driver uses.
JAX_ENV = {"KERAS_BACKEND": "jax", "XLA_PYTHON_CLIENT_PREALLOCATE": "false"}
#: XLA's flags there unless ``XLA_FLAGS`` is set on the driver: LLVM's optimisation off. On the
#: seed grid it cut compilation about five-fold (the many small initializer programs and the
#: group's program) for about twice the training time, with the same scores to the last bit.
FUSED_XLA_FLAGS = "--xla_backend_optimization_level=0"


def _fallback_rows(trials: Sequence[Trial], why: str | Mapping[tuple[int, int], str]
                   ) -> list[FitResult]:
    def reason(t: Trial) -> str:
        return why if isinstance(why, str) else why.get((t.candidate, t.fold), "unknown")

    return [FitResult(t.candidate, t.fold, {}, None, 0.0, 0.0, 0, error=reason(t),
                      seed=t.seed, engine=FALLBACK) for t in trials]


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else "unknown error"


def run_unit(payload: Payload, trials: Sequence[Trial]) -> list[FitResult]:
    """Train ``trials`` fused (one program per model structure), in this process.

    What cannot be fused here (another Keras backend, a model that does not build or switch
    identically, a program that fails) comes back as rows with ``engine="fallback"`` and the
    reason as ``error``: the driver runs those trials on the standard engine.
    """
    from raygrid.keras import keras_backend

    with _without_tensorflow():
        backend = keras_backend()
        if backend != "jax":
            return _fallback_rows(trials, f"the Keras backend of the worker is {backend!r}, "
                                          "not 'jax'")
        configure_compilation_cache()
        try:
            payload, trials = final_step_view(payload, trials, transform=True)
        except NotFusable as exc:
            return _fallback_rows(trials, str(exc))
        except Exception:  # noqa: BLE001 - the standard engine runs (and reports) it
            return _fallback_rows(trials, "the pipeline's preprocessing failed ("
                                  + _last_line(traceback.format_exc()) + ")")
        plan = _plan_fusion(payload, trials, "fused", _members_of(payload))
        results = _fallback_rows(plan.rest, plan.why)
        where = location()
        for spec in plan.groups:
            try:
                group_results, stats = _run_group(payload, spec, plan.members, where)
            except Exception:  # noqa: BLE001 - the standard engine runs them instead
                results += _fallback_rows(spec.trials(), "the fused program failed ("
                                          + _last_line(traceback.format_exc()) + ")")
                continue
            stats["plan_s"] = plan.plan_s
            if group_results:  # the group's timings travel with its first fit (see last_stats)
                group_results[0].group_stats = stats
            results += group_results
        return results


def _members_of(payload: Payload) -> dict:
    """This process's members for ``payload``'s estimator class and data (built once per
    process and search, whatever the unit); members of other searches are dropped."""
    try:
        key = _hash((type(payload.estimator).__qualname__, payload.X, payload.y,
                     [(np.asarray(tr), np.asarray(te)) for tr, te in payload.splits]))
    except Exception:  # noqa: BLE001 - unhashable data: members for this unit only
        return {}
    if key not in _members_cache:
        _members_cache.clear()
        _members_cache[key] = {}
    return _members_cache[key]


def _unit_failed(trials: Sequence[Trial], exc: BaseException) -> list[FitResult]:
    """A unit whose task raised, or whose worker died after its retries: the standard engine
    runs its trials (errors of a fit itself are rows, never this)."""
    text = "".join(traceback.format_exception_only(type(exc), exc))
    return _fallback_rows(trials, f"its task failed ({_last_line(text)})")


def _take_stats(result: FitResult) -> None:
    """Keep a group's timings (carried by its first fit) for :func:`last_stats`."""
    stats = result.__dict__.pop("group_stats", None)
    if stats is not None:
        _last_stats.append(stats)


def _without_fallbacks(stream: Iterator[FitResult], sink: list[FitResult]) -> Iterator[FitResult]:
    """``stream`` less its fallback rows (collected in ``sink``); an interrupt thrown in here
    reaches ``stream``, whose finished fits still come out."""
    interrupt: KeyboardInterrupt | None = None
    for result in stream:  # a KeyboardInterrupt raised by ``stream`` (after its drain) passes
        _take_stats(result)
        if result.engine == FALLBACK:
            sink.append(result)
            continue
        try:
            yield result
        except KeyboardInterrupt as exc:  # thrown in by the runner: drain ``stream``
            interrupt = exc
            break
    if interrupt is None:
        return
    kept: list[FitResult] = []
    try:
        result = stream.throw(interrupt)
        while True:
            kept.append(result)
            result = next(stream)
    except (KeyboardInterrupt, StopIteration):
        pass
    for result in kept:
        _take_stats(result)
        if result.engine == FALLBACK:
            sink.append(result)
        else:
            yield result
    raise interrupt


class FusedExecutor:
    """The executor protocol around another executor: fusable trials train in fused units,
    run by ``inner`` like any other work (one loop: retries, Ctrl-C grace, node loss and the
    store behave as for standard fits); the rest run on ``inner`` as standard fits."""

    def __init__(self, inner: Any, engine: str = "fused", payload: Payload | None = None):
        if engine not in ("fused", "auto"):
            raise ValueError(f"engine must be 'fused' or 'auto' here, got {engine!r}")
        self.inner = inner
        self.engine = engine
        self.payload = payload
        self.reasons: dict[str, int] = {}  # why trials ran on the standard engine -> how many
        self._units: dict[tuple[int, int], str] = {}
        self._costs: dict[str, float] = {}
        self._assigned: set[tuple[int, int]] = set()  # (candidate, fold) of trials seen by assign

    @property
    def running(self) -> int:
        return getattr(self.inner, "running", 0)

    def describe(self) -> str:
        return f"fused engine ({self.engine}) over {self.inner.describe()}"

    def share(self, payload: Payload) -> Any:
        self.payload = payload
        return self.inner.share(payload)

    def assign(self, trials: Sequence[Trial]) -> list[Trial]:
        """``trials`` with those that will train fused marked (``engine``, the lane's seed):
        call before looking them up in a fit store, whose identity includes both."""
        if self.payload is None:
            raise RuntimeError("FusedExecutor needs the payload before assign()")
        plan = assign(self.payload, trials, self.engine,
                      in_process=bool(getattr(self.inner, "in_process", False)))
        self._units.update(plan.units)
        self._costs.update(plan.costs)
        self._assigned.update((t.candidate, t.fold) for t in trials)
        self._note(plan.reasons, warn=self.engine == "fused")
        return plan.trials

    def _note(self, reasons: Mapping[str, int], warn: bool) -> None:
        for why, n in reasons.items():
            self.reasons[why] = self.reasons.get(why, 0) + n
        if warn and reasons:
            warnings.warn(_reasons_text(reasons), UserWarning, stacklevel=3)

    def run(self, shared: Any, trials: Sequence[Trial]) -> Iterator[FitResult]:
        if self.payload is None:
            raise RuntimeError("share() must be called before run()")
        _last_stats.clear()
        if not any((t.candidate, t.fold) in self._assigned for t in trials):
            trials = self.assign(trials)  # called without assign(): plan them here
        by_unit: dict[str, list[Trial]] = {}
        rest: list[Trial] = []
        for t in trials:
            key = self._units.get((t.candidate, t.fold)) if t.engine == "fused" else None
            if key is None:
                rest.append(t)
            else:
                by_unit.setdefault(key, []).append(t)
        # The longest units first, so that the last to finish is a short one.
        order = sorted(by_unit, key=lambda k: -self._costs.get(k, 0.0))
        units = [Unit(run_unit, tuple(by_unit[k]), resources=self._resources(), share_gpus=True,
                      on_failure=_unit_failed) for k in order]
        fallback: list[FitResult] = []
        stream = self.inner.run(shared, [*units, *rest])
        try:
            # ``yield from``: an interrupt thrown in by the runner reaches the inner stream,
            # which lets the units in flight finish and hands their fits over.
            yield from _without_fallbacks(stream, fallback)
        finally:
            close = getattr(stream, "close", None)
            if close is not None:
                close()  # stopped early (error_score="raise"): cancel what is left at once
        if not fallback:
            return
        reasons: dict[str, int] = {}
        for row in fallback:
            reasons[row.error or "unknown"] = reasons.get(row.error or "unknown", 0) + 1
        self._note(reasons, warn=True)
        planned = {(t.candidate, t.fold): t for t in trials}
        yield from self.inner.run(shared, [planned[(r.candidate, r.fold)] for r in fallback])

    @staticmethod
    def _resources() -> dict:
        env = dict(JAX_ENV)
        env["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", FUSED_XLA_FLAGS)
        if os.environ.get("RAYGRID_JAX_CACHE"):
            env["RAYGRID_JAX_CACHE"] = os.environ["RAYGRID_JAX_CACHE"]
        return {"runtime_env": {"env_vars": env}}


def _reasons_text(reasons: Mapping[str, int]) -> str:
    total = sum(reasons.values())
    parts = "; ".join(f"{n} fits: {why}" for why, n in reasons.items())
    return f"the fused engine left {total} fits to the standard engine ({parts})"


__all__ = ["ENGINES", "FALLBACK", "Assignment", "FusedExecutor", "FusionPlan", "GroupSpec", "Lane",
           "NotFusable", "assign", "configure_compilation_cache", "gpu_share", "last_stats",
           "plan_fusion", "run_group", "run_unit", "wrap"]
