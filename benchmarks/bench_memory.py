"""Driver memory and throughput of a 20,000-fit search of a trivial estimator, with the fit store.

The driver's RSS is sampled by psutil (every 20 ms) while the search runs; the result is printed
as one JSON object. The same search without a store runs first (in the same process, on the same
warm Ray), so the cost of writing every fit to SQLite is read as a wall-time ratio and as the
driver's extra CPU seconds (the ratio is only as steady as the machine is quiet), and a search a
tenth the size shows whether the driver's memory grows with the number of fits.

    python -m benchmarks.bench_memory                # 20,000 fits
    python -m benchmarks.bench_memory --fits 2000    # quicker
"""
from __future__ import annotations

import argparse
import gc
import json
import platform
import tempfile
import threading
import time

import psutil
from sklearn.datasets import make_classification
from sklearn.dummy import DummyClassifier

from benchmarks.common import save


class RssSampler:
    def __init__(self, interval: float = 0.02):
        self.interval = interval
        self.peak = 0
        self._proc = psutil.Process()
        self._stop = threading.Event()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._proc.memory_info().rss)
            self._stop.wait(self.interval)

    def __enter__(self) -> "RssSampler":
        self.start = self._proc.memory_info().rss
        self.peak = self.start
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._proc.memory_info().rss)


def one(n_fits: int, cv: int, storage: str | None) -> dict:
    from raygrid import GridSearchCV

    X, y = make_classification(n_samples=200, n_features=10, random_state=0)
    grid = {"strategy": ["prior"], "random_state": list(range(n_fits // cv))}
    gc.collect()
    with RssSampler() as rss:
        t0, cpu0 = time.perf_counter(), time.process_time()
        search = GridSearchCV(DummyClassifier(), grid, cv=cv, refit=False, storage=storage, backend="ray")
        search.fit(X, y)
        wall = time.perf_counter() - t0
        cpu = time.process_time() - cpu0
    n = len(search.results_)
    assert n == n_fits, n
    return {
        "fits": n,
        "storage": storage is not None,
        "wall_s": round(wall, 2),
        "fits_per_s": round(n / wall, 1),
        "driver_cpu_s": round(cpu, 2),  # the driver's own work, robust to a busy machine
        "driver_rss_start_mb": round(rss.start / 2**20, 1),
        "driver_rss_peak_mb": round(rss.peak / 2**20, 1),
        "driver_rss_growth_mb": round((rss.peak - rss.start) / 2**20, 1),
        "cached": int(search.results_["cached"].sum()),
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fits", type=int, default=20_000)
    parser.add_argument("--cv", type=int, default=5)
    args = parser.parse_args(argv)

    from raygrid.engine.executors.cluster import connect

    t0 = time.perf_counter()
    connect()
    ray_start = time.perf_counter() - t0
    one(max(args.cv * 20, 100), args.cv, None)  # warm the workers
    with tempfile.TemporaryDirectory() as tmp:
        small = one(max(args.fits // 10, args.cv), args.cv, f"{tmp}/small")
        plain = one(args.fits, args.cv, None)
        stored = one(args.fits, args.cv, f"{tmp}/store")
        resumed = one(args.fits, args.cv, f"{tmp}/store")  # every fit read back from the store
    out = {
        "benchmark": "memory",
        "machine": {"cpus": psutil.cpu_count(), "platform": platform.platform(),
                    "load_avg_1m": round(psutil.getloadavg()[0], 2)},
        "ray_start_s": round(ray_start, 2),
        "tenth_with_store": small,
        "without_store": plain,
        "with_store": stored,
        "rerun_all_cached": resumed,
        "store_slowdown": round(stored["wall_s"] / plain["wall_s"], 3),
        "store_driver_cpu_s": round(stored["driver_cpu_s"] - plain["driver_cpu_s"], 2),
        "peak_rss_mb": max(r["driver_rss_peak_mb"] for r in (small, plain, stored, resumed)),
        "fits_per_s_with_store": stored["fits_per_s"],
    }
    print(json.dumps(out, indent=2))
    save("memory", out)  # benchmarks/results/memory.json: the README's table is generated from it
    return out


if __name__ == "__main__":
    main()
