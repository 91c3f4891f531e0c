"""A unit: what one task runs (on a JAX worker): its trials planned into groups and trained,
and what it cannot train handed back as fallback rows with the reason."""
from __future__ import annotations

import traceback
from typing import Mapping, Sequence

import numpy as np

from sklearn.base import clone

from raygrid.engine.describe import code_identity
from raygrid.engine.fitting import PROCESS, FitResult, Payload, location
from raygrid.engine.fused.group import run_group
from raygrid.engine.fused.grouping import plan_fusion
from raygrid.engine.fused.plan import NotFusable, final_step_view, fingerprint
from raygrid.engine.fused.runtime import configure_compilation_cache, without_tensorflow
from raygrid.engine.plan import Trial

#: Members built in this process for the search data last seen (digest -> build key -> member):
#: a worker that runs several units of one search (other batch sizes) builds each model once.
_members_cache: dict[str, dict] = {}

#: The ``engine`` of a row that says "not trained here: run me on the standard engine".
FALLBACK = "fallback"


def _fallback_rows(trials: Sequence[Trial], why: str | Mapping[tuple[int, int], str]
                   ) -> list[FitResult]:
    def reason(t: Trial) -> str:
        return why if isinstance(why, str) else why.get((t.candidate, t.fold), "unknown")

    return [FitResult(t.candidate, t.fold, {}, None, 0.0, 0.0, 0, error=reason(t),
                      seed=t.seed, engine=FALLBACK) for t in trials]


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else "unknown error"


def run_unit(payload: Payload, trials: Sequence[Trial]) -> list[FitResult]:
    """Train ``trials`` fused (one program per model structure), in this process.

    What cannot be fused here (another Keras backend, a model that does not build or switch
    identically, a program that fails) comes back as rows with ``engine="fallback"`` and the
    reason as ``error``: the driver runs those trials on the standard engine.
    """
    from raygrid.keras import keras_backend

    results = _run_unit(payload, trials)
    if payload.driver != PROCESS:  # the identity of the code this worker ran, for the driver
        params = {(t.candidate, t.fold): t.params for t in trials}
        for result in results:
            if result.engine != FALLBACK:
                estimator = clone(payload.estimator).set_params(
                    **clone(dict(params[(result.candidate, result.fold)]), safe=False))
                result.code = code_identity(estimator, cache=True)
    return results


def _run_unit(payload: Payload, trials: Sequence[Trial]) -> list[FitResult]:
    from raygrid.keras import keras_backend

    with without_tensorflow():
        backend = keras_backend()
        if backend != "jax":
            return _fallback_rows(trials, f"the Keras backend of the worker is {backend!r}, "
                                          "not 'jax'")
        configure_compilation_cache()
        try:
            payload, trials = final_step_view(payload, trials, transform=True)
        except NotFusable as exc:
            return _fallback_rows(trials, str(exc))
        except Exception:  # noqa: BLE001 - the standard engine runs (and reports) it
            return _fallback_rows(trials, "the pipeline's preprocessing failed ("
                                  + _last_line(traceback.format_exc()) + ")")
        plan = plan_fusion(payload, trials, "fused", _members_of(payload))
        results = _fallback_rows(plan.rest, plan.why)
        where = location()
        for spec in plan.groups:
            try:
                group_results, stats = run_group(payload, spec, plan.members, where)
            except Exception:  # noqa: BLE001 - the standard engine runs them instead
                results += _fallback_rows(spec.trials(), "the fused program failed ("
                                          + _last_line(traceback.format_exc()) + ")")
                continue
            stats["plan_s"] = plan.plan_s
            stats["keras_backend"] = backend  # what trained it, as this worker saw it
            if group_results:  # the group's timings travel with its first fit (see last_stats)
                group_results[0].group_stats = stats
            results += group_results
        return results


def _members_of(payload: Payload) -> dict:
    """This process's members for ``payload``'s estimator class and data (built once per
    process and search, whatever the unit); members of other searches are dropped."""
    try:
        key = fingerprint((type(payload.estimator).__qualname__, payload.X, payload.y,
                     [(np.asarray(tr), np.asarray(te)) for tr, te in payload.splits]))
    except Exception:  # noqa: BLE001 - unhashable data: members for this unit only
        return {}
    if key not in _members_cache:
        _members_cache.clear()
        _members_cache[key] = {}
    return _members_cache[key]


def unit_failed(trials: Sequence[Trial], exc: BaseException) -> list[FitResult]:
    """A unit whose task raised, or whose worker died after its retries: the standard engine
    runs its trials (errors of a fit itself are rows, never this)."""
    text = "".join(traceback.format_exception_only(type(exc), exc))
    return _fallback_rows(trials, f"its task failed ({_last_line(text)})")
