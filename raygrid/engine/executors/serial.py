"""In-process, one fit after another: for debugging, tests, and as the oracle for the Ray executor.

With ``fit_timeout`` a fit is interrupted in this process when its time is up (``SIGALRM``, in
the main thread): a :class:`~raygrid.engine.fitting.FitTimeout` raised inside it becomes that
fit's error row. Python code stops at once; a fit stuck inside one long call of compiled code stops
when that call returns (only a separate process can be killed: ``backend="auto"`` and ``"ray"``).
"""
from __future__ import annotations

import contextlib
import signal
import threading
import warnings
from typing import Iterator, Sequence

from raygrid.engine.executors.base import Unit, Work
from raygrid.engine.fitting import FitResult, FitTimeout, Payload, run_trials, timeout_message


@contextlib.contextmanager
def time_limit(seconds: float | None) -> Iterator[None]:
    """Raise :class:`FitTimeout` in this thread after ``seconds`` (None: no limit)."""
    if seconds is None:
        yield
        return
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"):
        warnings.warn("fit_timeout cannot be enforced by the serial backend outside the main "
                      "thread: fits run without a time limit", RuntimeWarning, stacklevel=3)
        yield
        return

    def expire(signum, frame):
        raise FitTimeout(timeout_message(seconds, "interrupted in this process"))

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


class SerialExecutor:
    running = 0
    in_process = True  # work runs in the driver's process (its Keras backend, its imports)

    def __init__(self, fit_timeout: float | None = None):
        self.fit_timeout = fit_timeout

    def share(self, payload: Payload) -> Payload:
        return payload

    def _limit(self, n_trials: int):
        return time_limit(None if self.fit_timeout is None else self.fit_timeout * n_trials)

    def run(self, shared: Payload, work: Sequence[Work]) -> Iterator[FitResult]:
        for item in work:
            if not isinstance(item, Unit):
                with self._limit(1):
                    results = run_trials(shared, [item])
                yield from results
                continue
            try:
                with self._limit(len(item.trials)):
                    results = item.fn(shared, item.trials)
            except Exception as exc:  # noqa: BLE001 - the unit's own failure rows, as on Ray
                if item.on_failure is None:
                    raise
                results = item.on_failure(item.trials, exc)
            yield from results

    def describe(self) -> str:
        return "serial (in-process)"
