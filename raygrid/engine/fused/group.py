"""Running one group: its lanes' values prepared and stacked, the program compiled and trained
in segments between the requested epoch counts, each trial scored."""
from __future__ import annotations

import time
from typing import Any, Sequence

import numpy as np

from raygrid.engine.fitting import FitResult, Payload, location, targets
from raygrid.engine.fused.members import member_for, validated_y
from raygrid.engine.fused.plan import GroupSpec
from raygrid.engine.fused.lanedata import (direction, effective, resolve_monitor, rows_of,
                                           validation_data)
from raygrid.engine.fused.program import (Installed, Layout, Switch, activation_branches,
                                          branch_names, segment_fn, switch_works, trace_lock)
from raygrid.engine.fused.stopping import initial_state, lane_settings
from raygrid.engine.fused.runtime import configure_compilation_cache, without_tensorflow
from raygrid.engine.fused.scoring import GroupScorer

#: Above this many (lane, epoch, row) entries, shuffling is drawn inside the program instead.
_HOST_ORDER_LIMIT = 64_000_000


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


def _stack_dicts(rows: Sequence[dict]) -> dict:
    out = {}
    for key, value in rows[0].items():
        if isinstance(value, list):
            out[key] = [np.stack([np.asarray(r[key][j]) for r in rows]) for j in range(len(value))]
        else:
            out[key] = np.stack([np.asarray(r[key]) for r in rows])
    return out


