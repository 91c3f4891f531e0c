"""The child processes that run the local fits of ``backend="auto"``, and how they start.

A child reads a setup (the driver's ``sys.path``, working directory and environment of the
moment), then the search's payload, answers "ready", then runs one trial per message it reads
and writes back (result, CPU seconds), until its input closes. Messages are length-prefixed
pickles (cloudpickle: classes and functions of ``__main__`` or a notebook travel by value, as to
Ray's workers). A child ignores Ctrl-C (the driver decides), dies with its parent (Linux:
``PR_SET_PDEATHSIG``), and what fits print goes to the driver's stderr.

Starting a fresh interpreter and importing scikit-learn takes one to two seconds, more than
many whole searches. On Linux raygrid therefore keeps one *zygote* per driver: a process
started once (on the first local search), which imports NumPy, SciPy, scikit-learn and
raygrid's fitting code and then only forks a child for each search on request, as Python's
``forkserver`` does (without its re-import of the user's ``__main__``). A child so made starts
in milliseconds. It is a copy of that idle process, never of the driver, whose OpenMP thread
pools and locks a fork would copy in an unusable state; and since the zygote imports no user
code, a child never starts with user code older than what is on disk. Elsewhere, or when the
zygote cannot be started, each child is a fresh interpreter.
"""
from __future__ import annotations

import atexit
import importlib
import os
import pickle
import signal
import socket
import struct
import subprocess
import sys
import threading
import traceback
from typing import Any, Sequence

_HEADER = struct.Struct("!Q")
_NUMBER = struct.Struct("!q")
_PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))
#: What the zygote imports before it forks anything: what every fit needs.
PRELOAD = ("numpy", "scipy.sparse", "sklearn.base", "sklearn.metrics", "cloudpickle",
           "raygrid.engine.fitting")
#: Packages whose modules the zygote may also import for a search (those of its estimator):
#: installed libraries that start no threads on import, so that forking stays safe.
WARMABLE = ("sklearn", "numpy", "scipy", "pandas")


# --- messages ---------------------------------------------------------------------------------

def write_message(fh, obj: Any) -> None:
    import cloudpickle

    write_raw(fh, cloudpickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))


def write_raw(fh, data: bytes) -> None:
    """A message already pickled (the payload, pickled once per search)."""
    fh.write(_HEADER.pack(len(data)) + data)
    fh.flush()


def _read_exactly(fd: int, n: int) -> bytes:
    chunks, left = [], n
    while left:
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            raise EOFError
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def read_message(fd: int) -> Any:
    (size,) = _HEADER.unpack(_read_exactly(fd, _HEADER.size))
    return pickle.loads(_read_exactly(fd, size))


def setup() -> dict[str, Any]:
    """What a child takes from the driver before the payload."""
    return {"path": [p for p in sys.path if isinstance(p, str)], "cwd": os.getcwd(),
            "env": dict(os.environ)}


# --- the child --------------------------------------------------------------------------------

def _die_with_parent() -> None:
    """Linux: the kernel kills this process when its parent dies."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001 - elsewhere the child ends when its input closes
        pass


def serve(fd: int, out) -> None:
    """The child's loop: setup, payload, then (trial -> (result, CPU seconds)) until EOF."""
    import time

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's to handle
    _die_with_parent()
    from raygrid.engine.fitting import fit_and_score, location

    try:
        given = read_message(fd)
        sys.path[:] = given["path"] + [p for p in sys.path if p not in given["path"]]
        if os.environ != given["env"]:
            os.environ.clear()
            os.environ.update(given["env"])
        try:
            os.chdir(given["cwd"])
        except OSError:  # the driver's directory was removed: stay where this process is
            pass
        payload = read_message(fd)
        where = location()
        write_message(out, "ready")  # the fits' clocks start from here
        while True:
            trial = read_message(fd)
            cpu = time.process_time()
            result = fit_and_score(payload, trial, where)
            write_message(out, (result, time.process_time() - cpu))
    except EOFError:
        return


def serve_stdio() -> None:
    """A fresh interpreter's child: messages in on stdin, out on stdout (prints go to stderr)."""
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # what fits print goes to stderr, never into the results pipe
    serve(sys.stdin.fileno(), out)


def _serve_forked(conn: int, err: int) -> None:
    """A forked child's start: the driver's stderr for what fits print, fresh random state."""
    os.dup2(err, 1)
    os.dup2(err, 2)
    os.close(err)
    import numpy as np

    np.random.seed()  # each child its own global random state, as a fresh interpreter has
    serve(conn, os.fdopen(os.dup(conn), "wb"))


