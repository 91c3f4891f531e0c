"""Doubles for the store and fault tests: estimators that log every fit they really execute.

Imported by name (``fault_helpers``) in the pytest process and in the driver scripts the tests
start as subprocesses (with ``tests/`` on their path); Ray workers get its classes by value.
"""
from __future__ import annotations

import os
import signal
import sys
import time

import numpy as np
import ray.cloudpickle
from sklearn.base import BaseEstimator, ClassifierMixin

# Ray workers cannot import this module by name (only the driver's script directory and working
# directory are on their path): ship its classes by value.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


def data(n: int = 60, seed: int = 0, n_features: int = 3):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, n_features))
    y = np.arange(n) % 2
    return X, y


def _kill_self() -> None:
    os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(30)  # never reached: SIGKILL cannot be caught


class CountingClassifier(ClassifierMixin, BaseEstimator):
    """A classifier whose score is an exact function of (a, b, the test rows).

    ``log``: a file; every completed ``fit`` appends one line ``a b n_train checksum pid``, so a
    test can count the fits that really ran (and see any that ran twice).
    ``sleep``: seconds ``fit`` takes (before the line is written).
    ``crash``: ``"first"`` kills the worker process (SIGKILL) on the first fit with ``a ==
    crash_on`` (a ``marker`` file makes it happen once across processes); ``"always"`` on every
    such fit. ``fail_on``: fits with ``a == fail_on`` raise ValueError (a user failure).
    """

    def __init__(self, a=0, b=0, log=None, sleep=0.0, crash=None, crash_on=None, marker=None,
                 fail_on=None):
        self.a = a
        self.b = b
        self.log = log
        self.sleep = sleep
        self.crash = crash
        self.crash_on = crash_on
        self.marker = marker
        self.fail_on = fail_on

    def fit(self, X, y):
        X = np.asarray(X)
        if self.sleep:
            time.sleep(self.sleep)
        if self.crash and self.a == self.crash_on:
            if self.crash == "always":
                _kill_self()
            try:
                fd = os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                pass
            else:
                os.close(fd)
                _kill_self()
        if self.fail_on is not None and self.a == self.fail_on:
            raise ValueError(f"planned failure for a={self.a}")
        self.classes_ = np.unique(y)
        if self.log:
            line = f"{self.a} {self.b} {len(X)} {float(np.round(X.sum(), 6))} {os.getpid()}\n"
            with open(self.log, "a") as fh:
                fh.write(line)
        return self

    def predict(self, X):
        return np.full(len(X), self.classes_[0])

    def score(self, X, y=None, sample_weight=None):
        return float(self.a) * 0.01 + float(self.b) * 0.001 + float(np.mean(np.asarray(X)))


def fits_logged(log) -> list[tuple[str, str, str, str]]:
    """The fits a log recorded, as (a, b, n_train, checksum) (the pid left out)."""
    if not os.path.exists(log):
        return []
    with open(log) as fh:
        return [tuple(line.split()[:4]) for line in fh if line.strip()]


def store_rows(storage) -> int:
    """Rows in a store, read without raygrid (0 while the store does not exist yet)."""
    import sqlite3

    path = os.path.join(storage, "fits.sqlite")
    if not os.path.exists(path):
        return 0
    try:
        conn = sqlite3.connect(path, timeout=5)
        try:
            return conn.execute("SELECT COUNT(*) FROM fits").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.DatabaseError:
        return 0


class RejectingClassifier(CountingClassifier):
    """``set_params`` rejects ``a == reject`` (a ValueError), as estimators that check values do."""

    def __init__(self, a=0, b=0, log=None, reject=None):
        super().__init__(a=a, b=b, log=log)
        self.reject = reject

    def set_params(self, **params):
        if self.reject is not None and params.get("a") == self.reject:
            raise ValueError(f"a={params['a']} is not allowed")
        return super().set_params(**params)


class Abort(BaseException):
    """Not an Exception: escapes a fit's error handling and breaks the task that runs it."""


class AbortingClassifier(CountingClassifier):
    """``fit`` raises :class:`Abort` (a BaseException) when ``a == abort_on``."""

    def __init__(self, a=0, b=0, log=None, abort_on=None):
        super().__init__(a=a, b=b, log=log)
        self.abort_on = abort_on

    def fit(self, X, y):
        if self.abort_on is not None and self.a == self.abort_on:
            raise Abort(f"abort a={self.a}")
        return super().fit(X, y)


class DyingClassifier(CountingClassifier):
    """``fit`` ends its own process when ``a == die_on``: ``how="exit"`` (``os._exit``) or
    ``"segv"`` (a segmentation fault, as a broken extension gives)."""

    def __init__(self, a=0, b=0, log=None, die_on=None, how="exit"):
        super().__init__(a=a, b=b, log=log)
        self.die_on = die_on
        self.how = how

    def fit(self, X, y):
        if self.die_on is not None and self.a == self.die_on:
            if self.how == "segv":
                import ctypes

                ctypes.string_at(0)  # reads address 0: SIGSEGV
            os._exit(3)
        return super().fit(X, y)


class HangingClassifier(CountingClassifier):
    """``fit`` hangs (sleeps ``hang_s``, 10 minutes by default) when ``a == hang_on``, after
    writing its process id to ``pid_file``."""

    def __init__(self, a=0, b=0, log=None, hang_on=None, pid_file=None, hang_s=600.0):
        super().__init__(a=a, b=b, log=log)
        self.hang_on = hang_on
        self.pid_file = pid_file
        self.hang_s = hang_s

    def fit(self, X, y):
        if self.hang_on is not None and self.a == self.hang_on:
            if self.pid_file:
                with open(self.pid_file, "a") as fh:
                    fh.write(f"{os.getpid()}\n")
            time.sleep(self.hang_s)
        return super().fit(X, y)
