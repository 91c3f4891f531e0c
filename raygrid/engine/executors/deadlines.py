"""``fit_timeout`` on Ray: each task's clock starts when a worker starts running it, not when the
driver submits it (a task may wait for a free slot, a new worker, a node an autoscaler adds).

A task tells a small actor of the search (:class:`FitClock`, no CPU) that it has started (a
message it does not wait for); the driver asks the actor, at most every :data:`POLL_S` seconds
and without blocking, how long each of its tasks has been running, on the actor's own clock (no
clock skew between machines). A task past ``fit_timeout`` seconds per trial it holds is
cancelled with ``force=True`` (its worker is killed) by the Ray executor. A task that Ray
retries after its worker died starts its clock again.
"""
from __future__ import annotations

import itertools
import time
from typing import Any, Callable, Iterable, Sequence

from raygrid.engine.fitting import FitResult, Payload, run_trials
from raygrid.engine.plan import Trial

POLL_S = 0.5  # how often the driver asks the clock


class FitClock:
    """The actor: when each task (by key) started running, on this process's clock."""

    def __init__(self):
        self.started: dict[int, float] = {}

    def start(self, key: int) -> None:
        self.started[key] = time.monotonic()

    def elapsed(self, keys: Sequence[int]) -> dict[int, float]:
        now = time.monotonic()
        return {key: now - self.started[key] for key in keys if key in self.started}

    def forget(self, keys: Sequence[int]) -> None:
        for key in keys:
            self.started.pop(key, None)


def timed_trials(clock: Any, key: int, payload: Payload, trials: Sequence[Trial]) -> list[FitResult]:
    """A task of trials that first tells ``clock`` it has started."""
    clock.start.remote(key)
    return run_trials(payload, trials)


def timed_unit(clock: Any, key: int, fn: Callable, payload: Payload,
               trials: Sequence[Trial]) -> list[FitResult]:
    """A unit's task (``fn(payload, trials)``) that first tells ``clock`` it has started."""
    clock.start.remote(key)
    return fn(payload, trials)


class Deadlines:
    """The driver's side: which task may run how long, and how long each has run so far."""

    def __init__(self, fit_timeout: float):
        import ray

        self.fit_timeout = fit_timeout
        self.actor = ray.remote(num_cpus=0)(FitClock).remote()
        self._keys = itertools.count()
        self._tasks: dict[Any, tuple[int, float]] = {}  # ref -> (key, seconds allowed)
        self._seen: dict[Any, tuple[float, float]] = {}  # ref -> (seconds run, when learnt)
        self._asked = None  # the actor's pending answer: (ref, {key: task ref})
        self._last_ask = 0.0

    def key(self) -> int:
        return next(self._keys)

    def add(self, ref: Any, key: int, n_trials: int) -> None:
        self._tasks[ref] = (key, self.fit_timeout * n_trials)

    def allowed(self, ref: Any) -> float:
        return self._tasks[ref][1]

    def forget(self, refs: Iterable[Any]) -> None:
        keys = [self._tasks.pop(ref)[0] for ref in refs if ref in self._tasks]
        for ref in list(self._seen):
            if ref not in self._tasks:
                del self._seen[ref]
        if keys:
            self.actor.forget.remote(keys)

    def poll(self) -> None:
        """Take the actor's answer if it has come; ask again every :data:`POLL_S` seconds."""
        import ray

        if self._asked is not None:
            answer, keys = self._asked
            if not ray.wait([answer], timeout=0)[0]:
                return
            learnt = time.monotonic()  # on receipt: never more run time than the task had
            self._asked = None
            for key, seconds in ray.get(answer).items():
                ref = keys.get(key)
                if ref in self._tasks:
                    self._seen[ref] = (seconds, learnt)
        now = time.monotonic()
        if self._tasks and now - self._last_ask >= POLL_S:
            keys = {key: ref for ref, (key, _) in self._tasks.items()}
            self._asked = (self.actor.elapsed.remote(list(keys)), keys)
            self._last_ask = now

    def left(self, ref: Any) -> float | None:
        """Seconds ``ref`` may still run (None: not known to have started)."""
        if ref not in self._seen or ref not in self._tasks:
            return None
        seconds, learnt = self._seen[ref]
        return self._tasks[ref][1] - (seconds + time.monotonic() - learnt)

    def overdue(self, refs: Iterable[Any]) -> list:
        return [ref for ref in refs if (left := self.left(ref)) is not None and left <= 0]

    def wait_s(self, refs: Iterable[Any], longest: float) -> float:
        """How long the driver may block: ``longest``, less when a task's time is up sooner, at
        most :data:`POLL_S` while a task's start is not yet known."""
        refs = list(refs)
        lefts = [left for ref in refs if (left := self.left(ref)) is not None]
        wait = min([longest] + [max(0.0, left) for left in lefts])
        if len(lefts) < len(refs):
            wait = min(wait, POLL_S)
        return wait


__all__ = ["Deadlines", "FitClock", "POLL_S", "timed_trials", "timed_unit"]
