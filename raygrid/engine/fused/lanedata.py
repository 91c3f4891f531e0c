"""Each lane's data in the process that trains: its training and validation rows and their
weights (see ``options.lane_rows``), the validation data of a search, and the quantity an
EarlyStopping lane monitors, resolved against the built Keras model."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from raygrid._compat import keras_compile_config, keras_metric_direction
from raygrid.engine.fitting import Payload, num_samples, take
from raygrid.engine.fused.members import Member, validated_y
from raygrid.engine.fused.options import LaneRows, NotFusable, Stopping, lane_rows
from raygrid.engine.fused.plan import Lane


def effective(payload: Payload, lane: Lane) -> dict:
    out = dict(payload.estimator.get_params(deep=False))
    out.update(lane.params)
    return out


def validation_data(payload: Payload, eff: Mapping[str, Any]) -> tuple | None:
    """``(X, y, sample_weight or None)`` of the validation data the lane's fit gets (a fit
    parameter, else ``fit__validation_data``), as Keras unpacks it; None if there is none."""
    data = (payload.fit_params or {}).get("validation_data")
    if data is None:
        data = eff.get("fit__validation_data")
    if data is None:
        return None
    if not isinstance(data, (tuple, list)) or len(data) not in (2, 3):
        raise NotFusable("validation_data other than (X, y) or (X, y, sample_weight) is not "
                         "supported by the fused engine")
    x, y = np.asarray(data[0]), np.asarray(data[1])
    sw = None if len(data) == 2 or data[2] is None else np.asarray(data[2], np.float32)
    if x.ndim < 1 or len(x) != len(y) or (sw is not None and len(sw) != len(x)):
        raise NotFusable("validation_data's X, y (and sample_weight) differ in length")
    return x, y, sw


def rows_of(payload: Payload, lane: Lane, n_rows: int | None = None) -> LaneRows:
    """The lane's rows: positions in X (validation data, if any, from position ``n_rows``: the
    group appends it after X's rows)."""
    options = lane.options
    train = np.asarray(payload.splits[lane.fold][0])
    eff = effective(payload, lane)
    sample_weight = (payload.fit_params or {}).get("sample_weight")
    if sample_weight is not None:
        if num_samples(sample_weight) != num_samples(payload.X):
            raise NotFusable("sample_weight does not have one value per row of X")
        sample_weight = take(sample_weight, train)
    vdata = validation_data(payload, eff) if options.validation_data else None
    n_val = 0 if vdata is None else len(vdata[0])
    return lane_rows(train, validated_y(payload.estimator, take(payload.y, train)), options, eff,
                     sample_weight, n_val, None if vdata is None else vdata[2],
                     num_samples(payload.X) if n_rows is None else n_rows)


@dataclass
class Monitor:
    """What a group's lanes monitor: the training or validation loss, or a compiled metric."""

    on_validation: bool
    metric: Any = None  # the Keras metric object; None: the loss


def _compiled_metrics(member: Member, payload: Payload, fold: int) -> list:
    """The model's compiled metrics, built on a few rows (Keras builds them on its first batch)
    and reset."""
    model = member.model

    def flat():
        return [m for top in model.metrics for m in (getattr(top, "metrics", None) or [])]

    if not flat():
        train = np.asarray(payload.splits[fold][0])[:4]
        x = np.asarray(take(payload.X, train), dtype=np.float32)
        y = member.encoders[fold].transform(validated_y(member.estimator, take(payload.y, train)))
        model.compute_metrics(x, y, model(x), None)
        model.reset_metrics()
    return flat()


def resolve_monitor(member: Member, payload: Payload, fold: int, stopping: Stopping) -> Monitor:
    """The monitored quantity of ``stopping`` in ``member``'s model, or NotFusable (a name the
    model does not log: Keras warns and never stops, or refuses mode="auto")."""
    if stopping.quantity == "loss":
        return Monitor(stopping.on_validation)
    config = keras_compile_config(member.model) or {}
    if config.get("weighted_metrics"):
        raise NotFusable("EarlyStopping on a metric of a model compiled with weighted_metrics is "
                         "not supported by the fused engine")
    found = [m for m in _compiled_metrics(member, payload, fold) if m.name == stopping.quantity]
    if len(found) != 1:
        raise NotFusable(f"EarlyStopping monitors {stopping.monitor!r}, which this model does not "
                         "log once under that name (the fused engine computes the loss and the "
                         "compiled metrics)")
    return Monitor(stopping.on_validation, found[0])


def direction(member: Member, stopping: Stopping, monitor: Monitor) -> int:
    """+1 where lower is better, -1 where higher is (EarlyStopping's ``mode``)."""
    if stopping.mode != "auto":
        return 1 if stopping.mode == "min" else -1
    if monitor.metric is None:
        return 1
    way = keras_metric_direction(monitor.metric)
    if way is None:
        raise NotFusable(f"EarlyStopping(mode='auto') cannot tell which way {stopping.monitor!r} "
                         "improves (Keras refuses it); set mode='min' or 'max'")
    return -1 if way == "up" else 1


def check_lane(payload: Payload, lane: Lane, member: Member) -> None:
    """NotFusable where the lane's rows or its monitored quantity cannot be made here."""
    options = lane.options
    if options is None:
        return
    rows_of(payload, lane)
    if options.stopping is not None:
        monitor = resolve_monitor(member, payload, lane.fold, options.stopping)
        direction(member, options.stopping, monitor)
