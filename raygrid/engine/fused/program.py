"""The program: one vmapped, jitted training segment per group, with activations switched per
lane (and the check that a switched model computes each variant's own)."""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from raygrid.engine.fused import stopping
from raygrid.engine.fused.members import Member

trace_lock = threading.RLock()  # Keras models are mutated while tracing: one trace at a time


class Switch:
    """An activation chosen per lane by an integer code (a select under vmap)."""

    def __init__(self, fns: Sequence[Any]):
        self.fns = list(fns)
        self.code: Any = 0

    def __call__(self, x):
        from jax import lax

        if len(self.fns) == 1:
            return self.fns[0](x)
        return lax.switch(self.code, self.fns, x)


class Installed:
    """Swap the template's named activations for switches while tracing."""

    def __init__(self, layers: Sequence[Any], switches: Sequence[Switch]):
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


@dataclass
class Layout:
    """The static shape of a group's program: batching, validation, what it monitors."""

    batch: int
    steps: int
    n_max: int
    shuffle: Any  # False, True (keys drawn in the program) or "host" (orders given)
    weighted: bool = False  # lanes carry a weight per row ("w")
    vbatch: int = 0  # validation batch size (0: no validation)
    vsteps: int = 0
    nv_max: int = 0
    monitor: Any = None  # lanedata.Monitor when the lanes stop early
    restore: bool = False  # some lane restores its best weights


