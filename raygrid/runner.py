"""Run a plan of trials on an executor and collect every result, keyed by (candidate, fold)."""
from __future__ import annotations

import contextlib
from typing import Any, Sequence

from raygrid.executors import Executor
from raygrid.fitting import FitResult, Payload
from raygrid.plan import Trial
from raygrid.progress import SearchProgress


class FitError(RuntimeError):
    """A fit failed with error_score='raise' and its original exception could not be carried back."""


def reraise(result: FitResult) -> None:
    if result.exception is not None:
        raise result.exception
    raise FitError(f"Fit of candidate {result.candidate}, fold {result.fold} failed:\n{result.error}")


def execute(
    executor: Executor,
    shared: Any,
    payload: Payload,
    trials: Sequence[Trial],
    results: dict[tuple[int, int], FitResult],
    progress: SearchProgress,
) -> None:
    """Run ``trials``, adding each result to ``results`` the moment it arrives.

    With ``error_score="raise"`` the first failed fit stops the search (pending tasks are cancelled)
    and its original exception is raised; every fit finished before it stays in ``results``.
    """
    with contextlib.closing(iter(executor.run(shared, trials))) as stream:
        for result in stream:
            results[(result.candidate, result.fold)] = result
            progress.add(result, running=getattr(executor, "running", 0))
            if result.failed and payload.error_score == "raise":
                reraise(result)
