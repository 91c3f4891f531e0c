"""Run work as Ray tasks: one task per trial, small batches of trials when fits are tiny, or a
unit (several trials run together, e.g. a fused group) per task."""
from __future__ import annotations

import atexit
import math
import os
import socket
import sys
import time
import warnings
from collections import deque
from dataclasses import dataclass
from typing import Any, Iterator, Mapping, Sequence
from urllib.parse import urlparse

from raygrid.engine.executors.base import Unit, Work, gpu_share
from raygrid.engine.fitting import FitResult, Payload, run_trials, system_failure
from raygrid.engine.plan import Trial

DEFAULT_REMOTE_ARGS = {"num_cpus": 1}
CONNECT_TIMEOUT_S = 5.0
WAIT_S = 1.0  # ray.wait returns this often, so Ctrl-C and SIGTERM are handled promptly
CANCEL_GRACE_S = 2.0  # after a cancel, how long to wait for the cancelled tasks to resolve
#: On SIGTERM (a scheduler stopping the job, with its own deadline), how long the fits already
#: handed to Ray may take to finish before they are cancelled. Ctrl-C waits for them without limit
#: (a second Ctrl-C stops at once). ``RAYGRID_INTERRUPT_GRACE`` (seconds) sets both.
TERM_GRACE_S = 10.0

AUTOSCALING_ENV = "RAYGRID_AUTOSCALING"

_started_here = False


CONNECT_TIMEOUT_ENV = "RAYGRID_CONNECT_TIMEOUT"
DEFAULT_CONNECT_TIMEOUT_S = 30.0
# What an HTTP/2 client sends first; Ray's GCS and Ray Client servers (gRPC) answer with frames.
_H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


def connect_timeout() -> float:
    """Seconds connecting to a cluster may take: ``RAYGRID_CONNECT_TIMEOUT``, default 30."""
    setting = os.environ.get(CONNECT_TIMEOUT_ENV, "").strip()
    if not setting:
        return DEFAULT_CONNECT_TIMEOUT_S
    try:
        value = float(setting)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ValueError(f"{CONNECT_TIMEOUT_ENV} must be a number of seconds > 0, got {setting!r}")
    return value


def _host_port(address: str) -> tuple[str, int, str]:
    parsed = urlparse(address if "://" in address else f"tcp://{address}")
    port = parsed.port
    if port is None:
        port = 10001 if parsed.scheme == "ray" else 6379
    return parsed.hostname or "", port, parsed.scheme


def _probe(address: str, timeout: float | None = None) -> None:
    """Fail fast, with a clear message, when a cluster address does not answer as Ray does.

    Within ``timeout`` seconds (default :func:`connect_timeout`) the address must accept a TCP
    connection and answer an HTTP/2 greeting with HTTP/2 frames (Ray's GCS and Ray Client are
    gRPC servers): an HTTP server, or a port that accepts and never answers, is refused here
    instead of hanging ``ray.init`` for minutes.
    """
    if address in ("auto", "local"):
        return
    timeout = connect_timeout() if timeout is None else timeout
    host, port, _ = _host_port(address)
    advice = ("Start one with `ray start --head` or `ray up cluster.yaml`, check the address "
              "and firewall, or pass no address (and unset RAY_ADDRESS) to run on a local Ray.")
    deadline = time.monotonic() + timeout
    try:
        sock = socket.create_connection((host, port), timeout=min(timeout, CONNECT_TIMEOUT_S))
    except OSError as exc:
        raise ConnectionError(
            f"Cannot reach the Ray cluster at {address!r} ({host}:{port}): {exc}. {advice}"
        ) from None
    if os.environ.get("RAY_USE_TLS", "").strip().lower() in ("1", "true"):
        sock.close()  # a TLS server cannot answer a clear-text greeting
        return
    reply = b""
    try:
        with sock:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            sock.sendall(_H2_PREFACE)
            while len(reply) < 9:
                sock.settimeout(max(0.01, deadline - time.monotonic()))
                chunk = sock.recv(9 - len(reply))
                if not chunk:
                    break
                reply += chunk
    except socket.timeout:
        raise ConnectionError(
            f"The address {address!r} ({host}:{port}) accepted a connection but did not answer "
            f"as a Ray cluster within {timeout:g} s (set {CONNECT_TIMEOUT_ENV} to wait longer). "
            f"{advice}") from None
    except OSError as exc:
        if not reply:
            raise ConnectionError(
                f"The address {address!r} ({host}:{port}) closed the connection ({exc}): it is "
                f"not a Ray cluster. {advice}") from None
    if len(reply) < 9 or reply[3] != 0x04:  # an HTTP/2 SETTINGS frame comes first
        http = reply.startswith(b"HTTP/") or reply.lstrip().lower().startswith((b"<!doctype", b"<html"))
        seen = ("is an HTTP server" if http else
                "closed the connection without answering" if not reply else
                f"answered {reply[:16]!r}")
        raise ConnectionError(
            f"Something other than Ray listens at {address!r} ({host}:{port}): it {seen}. Give "
            "the Ray head's GCS address (host:6379) or its Ray Client address "
            f"(ray://host:10001). {advice}")


