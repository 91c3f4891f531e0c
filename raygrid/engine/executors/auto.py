"""``backend="auto"``: small searches run in this process, larger ones on Ray.

Starting a local Ray costs about five seconds (``ray.init`` took 4.5-5.5 s on the development
machine, see the README), more than many small searches take altogether: scikit-learn's
breast-cancer SVC grid of the demo runs in under a second in-process. The rule, measured as the
search runs rather than guessed up front:

1. Ray is used at once when it is already running in this process (nothing to start), when a
   cluster address is given (``address=`` or ``RAY_ADDRESS``), and for Keras estimators (their
   fits take seconds and get per-worker thread caps and model reuse on Ray, or train fused on
   JAX workers).
2. Otherwise fits run one after another in this process, and after each one the time spent so
   far plus the projected time of the fits still to run (their number times the mean time of
   the fits after the first, which pays one-off costs; from the third fit on) is compared with
   Ray's start-up, ``RAYGRID_LOCAL_BUDGET_S`` seconds (default 5).
   Once the projection exceeds it, Ray starts and runs every remaining fit, those of later
   rounds (halving rungs) included. No fit runs twice and none is thrown away: the local fits
   are results like any other, and the serial executor is raygrid's reference, so the results
   are the same either way.

``backend="ray"`` always means Ray and ``backend="serial"`` always means in-process. While fits
run locally the progress line says so ("local: search < 5 s"), and "starting Ray..." when it
switches; ``results_["node"]`` is ``"local"`` for fits run in this process.
"""
from __future__ import annotations

import os
import sys
import time
from typing import Any, Iterator, Sequence

from raygrid.engine.fitting import FitResult, Payload
from raygrid.engine.plan import Trial

#: Seconds a local search may take before Ray is worth starting (Ray's own start-up here).
DEFAULT_BUDGET_S = 5.0
BUDGET_ENV = "RAYGRID_LOCAL_BUDGET_S"


def local_budget() -> float:
    """``RAYGRID_LOCAL_BUDGET_S`` (seconds) or :data:`DEFAULT_BUDGET_S`; 0 means always Ray."""
    text = os.environ.get(BUDGET_ENV, "")
    try:
        return max(0.0, float(text)) if text else DEFAULT_BUDGET_S
    except ValueError:
        raise ValueError(f"{BUDGET_ENV} must be a number of seconds, got {text!r}") from None


def ray_is_running() -> bool:
    ray = sys.modules.get("ray")
    return ray is not None and ray.is_initialized()


def choose_backend(backend: str, *, address: str | None = None, keras: bool = False) -> str:
    """The backend a search runs on: ``"ray"``, ``"serial"``, or ``"auto"`` (this module's rule,
    decided while the fits run) when neither is forced by the rule's first step."""
    if backend != "auto":
        return backend
    if ray_is_running() or address or os.environ.get("RAY_ADDRESS") or keras:
        return "ray"
    if local_budget() <= 0:
        return "ray"
    return "auto"


class AutoExecutor:
    """Runs fits in this process while the whole search looks shorter than Ray's start-up, then
    hands the rest to a :class:`~raygrid.engine.executors.ray.RayExecutor` (see the module's rule)."""

    def __init__(self, budget_s: float | None = None, **ray_options: Any):
        from raygrid.engine.executors.serial import SerialExecutor

        self.budget_s = local_budget() if budget_s is None else budget_s
        self.ray_options = ray_options
        self.serial = SerialExecutor()
        self.ray = None  # the RayExecutor, once the search has outgrown the budget
        self.progress = None  # set by the runner: the progress line shows where fits run
        self._payload: Payload | None = None
        self._ray_shared = None
        self._local_s = 0.0
        self._local_fits = 0
        self._first_s = 0.0

    @property
    def where(self) -> str:
        return "ray" if self.ray is not None else "serial"

    @property
    def running(self) -> int:
        return self.ray.running if self.ray is not None else 0

    def slots(self) -> int:
        return self.ray.slots() if self.ray is not None else 1

    def describe(self) -> str:
        if self.ray is not None:
            return self.ray.describe()
        return f"in-process while the search stays under {self.budget_s:g} s, then ray"

    def share(self, payload: Payload) -> Payload:
        self._payload = payload
        self._note(f"local: search < {self.budget_s:g} s")
        return self.serial.share(payload)

    def run(self, shared: Any, trials: Sequence[Trial]) -> Iterator[FitResult]:
        trials = list(trials)
        done = 0
        if self.ray is None:
            for trial in trials:
                start = time.perf_counter()
                yield from self.serial.run(shared, [trial])
                took = time.perf_counter() - start
                if not self._local_fits:
                    self._first_s = took
                self._local_s += took
                self._local_fits += 1
                done += 1
                if done < len(trials) and self._projected(len(trials) - done) > self.budget_s:
                    self._start_ray()
                    break
        rest = trials[done:]
        if rest:
            yield from self.ray.run(self._ray_shared, rest)

    def _projected(self, remaining: int) -> float:
        """Seconds the search will have spent here if the ``remaining`` fits also run here: the
        time so far plus their number times the mean of the fits after the first (the first
        pays one-off costs: imports, caches), projected from at least 3 fits."""
        if self._local_s > self.budget_s or self._local_fits < 3:
            return self._local_s
        mean = (self._local_s - self._first_s) / (self._local_fits - 1)
        return self._local_s + mean * remaining

    def _start_ray(self) -> None:
        from contextlib import nullcontext

        from raygrid.engine.executors.ray import RayExecutor

        self.ray = RayExecutor(**self.ray_options)
        phase = self.progress.phase if self.progress is not None else (lambda _: nullcontext())
        with phase(f"starting Ray (the search needs more than {self.budget_s:g} s)..."):
            self._ray_shared = self.ray.share(self._payload)
        if self.progress is not None:
            self.progress.slots = self.ray.slots()
        self._note(None)

    def _note(self, text: str | None) -> None:
        if self.progress is not None:
            self.progress.note = text
