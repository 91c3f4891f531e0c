"""Fits one after another in a child process of the driver: what ``backend="auto"`` runs before
Ray is worth starting, with the guarantees Ray gives.

A fit that kills its process (``os._exit``, a segfault in an extension, the OOM killer) takes
down the child, never the driver: the fit runs again in a new child up to ``max_retries`` times,
then is a system-failure row, as on Ray. A fit that runs longer than ``fit_timeout`` seconds is
stopped (the child killed) and is that fit's failure row. Ctrl-C lets the fit in flight finish
(within the grace of :func:`~raygrid.engine.executors.ray.interrupt_grace`, and its time limit),
then kills the child.

The child is a fresh interpreter (``sys.executable``; not a fork, which would inherit OpenMP
thread pools and locks that deadlock a child), started when the data is shared. The payload goes
to it once, pickled by cloudpickle (classes and functions of ``__main__`` or a notebook travel by
value, as to Ray's workers); then one trial at a time goes down a pipe and its result comes back.
The child writes nothing else on that pipe: its stdout is sent to stderr. It ignores Ctrl-C (the
driver decides) and dies with the driver (Linux: ``PR_SET_PDEATHSIG``).
"""
from __future__ import annotations

import os
import pickle
import select
import signal
import struct
import subprocess
import sys
import time
import weakref
from typing import Any, Iterator, Sequence

from raygrid.engine.fitting import FitResult, Payload, system_failure, timeout_failure
from raygrid.engine.plan import Trial

_HEADER = struct.Struct("!Q")
_PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))


class ChildDied(RuntimeError):
    """The child process running a fit exited before answering."""


def _write(fh, obj: Any, dumps) -> None:
    data = dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    fh.write(_HEADER.pack(len(data)) + data)
    fh.flush()


def _read_exactly(fd: int, n: int) -> bytes:
    chunks, left = [], n
    while left:
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            raise EOFError
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _read(fd: int) -> Any:
    (size,) = _HEADER.unpack(_read_exactly(fd, _HEADER.size))
    return pickle.loads(_read_exactly(fd, size))


def _die_with_parent() -> None:
    """Linux: the kernel kills this process when its parent (the driver) dies."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001 - elsewhere the child ends when its stdin closes
        pass


def serve() -> None:
    """The child's loop: read the payload, then (trial -> (result, CPU seconds)) until EOF."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's to handle
    _die_with_parent()
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # what fits print goes to stderr, never into the results pipe
    import cloudpickle

    from raygrid.engine.fitting import fit_and_score, location

    fd = sys.stdin.fileno()
    try:
        paths = _read(fd)
        sys.path[:] = paths + [p for p in sys.path if p not in paths]
        payload = _read(fd)
        where = location()
        _write(out, "ready", cloudpickle.dumps)  # the fits' clocks start from here
        while True:
            trial = _read(fd)
            cpu = time.process_time()
            result = fit_and_score(payload, trial, where)
            _write(out, (result, time.process_time() - cpu), cloudpickle.dumps)
    except EOFError:
        return


def _start_child() -> subprocess.Popen:
    code = (f"import sys; sys.path.insert(0, {_PACKAGE_ROOT!r}); "
            "from raygrid.engine.executors.local import serve; serve()")
    return subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, close_fds=True)


def _stop_child(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    for pipe in (proc.stdin, proc.stdout):
        try:
            pipe.close()
        except OSError:
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
        self._proc: subprocess.Popen | None = None
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
        self._metrics = (payload.metrics, payload.return_train_score, payload.error_score)
        self._ensure_child()
        return payload

    def _ensure_child(self) -> subprocess.Popen:
        if self._proc is not None and self._proc.poll() is None:
            return self._proc
        if self._proc is not None:
            _stop_child(self._proc)
        import cloudpickle

        proc = _start_child()
        _write(proc.stdin, [p for p in sys.path if isinstance(p, str)], cloudpickle.dumps)
        proc.stdin.write(_HEADER.pack(len(self._payload_bytes)) + self._payload_bytes)
        proc.stdin.flush()
        self._proc = proc
        self._ready = False
        if self._finalizer is not None:
            self._finalizer.detach()
        self._finalizer = weakref.finalize(self, _stop_child, proc)
        return proc

    def close(self) -> None:
        """Stop the child (it also stops when this executor is collected, or at exit)."""
        if self._finalizer is not None:
            self._finalizer()

    def run(self, shared: Payload, trials: Sequence[Trial]) -> Iterator[FitResult]:
        import cloudpickle

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
                    _write(proc.stdin, trial, cloudpickle.dumps)
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

    def _wait_ready(self, proc: subprocess.Popen) -> None:
        """Wait for a new child to have loaded the data (its start-up is no fit's time)."""
        if self._ready:
            return
        try:
            if _read(proc.stdout.fileno()) != "ready":
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

    def _answer(self, proc: subprocess.Popen, started: float,
                grace: float | None = None) -> tuple[FitResult, float] | None:
        """The child's answer; None when the fit's time limit (or ``grace``) passed first (the
        child is then killed). Raises :class:`ChildDied` when the child exits first."""
        fd = proc.stdout.fileno()
        limits = [t for t in (self.fit_timeout, grace) if t is not None]
        deadline = started + min(limits) if limits else None
        while True:
            wait = None if deadline is None else max(0.0, deadline - time.perf_counter())
            ready, _, _ = select.select([fd], [], [], wait)
            if ready:
                try:
                    return _read(fd)
                except (EOFError, pickle.UnpicklingError, OSError):
                    code = proc.wait()
                    raise ChildDied(f"the process running this fit died ({_exit_text(code)}) "
                                    "before it finished") from None
            if deadline is not None and time.perf_counter() >= deadline:
                _stop_child(proc)
                self._proc = None
                return None

    def _finish_in_flight(self, proc: subprocess.Popen, started: float,
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