# --- the zygote -------------------------------------------------------------------------------

def _receive(sock: socket.socket) -> tuple[Any, list[int]]:
    """One request (a length-prefixed pickle) and the file descriptors that came with it."""
    data, fds, _, _ = socket.recv_fds(sock, 1 << 16, 4)
    if not data:
        raise EOFError
    while len(data) < _HEADER.size:
        data += _recv_more(sock)
    (size,) = _HEADER.unpack(data[:_HEADER.size])
    while len(data) < _HEADER.size + size:
        data += _recv_more(sock)
    return pickle.loads(data[_HEADER.size:]), fds


def _recv_more(sock: socket.socket) -> bytes:
    chunk = sock.recv(1 << 16)
    if not chunk:
        raise EOFError
    return chunk


def _warm(names: Sequence[str]) -> None:
    """Import these modules of :data:`WARMABLE` packages, and learn where they come from (the
    identity of the code a fit runs, which every child reports)."""
    from raygrid.engine.describe import origin

    for name in names:
        if name.partition(".")[0] in WARMABLE:
            try:
                importlib.import_module(name)
                origin(name)
            except Exception:  # noqa: BLE001 - the child imports it itself, and reports
                pass


def zygote_main(fd: int) -> None:
    """The zygote's loop: ("fork", warm) with a connection and an error stream -> the child's
    pid (negative: the errno of a failed fork); ("wait", pid) -> its exit code (negative: the
    signal that killed it)."""
    import warnings

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # It ends when the driver's end of the socket closes (the driver exited or was killed);
    # its children then die with it (PR_SET_PDEATHSIG).
    sock = socket.socket(fileno=fd)
    for name in PRELOAD:
        importlib.import_module(name)  # raygrid's own and scikit-learn's: a failure here is real
    _warm(PRELOAD)
    # NumPy's BLAS threads are idle here, and the BLAS library stops and restarts them around a
    # fork (Python 3.12+ warns of any threads).
    warnings.filterwarnings("ignore", message=".*fork", category=DeprecationWarning)
    while True:
        try:
            (op, arg), fds = _receive(sock)
        except (EOFError, OSError):
            os._exit(0)
        if op == "fork":
            _warm(arg)
            try:
                pid = os.fork()
            except OSError as error:  # e.g. no memory for another process: the driver is told
                pid = -abs(error.errno or 1)
            if pid == 0:
                code = 0
                try:
                    sock.close()
                    _serve_forked(*fds)
                except BaseException:  # noqa: BLE001 - the driver sees the exit code
                    traceback.print_exc()
                    code = 1
                finally:
                    os._exit(code)
            for f in fds:
                os.close(f)
            answer = pid
        else:
            _, status = os.waitpid(arg, 0)
            answer = os.waitstatus_to_exitcode(status)
        sock.sendall(_NUMBER.pack(answer))


class ZygoteGone(RuntimeError):
    """The zygote process could not be started or stopped answering."""


class _Zygote:
    def __init__(self):
        ours, theirs = socket.socketpair()
        code = (f"import sys; sys.path.insert(0, {_PACKAGE_ROOT!r}); "
                "from raygrid.engine.executors.children import zygote_main; "
                f"zygote_main({theirs.fileno()})")
        self.proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.DEVNULL,
                                     pass_fds=[theirs.fileno()], close_fds=True)
        theirs.close()
        self.sock = ours
        self.lock = threading.Lock()
        self.answered = False

    def ask(self, request: tuple, fds: Sequence[int] = ()) -> int:
        data = pickle.dumps(request)
        try:
            with self.lock:
                socket.send_fds(self.sock, [_HEADER.pack(len(data)) + data], list(fds))
                answer = _read_exactly(self.sock.fileno(), _NUMBER.size)
        except (EOFError, OSError) as error:
            raise ZygoteGone(f"the zygote process stopped ({error or 'no answer'})") from None
        self.answered = True
        return _NUMBER.unpack(answer)[0]

    def close(self) -> None:
        self.sock.close()  # it reads the end of its input and exits
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


_zygote: _Zygote | None = None
_zygote_lock = threading.Lock()
_zygote_failures = 0  # zygotes that died before ever answering; after two, fresh interpreters


