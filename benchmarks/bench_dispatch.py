"""Dispatch overhead: thousands of trivial fits (a dummy classifier), raygrid vs its peers.

Every engine runs in a process of its own (``--engine NAME``), one after another, on the same data
and grid: it starts its own local Ray if it needs one (the start-up time is reported per engine,
outside the measured time), does one small warm-up run, then the measured search. The measured
search has a wall-time limit (``--limit-s``; start-up and warm-up have one of their own): past it
every process of the engine's session is killed and its row says so (``timed_out``,
``fits_per_s_at_most``) instead of a measured throughput. scikit-learn's loky backend stalled at
20,000 fits on a 2-core machine and would otherwise never have let the run finish.

    python -m benchmarks.bench_dispatch --fits 2000                   # all engines, saved as dispatch_2000
    python -m benchmarks.bench_dispatch --engine raygrid --fits 2000  # one engine, here: READY and RESULT lines
"""
from __future__ import annotations

import argparse
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import joblib
import psutil
from sklearn.datasets import make_classification
from sklearn.dummy import DummyClassifier
from sklearn.model_selection import GridSearchCV as SkGridSearchCV

from benchmarks.common import Measure, cpu_util, machine, save

ENGINES = ("sklearn-1", "sklearn-all", "joblib-ray", "raygrid")
RAY_ENGINES = frozenset({"joblib-ray", "raygrid"})
LIMIT_S = 300.0  # the measured search, per engine
SETUP_LIMIT_S = 300.0  # imports, Ray start-up and the warm-up run, per engine
ROOT = Path(__file__).resolve().parents[1]


