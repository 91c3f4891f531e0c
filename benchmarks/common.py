"""Measuring helpers shared by the benchmarks: wall time, CPU utilisation, peak driver memory."""
from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import psutil

from benchmarks.seed_model import PIMA  # noqa: F401 - re-exported for the benchmarks

RESULTS = Path(__file__).resolve().parent / "results"


def _busy(times) -> float:
    """CPU seconds spent on anything but idling, niced processes included (Ray runs its workers
    with a raised nice value, so their time is counted as ``nice``, not ``user``)."""
    fields = times._asdict()
    # guest time is already inside user/nice; steal is the hypervisor's, not ours
    not_ours = ("idle", "iowait", "steal", "guest", "guest_nice")
    return sum(v for k, v in fields.items() if k not in not_ours)


def cpu_util(cpu0, cpu1, wall: float) -> float:
    """The machine's CPU utilisation (0-1, every core) between two ``psutil.cpu_times()``
    readings ``wall`` seconds apart."""
    return (_busy(cpu1) - _busy(cpu0)) / (wall * psutil.cpu_count()) if wall else 0.0


class Measure:
    """Wall time, machine-wide CPU utilisation and the driver's peak RSS over a block."""

    def __init__(self, interval: float = 0.05):
        self.interval = interval
        self.wall = 0.0
        self.cpu_util = 0.0
        self.peak_rss_mb = 0.0
        self._stop = threading.Event()

    def _sample(self) -> None:
        proc = psutil.Process()
        while not self._stop.is_set():
            self.peak_rss_mb = max(self.peak_rss_mb, proc.memory_info().rss / 2**20)
            self._stop.wait(self.interval)

    def __enter__(self) -> "Measure":
        self._cpu0 = psutil.cpu_times()
        self._t0 = time.perf_counter()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.wall = time.perf_counter() - self._t0
        self._stop.set()
        self._thread.join()
        self.cpu_util = cpu_util(self._cpu0, psutil.cpu_times(), self.wall)

    def row(self, **extra) -> dict:
        return {"wall_s": round(self.wall, 3), "cpu_util": round(self.cpu_util, 3),
                "peak_driver_rss_mb": round(self.peak_rss_mb, 1), **extra}


def save(name: str, payload: dict) -> Path:
    path = RESULTS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=str))
    return path


def machine() -> dict:
    return {"cpus": psutil.cpu_count(), "memory_gb": round(psutil.virtual_memory().total / 2**30, 1)}