def _worker_logs() -> bool:
    """Workers' stdout/stderr reach the driver only with RAYGRID_WORKER_LOGS=1: a fit's errors
    come back as data, and TensorFlow's start-up lines from every worker would drown the progress."""
    return os.environ.get("RAYGRID_WORKER_LOGS", "") in ("1", "true", "yes")


def connect(address: str | None = None) -> None:
    """Join ``address`` (else ``RAY_ADDRESS``) or start a local Ray that raygrid shuts down at exit.

    A Ray runtime already initialised in this process is used as it is, unless ``address`` names
    another cluster: then this raises (call ``ray.shutdown()`` first to switch clusters).
    Connecting has a deadline (:func:`connect_timeout`).
    """
    global _started_here
    import ray

    if ray.is_initialized():
        if address:
            _check_connected_to(address)
        return
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address:
        _probe(address)
        try:
            ray.init(address=address, logging_level="WARNING", configure_logging=False,
                     log_to_driver=_worker_logs())
        except ConnectionError as exc:
            raise ConnectionError(f"Cannot connect to the Ray cluster at {address!r}: {exc}") from exc
        return
    ray.init(address="local", include_dashboard=False, logging_level="WARNING",
             log_to_driver=_worker_logs(),
             configure_logging=False)
    _started_here = True
    atexit.register(shutdown)


def _local_ips() -> set[str]:
    ips = {"127.0.0.1", "::1"}
    try:
        import ray

        ips.add(ray.util.get_node_ip_address())
    except Exception:  # noqa: BLE001
        pass
    try:
        ips.update(info[4][0] for info in socket.getaddrinfo(socket.gethostname(), None))
    except OSError:
        pass
    return ips


def _resolve(host: str) -> set[str]:
    try:
        return {info[4][0] for info in socket.getaddrinfo(host, None)}
    except OSError:
        return {host}


def _check_connected_to(address: str) -> None:
    """Raise when the Ray this process runs is not the cluster ``address`` names."""
    import ray

    if address in ("auto", "local"):
        return
    host, port, scheme = _host_port(address)
    client = ray.util.client.ray.is_connected()
    if scheme == "ray":
        same = client  # a Ray Client connection does not tell its address; only one can be open
        connected = "a cluster through Ray Client" if client else "a Ray running in this process"
    else:
        connected = ray.get_runtime_context().gcs_address or "?"
        c_host, c_port, _ = _host_port(connected)
        wanted = _resolve(host)
        same = not client and c_port == port and bool(
            wanted & _resolve(c_host) or (wanted & {"127.0.0.1", "::1"} and c_host in _local_ips()))
    if not same:
        raise RuntimeError(
            f"Ray is already running in this process, connected to {connected!r}, and "
            f"address={address!r} names another cluster: raygrid does not switch clusters "
            "silently. Call ray.shutdown() first to connect to it, or pass address=None to use "
            "the Ray that runs."
        )


def can_autoscale() -> bool:
    """Whether an autoscaler may add nodes to the cluster this process is connected to.

    ``RAYGRID_AUTOSCALING=1`` (or ``0``) says so explicitly. Otherwise: never for the local Ray
    raygrid started; yes on the head node of a ``ray up`` cluster (which holds
    ``~/ray_bootstrap_config.yaml``, the autoscaler's configuration); no elsewhere.
    """
    setting = os.environ.get(AUTOSCALING_ENV, "").strip().lower()
    if setting:
        return setting in ("1", "true", "yes")
    if _started_here:
        return False
    return os.path.exists(os.path.expanduser("~/ray_bootstrap_config.yaml"))


