"""What ``FitStore.summary()`` returns: counts of the fits a store holds, and per search plan
what is done, failed and missing (what ``raygrid status`` shows)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SearchSummary:
    """One search plan recorded in a store, and how far its fits got.

    ``planned`` fits, of which ``done`` (scored), ``failed`` (the estimator raised),
    ``system_failures`` (a worker or node died) and ``missing`` (no row yet). Times are Unix
    timestamps; ``finished_at`` is None while the search has not finished its last run.
    """

    search_id: str
    kind: str
    estimator: str
    n_candidates: int
    n_splits: int
    planned: int
    done: int
    failed: int
    system_failures: int
    missing: int
    runs: int
    created_at: float
    updated_at: float
    finished_at: float | None

    @property
    def complete(self) -> bool:
        """Every planned fit has a row, and none is a system failure (a rerun runs those)."""
        return self.missing == 0 and self.system_failures == 0


@dataclass(frozen=True)
class StoreSummary:
    """A store's counts: ``fits`` rows, of which ``done``, ``failed`` and ``system_failures``;
    ``planned`` distinct fits over all searches, of which ``missing`` have no row yet; and the
    ``searches``, oldest first."""

    path: str
    fits: int
    done: int
    failed: int
    system_failures: int
    planned: int
    missing: int
    searches: tuple[SearchSummary, ...]


__all__ = ["SearchSummary", "StoreSummary"]
