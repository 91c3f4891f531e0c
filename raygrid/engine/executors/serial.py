"""In-process, one fit after another: for debugging, tests, and as the oracle for the Ray executor."""
from __future__ import annotations

from typing import Iterator, Sequence

from raygrid.engine.executors.base import Unit, Work
from raygrid.engine.fitting import FitResult, Payload, run_trials


class SerialExecutor:
    running = 0
    in_process = True  # work runs in the driver's process (its Keras backend, its imports)

    def share(self, payload: Payload) -> Payload:
        return payload

    def run(self, shared: Payload, work: Sequence[Work]) -> Iterator[FitResult]:
        for item in work:
            if not isinstance(item, Unit):
                yield from run_trials(shared, [item])
                continue
            try:
                results = item.fn(shared, item.trials)
            except Exception as exc:  # noqa: BLE001 - the unit's own failure rows, as on Ray
                if item.on_failure is None:
                    raise
                results = item.on_failure(item.trials, exc)
            yield from results

    def describe(self) -> str:
        return "serial (in-process)"
