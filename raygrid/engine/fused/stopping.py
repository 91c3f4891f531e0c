"""EarlyStopping per lane, inside the program: Keras 3's ``EarlyStopping.on_epoch_end`` and
``on_train_end`` written as array updates, so that every lane stops on its own.

Keras' rules (keras/src/callbacks/early_stopping.py, 3.15): epochs before ``start_from_epoch``
are not looked at; on the first epoch looked at, the weights are kept (``restore_best_weights``)
and it counts as an improvement; ``wait`` grows by one each epoch looked at and goes back to 0
on an improvement (``current - min_delta`` better than the best; with a ``baseline``, only an
improvement that also beats the baseline resets it); training stops at the end of epoch ``e``
when ``wait >= patience`` and ``e > 0``. At the end of training, the best epoch's weights are
restored whenever some epoch was looked at (``restore_best_weights``), stopped or not.

Comparisons are made on ``sign * value`` (``sign`` +1 where lower is better, -1 where higher
is), so that "better" is always "smaller".
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from raygrid.engine.fused.options import Stopping


def lane_settings(stoppings: Sequence[Stopping], signs: Sequence[int]) -> dict[str, np.ndarray]:
    """Each lane's EarlyStopping settings as arrays (lane values)."""
    inf = np.float32(np.inf)
    return {
        "sign": np.asarray(signs, np.float32),
        "delta": np.asarray([s.min_delta for s in stoppings], np.float32),
        "patience": np.asarray([s.patience for s in stoppings], np.int32),
        "baseline": np.asarray([inf if s.baseline is None else sign * s.baseline
                                for s, sign in zip(stoppings, signs)], np.float32),
        "start": np.asarray([s.start_from_epoch for s in stoppings], np.int32),
        "restore": np.asarray([s.restore_best_weights for s in stoppings], bool),
    }


def initial_state(tv: list, ntv: list, restore: bool) -> dict:
    """One lane's state before training (``restore``: some lane of the group restores)."""
    import jax.numpy as jnp

    state = {"best": jnp.float32(jnp.inf), "seen": jnp.bool_(False), "wait": jnp.int32(0),
             "stopped": jnp.bool_(False), "trained": jnp.int32(0), "best_epoch": jnp.int32(0)}
    if restore:
        state["best_w"] = [jnp.asarray(a) for a in list(tv) + list(ntv)]
    return state


def running(state: dict | None):
    return True if state is None else ~state["stopped"]


def end_of_epoch(state: dict, settings: dict, current, epoch, weights: list, trained: bool):
    """``state`` after epoch ``epoch`` (0-based, absolute) ended with the monitored ``current``;
    ``trained``: the lane trained this epoch (it had not stopped)."""
    import jax.numpy as jnp

    value = settings["sign"] * current
    looked = trained & (epoch >= settings["start"])
    wait = jnp.where(looked, state["wait"] + 1, state["wait"])
    better = looked & (~state["seen"] | (value + settings["delta"] < state["best"]))
    beats_baseline = value + settings["delta"] < settings["baseline"]
    wait = jnp.where(better & beats_baseline, 0, wait)
    stop = looked & ~better & (wait >= settings["patience"]) & (epoch > 0)
    out = {
        "best": jnp.where(better, value, state["best"]),
        "seen": state["seen"] | looked,
        "wait": wait,
        "stopped": state["stopped"] | stop,
        "trained": jnp.where(trained, epoch + 1, state["trained"]),
        "best_epoch": jnp.where(better, epoch, state["best_epoch"]),
    }
    if "best_w" in state:
        keep = better & settings["restore"]
        out["best_w"] = [jnp.where(keep, a, b) for a, b in zip(weights, state["best_w"])]
    return out


def final_weights(state: dict | None, settings: dict | None, weights: list) -> list:
    """The weights a fit ending now leaves: the best epoch's where restored, else ``weights``."""
    import jax.numpy as jnp

    if state is None or "best_w" not in state:
        return weights
    use = settings["restore"] & state["seen"]
    return [jnp.where(use, a, b) for a, b in zip(state["best_w"], weights)]
