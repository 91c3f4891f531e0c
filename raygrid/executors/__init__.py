"""How trials run: one small seam (share once, run many) with a serial and a Ray implementation."""
from __future__ import annotations

from typing import Any

from raygrid.executors.base import Executor, Unit, Work, gpu_share
from raygrid.executors.serial import SerialExecutor

BACKENDS = ("ray", "serial")


def get_executor(backend: str = "ray", **options: Any) -> Executor:
    """The executor for ``backend``: ``"ray"`` (default) or ``"serial"`` (in-process, the oracle)."""
    if backend == "serial":
        return SerialExecutor()
    if backend == "ray":
        from raygrid.executors.ray import RayExecutor

        return RayExecutor(**options)
    raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")


__all__ = ["Executor", "Unit", "Work", "gpu_share", "SerialExecutor", "get_executor", "BACKENDS"]
