"""In-process, one fit after another: for debugging, tests, and as the oracle for the Ray executor."""
from __future__ import annotations

from typing import Iterator, Sequence

from raygrid.fitting import FitResult, Payload, run_trials
from raygrid.plan import Trial


class SerialExecutor:
    running = 0

    def share(self, payload: Payload) -> Payload:
        return payload

    def run(self, shared: Payload, trials: Sequence[Trial]) -> Iterator[FitResult]:
        for trial in trials:
            yield from run_trials(shared, [trial])

    def describe(self) -> str:
        return "serial (in-process)"