def shutdown() -> None:
    """Shut down the local Ray runtime if raygrid started it (never a cluster it joined)."""
    global _started_here
    if _started_here:
        import ray

        ray.shutdown()
        _started_here = False


class AutoBatcher:
    """Choose how many trials go into one task, like joblib's auto batching.

    Tiny fits are grouped so that a task lasts about ``target_s``, but never so large that the
    last tasks leave workers idle (at most the remaining trials spread twice over every slot).
    """

    def __init__(self, target_s: float = 0.25, max_size: int = 1000):
        self.target_s = target_s
        self.max_size = max_size
        self.per_trial: float | None = None

    def observe(self, results: Sequence[FitResult]) -> None:
        if not results:
            return
        t = sum(r.fit_time + r.score_time for r in results) / len(results)
        self.per_trial = t if self.per_trial is None else 0.5 * self.per_trial + 0.5 * t

    def size(self, remaining: int, slots: int) -> int:
        if self.per_trial is None:
            return 1
        ideal = int(self.target_s / max(self.per_trial, 1e-5))
        spread = math.ceil(remaining / (2 * max(slots, 1)))
        return max(1, min(ideal, spread, self.max_size))


@dataclass
class Shared:
    ref: Any
    metrics: tuple[str, ...] | None
    return_train_score: bool
    error_score: Any
    keras: bool


def keras_env(num_cpus: float) -> dict[str, str]:
    """What a Keras worker's environment needs before TensorFlow loads: its threads capped to
    ``num_cpus``, quiet logs, and the driver's ``KERAS_BACKEND``."""
    threads = str(max(1, int(num_cpus or 1)))
    env = {
        "TF_NUM_INTRAOP_THREADS": threads,
        "TF_NUM_INTEROP_THREADS": threads,
        "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"),
    }
    if os.environ.get("KERAS_BACKEND"):
        env["KERAS_BACKEND"] = os.environ["KERAS_BACKEND"]
    return env


def driver_paths() -> list[str]:
    """The driver's own ``sys.path`` entries that a worker's interpreter lacks: the script's or
    notebook's folder, a test folder pytest added, entries made at run time.

    Workers get them first on their ``PYTHONPATH``, so classes defined next to the driver's code
    unpickle there without any setup. Entries inside the Python installation or the virtual
    environment are the workers' too and are left out; folders that do not exist on a worker
    are skipped by its interpreter.
    """
    installed = {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)}
    paths = []
    for entry in sys.path:
        path = os.path.realpath(entry or os.getcwd())
        if not os.path.isdir(path) or path in paths:
            continue
        if any(path == root or path.startswith(root + os.sep) for root in installed):
            continue
        paths.append(path)
    return paths


def driver_pythonpath() -> str | None:
    """A worker's ``PYTHONPATH``: :func:`driver_paths` first, then its own (Ray expands
    ``${PYTHONPATH}`` to the worker's value); None when the driver has no paths of its own."""
    paths = driver_paths()
    return os.pathsep.join(paths + ["${PYTHONPATH}"]) if paths else None


def interrupt_grace(interrupt: BaseException) -> float | None:
    """Seconds the fits in flight may take to finish after ``interrupt`` (None: no limit).

    ``RAYGRID_INTERRUPT_GRACE`` sets it; else Ctrl-C waits without limit (a second Ctrl-C stops
    at once) and SIGTERM waits :data:`TERM_GRACE_S`.
    """
    setting = os.environ.get("RAYGRID_INTERRUPT_GRACE", "").strip()
    if setting:
        try:
            return max(0.0, float(setting))
        except ValueError:
            raise ValueError(f"RAYGRID_INTERRUPT_GRACE must be a number of seconds, got {setting!r}") from None
    from raygrid.engine.executors.base import Terminated

    return TERM_GRACE_S if isinstance(interrupt, Terminated) else None


