"""Ray processes a crashed driver leaves behind, and their cleaning on raygrid's next start.

When the driver that started a local Ray dies without shutting it down (``kill -9``, the OOM
killer, a segfault), Ray stops its GCS server, raylet and workers, but two processes the raylet
started outlive it: ``ray::DashboardAgent`` and ``ray::RuntimeEnvAgent`` (seen with Ray 2.60;
they are re-parented to init and hold about 100 MB each). So raygrid records the processes of each
local Ray it starts (pid and start time, in ``RAYGRID_STATE_DIR``, default
``~/.cache/raygrid/local-ray/``, one file per driver) and removes the record when it shuts that Ray
down. On its next start of a local Ray, a record whose driver is gone names leftovers: each
recorded process still running with the same start time (so never a process that merely reuses
the pid) is stopped (SIGTERM, then SIGKILL), with one line on stderr. Processes raygrid did not
start are never touched; a Ray that a user started (``ray start``) or joined is never recorded.
"""
from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

STATE_ENV = "RAYGRID_STATE_DIR"


def state_dir() -> Path:
    base = os.environ.get(STATE_ENV) or os.path.join("~", ".cache", "raygrid")
    return Path(base).expanduser() / "local-ray"


def _record_path(pid: int | None = None) -> Path:
    return state_dir() / f"{os.getpid() if pid is None else pid}.json"


def _process(pid: int, started: float):
    """The running process ``pid`` if it started at ``started`` (else None: gone or reused)."""
    import psutil

    try:
        proc = psutil.Process(pid)
        if abs(proc.create_time() - started) > 0.01 or proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return proc
    except psutil.Error:
        return None


def record_started() -> None:
    """Record this process's child processes (the local Ray it started), replacing any record."""
    try:
        import psutil

        me = psutil.Process()
        children = []
        for child in me.children(recursive=True):
            try:
                children.append([child.pid, child.create_time(), child.name()])
            except psutil.Error:
                continue
        path = _record_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"driver": [me.pid, me.create_time()], "processes": children}))
        tmp.replace(path)
    except Exception:  # noqa: BLE001 - a record is a courtesy: never fail a search for it
        pass


def forget_started() -> None:
    """Ray was shut down cleanly: nothing of it is left."""
    try:
        _record_path().unlink()
    except OSError:
        pass


def clean_leftovers(wait_s: float = 3.0) -> list[tuple[int, str]]:
    """Stop the processes recorded for local Rays whose drivers are gone; [(pid, name)] stopped."""
    try:
        records = sorted(state_dir().glob("*.json"))
    except OSError:
        return []
    stopped: list[tuple[int, str]] = []
    for path in records:
        try:
            record = json.loads(path.read_text())
            driver_pid, driver_started = record["driver"]
            if driver_pid == os.getpid() or _process(driver_pid, driver_started) is not None:
                continue  # its driver still runs: its Ray is in use
            live = [(proc, name) for pid, started, name in record["processes"]
                    if (proc := _process(pid, started)) is not None]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        for proc, name in live:
            _signal(proc, signal.SIGTERM)
        deadline = time.monotonic() + wait_s
        while any(_running(proc) for proc, _ in live) and time.monotonic() < deadline:
            time.sleep(0.1)
        for proc, name in live:
            if _running(proc):
                _signal(proc, signal.SIGKILL)
            stopped.append((proc.pid, name))
        try:
            path.unlink()
        except OSError:
            pass
    if stopped:
        names = ", ".join(f"{name} ({pid})" for pid, name in stopped)
        print(f"raygrid: stopped {len(stopped)} Ray process(es) left by an earlier raygrid run "
              f"that ended without shutting Ray down: {names}", file=sys.stderr, flush=True)
    return stopped


def _running(proc) -> bool:
    import psutil

    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _signal(proc, signum: int) -> None:
    try:
        proc.send_signal(signum)
    except Exception:  # noqa: BLE001 - gone meanwhile
        pass


__all__ = ["clean_leftovers", "forget_started", "record_started", "state_dir", "STATE_ENV"]