def problem(n_fits: int, cv: int = 5):
    X, y = make_classification(n_samples=200, n_features=10, random_state=0)
    grid = {"strategy": ["prior"], "random_state": list(range(n_fits // cv))}
    return X, y, grid, cv


# --- one engine, in this process ------------------------------------------------------------------

def searcher(name: str, X, y, cv: int):
    """A function grid -> fitted search for one engine (Ray must already be started for Ray's)."""
    def sklearn(n_jobs, g):
        return SkGridSearchCV(DummyClassifier(), g, cv=cv, n_jobs=n_jobs).fit(X, y)

    def joblib_ray(g):
        with joblib.parallel_backend("ray"):
            return SkGridSearchCV(DummyClassifier(), g, cv=cv, n_jobs=-1).fit(X, y)

    def rg(g):
        import raygrid
        return raygrid.GridSearchCV(DummyClassifier(), g, cv=cv, backend="ray").fit(X, y)

    return {"sklearn-1": lambda g: sklearn(1, g), "sklearn-all": lambda g: sklearn(-1, g),
            "joblib-ray": joblib_ray, "raygrid": rg}[name]


def start_ray() -> float:
    """Start a local Ray of this process's own (never join another) and register joblib's Ray
    backend; returns the seconds it took."""
    import ray
    from ray.util.joblib import register_ray

    t0 = time.perf_counter()
    ray.init(address="local", include_dashboard=False, log_to_driver=False, configure_logging=False)
    register_ray()
    return time.perf_counter() - t0


def emit(tag: str, payload: dict) -> None:
    """One protocol line on stdout for the parent process: ``TAG {json}``."""
    print(f"{tag} {json.dumps(payload)}", flush=True)


def measure_engine(name: str, n_fits: int) -> dict:
    """Ray if the engine needs it, a warm-up run, then the measured search; the row of this engine.
    Prints ``READY`` before the measured search (the parent's limit starts there) and ``RESULT``
    after it."""
    X, y, grid, cv = problem(n_fits)
    small = {"strategy": ["prior"], "random_state": list(range(20))}
    setup = {"ray_start_s": round(start_ray(), 2)} if name in RAY_ENGINES else {}
    try:
        search = searcher(name, X, y, cv)
        t0 = time.perf_counter()
        search(small)  # warm-up: worker pools, imports
        setup["warmup_s"] = round(time.perf_counter() - t0, 2)
        emit("READY", setup)
        with Measure() as m:
            fitted = search(grid)
        row = m.row(fits=n_fits, fits_per_s=round(n_fits / m.wall, 1),
                    best_score=float(fitted.best_score_), **setup)
        emit("RESULT", row)
        return row
    finally:
        if name in RAY_ENGINES:
            import ray
            ray.shutdown()


# --- every engine, each in a child process under a time limit ------------------------------------

def _read_lines(stream, lines: queue.Queue) -> None:
    for line in stream:
        lines.put(line)
    lines.put(None)  # the child closed its output: it ended


def _next_message(lines: queue.Queue, tag: str, deadline: float) -> dict | None:
    """The payload of the child's next ``tag`` line; None if its output ends first.
    Raises TimeoutError at the deadline (``time.monotonic()``)."""
    while True:
        try:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise TimeoutError from None
        if line is None:
            return None
        if line.startswith(tag + " "):
            return json.loads(line[len(tag) + 1:])


def session_members(sid: int) -> list[psutil.Process]:
    """Every process of session ``sid`` but its leader. Ray's workers move to process groups of
    their own but stay in the session, and so do loky's workers."""
    members = []
    for p in psutil.process_iter():
        try:
            if p.pid != sid and os.getsid(p.pid) == sid:
                members.append(p)
        except (OSError, psutil.Error):
            pass  # gone meanwhile, or not ours to look at
    return members


def kill_tree(proc: subprocess.Popen, grace_s: float = 5.0, rounds: int = 10) -> None:
    """End a child not yet reaped and every process of the session it leads (start_new_session;
    while it is not reaped, that session id names nothing else): SIGTERM, up to ``grace_s`` for
    them to go, then SIGKILL until none is left (Ray's raylet may start workers meanwhile);
    then reap the child."""
    proc.send_signal(signal.SIGTERM)
    members = session_members(proc.pid)
    for p in members:
        try:
            p.send_signal(signal.SIGTERM)  # psutil checks the pid still names the same process
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(members, timeout=grace_s)
    proc.send_signal(signal.SIGKILL)
    for _ in range(rounds):
        members = session_members(proc.pid)
        if not members:
            break
        for p in members:
            try:
                p.send_signal(signal.SIGKILL)
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(members, timeout=1.0)
    proc.wait()


def timed_out_row(n_fits: int, limit_s: float, setup: dict, cpu_util: float) -> dict:
    """The row of an engine stopped at the limit: it did not finish ``n_fits`` fits in ``limit_s``
    seconds, so its throughput was below ``n_fits / limit_s`` (``cpu_util``: the machine's over
    those seconds)."""
    return {"timed_out": True, "limit_s": limit_s, "fits": n_fits,
            "fits_per_s_at_most": round(n_fits / limit_s, 1), "cpu_util": round(cpu_util, 3), **setup}


def run_engine(name: str, n_fits: int, limit_s: float = LIMIT_S,
               setup_limit_s: float = SETUP_LIMIT_S) -> dict:
    """One engine in a child process (a session of its own, a private Ray temp dir): its measured
    row, a timed-out row past ``limit_s``, or ``{"error": ...}``."""
    ray_tmp = tempfile.mkdtemp(prefix="rgdp", dir="/tmp")  # short: Ray's socket paths live here
    env = {**os.environ, "RAY_TMPDIR": ray_tmp, "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    with tempfile.TemporaryFile(mode="w+") as err:
        proc = subprocess.Popen([sys.executable, "-m", "benchmarks.bench_dispatch", "--engine", name,
                                 "--fits", str(n_fits)], stdout=subprocess.PIPE, stderr=err, text=True,
                                env=env, cwd=ROOT, start_new_session=True)
        lines: queue.Queue = queue.Queue()
        threading.Thread(target=_read_lines, args=(proc.stdout, lines), daemon=True).start()
        try:
            try:
                setup = _next_message(lines, "READY", time.monotonic() + setup_limit_s)
            except TimeoutError:
                return {"error": f"no start-up and warm-up within {setup_limit_s:g} s"}
            cpu0, t0 = psutil.cpu_times(), time.monotonic()
            try:
                row = None if setup is None else _next_message(lines, "RESULT", t0 + limit_s)
            except TimeoutError:
                util = cpu_util(cpu0, psutil.cpu_times(), time.monotonic() - t0)
                return timed_out_row(n_fits, limit_s, setup, util)
            try:
                proc.wait(timeout=60)  # Ray's shutdown, loky's workers
            except subprocess.TimeoutExpired:
                pass
            if row is None:
                err.seek(0)
                return {"error": f"exit status {proc.returncode}: " + (err.read()[-2000:] or "no output")}
            return row
        finally:
            if proc.returncode is None:  # not reaped yet: its pid and process group are still its own
                kill_tree(proc)
            shutil.rmtree(ray_tmp, ignore_errors=True)


def _throughput(row: dict) -> tuple[float, bool] | None:
    """An engine's fits/s and whether that is only an upper bound (timed out); None if failed."""
    if row.get("timed_out"):
        return row["fits_per_s_at_most"], True
    return (row["fits_per_s"], False) if "fits_per_s" in row else None


def vs_sklearn_all(row: dict, base: dict) -> tuple[str, float] | None:
    """``(key, ratio)`` of an engine's throughput to sklearn-all's: ``throughput_vs_sklearn_all``
    when both finished, ``..._at_most`` when the engine timed out, ``..._at_least`` when sklearn-all
    did; None when neither finished (or either failed)."""
    if row is base:
        return ("throughput_vs_sklearn_all", 1.0) if _throughput(row) else None
    mine, theirs = _throughput(row), _throughput(base)
    if not (mine and theirs) or (mine[1] and theirs[1]):
        return None
    suffix = "_at_most" if mine[1] else "_at_least" if theirs[1] else ""
    return "throughput_vs_sklearn_all" + suffix, round(mine[0] / theirs[0], 2)


def derive(rows: dict, n_fits: int) -> None:
    """Each row's dispatch overhead against serial scikit-learn spread over every core (a lower
    bound for a timed-out engine; none if sklearn-1 did not finish) and its throughput ratio to
    sklearn-all."""
    serial = rows.get("sklearn-1", {}).get("wall_s")
    base = rows.get("sklearn-all", {})
    slots = machine()["cpus"]
    for row in rows.values():
        if "error" in row:
            continue
        if serial:
            key, wall = (("overhead_ms_per_fit_at_least", row["limit_s"]) if row.get("timed_out")
                         else ("overhead_ms_per_fit", row["wall_s"]))
            row[key] = round(max(0.0, wall - serial / slots) / n_fits * 1000, 3)
        ratio = vs_sklearn_all(row, base)
        if ratio:
            row[ratio[0]] = ratio[1]


def note(rows: dict, limit_s: float) -> str:
    """The table's note: how the engines ran, their Ray start-up, and what a timed-out row means."""
    starts = ", ".join(f"{name} {row['ray_start_s']:g} s" for name, row in rows.items()
                       if row.get("ray_start_s") is not None)
    text = (f"Each engine in a process of its own, after one warm-up run, its measured search limited "
            f"to {limit_s:g} s.")
    if starts:
        text += f" Ray start-up (not in the wall times): {starts}."
    if any(row.get("timed_out") for row in rows.values()):
        text += (f" A timed-out engine was stopped after {limit_s:g} s: its fits/s is an upper bound, "
                 "its CPU util the machine's over those seconds.")
    return text


def run(n_fits: int = 2000, engines=ENGINES, limit_s: float = LIMIT_S) -> dict:
    rows = {}
    for name in engines:
        rows[name] = run_engine(name, n_fits, limit_s)
        print(f"{name}: {json.dumps(rows[name])}", file=sys.stderr, flush=True)
    derive(rows, n_fits)
    return {"benchmark": f"dispatch_{n_fits}", "machine": machine(), "limit_s": limit_s,
            "engines": rows, "note": note(rows, limit_s)}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fits", type=int, default=2000)
    ap.add_argument("--limit-s", type=float, default=LIMIT_S,
                    help="wall-time limit of each engine's measured search (seconds)")
    ap.add_argument("--engines", default=",".join(ENGINES), help="comma-separated, in this order")
    ap.add_argument("--out", help="name of the JSON under benchmarks/results (default dispatch_FITS)")
    ap.add_argument("--engine", choices=ENGINES,
                    help="run only this engine, here, and print its row (what each child process does)")
    args = ap.parse_args(argv)
    if args.engine:
        measure_engine(args.engine, args.fits)
        return
    out = run(args.fits, tuple(args.engines.split(",")), args.limit_s)
    path = save(args.out or out["benchmark"], out)
    print(json.dumps(out, indent=2))
    print(f"saved {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