@atexit.register
def _close_zygote() -> None:
    """At exit: the zygote ends (its children with it) and is reaped."""
    global _zygote
    with _zygote_lock:
        zygote, _zygote = _zygote, None
    if zygote is not None:
        zygote.close()


def _forget_zygote() -> None:
    """In a forked copy of the driver: that zygote answers the driver, not the copy."""
    global _zygote
    _zygote = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_zygote)


# --- the driver's side of a child -------------------------------------------------------------

class Child:
    """A child process as the local executor sees it: ``writer`` (messages to it), ``fileno()``
    (its answers), ``poll()``/``wait()`` (exit code: negative for a signal), ``kill()``."""

    pid: int
    writer: Any

    def fileno(self) -> int:
        raise NotImplementedError

    def poll(self) -> int | None:
        raise NotImplementedError

    def wait(self) -> int:
        raise NotImplementedError

    def kill(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Kill the child if it still runs, reap it, close the connection."""
        if self.poll() is None:
            self.kill()
        try:
            self.wait()
        except ZygoteGone:
            pass
        self._close_streams()

    def _close_streams(self) -> None:
        raise NotImplementedError


class SpawnedChild(Child):
    """A fresh interpreter (``sys.executable``), talking over its stdin and stdout."""

    def __init__(self):
        code = (f"import sys; sys.path.insert(0, {_PACKAGE_ROOT!r}); "
                "from raygrid.engine.executors.children import serve_stdio; serve_stdio()")
        self.proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, close_fds=True)
        self.pid = self.proc.pid
        self.writer = self.proc.stdin

    def fileno(self) -> int:
        return self.proc.stdout.fileno()

    def poll(self) -> int | None:
        return self.proc.poll()

    def wait(self) -> int:
        return self.proc.wait()

    def kill(self) -> None:
        self.proc.kill()

    def _close_streams(self) -> None:
        for pipe in (self.proc.stdin, self.proc.stdout):
            try:
                pipe.close()
            except OSError:
                pass


class ForkedChild(Child):
    """A fork of the zygote, talking over a socket; the zygote reaps it."""

    def __init__(self, zygote: _Zygote, warm: Sequence[str]):
        ours, theirs = socket.socketpair()
        try:
            # fd 2, this process's stderr as a child process inherits it (not sys.stderr)
            self.pid = zygote.ask(("fork", list(warm)), [theirs.fileno(), 2])
            if self.pid < 0:
                raise ZygoteGone(f"the zygote could not fork ({os.strerror(-self.pid)})")
        except ZygoteGone:
            ours.close()
            raise
        finally:
            theirs.close()
        self.zygote = zygote
        self.sock = ours
        self.writer = ours.makefile("wb")
        self.returncode: int | None = None

    def fileno(self) -> int:
        return self.sock.fileno()

    def poll(self) -> int | None:
        return self.returncode

    def wait(self) -> int:
        if self.returncode is None:
            self.returncode = self.zygote.ask(("wait", self.pid))
        return self.returncode

    def kill(self) -> None:
        if self.returncode is None:
            try:
                os.kill(self.pid, signal.SIGKILL)  # a zombie until the zygote reaps it: no reuse
            except ProcessLookupError:
                pass

    def _close_streams(self) -> None:
        for stream in (self.writer, self.sock):
            try:
                stream.close()
            except OSError:
                pass


def start_child(warm: Sequence[str] = ()) -> Child:
    """A new child: forked from the zygote on Linux (started on first use, replaced if it died),
    else (or where no zygote can start) a fresh interpreter. ``warm``: modules the search will
    import (the zygote imports those of :data:`WARMABLE`, for this child and later ones)."""
    global _zygote, _zygote_failures
    for _ in range(3):
        if (not sys.platform.startswith("linux") or _zygote_failures >= 2
                or os.environ.get("RAYGRID_LOCAL_START") == "spawn"):
            break
        with _zygote_lock:
            if _zygote is None:
                try:
                    _zygote = _Zygote()
                except OSError:
                    _zygote_failures = 2
                    break
            zygote = _zygote
        try:
            return ForkedChild(zygote, warm)
        except ZygoteGone:
            with _zygote_lock:
                if _zygote is zygote:
                    _zygote = None
                    _zygote_failures += not zygote.answered  # it cannot start here
            zygote.close()
    return SpawnedChild()


__all__ = ["Child", "ForkedChild", "SpawnedChild", "start_child", "serve", "serve_stdio",
           "zygote_main", "read_message", "write_message", "write_raw", "setup"]
