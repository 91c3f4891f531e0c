"""``backend="auto"``: small searches run in a child process of this one, larger ones on Ray.

Starting a local Ray costs about five seconds (``ray.init`` took 4.5-5.5 s on the development
machine, see the README), more than many small searches take altogether: scikit-learn's
breast-cancer SVC grid of the demo fits in under two seconds. The rule, measured as the search
runs rather than guessed up front:

1. Ray is used at once when it is already running in this process (nothing to start), when a
   cluster address is given (``address=`` or ``RAY_ADDRESS``), when ``ray_remote_args`` are
   given (a request for Ray's resources: a search that asks for a GPU no node has fails before
   any fit, never runs on the CPU here), and for Keras estimators (their fits take seconds and
   get per-worker thread caps and model reuse on Ray, or train fused on JAX workers).
2. Otherwise fits run one after another in a child process of this one
   (:mod:`~raygrid.engine.executors.local`: a fit that kills its process is a system-failure
   row and this process survives, as on Ray; ``fit_timeout`` applies). The first fit is a
   warm-up (imports, caches); from the fourth on, after each fit, the fits still to run are
   projected at the median of the others' CPU times (each capped at its wall time, so a busy
   machine, whose wall times swell, does not inflate it). Once that projection exceeds Ray's
   start-up, ``RAYGRID_LOCAL_BUDGET_S`` seconds (default 5), Ray starts and runs every
   remaining fit, those of later rounds (halving rungs) included. Time already spent does not
   count: it is spent either way. No fit runs twice and none is thrown away: the local fits
   are results like any other, and they run the serial executor's code, raygrid's reference.

``backend="ray"`` always means Ray and ``backend="serial"`` always means this very process
(debugging). The progress line states the rule as it applies ("local: 96 fits x 0.012 s CPU
= 1.2 s < 5 s to start Ray"), and "starting Ray..." when it switches; ``results_["node"]`` of a
fit run locally names this machine.
"""
from __future__ import annotations

import os
import statistics
from typing import Any, Iterator, Sequence

from raygrid.engine.fitting import FitResult, Payload, running_ray
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
    return running_ray() is not None


def choose_backend(backend: str, *, address: str | None = None, keras: bool = False,
                   ray_remote_args: Any = None) -> str:
    """The backend a search runs on: ``"ray"``, ``"serial"``, or ``"auto"`` (this module's rule,
    decided while the fits run) when neither is forced by the rule's first step."""
    if backend != "auto":
        return backend
    if (ray_is_running() or address or os.environ.get("RAY_ADDRESS") or keras
            or ray_remote_args is not None):
        return "ray"
    if local_budget() <= 0:
        return "ray"
    return "auto"


#: Fits measured before the projection is trusted: the first (a warm-up) and three more.
MIN_FITS = 4


class AutoExecutor:
    """Runs fits in a child process while what remains looks shorter than Ray's start-up, then
    hands the rest to a :class:`~raygrid.engine.executors.ray.RayExecutor` (see the module's rule)."""

    def __init__(self, budget_s: float | None = None, fit_timeout: float | None = None,
                 **ray_options: Any):
        from raygrid.engine.executors.local import LocalProcessExecutor

        self.budget_s = local_budget() if budget_s is None else budget_s
        self.fit_timeout = fit_timeout
        self.ray_options = ray_options
        self.local = LocalProcessExecutor(max_retries=ray_options.get("max_retries", 3),
                                          fit_timeout=fit_timeout)
        self.ray = None  # the RayExecutor, once the search has outgrown the budget
        self.progress = None  # set by the runner: the progress line shows where fits run
        self._payload: Payload | None = None
        self._ray_shared = None

    @property
    def where(self) -> str:
        return "ray" if self.ray is not None else "local"

    @property
    def running(self) -> int:
        return self.ray.running if self.ray is not None else self.local.running

    def slots(self) -> int:
        return self.ray.slots() if self.ray is not None else 1

    def describe(self) -> str:
        if self.ray is not None:
            return self.ray.describe()
        return (f"a child process while the fits left look shorter than {self.budget_s:g} s "
                "(Ray's start-up), then ray")

    def share(self, payload: Payload) -> Payload:
        self._payload = payload
        self._note(f"local: measuring fits (Ray if the rest needs > {self.budget_s:g} s)")
        return self.local.share(payload)

    def run(self, shared: Any, trials: Sequence[Trial]) -> Iterator[FitResult]:
        trials = list(trials)
        done = 0
        if self.ray is None:
            stream = self.local.run(shared, trials)
            try:
                for result in stream:
                    done += 1
                    yield result
                    if done < len(trials) and self._worth_ray(len(trials) - done):
                        break
            finally:
                stream.close()
            if done < len(trials):
                self.local.close()
                self._start_ray()
        rest = trials[done:]
        if rest:
            yield from self.ray.run(self._ray_shared, rest)

    def projection(self, remaining: int) -> float | None:
        """Seconds the ``remaining`` fits would take here: their number times the median CPU
        time of the fits after the first (None until :data:`MIN_FITS` fits have run)."""
        times = self.local.cpu_times
        if len(times) < MIN_FITS:
            return None
        return remaining * statistics.median(times[1:])

    def _worth_ray(self, remaining: int) -> bool:
        projected = self.projection(remaining)
        if projected is None:
            return False
        per_fit = projected / remaining
        self._note(f"local: {remaining} fits x {per_fit:.2g} s CPU = {projected:.1f} s "
                   f"{'>' if projected > self.budget_s else '<'} {self.budget_s:g} s to start Ray")
        return projected > self.budget_s

    def _start_ray(self) -> None:
        from contextlib import nullcontext

        from raygrid.engine.executors.ray import RayExecutor

        self.ray = RayExecutor(fit_timeout=self.fit_timeout, **self.ray_options)
        phase = self.progress.phase if self.progress is not None else (lambda _: nullcontext())
        with phase(f"starting Ray (the fits left need more than {self.budget_s:g} s)..."):
            self._ray_shared = self.ray.share(self._payload)
        if self.progress is not None:
            self.progress.slots = self.ray.slots()
        self._note(None)

    def _note(self, text: str | None) -> None:
        if self.progress is not None:
            self.progress.note = text
