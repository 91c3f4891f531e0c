"""Run a plan of trials on an executor and collect every result, keyed by (candidate, fold)."""
from __future__ import annotations

import contextlib
import inspect
import os
import signal
import sys
import threading
from typing import Any, Callable, Iterator, Sequence

from raygrid.engine.executors.base import Executor, Terminated
from raygrid.engine.fitting import FitResult, Payload, running_ray
from raygrid.engine.plan import Trial
from raygrid.outputs.progress import SearchProgress


class FitError(RuntimeError):
    """A fit failed with error_score='raise' and its original exception could not be carried back."""


def reraise(result: FitResult) -> None:
    if result.exception is not None:
        raise result.exception
    raise FitError(f"Fit of candidate {result.candidate}, fold {result.fold} failed:\n{result.error}")


def _raise_terminated(signum, frame):
    raise Terminated(f"signal {signum}")


@contextlib.contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """While running fits, SIGTERM raises :class:`Terminated` (a KeyboardInterrupt).

    Only in the main thread (Python delivers signals there); the previous handler is restored.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    try:
        previous = signal.signal(signal.SIGTERM, _raise_terminated)
    except (ValueError, OSError):  # e.g. an embedded interpreter without signal support
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


def _innermost(executor: Any) -> Any:
    """The executor a wrapper (the fused engine's) runs on."""
    while getattr(executor, "inner", None) is not None:
        executor = executor.inner
    return executor


def _waiting_for(executor: Any) -> str | None:
    """What ``executor.share`` is about to wait for, in words: starting or joining Ray."""
    inner = _innermost(executor)
    if not hasattr(inner, "address"):
        return None
    if running_ray() is not None:
        return None
    address = inner.address or os.environ.get("RAY_ADDRESS")
    return f"connecting to Ray at {address}..." if address else "starting Ray..."


def share(executor: Executor, payload: Payload, progress: SearchProgress) -> Any:
    """``executor.share(payload)``, the progress line saying what it waits for ("starting Ray...");
    afterwards the progress knows how many fits can run at once."""
    inner = _innermost(executor)
    if hasattr(inner, "progress"):  # backend="auto": says where fits run, and when Ray starts
        inner.progress = progress
    with progress.phase(_waiting_for(executor)):
        shared = executor.share(payload)
    slots = getattr(_innermost(executor), "slots", None)
    if callable(slots):
        progress.slots = slots()
    return shared


def reuse(store: Any, trials: Sequence[Trial], results: dict[tuple[int, int], FitResult],
          progress: SearchProgress, on_result: Callable[[FitResult], None] | None = None,
          ) -> list[Trial]:
    """Take the stored results of ``trials`` from ``store`` (if any); return the trials to run.

    ``on_result`` is called with each stored result taken, as ``execute`` calls it.
    """
    if store is None:
        return list(trials)
    hits, todo = store.plan(trials)
    if hits:  # a resumed or extended search: say what the store saved
        progress.say(f"reused {len(hits)} stored fits from {str(store.directory)!r}, running {len(todo)}")
    params = {(t.candidate, t.fold): t.params for t in trials}
    for result in hits:
        results[(result.candidate, result.fold)] = result
        progress.add(result, params=params[(result.candidate, result.fold)])
        if on_result is not None:
            on_result(result)
    return todo


def execute(
    executor: Executor,
    shared: Any,
    payload: Payload,
    trials: Sequence[Trial],
    results: dict[tuple[int, int], FitResult],
    progress: SearchProgress,
    store: Any = None,
    on_result: Callable[[FitResult], None] | None = None,
    check: Callable[[FitResult, Any], None] | None = None,
) -> None:
    """Run ``trials``, adding each result to ``results`` (and ``store``) the moment it arrives;
    ``on_result`` is called with it once it is recorded; ``check(result, params)``, before
    (it raises for a result that must not be kept, e.g. :class:`~raygrid.engine.codecheck.CodeCheck`).

    With ``error_score="raise"`` a failed fit stops the search once every fit planned before it
    has come back (they are in flight: the plan is dispatched in order), and the original
    exception of the first failed fit in plan order is raised, as scikit-learn's sequential
    loop raises it (the executor drops the fits still in flight); every fit finished before it
    stays in ``results``.
    Ctrl-C or SIGTERM cancels the pending fits; those already finished are kept (and stored).
    """
    current: list[FitResult] = []  # the result being handled, until it is recorded
    params = {(t.candidate, t.fold): t.params for t in trials}
    order = {key: i for i, key in enumerate(params)}
    failure: FitResult | None = None  # with error_score="raise": the first failed fit in plan order

    def take(result: FitResult) -> None:
        if check is not None:
            check(result, params.get((result.candidate, result.fold), {}))
        current[:] = [result]
        results[(result.candidate, result.fold)] = result
        if store is not None:
            store.record(result)
        current.clear()
        progress.add(result, running=getattr(executor, "running", 0),
                     params=params.get((result.candidate, result.fold)))
        result.reissue_warnings()
        if on_result is not None:
            on_result(result)

    with sigterm_interrupts(), contextlib.closing(iter(executor.run(shared, trials))) as stream:
        try:
            for result in stream:
                take(result)
                if payload.error_score != "raise":
                    continue
                if result.failed and (failure is None or _position(result, order) <
                                      _position(failure, order)):
                    failure = result
                if failure is not None and all(
                        k in results for k in list(order)[:_position(failure, order)]):
                    reraise(failure)
            if failure is not None:
                reraise(failure)
        except KeyboardInterrupt as interrupt:
            # Keep every finished fit: the one being recorded when the interrupt came, and those
            # the executor still holds (a generator hands them over when the interrupt is
            # thrown into it; it cancels the rest).
            for result in current + list(_drain(stream, interrupt)):
                take(result)
            raise


def _position(result: FitResult, order: dict) -> int:
    return order.get((result.candidate, result.fold), len(order))


def _drain(stream: Iterator[FitResult], interrupt: KeyboardInterrupt) -> Iterator[FitResult]:
    if not inspect.isgenerator(stream) or inspect.getgeneratorstate(stream) != inspect.GEN_SUSPENDED:
        return
    try:
        result = stream.throw(interrupt)
        while True:
            yield result
            result = next(stream)
    except (KeyboardInterrupt, StopIteration):
        return


@contextlib.contextmanager
def closing_store(store):
    """Close the store after the fits; on Ctrl-C or SIGTERM say how to resume (one line)."""
    if store is None:
        yield
        return
    try:
        yield
    except KeyboardInterrupt:
        from raygrid.engine.store import resume_hint

        print(resume_hint(store), file=sys.stderr, flush=True)
        raise
    else:
        store.finish()
    finally:
        store.close()
