"""How trials run: one small seam (share once, run many) with a serial and a Ray implementation."""
from __future__ import annotations

import numbers
import os
from typing import Any

from raygrid.engine.executors.base import Executor, Unit, Work, gpu_share
from raygrid.engine.executors.serial import SerialExecutor

from raygrid.engine.executors.auto import AutoExecutor, choose_backend

BACKENDS = ("auto", "ray", "serial")


def check_options(n_jobs: Any = None, max_retries: Any = 3, fit_timeout: Any = None) -> None:
    """Refuse what joblib and Ray would refuse: ``n_jobs=0``, a negative ``max_retries``; and a
    ``fit_timeout`` that is not a positive number of seconds."""
    if fit_timeout is not None and (isinstance(fit_timeout, bool) or not isinstance(
            fit_timeout, numbers.Real) or not fit_timeout > 0 or fit_timeout == float("inf")):
        raise ValueError(f"fit_timeout must be None or a positive number of seconds (a fit that "
                         f"runs longer is stopped and is a failed fit), got {fit_timeout!r}")
    if n_jobs is not None and (isinstance(n_jobs, bool) or not isinstance(n_jobs, numbers.Integral)
                               or n_jobs == 0):
        raise ValueError(f"n_jobs must be None, a positive integer (fits at a time) or negative "
                         f"(-1: every slot), got {n_jobs!r}; n_jobs=0 has no meaning")
    if isinstance(max_retries, bool) or not isinstance(max_retries, numbers.Integral) or max_retries < 0:
        raise ValueError(f"max_retries must be an integer >= 0 (how often Ray reruns a fit whose "
                         f"worker or node died), got {max_retries!r}")


def get_executor(backend: str = "ray", **options: Any) -> Executor:
    """The executor for ``backend``: ``"ray"``, ``"serial"`` (in-process, the oracle) or
    ``"auto"`` (in-process while the search is shorter than Ray's start-up, then Ray; see
    :mod:`raygrid.engine.executors.auto` and :func:`choose_backend`).

    ``options`` (``n_jobs``, ``max_retries``, ``fit_timeout``, and for Ray ``address``,
    ``ray_remote_args``) are checked for every backend; the serial executor uses only
    ``fit_timeout``.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    check_options(options.get("n_jobs"), options.get("max_retries", 3), options.get("fit_timeout"))
    if backend == "serial":
        return SerialExecutor(fit_timeout=options.get("fit_timeout"))
    if backend == "auto":
        return AutoExecutor(**options)
    if backend == "ray":
        from raygrid.engine.executors.cluster import connect
        from raygrid.engine.executors.ray import RayExecutor

        if options.get("address") or os.environ.get("RAY_ADDRESS"):
            # A wrong or unreachable cluster fails here, before any store is made.
            connect(options.get("address"))
        executor = RayExecutor(**options)
        import ray

        if ray.is_initialized():  # a request no node can run fails here too, before any store
            executor.check_schedulable()
        return executor


__all__ = ["Executor", "Unit", "Work", "gpu_share", "SerialExecutor", "AutoExecutor",
           "get_executor", "choose_backend", "check_options", "BACKENDS"]
