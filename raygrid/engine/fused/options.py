"""A trial's training options as the fused program honours them, read without Keras.

What Keras' ``fit`` (through scikeras) does with them, and what a lane replays:

* ``validation_split``: the LAST fraction of the fit's training rows (in the order the fit got
  them, before any shuffling) is held out: ``floor(n * (1 - split))`` rows train, the rest
  are evaluated after each epoch (``val_loss``, ``val_<metric>``), in batches of
  ``validation_batch_size`` (else the training batch size), the model in inference mode;
* ``validation_data``: evaluated the same way, the split then ignored (as Keras does);
* ``sample_weight`` (a fit parameter, split per fold like scikit-learn splits it) and
  ``class_weight`` (scikeras multiplies the sample weights by scikit-learn's
  ``compute_sample_weight(class_weight, y)`` of the fold's labels): rows of weight 0 are dropped
  before training (scikeras does so), the others weigh their row's loss; the loss of a batch is
  then ``sum(weight * loss) / rows`` (Keras' ``sum_over_batch_size``) and the validation
  rows keep their weights;
* ``keras.callbacks.EarlyStopping``: its settings (:class:`Stopping`) become lane values, the
  monitored quantity is computed in the program after each epoch, and each lane stops on its
  own (see ``raygrid.engine.fused.stopping``).

Any other callback, ``validation_freq``, ``validation_steps``, Keras' own ``fit__class_weight``
and other ``fit__*`` options leave the fit to the standard engine, with the reason in the
user's terms.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

#: ``fit__*`` parameters the fused engine honours.
FIT_ROUTED_OK = frozenset({"epochs", "batch_size", "shuffle", "verbose", "validation_split",
                           "validation_batch_size", "callbacks", "validation_data",
                           "validation_freq"})
#: Parameters about training only (never the built model) that these options read.
TRAINING_ONLY = frozenset({"callbacks", "fit__callbacks", "validation_split",
                           "fit__validation_split", "class_weight", "fit__validation_data",
                           "fit__validation_batch_size"})
#: Fit parameters (``search.fit(X, y, **fit_params)``) the fused engine honours.
FIT_PARAMS_OK = frozenset({"sample_weight", "validation_data"})
KERAS_DEFAULT_BATCH = 32
_EARLY_STOPPING = "EarlyStopping"


class NotFusable(Exception):
    """A trial (or a whole search) the fused engine leaves to the standard executor."""


@dataclass(frozen=True)
class Stopping:
    """``keras.callbacks.EarlyStopping``'s settings (Keras 3's semantics; see its source)."""

    monitor: str
    min_delta: float  # its absolute value, as Keras keeps it
    patience: int
    mode: str  # "auto", "min" or "max"
    baseline: float | None
    restore_best_weights: bool
    start_from_epoch: int

    @property
    def on_validation(self) -> bool:
        return self.monitor.startswith("val_")

    @property
    def quantity(self) -> str:
        """The monitored name without ``val_``: ``loss`` or a compiled metric's name."""
        return self.monitor.removeprefix("val_")


@dataclass(frozen=True)
class FitOptions:
    """How one trial trains, as far as the fused program is concerned."""

    epochs: int
    batch: int  # -1: the whole training set in one batch
    shuffle: bool
    validation_split: float = 0.0
    validation_data: bool = False  # validation_data given (a fit parameter or fit__validation_data)
    validation_batch: int | None = None
    stopping: Stopping | None = None
    weighted: bool = False  # sample_weight or class_weight

    @property
    def validates(self) -> bool:
        return self.validation_data or self.validation_split > 0

    def shared(self) -> tuple:
        """What every lane of one program shares (its batching, what it evaluates each epoch)."""
        monitor = None if self.stopping is None else self.stopping.monitor
        return (self.batch, self.shuffle, self.validates, self.validation_batch, monitor,
                self.weighted)


def _flat_callbacks(value: Any) -> list:
    """scikeras' forms of ``callbacks``: one callback, a list (nested lists too) or a dict."""
    if value is None:
        return []
    if isinstance(value, Mapping):
        value = list(value.values())
    if not isinstance(value, (list, tuple)):
        value = [value]
    out = []
    for item in value:
        out += _flat_callbacks(item) if isinstance(item, (list, tuple, Mapping)) else [item]
    return out


def _is_keras_early_stopping(cb: Any) -> bool:
    kind = type(cb)
    return kind.__name__ == _EARLY_STOPPING and kind.__module__.split(".")[0] == "keras"


def _stopping(callbacks: list) -> Stopping | None:
    found = None
    for cb in callbacks:
        if isinstance(cb, type):
            raise NotFusable(f"callback {cb.__name__} given as a class (scikeras builds it) is "
                             "not supported by the fused engine; pass an instance")
        name = type(cb).__name__
        if not _is_keras_early_stopping(cb):
            raise NotFusable(f"callback {name} is not supported by the fused engine")
        if found is not None:
            raise NotFusable("more than one EarlyStopping callback is not supported by the "
                             "fused engine")
        baseline = getattr(cb, "baseline", None)
        mode = getattr(cb, "mode", "auto")
        found = Stopping(
            monitor=str(cb.monitor), min_delta=abs(float(cb.min_delta)), patience=int(cb.patience),
            mode=mode if mode in ("min", "max") else "auto",
            baseline=None if baseline is None else float(baseline),
            restore_best_weights=bool(cb.restore_best_weights),
            start_from_epoch=int(getattr(cb, "start_from_epoch", 0) or 0))
    return found


