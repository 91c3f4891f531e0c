"""How trials run: one small seam (share once, run many) with a serial and a Ray implementation."""
from __future__ import annotations

from typing import Any

from raygrid.executors.base import Executor
from raygrid.executors.serial import SerialExecutor

from raygrid.executors.auto import AutoExecutor, choose_backend

BACKENDS = ("auto", "ray", "serial")


def get_executor(backend: str = "ray", **options: Any) -> Executor:
    """The executor for ``backend``: ``"ray"``, ``"serial"`` (in-process, the oracle) or
    ``"auto"`` (in-process while the search is shorter than Ray's start-up, then Ray; see
    :mod:`raygrid.executors.auto` and :func:`choose_backend`)."""
    if backend == "serial":
        return SerialExecutor()
    if backend == "auto":
        return AutoExecutor(**options)
    if backend == "ray":
        from raygrid.executors.ray import RayExecutor

        return RayExecutor(**options)
    raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")


__all__ = ["Executor", "SerialExecutor", "AutoExecutor", "get_executor", "choose_backend", "BACKENDS"]
