"""The Ray cluster this process uses: joining one (or starting a local Ray), with a deadline and a
clear error for an address where no Ray answers; whether an autoscaler may add nodes; and whether
any node can run a fit with the resources it asks for."""
from __future__ import annotations

import atexit
import os
import socket
import time
import warnings
from typing import Mapping
from urllib.parse import urlparse

CONNECT_TIMEOUT_S = 5.0  # at most this long for the TCP connection of the address check
CONNECT_TIMEOUT_ENV = "RAYGRID_CONNECT_TIMEOUT"
DEFAULT_CONNECT_TIMEOUT_S = 30.0
AUTOSCALING_ENV = "RAYGRID_AUTOSCALING"
# What an HTTP/2 client sends first; Ray's GCS and Ray Client servers (gRPC) answer with frames.
_H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"

_started_here = False  # raygrid started the local Ray (and shuts it down at exit)


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


def probe(address: str, timeout: float | None = None) -> None:
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
        probe(address)
        try:
            ray.init(address=address, logging_level="WARNING", configure_logging=False,
                     log_to_driver=_worker_logs())
        except ConnectionError as exc:
            raise ConnectionError(f"Cannot connect to the Ray cluster at {address!r}: {exc}") from exc
        return
    from raygrid.engine.executors.leftovers import clean_leftovers, record_started

    clean_leftovers()  # what a crashed earlier driver's Ray left running
    ray.init(address="local", include_dashboard=False, logging_level="WARNING",
             log_to_driver=_worker_logs(),
             configure_logging=False)
    _started_here = True
    record_started()
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

        from raygrid.engine.executors.leftovers import forget_started

        ray.shutdown()
        forget_started()
        _started_here = False


def record_ray_processes() -> None:
    """Record again the processes of the local Ray raygrid started (its agents start after
    ``ray.init`` returns); see :mod:`raygrid.engine.executors.leftovers`."""
    if _started_here:
        from raygrid.engine.executors.leftovers import record_started

        record_started()



def short_of(needs: Mapping[str, float]) -> tuple[dict[str, float], dict[str, float]]:
    """(what one fit asks for, of ``needs``, that no alive node has; what the largest node has of it)."""
    import ray

    largest: dict[str, float] = {}
    for node in ray.nodes():
        if node.get("Alive"):
            for key, amount in node.get("Resources", {}).items():
                largest[key] = max(largest.get(key, 0.0), amount)
    short = {key: need for key, need in needs.items() if largest.get(key, 0.0) < need}
    return short, {key: largest.get(key, 0.0) for key in short}


def check_schedulable(needs: Mapping[str, float]) -> None:
    """Refuse a request (``needs``: Ray resource name -> amount one fit asks for) that no node
    can run, unless an autoscaler may add such a node.

    On a fixed cluster (or a local Ray) those fits would wait forever: raise at once, before
    anything is submitted. Where an autoscaler may add the node (see :func:`can_autoscale`),
    warn and wait for it.
    """
    short, have = short_of(needs)
    if not short:
        return
    what = (f"No node of the Ray cluster can run a fit that asks for {short} (the largest node "
            f"has {have})")
    if can_autoscale():
        warnings.warn(f"{what}: the fits wait until the autoscaler adds such a node. Lower "
                      "ray_remote_args, or start the cluster with those resources.",
                      RuntimeWarning, stacklevel=4)
        return
    raise ValueError(
        f"{what}, and no autoscaler is known to add one, so the fits would never start. Lower "
        f"ray_remote_args, or start the cluster with those resources (set {AUTOSCALING_ENV}=1 "
        "if this cluster's autoscaler adds such nodes: the search then waits for them)."
    )
