"""The executor protocol around another executor: fusable trials become units that the inner
executor runs like any other work; the rest, and what a unit hands back, run as standard fits."""
from __future__ import annotations

import os
import warnings
from typing import Any, Iterator, Mapping, Sequence

from raygrid.engine.executors.base import Unit
from raygrid.engine.fitting import FitResult, Payload
from raygrid.engine.fused.plan import assign
from raygrid.engine.fused.unit import FALLBACK, run_unit, unit_failed
from raygrid.engine.plan import Trial

ENGINES = ("standard", "fused", "auto")
#: Environment of the workers that run fused units: Keras on JAX whatever the driver uses.
JAX_ENV = {"KERAS_BACKEND": "jax", "XLA_PYTHON_CLIENT_PREALLOCATE": "false"}
#: XLA's flags there unless ``XLA_FLAGS`` is set on the driver: LLVM's optimisation off. On the
#: seed grid it cut compilation about five-fold (the many small initializer programs and the
#: group's program) for about twice the training time, with the same scores to the last bit.
FUSED_XLA_FLAGS = "--xla_backend_optimization_level=0"

_last_stats: list[dict] = []


def wrap(executor: Any, engine: str = "standard", payload: Payload | None = None) -> Any:
    """``executor`` itself for ``engine="standard"``, else a :class:`FusedExecutor` around it."""
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    if engine == "standard" or (engine == "auto" and payload is not None and not payload.keras):
        return executor
    return FusedExecutor(executor, engine, payload)


def last_stats() -> list[dict]:
    """Timings of the fused groups of the executor's last ``run`` in this process, wherever
    they ran (one dict per group)."""
    return [dict(s) for s in _last_stats]


def _take_stats(result: FitResult) -> None:
    """Keep a group's timings (carried by its first fit) for :func:`last_stats`."""
    stats = result.__dict__.pop("group_stats", None)
    if stats is not None:
        _last_stats.append(stats)


def _without_fallbacks(stream: Iterator[FitResult], sink: list[FitResult]) -> Iterator[FitResult]:
    """``stream`` less its fallback rows (collected in ``sink``); an interrupt thrown in here
    reaches ``stream``, whose finished fits still come out."""
    interrupt: KeyboardInterrupt | None = None
    for result in stream:  # a KeyboardInterrupt raised by ``stream`` (after its drain) passes
        _take_stats(result)
        if result.engine == FALLBACK:
            sink.append(result)
            continue
        try:
            yield result
        except KeyboardInterrupt as exc:  # thrown in by the runner: drain ``stream``
            interrupt = exc
            break
    if interrupt is None:
        return
    kept: list[FitResult] = []
    try:
        result = stream.throw(interrupt)
        while True:
            kept.append(result)
            result = next(stream)
    except (KeyboardInterrupt, StopIteration):
        pass
    for result in kept:
        _take_stats(result)
        if result.engine == FALLBACK:
            sink.append(result)
        else:
            yield result
    raise interrupt


class FusedExecutor:
    """The executor protocol around another executor: fusable trials train in fused units,
    run by ``inner`` like any other work (one loop: retries, Ctrl-C grace, node loss and the
    store behave as for standard fits); the rest run on ``inner`` as standard fits."""

    def __init__(self, inner: Any, engine: str = "fused", payload: Payload | None = None):
        if engine not in ("fused", "auto"):
            raise ValueError(f"engine must be 'fused' or 'auto' here, got {engine!r}")
        self.inner = inner
        self.engine = engine
        self.payload = payload
        self.reasons: dict[str, int] = {}  # why trials ran on the standard engine -> how many
        self._units: dict[tuple[int, int], str] = {}
        self._costs: dict[str, float] = {}
        self._assigned: set[tuple[int, int]] = set()  # (candidate, fold) of trials seen by assign
        #: One dict per fused group trained by this executor, across its runs (see last_stats).
        self.groups: list[dict] = []

    @property
    def running(self) -> int:
        return getattr(self.inner, "running", 0)

    def describe(self) -> str:
        return f"fused engine ({self.engine}) over {self.inner.describe()}"

    def share(self, payload: Payload) -> Any:
        self.payload = payload
        return self.inner.share(payload)

    def assign(self, trials: Sequence[Trial]) -> list[Trial]:
        """``trials`` with those that will train fused marked (``engine``, the lane's seed):
        call before looking them up in a fit store, whose identity includes both."""
        if self.payload is None:
            raise RuntimeError("FusedExecutor needs the payload before assign()")
        plan = assign(self.payload, trials, self.engine,
                      in_process=bool(getattr(self.inner, "in_process", False)))
        self._units.update(plan.units)
        self._costs.update(plan.costs)
        self._assigned.update((t.candidate, t.fold) for t in trials)
        self._note(plan.reasons, warn=self.engine == "fused")
        return plan.trials

    def _note(self, reasons: Mapping[str, int], warn: bool) -> None:
        for why, n in reasons.items():
            self.reasons[why] = self.reasons.get(why, 0) + n
        if warn and reasons:
            warnings.warn(_reasons_text(reasons), UserWarning, stacklevel=3)

    def run(self, shared: Any, trials: Sequence[Trial]) -> Iterator[FitResult]:
        if self.payload is None:
            raise RuntimeError("share() must be called before run()")
        _last_stats.clear()
        if not any((t.candidate, t.fold) in self._assigned for t in trials):
            trials = self.assign(trials)  # called without assign(): plan them here
        by_unit: dict[str, list[Trial]] = {}
        rest: list[Trial] = []
        for t in trials:
            key = self._units.get((t.candidate, t.fold)) if t.engine == "fused" else None
            if key is None:
                rest.append(t)
            else:
                by_unit.setdefault(key, []).append(t)
        # The longest units first, so that the last to finish is a short one.
        order = sorted(by_unit, key=lambda k: -self._costs.get(k, 0.0))
        units = [Unit(run_unit, tuple(by_unit[k]), resources=self._resources(), share_gpus=True,
                      on_failure=unit_failed) for k in order]
        fallback: list[FitResult] = []
        stream = self.inner.run(shared, [*units, *rest])
        try:
            # ``yield from``: an interrupt thrown in by the runner reaches the inner stream,
            # which lets the units in flight finish and hands their fits over.
            yield from _without_fallbacks(stream, fallback)
        finally:
            self.groups.extend(dict(s) for s in _last_stats)
            close = getattr(stream, "close", None)
            if close is not None:
                close()  # stopped early (error_score="raise"): cancel what is left at once
        if not fallback:
            return
        reasons: dict[str, int] = {}
        for row in fallback:
            reasons[row.error or "unknown"] = reasons.get(row.error or "unknown", 0) + 1
        self._note(reasons, warn=True)
        planned = {(t.candidate, t.fold): t for t in trials}
        yield from self.inner.run(shared, [planned[(r.candidate, r.fold)] for r in fallback])

    @staticmethod
    def _resources() -> dict:
        env = dict(JAX_ENV)
        env["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", FUSED_XLA_FLAGS)
        if os.environ.get("RAYGRID_JAX_CACHE"):
            env["RAYGRID_JAX_CACHE"] = os.environ["RAYGRID_JAX_CACHE"]
        return {"runtime_env": {"env_vars": env}}


def _reasons_text(reasons: Mapping[str, int]) -> str:
    """The one warning, in the user's terms: how many fits ran one by one, and why."""
    total = sum(reasons.values())
    parts = "; ".join(f"{n} because {why}" for why, n in reasons.items())
    return (f"raygrid could not train {total} fits on the fused engine; they ran one by one on "
            f"the standard engine: {parts}")
