"""The executor protocol: data leaves the driver once (``share``), then work streams (``run``).

Work is trials (one fit each; an executor may batch them) or :class:`Unit`\\ s: a function that
runs several trials at once in one task (a fused group of Keras fits), with its own resources.
Either way every trial comes back as one FitResult, through the same loop: retries, Ctrl-C grace,
node loss and the fit store behave the same for both.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping, Protocol, Sequence, Union

from raygrid.engine.fitting import FitResult, Payload
from raygrid.engine.plan import Trial


class Terminated(KeyboardInterrupt):
    """SIGTERM stopped a search: handled like Ctrl-C (tasks cancelled, finished fits kept)."""


@dataclass(frozen=True)
class Unit:
    """One task: ``fn(payload, trials)`` returns one FitResult per trial (in any order).

    ``resources`` are Ray options merged over the executor's per-fit ones (``runtime_env``'s
    ``env_vars`` merged key by key). With ``share_gpus`` and no GPUs in the per-fit resources,
    the units of one ``run`` split the cluster's GPUs evenly (see :func:`gpu_share`).
    ``on_failure(trials, exc)`` gives the rows of a unit whose task raised or whose worker died
    after its retries (default: system-failure rows).
    """

    fn: Callable[[Payload, Sequence[Trial]], list[FitResult]]
    trials: tuple[Trial, ...]
    resources: Mapping[str, Any] = field(default_factory=dict)
    share_gpus: bool = False
    on_failure: Callable[[Sequence[Trial], BaseException], list[FitResult]] | None = None


Work = Union[Trial, Unit]


def gpu_share(gpus: float, n_units: int) -> float:
    """The GPU fraction each of ``n_units`` units asks for: the cluster's GPUs shared evenly.

    ``gpus`` whole GPUs among ``n_units`` units: each gets ``1 / ceil(n_units / gpus)`` of one
    GPU (0 without GPUs), so that all of them fit at once.
    """
    whole = int(gpus)
    if whole < 1 or n_units < 1:
        return 0
    per_gpu = -(-n_units // whole)  # units that share one GPU
    return 1.0 if per_gpu == 1 else (10_000 // per_gpu) / 10_000  # Ray keeps 4 decimals


class Executor(Protocol):
    def share(self, payload: Payload) -> Any:
        """Make the payload available to the workers; returns a handle for ``run``."""

    def run(self, shared: Any, work: Sequence[Work]) -> Iterator[FitResult]:
        """Yield one FitResult per trial (of ``work``'s trials and units), in completion order.
        Closing the iterator starts no more."""

    def describe(self) -> str:
        """A short human description (for progress output)."""
