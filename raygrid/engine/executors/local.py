"""Fits one after another in a child process of the driver: what ``backend="auto"`` runs before
Ray is worth starting, with the guarantees Ray gives.

A fit that kills its process (``os._exit``, a segfault in an extension, the OOM killer) takes
down the child, never the driver: the fit runs again in a new child up to ``max_retries`` times,
then is a system-failure row, as on Ray. A fit that runs longer than ``fit_timeout`` seconds is
stopped (the child killed) and is that fit's failure row. Ctrl-C lets the fit in flight finish
(within the grace of :func:`~raygrid.engine.executors.ray.interrupt_grace`, and its time limit),
then kills the child.

The child starts from the zygote (a fork of a process that has imported scikit-learn, in
milliseconds) or as a fresh interpreter: see :mod:`~raygrid.engine.executors.children`. The
payload goes to it once; then one trial at a time goes down and its result comes back.
"""
from __future__ import annotations

import pickle
import select
import signal
import sys
import time
import weakref
from typing import Iterator, Sequence

from raygrid.engine.describe import code_roots
from raygrid.engine.executors.children import (Child, read_message, setup, start_child,
                                               write_message, write_raw)
from raygrid.engine.fitting import FitResult, Payload, system_failure, timeout_failure
from raygrid.engine.plan import Trial

class ChildDied(RuntimeError):
    """The child process running a fit exited before answering."""


def _send(child: Child, trial: Trial) -> None:
    try:
        write_message(child.writer, trial)
    except OSError:  # the child has died: reading its answer says how
        pass


def _exit_text(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


class LocalProcessExecutor:
    """Runs trials one after another in a child process (see the module's description).

    ``cpu_times`` holds each finished fit's CPU seconds in the child (capped at its wall time),
    for the auto backend's rule.
    """

    running = 0

    def __init__(self, max_retries: int = 3, fit_timeout: float | None = None):
        self.max_retries = max_retries
        self.fit_timeout = fit_timeout
        self.cpu_times: list[float] = []
        self._proc: Child | None = None
        self._warm: list[str] = []
        self._ready = False
        self._payload_bytes: bytes | None = None
        self._finalizer = None

    def describe(self) -> str:
        return "a child process of this one, one fit after another"

    def slots(self) -> int:
        return 1

    def share(self, payload: Payload) -> Payload:
        import cloudpickle

        self._payload_bytes = cloudpickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL)
        # The modules of the classes it runs: the zygote imports those of installed libraries.
        self._warm = list(dict.fromkeys(getattr(root, "__module__", None) or ""
                                        for root in code_roots(payload.estimator)))
        self._metrics = (payload.metrics, payload.return_train_score, payload.error_score)
        self._ensure_child()
        return payload

    def _ensure_child(self) -> Child:
        if self._proc is not None and self._proc.poll() is None:
            return self._proc
        if self._proc is not None:
            self._proc.close()
        proc = start_child(self._warm)
        try:
            write_message(proc.writer, setup())
            write_raw(proc.writer, self._payload_bytes)
        except OSError:  # it died at once: _wait_ready says how
            pass
        self._proc = proc
        self._ready = False
        if self._finalizer is not None:
            self._finalizer.detach()
        self._finalizer = weakref.finalize(self, proc.close)
        return proc

    def close(self) -> None:
        """Stop the child (it also stops when this executor is collected, or at exit)."""
        if self._finalizer is not None:
            self._finalizer()

    def run(self, shared: Payload, trials: Sequence[Trial]) -> Iterator[FitResult]:
        for trial in trials:
            tries = 0
            while True:
                proc = self._ensure_child()
                try:
                    self._wait_ready(proc)
                except ChildDied as died:
                    yield system_failure(trial, f"{died}", *self._metrics)
                    break
                started = time.perf_counter()
                try:
                    _send(proc, trial)
                    self.running = 1
                    answer = self._answer(proc, started)
                except ChildDied as died:
                    self.running = 0
                    tries += 1
                    if tries <= self.max_retries:
                        continue
                    yield system_failure(trial, f"{died}", *self._metrics)
                    break
                except KeyboardInterrupt as interrupt:
                    kept = self._finish_in_flight(proc, started, interrupt)
                    if kept == "timeout":
                        yield timeout_failure(trial, self.fit_timeout, *self._metrics)
                    elif kept is not None:
                        yield self._timed(trial, kept, started)
                    raise
                self.running = 0
                if answer is None:  # over its time limit: the child was killed
                    yield timeout_failure(trial, self.fit_timeout, *self._metrics)
                else:
                    yield self._timed(trial, answer, started)
                break

    def _wait_ready(self, proc: Child) -> None:
        """Wait for a new child to have loaded the data (its start-up is no fit's time)."""
        if self._ready:
            return
        try:
            if read_message(proc.fileno()) != "ready":
                raise EOFError
        except (EOFError, pickle.UnpicklingError, OSError):
            code = proc.wait()
            raise ChildDied(f"the process started to run fits died ({_exit_text(code)}) while "
                            "loading the search's data") from None
        self._ready = True

    def _timed(self, trial: Trial, answer: tuple[FitResult, float], started: float) -> FitResult:
        result, cpu = answer
        self.cpu_times.append(min(cpu, time.perf_counter() - started))
        return result

    def _answer(self, proc: Child, started: float,
                grace: float | None = None) -> tuple[FitResult, float] | None:
        """The child's answer; None when the fit's time limit (or ``grace``) passed first (the
        child is then killed). Raises :class:`ChildDied` when the child exits first."""
        fd = proc.fileno()
        limits = [t for t in (self.fit_timeout, grace) if t is not None]
        deadline = started + min(limits) if limits else None
        while True:
            wait = None if deadline is None else max(0.0, deadline - time.perf_counter())
            ready, _, _ = select.select([fd], [], [], wait)
            if ready:
                try:
                    return read_message(fd)
                except (EOFError, pickle.UnpicklingError, OSError):
                    code = proc.wait()
                    raise ChildDied(f"the process running this fit died ({_exit_text(code)}) "
                                    "before it finished") from None
            if deadline is not None and time.perf_counter() >= deadline:
                proc.close()
                self._proc = None
                return None

    def _finish_in_flight(self, proc: Child, started: float,
                          interrupt: KeyboardInterrupt):
        """On Ctrl-C: let the fit in flight finish within the grace (and its time limit); a
        second Ctrl-C, or the grace passing, kills the child. The finished answer, "timeout"
        when the fit reached its time limit, or None."""
        from raygrid.engine.executors.ray import interrupt_grace

        self.running = 0
        grace = interrupt_grace(interrupt)
        print("raygrid: stopping; letting the 1 fit in flight finish"
              + ("" if grace is None else f" (at most {grace:g} s)")
              + ". Press Ctrl-C again to stop now.", file=sys.stderr, flush=True)
        try:
            waited = time.perf_counter() - started
            answer = self._answer(proc, started, None if grace is None else waited + grace)
            if answer is None and self.fit_timeout is not None and (
                    time.perf_counter() - started >= self.fit_timeout):
                return "timeout"  # stopped at its own limit: that fit's failure row
            return answer
        except (KeyboardInterrupt, ChildDied):
            return None
        finally:
            if self._proc is not None and self._proc.poll() is None:
                self.close()
                self._proc = None


__all__ = ["LocalProcessExecutor", "ChildDied", "serve"]