def _lane_extras(payload: Payload, spec: GroupSpec, template, rows, n_all: int,
                 layout: Layout) -> dict:
    """Lane values for weights, validation rows and EarlyStopping; fills in ``layout``."""
    out: dict = {}
    options = [lane.options for lane in spec.lanes]
    if any(r.train_weight is not None or r.val_weight is not None for r in rows):
        layout.weighted = True
        w = np.ones((len(rows), n_all), np.float32)
        for i, r in enumerate(rows):
            if r.train_weight is not None:
                w[i, r.train] = r.train_weight
            if r.val_weight is not None:
                w[i, r.val] = r.val_weight
        out["w"] = w
    if rows[0].val is not None:
        nv = [len(r.val) for r in rows]
        layout.nv_max = max(nv)
        size = options[0].validation_batch or spec.batch_size
        layout.vbatch = layout.nv_max if size == -1 else min(size, layout.nv_max)
        layout.vsteps = -(-layout.nv_max // layout.vbatch)
        vidx = np.zeros((len(rows), layout.nv_max), np.int32)
        for i, r in enumerate(rows):
            vidx[i, :len(r.val)] = r.val
        out.update(vidx=vidx, nv=np.asarray(nv, np.int32))
    stops = [o.stopping for o in options if o is not None and o.stopping is not None]
    if stops and len(stops) == len(options):
        fold = spec.lanes[0].fold
        layout.monitor = resolve_monitor(template, payload, fold, stops[0])
        signs = [direction(template, s, layout.monitor) for s in stops]
        layout.restore = any(s.restore_best_weights for s in stops)
        out["stop"] = lane_settings(stops, signs)
    return out


def run_group(payload: Payload, spec: GroupSpec, members: dict | None = None,
              where: tuple[str, int] | None = None) -> tuple[list[FitResult], dict]:
    """Train every lane of ``spec`` at once, score each of its trials: (results, stats)."""
    with without_tensorflow():
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
    if len(variants) > 1 and not switch_works(lane_members, variants):
        # The activations cannot be switched in this model: train each variant on its own.
        results, stats = [], []
        for variant in variants:
            sub = GroupSpec(spec.key + "/" + "-".join(variant), spec.batch_size, spec.shuffle,
                            [lane for lane, m in zip(spec.lanes, lane_members)
                             if m.activations == variant], spec.shared)
            r, s = _run_program(payload, sub, members, where, time.perf_counter() - t0)
            results += r
            stats.append(s)
            t0 = time.perf_counter()
        summed = ("lanes", "trials", "programs", "prep_s", "lower_s", "compile_s", "train_s",
                  "score_s")
        merged = {k: sum(s[k] for s in stats) if k in summed else stats[0][k] for k in stats[0]}
        return results, merged
    return _run_program(payload, spec, members, where, time.perf_counter() - t0)


class GroupRun:
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

        # Data: X once (validation data after its rows); each fold's encoded targets on its
        # training rows; each lane's rows and weights (options.lane_rows).
        self.X = _as_float32(check_array(payload.X, dtype=None, allow_nd=True))
        n_rows = self.X.shape[0]
        vdata = None
        if spec.lanes[0].options is not None and spec.lanes[0].options.validation_data:
            vdata = validation_data(payload, effective(payload, spec.lanes[0]))
            self.X = np.concatenate([self.X, _as_float32(vdata[0]).reshape(
                (-1,) + self.X.shape[1:])])
        self.rows = rows = [rows_of(payload, lane, n_rows) for lane in spec.lanes]
        folds = sorted({lane.fold for lane in spec.lanes})
        fold_pos = {f: i for i, f in enumerate(folds)}
        Y = None
        for f in folds:
            train = payload.splits[f][0]
            yt = _as_float32(template.encoders[f].transform(
                validated_y(template.estimator, targets(payload, f, train))))
            if Y is None:
                Y = np.zeros((len(folds), self.X.shape[0]) + yt.shape[1:], dtype=yt.dtype)
            Y[fold_pos[f], train] = yt
            if vdata is not None:
                Y[fold_pos[f], n_rows:] = np.asarray(vdata[1], Y.dtype).reshape(
                    (-1,) + Y.shape[2:])
        self.Y = Y
        n_train = [len(r.train) for r in rows]
        self.n_max = n_max = max(n_train)
        self.batch = batch = n_max if spec.batch_size == -1 else spec.batch_size
        self.steps = -(-n_max // batch)
        layout = Layout(batch, self.steps, n_max, spec.shuffle)
        extra = _lane_extras(payload, spec, template, rows, self.X.shape[0], layout)

        # Lane values: rows, initial weights, optimizer variables, switch codes, shuffling keys.
        idx = np.zeros((L, n_max), np.int32)
        for i, r in enumerate(rows):
            idx[i, :len(r.train)] = r.train
        opt_keys = sorted({m.opt_key for m in lane_members})
        self.optimizers = optimizers = []
        with trace_lock:
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
        names = branch_names(lane_members)
        self.switches = [Switch(fns) for fns in activation_branches(lane_members)] if len(
            {m.activations for m in lane_members}) > 1 else []
        n_sw = len(self.switches)
        codes = np.array([[names[j].index(m.activations[j]) for j in range(n_sw)]
                          for m in lane_members], np.int32).reshape(L, n_sw)
        ocode = np.array([opt_keys.index(m.opt_key) for m in lane_members], np.int32)
        self.lanes_arr = {
            "idx": idx, "n": np.asarray(n_train, np.int32),
            "fold": np.array([fold_pos[lane.fold] for lane in spec.lanes], np.int32),
            "codes": codes, "ocode": ocode, **extra,
        }
        # Shuffling: Keras' fit draws np.random.permutation(n) each epoch, after scikeras seeded
        # NumPy with random_state; the same orders are drawn here per lane (same seed, same
        # order), unless that table would be too large: then keys shuffle inside the program.
        self.layout = layout
        epochs_max = max(lane.max_epochs for lane in spec.lanes)
        if spec.shuffle and L * max(epochs_max, 1) * n_max <= _HOST_ORDER_LIMIT:
            layout.shuffle = "host"
            orders = np.zeros((L, max(epochs_max, 1), n_max), np.int32)
            for i, lane in enumerate(spec.lanes):
                train = rows[i].train
                rs = np.random.RandomState(lane.seed)
                if lane_members[i].fit_peeks:
                    rs.permutation(len(train))
                for e in range(epochs_max):
                    orders[i, e, :len(train)] = train[rs.permutation(len(train))]
            self.lanes_arr["orders"] = orders
        elif spec.shuffle:
            layout.shuffle = True
            self.lanes_arr["key"] = np.asarray(jax.random.key_data(jax.vmap(jax.random.key)(
                jnp.asarray([lane.seed for lane in spec.lanes], dtype=jnp.uint32))))
        es = None
        if layout.monitor is not None:
            es = _stack_dicts([initial_state(t, n, layout.restore)
                               for t, n in zip(tv_rows, ntv_rows)])
        self.state = (_stack(tv_rows), _stack(ntv_rows), [_stack(r) for r in ov_rows],
                      np.int32(0), es)
        # The compiled metrics may have been built since the member was (to be monitored).
        self.metrics_values = [np.asarray(v.value) for v in model.metrics_variables]
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
        with trace_lock:
            fn = segment_fn(template.model, self.metrics_values, self.template_opt_values,
                            self.optimizers, self.switches, self.layout)
            with Installed(template.slot_layers if self.switches else [], self.switches):
                lowered = jax.jit(fn).lower(self.state, self.lanes_arr, np.int32(0), self.X,
                                            self.Y)
        self.lower_s = time.perf_counter() - t
        t = time.perf_counter()
        self.compiled = lowered.compile()
        self.compile_s = time.perf_counter() - t

    def train_to(self, epochs: int) -> Any:
        """Train every lane up to ``epochs`` in all; returns each lane's predictions on all rows
        (from the weights a fit of ``epochs`` ends with: the best epoch's where EarlyStopping
        restores them). ``self.trained``: the epochs each lane trained (fewer where stopped)."""
        import jax

        if self.compiled is None:
            self.compile()
        t = time.perf_counter()
        self.state, preds, trained = self.compiled(
            self.state, self.lanes_arr, np.int32(epochs - self.epochs_done), self.X, self.Y)
        preds = jax.tree.map(np.asarray, preds)
        self.trained = np.asarray(trained)
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
    run = GroupRun(payload, spec, members)
    run.compile()
    scorer = GroupScorer(payload, run.lane_members[0].estimator)
    # Train in segments between the requested epoch counts; score after each.
    boundaries = sorted({e for lane in spec.lanes for e in lane.trials})
    scored: list[tuple[FitResult, int]] = []
    score_s = 0.0
    for target in boundaries:
        preds = run.train_to(target)
        t_score = time.perf_counter()
        items = [(i, trial) for i, lane in enumerate(spec.lanes)
                 for trial in lane.trials.get(target, ())]
        for (i, _), result in zip(items, scorer.score(preds, items, run.lane_members, spec.lanes,
                                                      node, pid)):
            if run.layout.monitor is not None:  # EarlyStopping: the epochs this fit trained
                result.stopped_epoch = int(run.trained[i])
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
