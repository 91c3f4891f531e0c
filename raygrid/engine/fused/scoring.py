"""Scoring a group's trials from its lanes' predictions: plain accuracy vectorised, else the
search's own scorer through a stand-in estimator that returns a lane's predictions."""
from __future__ import annotations

import time
import traceback
from typing import Any

import numpy as np

from raygrid._compat import sklearn_scorer_parts
from raygrid.engine.fitting import FitResult, Payload, split_fit_params, take, targets
from raygrid.engine.fused.members import validated_y


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
        y = validated_y(self._estimator, y)
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


def _is_accuracy(payload: Payload, estimator: Any) -> bool:
    """True when the search's scorer is plain accuracy on ``predict`` (then scored vectorised)."""
    if payload.metrics != ("score",) or payload.score_params:
        return False
    scorer = payload.scorer
    try:
        import scikeras.wrappers as w
        from sklearn.metrics import accuracy_score

        parts = sklearn_scorer_parts(scorer)
        if parts is None:
            return False
        if parts["passthrough"]:
            score_params = [k for k in estimator.get_params() if k.startswith("score__")]
            return (type(estimator).scorer is w.KerasClassifier.scorer and not score_params
                    and getattr(type(estimator), "score", None) is w.BaseWrapper.score)
        return (parts["score_func"] is accuracy_score and not parts["kwargs"]
                and parts["sign"] == 1 and parts["response_method"] == "predict")
    except Exception:  # noqa: BLE001 - anything unexpected: the scorer itself is called
        return False


class GroupScorer:
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
            self._rows[key] = (rows, take(self.payload.X, rows), targets(self.payload, fold, rows),
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
