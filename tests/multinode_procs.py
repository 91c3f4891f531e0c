"""Find and end exactly the processes a multi-node test started, never another Ray on the machine.

A test starts its Ray (``ray.cluster_utils.Cluster`` in a helper interpreter, or ``ray start``) in
a session of its own (``start_new_session=True``) and with ``RAY_TMPDIR`` set to a private
directory that every process it starts inherits. Its processes are those of that session, plus
any that left the session but still carry the private ``RAY_TMPDIR`` in their environment.
(``ray stop`` is no substitute: it ends every Ray process on the machine.)
"""
from __future__ import annotations

import os
import signal
import time
import warnings


def _alive(pid: str) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            state = f.read().rsplit(")", 1)[-1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")  # a zombie is dead already; its parent reaps it


def _has_env(pid: str, marker: bytes) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return marker in f.read().split(b"\0")
    except OSError:
        return False


def started_pids(sid: int | None, tmpdir: str | None) -> list[int]:
    """Live processes of session ``sid`` or with ``RAY_TMPDIR=tmpdir`` in their environment."""
    marker = f"RAY_TMPDIR={tmpdir}".encode() if tmpdir else None
    me = os.getpid()
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            ours = sid is not None and os.getsid(int(entry)) == sid
        except OSError:
            continue
        if not ours and marker is not None:
            ours = _has_env(entry, marker)
        if ours and _alive(entry):
            pids.append(int(entry))
    return pids


def _signal_all(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except OSError:
            pass


def end_started(sid: int | None, tmpdir: str | None, wait_s: float = 0.0,
                grace_s: float = 5.0, kill_wait_s: float = 30.0) -> list[int]:
    """End what :func:`started_pids` finds; return the pids that had to be signalled.

    First wait up to ``wait_s`` for the processes to exit on their own (after a clean shutdown),
    then SIGTERM them, then SIGKILL what is left after ``grace_s`` (Ray's raylets and GCS often
    outlive a SIGTERM by many seconds on a busy machine) and wait up to ``kill_wait_s`` for them
    to be gone; a process that is still there then is reported with a warning.
    """
    deadline = time.monotonic() + wait_s
    while started_pids(sid, tmpdir) and time.monotonic() < deadline:
        time.sleep(0.2)
    signalled = started_pids(sid, tmpdir)
    _signal_all(started_pids(sid, tmpdir), signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while started_pids(sid, tmpdir) and time.monotonic() < deadline:
        time.sleep(0.2)
    # SIGKILL on every round: a dying raylet or autoscaler may still have started a process.
    deadline = time.monotonic() + kill_wait_s
    while (pids := started_pids(sid, tmpdir)) and time.monotonic() < deadline:
        _signal_all(pids, signal.SIGKILL)
        time.sleep(0.2)
    left = started_pids(sid, tmpdir)
    if left:
        warnings.warn(f"processes still there {kill_wait_s:g} s after SIGKILL: {left}",
                      RuntimeWarning, stacklevel=2)
    return signalled