def segment_fn(template, metric_values, template_opt_values, optimizers, switches,
               layout: Layout):
    """The function ``(state, lanes, n_epochs, X, Y) -> (state, predictions, epochs trained)``
    to jit; ``state`` is ``(trainable, non-trainable, optimizer variables, epochs done,
    EarlyStopping state or None)``, each stacked per lane."""
    import jax
    import jax.numpy as jnp
    from jax import lax

    multi_opt = len(optimizers) > 1
    batch, steps, n_max, shuffle = layout.batch, layout.steps, layout.n_max, layout.shuffle
    span = steps * batch
    monitor = layout.monitor
    metric = None if monitor is None else monitor.metric
    metric_reset = [] if metric is None else [np.asarray(v.value) for v in metric.variables]

    def set_codes(codes):
        for j, sw in enumerate(switches):
            sw.code = codes[j]

    def loss_fn(tv, ntv, x, y, w, codes):
        set_codes(codes)
        loss, aux = template.compute_loss_and_updates(
            tv, ntv, metric_values, x, y, w, training=True, optimizer_variables=template_opt_values)
        return loss, (aux[2], aux[1])

    def keep(active, new, old):
        return [jnp.where(active, a, b) for a, b in zip(new, old)]

    def batch_weights(lane, rows, mask, size):
        # Keras averages the loss over the rows of a batch; padding rows weigh 0 and the real
        # rows of a short last batch weigh size/count, which gives the same mean (times each
        # row's sample weight, where the lanes have some).
        count = mask.sum()
        w = mask.astype("float32") * (size / jnp.maximum(count, 1).astype("float32"))
        if layout.weighted:
            w = w * lane["w"][rows]
        return w, count

    def tally(acc, loss, count, y, y_pred, mask):
        """The epoch's running loss (weighted by batch rows, as Keras' tracker) and metric."""
        lsum, cnt, mv = acc
        has = count > 0
        lsum = lsum + jnp.where(has, loss * count, 0.0)
        cnt = cnt + count
        if metric is not None:
            mv = keep(has, metric.stateless_update_state(mv, y, y_pred, sample_weight=mask), mv)
        return lsum, cnt, mv

    def result(acc):
        lsum, cnt, mv = acc
        if metric is not None:
            return metric.stateless_result(mv)
        return lsum / jnp.maximum(cnt, 1).astype("float32")

    def fresh():
        return (jnp.float32(0.0), jnp.int32(0), [jnp.asarray(v) for v in metric_reset])

    def evaluate(tv, ntv, lane, codes, X, Yf):
        """The validation loss (or metric) of the lane's weights, batch by batch as Keras'
        ``evaluate``."""
        vspan = layout.vsteps * layout.vbatch
        rows = jnp.pad(lane["vidx"], (0, vspan - layout.nv_max)).reshape(layout.vsteps,
                                                                            layout.vbatch)
        valid = (jnp.arange(vspan) < lane["nv"]).reshape(layout.vsteps, layout.vbatch)

        def vstep(acc, xs):
            r_, m_ = xs
            w, count = batch_weights(lane, r_, m_, layout.vbatch)
            set_codes(codes)
            loss, aux = template.compute_loss_and_updates(tv, ntv, metric_values, X[r_], Yf[r_],
                                                          w, training=False)
            return tally(acc, loss, count, Yf[r_], aux[1], m_), None

        acc, _ = lax.scan(vstep, fresh(), (rows, valid))
        return result(acc)

    def lane_train(tv, ntv, ov, es, lane, n_epochs, epoch0, X, Y):
        n, codes, ocode = lane["n"], lane["codes"], lane["ocode"]
        Yf = Y[lane["fold"]]
        positions = jnp.arange(span)

        def epoch(e, carry):
            tv, ntv, ov, es = carry
            going = stopping.running(es)
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
                tv, ntv, ov, acc = carry
                r_, m_ = xs
                w, count = batch_weights(lane, r_, m_, batch)
                (loss, (ntv_new, y_pred)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
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
                # A lane with fewer steps than the longest skips the rest; a stopped one, all.
                active = (count > 0) & going
                if monitor is not None and not monitor.on_validation:
                    acc = tally(acc, loss, jnp.where(active, count, 0), Yf[r_], y_pred, m_)
                return (keep(active, tv_new, tv), keep(active, ntv_new, ntv),
                        [keep(active, a, b) for a, b in zip(ov_new, ov)], acc), None

            (tv, ntv, ov, acc), _ = lax.scan(step, (tv, ntv, ov, fresh()), (rows, valid))
            if es is not None:
                current = (evaluate(tv, ntv, lane, codes, X, Yf) if monitor.on_validation
                           else result(acc))
                es = stopping.end_of_epoch(es, lane["stop"], current, epoch0 + e,
                                           list(tv) + list(ntv), going)
            return tv, ntv, ov, es

        if es is None:
            return lax.fori_loop(0, n_epochs, epoch, (tv, ntv, ov, es))

        # With EarlyStopping, the loop ends once every lane has stopped (under vmap, a lane
        # that stopped idles, masked, until then).
        def going_on(c):
            return (c[0] < n_epochs) & stopping.running(c[1][3])

        def one(c):
            return c[0] + 1, epoch(c[0], c[1])

        return lax.while_loop(going_on, one, (jnp.int32(0), (tv, ntv, ov, es)))[1]

    def predict(tv, ntv, es, settings, codes, X):
        weights = stopping.final_weights(es, settings, list(tv) + list(ntv))
        set_codes(codes)
        out, _ = template.stateless_call(weights[:len(tv)], weights[len(tv):], X, training=False)
        return out

    def segment(state, lanes, n_epochs, X, Y):
        tv, ntv, ov, epoch0, es = state
        tv, ntv, ov, es = jax.vmap(lane_train, in_axes=(0, 0, 0, 0, 0, None, None, None, None))(
            tv, ntv, ov, es, lanes, n_epochs, epoch0, X, Y)
        preds = jax.vmap(predict, in_axes=(0, 0, 0, 0, 0, None))(
            tv, ntv, es, lanes.get("stop"), lanes["codes"], X)
        trained = (es["trained"] if es is not None
                   else jnp.full((lanes["n"].shape[0],), epoch0 + n_epochs, jnp.int32))
        return (tv, ntv, ov, epoch0 + n_epochs, es), preds, trained

    return segment


def switch_works(lane_members: Sequence[Member], variants) -> bool:
    """Check on a few rows that the switched template computes each variant's own model."""
    import jax.numpy as jnp

    template = lane_members[0]
    reps = {m.activations: m for m in lane_members}
    n_in = template.model.inputs[0].shape[1:] if getattr(template.model, "inputs", None) else None
    if n_in is None or any(d is None for d in n_in):
        return False
    x = np.random.default_rng(0).normal(size=(4, *n_in)).astype(np.float32)
    branches = activation_branches(lane_members)
    switches = [Switch(fns) for fns in branches]
    with trace_lock:
        try:
            for variant, m in reps.items():
                tv = [v.value for v in m.model.trainable_variables]
                ntv = [v.value for v in m.model.non_trainable_variables]
                want, _ = m.model.stateless_call(tv, ntv, jnp.asarray(x), training=False)
                with Installed(template.slot_layers, switches):
                    for j, sw in enumerate(switches):
                        sw.code = _codes_of(variant, j, lane_members)
                    got, _ = template.model.stateless_call(tv, ntv, jnp.asarray(x), training=False)
                if not np.allclose(np.asarray(want), np.asarray(got), rtol=1e-5, atol=1e-6):
                    return False
        except Exception:  # noqa: BLE001 - anything unexpected: do not switch
            return False
    return True


def branch_names(lane_members: Sequence[Member]) -> list[list[str]]:
    n_slots = len(lane_members[0].activations)
    return [sorted({m.activations[j] for m in lane_members}) for j in range(n_slots)]


def activation_branches(lane_members: Sequence[Member]) -> list[list[Any]]:
    names = branch_names(lane_members)
    out = []
    for j, slot_names in enumerate(names):
        fns = []
        for name in slot_names:
            m = next(m for m in lane_members if m.activations[j] == name)
            fns.append(m.activation_fns[j])
        out.append(fns)
    return out


def _codes_of(variant: tuple[str, ...], j: int, lane_members: Sequence[Member]) -> int:
    return branch_names(lane_members)[j].index(variant[j])
