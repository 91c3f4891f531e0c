"""What identifies a fit: the versions of the libraries that decide results, and the
fingerprints of a search's trials, built from :mod:`raygrid.engine.describe`'s descriptions.

A fingerprint is a sha256 of everything that decides a fit's result (the estimator's class and
all parameters with the candidate applied, user code by value, installed code by distribution
and version, the data, the fold's train/test indices and number, the scoring spec,
``error_score``, ``return_train_score`` and library versions). What cannot be described raises
``Unhashable``: such a fit is run (and stored), never reused.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import os
import warnings
from typing import Any, Mapping, Sequence

import numpy as np
from sklearn.base import clone

from raygrid.engine.describe import Describer, Unhashable, array_digest, digest, qualname
from raygrid.engine.plan import Trial

FINGERPRINT_VERSION = 3  # bump when what goes into a fingerprint changes


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def class_identity(cls: type) -> tuple:
    """How a fingerprint describes an estimator class: an installed one by its distribution and
    version, one of the user's by its code and the user code it reaches."""
    return Describer()(cls)


def library_versions() -> dict[str, str | None]:
    """Versions that decide fit results (read from package metadata; imports nothing heavy)."""
    out: dict[str, str | None] = {}
    for dist in ("raygrid", "scikit-learn", "numpy", "scipy", "keras", "scikeras"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = None
    if out["raygrid"] is None:
        from raygrid.version import __version__

        out["raygrid"] = __version__
    return out


class Fingerprinter:
    """Fingerprints of trials: one hash of what the search shares, one per candidate, per fold."""

    def __init__(self, *, estimator: Any, X: Any, y: Any, splits: Sequence[tuple[np.ndarray, np.ndarray]],
                 fit_params: Mapping[str, Any] | None = None, scoring: Any = None,
                 error_score: Any = np.nan, return_train_score: bool = False, keras: bool = False,
                 task: Any = None):
        self.estimator = estimator
        self.keras = keras
        self.reusable = True  # False when some input cannot be fingerprinted: every fit runs
        self._candidates: dict[int, str] = {}
        self._base: dict[str, Any] | None = None
        self._describe = Describer()  # one for the search: each piece of user code described once
        describe = self._describe
        try:
            head = (
                ("fingerprint", FINGERPRINT_VERSION),
                ("versions", library_versions()),
                ("X", describe(X)),
                ("y", describe(y)),
                ("fit_params", describe(dict(fit_params or {}))),
                ("scoring", describe(scoring)),
                ("error_score", repr(error_score)),
                ("return_train_score", bool(return_train_score)),
                ("keras_backend", os.environ.get("KERAS_BACKEND", "tensorflow") if keras else None),
            )
            described = task.describe() if task is not None else (None, None, None)
            if any(v is not None for v in described):  # predictions, partial_fit: other fits
                head += (("task", describe(described)),)
            self.key = digest(head, describer=self._describe)
        except Unhashable as exc:
            self._not_reusable(f"the data, fit parameters or scoring ({exc})")
            self.key = _sha(os.urandom(32))
        self.folds = [
            digest("fold", i, array_digest(np.asarray(tr, dtype=np.int64)),
                   array_digest(np.asarray(te, dtype=np.int64)))
            for i, (tr, te) in enumerate(splits)
        ]
        rows = getattr(task, "target_rows", None)  # a permuted target is part of its fold
        for i, permuted in enumerate(rows or ()):
            if permuted is not None:
                self.folds[i] = digest(self.folds[i], array_digest(np.asarray(permuted, np.int64)))

    def _not_reusable(self, what: str) -> None:
        if self.reusable:
            warnings.warn(f"raygrid cannot fingerprint {what}; these fits are stored but will not "
                          "be reused by a later search.", UserWarning, stacklevel=3)
        self.reusable = False

    def candidate(self, params: Mapping[str, Any]) -> str:
        """Hash of the estimator with ``params`` applied: class and every parameter, nested too.

        Candidates that set only top-level parameters are hashed from the template's parameters
        (described once) with theirs replaced; others (``step__param``, replaced steps) go
        through ``clone(...).set_params(...)``. Both give the same hash for the same estimator.
        """
        describe = self._describe
        try:
            if self._base is None:
                self._base = {k: describe(v) for k, v in self.estimator.get_params(deep=False).items()}
            if all(k in self._base for k in params):
                described = {**self._base, **{k: describe(v) for k, v in params.items()}}
                return self._estimator_digest(type(self.estimator), described)
            est = clone(self.estimator).set_params(**dict(params))
            return self._estimator_digest(type(est), {k: describe(v) for k, v in
                                                      est.get_params(deep=False).items()})
        except Unhashable as exc:
            self._not_reusable(f"a parameter of the estimator ({exc})")
            return _sha(os.urandom(32))

    def _estimator_digest(self, cls: type, described: Mapping[str, Any]) -> str:
        items = tuple(sorted(described.items()))
        return _sha(repr(("estimator", qualname(cls), self._describe(cls), items)).encode())

    def trial(self, trial: Trial, engine: str | None = None) -> str:
        """The fit's identity; ``engine`` (default: the trial's planned one) and the seed are part
        of it, so a fused fit (trained with its lane's seed) is never taken for a standard one."""
        cand = self._candidates.get(trial.candidate)
        if cand is None:
            cand = self._candidates[trial.candidate] = self.candidate(trial.params)
        seed = trial.seed if self.keras else None  # only Keras fits use raygrid's per-fit seed
        engine = trial.engine if engine is None else engine
        tag = "" if engine == "standard" else f"|{engine}"  # standard fits keep their identity
        return _sha(f"{self.key}|{cand}|{self.folds[trial.fold]}|{trial.fold}|{seed}{tag}".encode())

