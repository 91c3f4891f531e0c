"""Run work as Ray tasks: one task per trial, small batches of trials when fits are tiny, or a
unit (several trials run together, e.g. a fused group) per task. Joining the cluster and checking
what it can run is :mod:`raygrid.engine.executors.cluster`'s; what a worker's environment takes
from the driver, :mod:`raygrid.engine.executors.worker_env`'s."""
from __future__ import annotations

import math
import os
import sys
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Iterator, Mapping, Sequence

from raygrid.engine.executors.base import Unit, Work, gpu_share
from raygrid.engine.executors.cluster import (check_schedulable, connect, record_ray_processes,
                                              short_of)
from raygrid.engine.executors.deadlines import Deadlines, timed_trials, timed_unit
from raygrid.engine.executors.worker_env import QUIET_KERAS_HOOK, driver_pythonpath, keras_env
from raygrid.engine.fitting import (FitResult, FitTimeout, Payload, run_trials, system_failure,
                                    timeout_failure, timeout_message)
from raygrid.engine.plan import Trial

DEFAULT_REMOTE_ARGS = {"num_cpus": 1}
WAIT_S = 1.0  # ray.wait returns this often, so Ctrl-C and SIGTERM are handled promptly
CANCEL_GRACE_S = 2.0  # after a cancel, how long to wait for the cancelled tasks to resolve
#: On SIGTERM (a scheduler stopping the job, with its own deadline), how long the fits already
#: handed to Ray may take to finish before they are cancelled. Ctrl-C waits for them without limit
#: (a second Ctrl-C stops at once). ``RAYGRID_INTERRUPT_GRACE`` (seconds) sets both.
TERM_GRACE_S = 10.0


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
        fit_timeout: float | None = None,
    ):
        self.address = address
        self.fit_timeout = fit_timeout
        self.remote_args = dict(DEFAULT_REMOTE_ARGS if ray_remote_args is None else ray_remote_args)
        self.remote_args.setdefault("num_cpus", 1)
        self.max_retries = max_retries
        self.n_jobs = n_jobs
        self.batcher = AutoBatcher() if batch else None
        self.running = 0  # trials in tasks submitted and not yet returned
        self._slots = 1  # fits the cluster runs at once, as of the current run
        self._deadlines: Deadlines | None = None  # with fit_timeout, from the first run

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

    def check_schedulable(self) -> None:
        """Refuse a request no node can run, unless an autoscaler may add such a node (see
        :func:`~raygrid.engine.executors.cluster.check_schedulable`)."""
        check_schedulable(self._needs())

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
            # Keras imported as the worker starts, TensorFlow's C++ start-up lines held back
            runtime_env.setdefault("worker_process_setup_hook", QUIET_KERAS_HOOK)
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
        if self.fit_timeout is not None and self._deadlines is None:
            self._deadlines = Deadlines(self.fit_timeout)
        clock = self._deadlines
        task_fn = run_trials if clock is None else timed_trials
        single = ray.remote(task_fn).options(**options)
        batched = ray.remote(task_fn).options(**{**options, "max_retries": 0})
        units = [item for item in work if isinstance(item, Unit)]
        unit_options = self._unit_options(units, shared.keras) if units else {}
        remotes: dict[tuple, Any] = {}

        def unit_remote(unit: Unit) -> Any:
            opts = unit_options[id(unit)]
            key = (unit.fn, repr(sorted(opts.items())))
            if key not in remotes:
                remotes[key] = ray.remote(unit.fn if clock is None else timed_unit).options(**opts)
            return remotes[key]

        self.check_schedulable()
        record_ray_processes()  # the agents of a local Ray raygrid started, now they are up
        slots = self._slots = self.slots()
        in_flight = self.n_jobs if self.n_jobs and self.n_jobs > 0 else 2 * slots
        timed_out: set = set()
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
                if ref in timed_out:
                    if standard and len(batch) > 1:
                        alone.extend(batch)  # each alone, on its own clock: the slow one fails
                        return []
                    return self._timeouts(unit, clock.allowed(ref), shared)
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
            if clock is None:
                ref = remote.remote(shared.ref, list(unit.trials))
            else:
                key = clock.key()
                args = (shared.ref, list(unit.trials))
                ref = (remote.remote(clock.actor, key, *args) if remote in (single, batched)
                       else remote.remote(clock.actor, key, unit.fn, *args))
                clock.add(ref, key, len(unit.trials))
            pending[ref] = unit
            self.running += len(unit.trials)

        try:
            while queue or alone or pending:
                while (queue or alone) and len(pending) < in_flight:
                    submit()
                wait = WAIT_S if clock is None else clock.wait_s(pending, WAIT_S)
                done, _ = ray.wait(list(pending), num_returns=1, timeout=wait)
                for ref in done:
                    ready.extend(finished(ref, pending[ref]))
                    self.running -= len(pending.pop(ref).trials)
                    timed_out.discard(ref)
                if clock is not None:
                    clock.forget(done)
                    clock.poll()
                    timed_out.update(self._cancel_overdue(pending, timed_out))
                while ready:
                    yield ready.popleft()
        except KeyboardInterrupt as interrupt:
            # Ctrl-C or SIGTERM (while waiting, or thrown in by the caller while it recorded a
            # result): start nothing new, let the tasks in flight finish, keep every fit that
            # finished, then raise the interrupt again.
            kept = list(ready) + self._stop(pending, interrupt, shared)
            ready.clear()
            yield from kept
            raise interrupt
        finally:
            self._abandon(pending)

    def _cancel_overdue(self, pending: Mapping[Any, Unit], timed_out: set) -> list:
        """Cancel (``force=True``: the worker is killed) each task past its time limit, once."""
        import ray

        overdue = [ref for ref in self._deadlines.overdue(pending) if ref not in timed_out]
        for ref in overdue:
            try:
                ray.cancel(ref, force=True)
            except Exception:  # noqa: BLE001 - it finished meanwhile: its results are kept
                pass
        return overdue

    def _timeouts(self, unit: Unit, allowed: float, shared: Shared) -> list[FitResult]:
        """The rows of a unit stopped at its time limit (a unit's own rows, if it has them)."""
        if unit.on_failure is not None:
            return unit.on_failure(unit.trials, FitTimeout(timeout_message(allowed, "its worker killed")))
        return [timeout_failure(t, self.fit_timeout, shared.metrics, shared.return_train_score,
                                shared.error_score) for t in unit.trials]

    def _stop(self, pending: dict[Any, Unit], interrupt: KeyboardInterrupt,
              shared: Shared) -> list[FitResult]:
        """Let the tasks in flight finish (within the grace), cancel what is left; keep every result.

        Every task leaves ``pending`` here, so nothing is cancelled twice: a second cancel that
        meets a task's reply in flight can trip a check in Ray's task manager.
        """
        import ray

        refs = list(pending)
        if not refs:
            return []
        done, running = ray.wait(refs, num_returns=len(refs), timeout=0)
        overdue: set = set()
        if running and short_of(self._needs())[0]:
            # No alive node can run these fits (a node with the resources they ask for died, or
            # an autoscaler never added one): they never started, and would never finish.
            print(f"raygrid: stopping; the {sum(len(pending[r].trials) for r in running)} fit(s) waiting "
                  "for resources no node has are cancelled.", file=sys.stderr, flush=True)
        elif running:
            grace = interrupt_grace(interrupt)
            n = sum(len(pending[ref].trials) for ref in running)
            shown = min(n, self._slots)  # what the progress line calls running
            queued = f", and the {n - shown} queued with Ray," if n > shown else ""
            print(f"raygrid: stopping; letting the {shown} fit(s) in flight finish{queued}"
                  + ("" if grace is None else f" (at most {grace:g} s)")
                  + ("" if self.fit_timeout is None else
                     f"{' and' if grace is not None else ''} within fit_timeout")
                  + ". Press Ctrl-C again to stop now.", file=sys.stderr, flush=True)
            late, running, overdue = self._wait_in_flight(running, grace)
            done = done + late
        stopped = running + sorted(overdue, key=refs.index)
        for ref in stopped:
            try:
                ray.cancel(ref, force=self.fit_timeout is not None)
            except Exception:  # noqa: BLE001 - best effort: the task may be done already
                pass
        if stopped:
            late, _ = ray.wait(stopped, num_returns=len(stopped), timeout=CANCEL_GRACE_S)
            done = done + late
        kept: list[FitResult] = []
        for ref in done:
            try:
                kept.extend(ray.get(ref, timeout=1))
            except Exception:  # noqa: BLE001 - cancelled or failed: it runs on resume
                unit = pending[ref]
                if ref in overdue and (len(unit.trials) == 1 or unit.fn is not run_trials):
                    kept.extend(self._timeouts(unit, self._deadlines.allowed(ref), shared))
        if self._deadlines is not None:
            self._deadlines.forget(refs)
        for ref in refs:
            self.running -= len(pending.pop(ref).trials)
        return kept

    def _wait_in_flight(self, refs: list, grace: float | None) -> tuple[list, list, set]:
        """Wait for ``refs`` for ``grace`` seconds (None: until all are done), and with
        ``fit_timeout`` no task past its limit: (done, still running, past their limit)."""
        import ray

        clock = self._deadlines
        if clock is None:
            done, left = _wait_all(refs, grace)
            return done, left, set()
        done: list = []
        overdue: set = set()
        deadline = None if grace is None else time.monotonic() + grace
        try:
            while refs:
                wait = clock.wait_s(refs, WAIT_S)
                if deadline is not None:
                    wait = min(wait, deadline - time.monotonic())
                ready, refs = ray.wait(refs, num_returns=len(refs), timeout=max(wait, 0.0))
                done += ready
                clock.poll()
                late = set(clock.overdue(refs))
                overdue |= late
                refs = [ref for ref in refs if ref not in late]
                if deadline is not None and time.monotonic() >= deadline:
                    break
        except KeyboardInterrupt:  # a second Ctrl-C: stop waiting
            pass
        return done, refs, overdue

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
