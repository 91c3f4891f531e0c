"""The executor protocol: data leaves the driver once (``share``), then trials stream (``run``)."""
from __future__ import annotations

from typing import Any, Iterator, Protocol, Sequence

from raygrid.fitting import FitResult, Payload
from raygrid.plan import Trial


class Terminated(KeyboardInterrupt):
    """SIGTERM stopped a search: handled like Ctrl-C (tasks cancelled, finished fits kept)."""


class Executor(Protocol):
    def share(self, payload: Payload) -> Any:
        """Make the payload available to the workers; returns a handle for ``run``."""

    def run(self, shared: Any, trials: Sequence[Trial]) -> Iterator[FitResult]:
        """Yield one FitResult per trial, in completion order. Closing the iterator starts no more."""

    def describe(self) -> str:
        """A short human description (for progress output)."""