def _wait_all(refs: list, grace: float | None) -> tuple[list, list]:
    """Wait for ``refs`` for ``grace`` seconds (None: until all are done): (done, not done).

    A second interrupt while waiting ends the wait early.
    """
    import ray

    done: list = []
    deadline = None if grace is None else time.monotonic() + grace
    try:
        while refs:
            left = WAIT_S if deadline is None else min(WAIT_S, deadline - time.monotonic())
            if left <= 0:
                break
            ready, refs = ray.wait(refs, num_returns=len(refs), timeout=left)
            done += ready
    except KeyboardInterrupt:
        pass
    return done, refs


class RayExecutor:
    """Each trial (or batch of tiny trials) is a Ray task; results stream back with ``ray.wait``."""

    def __init__(
        self,
        address: str | None = None,
        ray_remote_args: Mapping[str, Any] | None = None,
        max_retries: int = 3,
        n_jobs: int | None = None,
        batch: bool = True,
    ):
        self.address = address
        self.remote_args = dict(DEFAULT_REMOTE_ARGS if ray_remote_args is None else ray_remote_args)
        self.remote_args.setdefault("num_cpus", 1)
        self.max_retries = max_retries
        self.n_jobs = n_jobs
        self.batcher = AutoBatcher() if batch else None
        self.running = 0  # trials in tasks submitted and not yet returned

    def describe(self) -> str:
        import ray

        res = ray.cluster_resources()
        nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
        return (f"ray: {nodes} node(s), {res.get('CPU', 0):g} CPUs, {res.get('GPU', 0):g} GPUs; "
                f"{self.slots()} fits at a time")

    def slots(self) -> int:
        """How many tasks the cluster can run at once with the per-fit resources."""
        import ray

        res = ray.cluster_resources()
        fits = [int(res.get(key, 0) / need + 1e-9) for key, need in self._needs().items()]
        cluster = max(1, min(fits) if fits else int(res.get("CPU", 1)))
        if self.n_jobs is not None and self.n_jobs > 0:
            return min(self.n_jobs, cluster)
        return cluster

    def _needs(self) -> dict[str, float]:
        """Ray resource name -> amount one fit asks for."""
        needs = {"CPU": self.remote_args.get("num_cpus"), "GPU": self.remote_args.get("num_gpus"),
                 **(self.remote_args.get("resources") or {})}
        return {key: need for key, need in needs.items() if need}

    def _short(self) -> tuple[dict[str, float], dict[str, float]]:
        """(what one fit asks for that no alive node has, what the largest node has of it)."""
        import ray

        largest: dict[str, float] = {}
        for node in ray.nodes():
            if node.get("Alive"):
                for key, amount in node.get("Resources", {}).items():
                    largest[key] = max(largest.get(key, 0.0), amount)
        short = {key: need for key, need in self._needs().items() if largest.get(key, 0.0) < need}
        return short, {key: largest.get(key, 0.0) for key in short}

    def check_schedulable(self) -> None:
        """Refuse a request no node can run, unless an autoscaler may add such a node.

        On a fixed cluster (or a local Ray) those fits would wait forever: raise at once, before
        anything is submitted. Where an autoscaler may add the node (see :func:`can_autoscale`),
        warn and wait for it.
        """
        short, have = self._short()
        if not short:
            return
        what = (f"No node of the Ray cluster can run a fit that asks for {short} (the largest node "
                f"has {have})")
        if can_autoscale():
            warnings.warn(f"{what}: the fits wait until the autoscaler adds such a node. Lower "
                          "ray_remote_args, or start the cluster with those resources.",
                          RuntimeWarning, stacklevel=3)
            return
        raise ValueError(
            f"{what}, and no autoscaler is known to add one, so the fits would never start. Lower "
            f"ray_remote_args, or start the cluster with those resources (set {AUTOSCALING_ENV}=1 "
            "if this cluster's autoscaler adds such nodes: the search then waits for them)."
        )

    def share(self, payload: Payload) -> Shared:
        import ray

        connect(self.address)
        return Shared(ray.put(payload), payload.metrics, payload.return_train_score,
                      payload.error_score, payload.keras)

    def options(self, resources: Mapping[str, Any] | None = None, keras: bool = False) -> dict:
        """Ray options of a task: the per-fit resources with ``resources`` merged over them
        (``runtime_env``'s ``env_vars`` key by key), retries, the driver's paths and Keras'
        worker environment; what the user set in ``env_vars`` wins."""
        options = dict(self.remote_args)
        extra = dict(resources or {})
        runtime_env = dict(options.get("runtime_env") or {})
        extra_env = dict(extra.pop("runtime_env", None) or {})
        env_vars = {**runtime_env.get("env_vars", {}), **extra_env.pop("env_vars", {})}
        runtime_env.update(extra_env)
        options.update(extra)
        options.update(max_retries=self.max_retries, retry_exceptions=False)
        if keras:
            env_vars = {**keras_env(options.get("num_cpus")), **env_vars}
        pythonpath = driver_pythonpath()
        if pythonpath:  # classes defined beside the driver's code unpickle on workers
            env_vars = {"PYTHONPATH": pythonpath, **env_vars}
        if env_vars:
            runtime_env["env_vars"] = env_vars
        if runtime_env:
            options["runtime_env"] = runtime_env
        return options

    def _unit_options(self, units: Sequence[Unit], keras: bool) -> dict[int, dict]:
        """Options of each unit (by id): its resources, and its share of the GPUs if it asks."""
        import ray

        sharing = [u for u in units if u.share_gpus and "num_gpus" not in u.resources
                   and not self.remote_args.get("num_gpus")]
        gpus = ray.cluster_resources().get("GPU", 0) if sharing else 0
        share = gpu_share(gpus, len(sharing))
        shared_ids = {id(u) for u in sharing}
        out = {}
        for unit in units:
            resources = dict(unit.resources)
            if share and id(unit) in shared_ids:
                resources["num_gpus"] = share
            out[id(unit)] = self.options(resources, keras)
        return out

    def run(self, shared: Shared, work: Sequence[Work]) -> Iterator[FitResult]:
        """Yield one result per trial as tasks finish.

        ``work`` holds trials and units (see :class:`~raygrid.engine.executors.base.Unit`). Consecutive
        trials go out one per task, or in small batches when fits are tiny. A task of one trial,
        or a unit, is retried by Ray ``max_retries`` times when its worker or node dies. A batch
        is not retried as a whole: when its worker dies or the task itself raises, its trials go
        back to the queue as one-trial tasks, so one fit that kills its worker (or breaks the
        task) costs neither the batch's other fits nor their retries.
        On Ctrl-C (KeyboardInterrupt) no new task starts, the tasks already handed to Ray (at
        most ``2 x slots``) finish and their results are yielded, then the interrupt is raised
        again: a resumed search runs none of them twice. A second Ctrl-C while they finish
        cancels them at once (those fits run again on resume). See :func:`interrupt_grace`.
        """
        import ray

        options = self.options(keras=shared.keras)
        single = ray.remote(run_trials).options(**options)
        batched = ray.remote(run_trials).options(**{**options, "max_retries": 0})
        units = [item for item in work if isinstance(item, Unit)]
        unit_options = self._unit_options(units, shared.keras) if units else {}
        remotes: dict[tuple, Any] = {}

        def unit_remote(unit: Unit) -> Any:
            opts = unit_options[id(unit)]
            key = (unit.fn, repr(sorted(opts.items())))
            if key not in remotes:
                remotes[key] = ray.remote(unit.fn).options(**opts)
            return remotes[key]

        self.check_schedulable()
        slots = self.slots()
        in_flight = self.n_jobs if self.n_jobs and self.n_jobs > 0 else 2 * slots
        queue: deque[Work] = deque(work)
        alone: deque[Trial] = deque()  # trials of failed batches: rerun one per task
        pending: dict[Any, Unit] = {}
        ready: deque[FitResult] = deque()  # results received and not yet handed over

        def finished(ref: Any, unit: Unit) -> list[FitResult]:
            batch = unit.trials
            standard = unit.fn is run_trials and unit.on_failure is None
            try:
                results = ray.get(ref)
            except (ray.exceptions.RayError, OSError) as exc:
                if standard and len(batch) > 1:
                    # A dead worker, or one trial that broke the task itself: each trial runs
                    # again in a task of its own, so only the one at fault fails.
                    alone.extend(batch)
                    return []
                # Raised by the task itself (running it again cannot help), or Ray retried this
                # task max_retries times: a system failure (a unit's own rows, if it has them).
                return self._failures(unit, exc, shared)
            if self.batcher and standard:
                self.batcher.observe(results)
            return results

        def submit() -> None:
            if alone:
                unit, remote = Unit(run_trials, (alone.popleft(),)), single
            elif isinstance(queue[0], Unit):
                unit = queue.popleft()
                remote = unit_remote(unit)
            else:
                n = self.batcher.size(len(queue), slots) if self.batcher else 1
                batch: list[Trial] = []
                while queue and len(batch) < n and not isinstance(queue[0], Unit):
                    batch.append(queue.popleft())
                unit = Unit(run_trials, tuple(batch))
                remote = single if len(batch) == 1 else batched
            pending[remote.remote(shared.ref, list(unit.trials))] = unit
            self.running += len(unit.trials)

        try:
            while queue or alone or pending:
                while (queue or alone) and len(pending) < in_flight:
                    submit()
                done, _ = ray.wait(list(pending), num_returns=1, timeout=WAIT_S)
                for ref in done:
                    ready.extend(finished(ref, pending[ref]))
                    self.running -= len(pending.pop(ref).trials)
                while ready:
                    yield ready.popleft()
        except KeyboardInterrupt as interrupt:
            # Ctrl-C or SIGTERM (while waiting, or thrown in by the caller while it recorded a
            # result): start nothing new, let the tasks in flight finish, keep every fit that
            # finished, then raise the interrupt again.
            kept = list(ready) + self._stop(pending, interrupt)
            ready.clear()
            yield from kept
            raise interrupt
        finally:
            self._abandon(pending)

    def _stop(self, pending: dict[Any, Unit], interrupt: KeyboardInterrupt) -> list[FitResult]:
        """Let the tasks in flight finish (within the grace), cancel what is left; keep every result.

        Every task leaves ``pending`` here, so nothing is cancelled twice: a second cancel that
        meets a task's reply in flight can trip a check in Ray's task manager.
        """
        import ray

        refs = list(pending)
        if not refs:
            return []
        done, running = ray.wait(refs, num_returns=len(refs), timeout=0)
        if running and self._short()[0]:
            # No alive node can run these fits (a node with the resources they ask for died, or
            # an autoscaler never added one): they never started, and would never finish.
            print(f"raygrid: stopping; the {sum(len(pending[r].trials) for r in running)} fit(s) waiting "
                  "for resources no node has are cancelled.", file=sys.stderr, flush=True)
        elif running:
            grace = interrupt_grace(interrupt)
            n = sum(len(pending[ref].trials) for ref in running)
            print(f"raygrid: stopping; letting the {n} fit(s) in flight finish"
                  + ("" if grace is None else f" (at most {grace:g} s)")
                  + ". Press Ctrl-C again to stop now.", file=sys.stderr, flush=True)
            late, running = _wait_all(running, grace)
            done = done + late
        for ref in running:
            try:
                ray.cancel(ref, force=False)
            except Exception:  # noqa: BLE001 - best effort: the task may be done already
                pass
        if running:
            late, _ = ray.wait(running, num_returns=len(running), timeout=CANCEL_GRACE_S)
            done = done + late
        kept: list[FitResult] = []
        for ref in done:
            try:
                kept.extend(ray.get(ref, timeout=1))
            except Exception:  # noqa: BLE001 - cancelled or failed: it runs on resume
                pass
        for ref in refs:
            self.running -= len(pending.pop(ref).trials)
        return kept

    @staticmethod
    def _failures(unit: Unit, exc: BaseException, shared: Shared) -> list[FitResult]:
        if unit.on_failure is not None:
            return unit.on_failure(unit.trials, exc)
        return [system_failure(t, exc, shared.metrics, shared.return_train_score,
                               shared.error_score) for t in unit.trials]

    def _abandon(self, pending: dict[Any, Unit]) -> None:
        """Drop the tasks still pending when the caller stops early (``error_score="raise"``
        raised, or it stopped reading): they finish on their workers and Ray frees their results.

        They are not cancelled: a cancel that meets a task's reply in flight can trip a check in
        Ray's task manager that aborts the driver ("Tried to complete task that was not
        pending"). At most ``2 x slots`` tasks are in flight, so little work is wasted.
        """
        for ref in list(pending):
            self.running -= len(pending.pop(ref).trials)