def _number(value: Any, what: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise NotFusable(f"{what}={value!r} is not supported by the fused engine")
    value = float(value)
    if not low <= value < high:
        raise NotFusable(f"{what}={value!r} is not supported by the fused engine")
    return value


def parse(eff: Mapping[str, Any], fit_params: Mapping[str, Any] | None = None) -> FitOptions:
    """The options of one trial (``eff``: the estimator's parameters with the candidate's),
    or NotFusable with the reason."""
    fit_params = fit_params or {}
    for key, value in eff.items():
        if key.startswith("fit__") and key[5:] not in FIT_ROUTED_OK and value is not None:
            raise NotFusable(f"{key} is not supported by the fused engine")
        if key.startswith(("callbacks__", "fit__callbacks__")):
            raise NotFusable(f"{key} (a callback built by scikeras) is not supported by the "
                             "fused engine")
    for key in ("validation_steps", "initial_epoch"):
        if eff.get(key):
            raise NotFusable(f"{key} is not supported by the fused engine")
    if eff.get("fit__validation_freq", eff.get("validation_freq", 1)) not in (1, None):
        raise NotFusable("validation_freq other than 1 is not supported by the fused engine")
    for key, value in fit_params.items():
        if value is not None and key not in FIT_PARAMS_OK:
            raise NotFusable(f"the fit parameter {key} is not supported by the fused engine")
    stopping = _stopping(_flat_callbacks(eff.get("callbacks"))
                         + _flat_callbacks(eff.get("fit__callbacks")))
    epochs = eff.get("fit__epochs", eff.get("epochs", 1))
    batch = eff.get("fit__batch_size", eff.get("batch_size"))
    shuffle = eff.get("fit__shuffle", eff.get("shuffle", True))
    if isinstance(epochs, bool) or not isinstance(epochs, (int, np.integer)) or epochs < 0:
        raise NotFusable(f"epochs={epochs!r} is not supported")
    if batch is None:
        batch = KERAS_DEFAULT_BATCH
    if (isinstance(batch, bool) or not isinstance(batch, (int, np.integer))
            or (batch < 1 and batch != -1)):
        raise NotFusable(f"batch_size={batch!r} is not supported")
    if shuffle not in (True, False):
        raise NotFusable(f"shuffle={shuffle!r} is not supported")
    split = eff.get("fit__validation_split", eff.get("validation_split")) or 0.0
    split = _number(split, "validation_split", 0.0, 1.0)
    vdata = (fit_params.get("validation_data") is not None
             or eff.get("fit__validation_data") is not None)
    vbatch = eff.get("fit__validation_batch_size", eff.get("validation_batch_size"))
    if vbatch is not None and (isinstance(vbatch, bool) or not isinstance(vbatch, (int, np.integer))
                               or (vbatch < 1 and vbatch != -1)):
        raise NotFusable(f"validation_batch_size={vbatch!r} is not supported")
    if stopping is not None and stopping.on_validation and not (split > 0 or vdata):
        raise NotFusable(f"EarlyStopping monitors {stopping.monitor!r} without validation data "
                         "(Keras never stops such a fit): not fused")
    weighted = (eff.get("class_weight") is not None
                or fit_params.get("sample_weight") is not None)
    return FitOptions(int(epochs), int(batch), bool(shuffle), split, vdata,
                      None if vbatch is None else int(vbatch), stopping, weighted)


@dataclass
class LaneRows:
    """The rows one lane trains and validates on (positions in X), with their weights."""

    train: np.ndarray
    val: np.ndarray | None = None
    train_weight: np.ndarray | None = None  # per training row (None: all 1)
    val_weight: np.ndarray | None = None


def lane_rows(train: np.ndarray, y_train: Any, options: FitOptions, eff: Mapping[str, Any],
              sample_weight: Any = None, n_val: int = 0, val_weight: Any = None,
              val_start: int = 0) -> LaneRows:
    """What scikeras and Keras make of a fold's training rows ``train`` (labels ``y_train``):
    weights (sample_weight x class_weight), rows of weight 0 dropped, the validation split
    (or ``n_val`` rows of validation data from position ``val_start``). Raises NotFusable
    where scikeras or Keras would raise (the standard engine then reports it)."""
    train = np.asarray(train)
    weight = None
    if sample_weight is not None:
        weight = np.asarray(sample_weight, dtype=np.float32).reshape(-1).copy()
    class_weight = eff.get("class_weight")
    if class_weight is not None:
        from sklearn.utils.class_weight import compute_sample_weight

        cw = compute_sample_weight(class_weight=class_weight, y=y_train)
        weight = cw.astype(np.float32) if weight is None else (weight * cw).astype(np.float32)
    if weight is not None:
        if weight.shape[0] != len(train):
            raise NotFusable("sample_weight does not match the training rows")
        if np.all(weight == 0):
            raise NotFusable("every training row has weight 0 (scikeras refuses such a fit)")
        keep = weight != 0
        train, weight = train[keep], weight[keep]
    out = LaneRows(train, None, weight)
    if options.validation_data:
        out.val = np.arange(val_start, val_start + n_val)
        out.val_weight = None if val_weight is None else np.asarray(val_weight, np.float32)
    elif options.validation_split > 0:
        n = len(train)
        split_at = int(math.floor(n * (1.0 - options.validation_split)))
        if split_at in (0, n):
            raise NotFusable(f"validation_split={options.validation_split} leaves no training or "
                             f"no validation rows of {n} (Keras refuses such a fit)")
        out.train, out.val = train[:split_at], train[split_at:]
        if weight is not None:
            out.train_weight, out.val_weight = weight[:split_at], weight[split_at:]
    return out
