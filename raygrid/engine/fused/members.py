"""Members: the Keras model of one build key, built once the way scikeras builds it, and what a
lane takes from it (layers, switchable activations, initializers, canonical config, optimizer)."""
from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from raygrid._compat import (keras_compile_built, keras_compile_config, keras_flat_layers,
                             keras_initializer_seeded, scikeras_compile, scikeras_compile_kwargs)
from raygrid.engine.fitting import Payload, take, targets
from raygrid.engine.fused.plan import Lane, NotFusable, fingerprint

#: The seed models are built under while planning; lanes replay Keras' seed draws for their own.
_BUILD_SEED = 1_000_003


@dataclass
class Unfusable:
    reason: str


def _flat_layers(model: Any) -> list:
    layers = keras_flat_layers(model)
    if layers is None:
        raise NotFusable(_moved("Keras", "Layer._flatten_layers", "a model's nested layers"))
    return layers


def _moved(library: str, name: str, what: str) -> str:
    return f"this {library} has no {name} as raygrid knows it (the fused engine reads {what} there)"


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
        compiled = keras_compile_config(model)
        if compiled is None:
            raise NotFusable(_moved("Keras", "Model._compile_config", "the loss weights"))
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
            draw = None
            if isinstance(seed, int):
                seeded = keras_initializer_seeded(init)
                if seeded is None:
                    raise NotFusable(_moved("Keras", "RandomInitializer._init_seed",
                                            "whether an initializer was seeded by the user"))
                draw = None if seeded else position.get(seed)
            self.init_recipe.append(("init", init, draw))
        self.metrics_values = [np.asarray(v.value) for v in model.metrics_variables]
        # Keras' fit peeks at one batch to build a freshly compiled model's loss and metrics
        # (drawing one shuffling permutation that no epoch uses) when any part is unbuilt.
        compile_built = keras_compile_built(model)
        if compile_built is None:
            raise NotFusable(_moved("Keras", "Model._compile_loss or Model._compile_metrics",
                                    "whether fit builds the loss on a first batch"))
        self.fit_peeks = not all(layer.built for layer in _flat_layers(model)) or not compile_built

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
        compile_kwargs = scikeras_compile_kwargs(est)  # what scikeras_compile compiles
        if compile_kwargs is None:
            raise NotFusable(_moved("scikeras", "BaseWrapper._get_compile_kwargs",
                                    "the optimizer of a candidate"))
        opt = compile_kwargs["optimizer"]
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
        return fingerprint((structure, self.shape_key, self.loss_key))

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
        if isinstance(member, Unfusable):
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
        if not scikeras_compile(est):  # scikeras compiles in fit; the same call, without fitting
            raise NotFusable(_moved("scikeras", "BaseWrapper._ensure_compiled_model",
                                    "how a model is compiled"))
    # Each fold's target encoder, fitted as scikeras fits it; the folds must agree on its metadata
    # (the model built for the first fold must be the model of every fold).
    encoders = []
    meta0 = None
    for fold, (train, _) in enumerate(payload.splits):
        probe = clone(est)
        probe.classes_ = None  # what scikeras' fit sets before it asks for the encoder
        encoder = probe.target_encoder.fit(validated_y(est, targets(payload, fold, train)))
        meta = getattr(encoder, "get_metadata", dict)()
        if meta0 is None:
            meta0 = meta
        elif fingerprint(meta) != fingerprint(meta0):
            raise NotFusable("the folds' targets differ in kind (e.g. a class missing from a fold)")
        encoders.append(encoder)
    member = Member(est, encoders, {})
    member.optimizer_from_params = not compiled_by_build
    return member


def validated_y(est: Any, y: Any) -> np.ndarray:
    from sklearn.utils import check_array

    return check_array(y, ensure_2d=False, allow_nd=False, dtype=None)
