"""The Ray driver, in a child process of the node: connects to the cluster, keeps the predictor
actors, routes jobs to them and answers the node over a pipe.

Why a child process: a Ray driver ends its own process when it loses the cluster's control store
(GCS) for a minute, and it cannot reconnect to a restarted cluster. The node must outlive its
cluster, so the driver lives here; when the cluster goes, this process says so (``lost``) and
exits, the node's jobs wait (retry later), and the next job starts a fresh bridge.

Messages (tuples over a ``multiprocessing`` connection)
- node -> bridge: the :class:`RaySettings` first, then ``("run", id, RayJob)``, ``("expire",)``,
  ``("stop",)``
- bridge -> node: ``("ready", where)`` | ``("init_failed", why)`` once, then ``("done", id,
  RayReply)`` per job and ``("lost", why)`` just before exiting when the cluster is gone.

Routing: a job goes to a placed, idle actor already holding its models; else an idle actor; else
the least busy actor holding them; else the least busy. A job whose actor dies is sent again to
another actor (a fresh one replaces the dead), up to ``max_actor_attempts`` tries; its warnings say
so. Series bytes are put in the object store once per job and reused by its retries.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from inference.ray_jobs import RayJob, RayReply, RaySettings, SeriesFile

logger = logging.getLogger(__name__)

MIB = 1024 * 1024
RESTART_PAUSE_SECONDS = 5.0  # between tries to start an actor that failed to start


def gcs_host_port(address: str) -> tuple[str, int] | None:
    """``host:port`` of a GCS (or ``ray://`` client) address; None for ``auto``."""
    text = address.removeprefix("ray://")
    if text == "auto":
        return None
    host, _, port = text.rpartition(":")
    return host, int(port)


def reachable(host: str, port: int, timeout: float = 2.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


@dataclass
class _Slot:
    """One actor position in the pool; a dead actor is replaced in its slot."""

    index: int
    handle: Any = None
    ready_ref: Any = None
    placed: bool = False
    name: str = ""
    busy: int = 0
    warm: set[str] = field(default_factory=set)
    restart_at: float | None = None  # after a failed start: when to try again


@dataclass
class _Task:
    job_id: int
    job_ref: Any  # the RayJob in the object store (its bytes are not kept here)
    models: tuple[str, ...]
    queued_at: float
    attempt: int = 0
    tried: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


class Bridge:
    """The driver's state: the actor pool and the jobs in flight (one thread runs it)."""

    def __init__(self, ray: Any, settings: RaySettings, send: Any) -> None:
        self.ray = ray
        self.settings = settings
        self._send = send
        self._actor_cls = ray.remote(_actor_class())
        self._memory = _actor_memory(settings)
        self.slots = [_Slot(index=i) for i in range(settings.actors)]
        for slot in self.slots:
            self._start_actor(slot)
        self.waiting: list[_Task] = []
        self.running: dict[Any, tuple[_Task, _Slot, Any]] = {}
        self.start_error = ""

    # ------------------------------------------------------------------ actors

    def _start_actor(self, slot: _Slot) -> None:
        s = self.settings
        options: dict[str, Any] = {
            "num_cpus": s.num_cpus_per_actor,
            "num_gpus": s.num_gpus_per_actor,
            "scheduling_strategy": "SPREAD",
            "max_restarts": 0,
        }
        if self._memory:
            options["memory"] = self._memory
        threads = max(1, int(s.num_cpus_per_actor)) if s.num_gpus_per_actor == 0 else None
        slot.handle = self._actor_cls.options(**options).remote(
            str(s.spec_path),
            device="cuda" if s.num_gpus_per_actor > 0 else "cpu",
            max_models=s.predictor_cache_size,
            num_threads=threads,
        )
        slot.ready_ref = slot.handle.ready.remote()
        slot.placed, slot.name, slot.busy, slot.warm, slot.restart_at = False, "", 0, set(), None

    def _check_placed(self) -> None:
        now = time.monotonic()
        for slot in self.slots:
            if slot.restart_at is not None and now >= slot.restart_at:
                self._start_actor(slot)
        pending = [slot for slot in self.slots if not slot.placed and slot.restart_at is None]
        if not pending:
            return
        refs = [slot.ready_ref for slot in pending]
        done, _ = self.ray.wait(refs, num_returns=len(refs), timeout=0)
        for slot in pending:
            if slot.ready_ref in done:
                try:
                    slot.name = self.ray.get(slot.ready_ref)
                    slot.placed = True
                    logger.info("actor %d ready on %s", slot.index, slot.name)
                except self.ray.exceptions.RayError as exc:
                    # e.g. the spec or a model folder missing on that worker: say so, try again later
                    self.start_error = _last_line(exc)
                    logger.warning("actor %d failed to start: %s", slot.index, exc)
                    slot.restart_at = now + RESTART_PAUSE_SECONDS

    def _choose(self, task: _Task) -> _Slot | None:
        placed = [s for s in self.slots if s.placed]
        if not placed:
            return None
        fresh = [s for s in placed if s.name not in task.tried] or placed

        def warm(slot: _Slot) -> bool:
            return all(m in slot.warm for m in task.models)

        for group in (
            [s for s in fresh if s.busy == 0 and warm(s)],
            [s for s in fresh if s.busy == 0],
            [s for s in fresh if warm(s)],
            fresh,
        ):
            if group:
                return min(group, key=lambda s: s.busy)
        return None

    def expire(self) -> None:
        """Every placed actor drops its warm predictors (after the jobs queued on it)."""
        for slot in self.slots:
            if slot.placed:
                slot.handle.expire.remote()
                slot.warm = set()

    # ------------------------------------------------------------------ jobs

    def submit(self, job_id: int, job: RayJob) -> None:
        if self.settings.data == "object_store":
            job = _with_bytes(job)
        task = _Task(
            job_id=job_id,
            job_ref=self.ray.put(job),
            models=tuple(job.request.get("models", ())),
            queued_at=time.monotonic(),
        )
        self.waiting.append(task)

    def step(self, timeout: float) -> None:
        """Place waiting jobs, then wait up to ``timeout`` for one to finish."""
        self._check_placed()
        still: list[_Task] = []
        for task in self.waiting:
            slot = self._choose(task)
            if slot is None:
                if time.monotonic() - task.queued_at > self.settings.actor_start_timeout_seconds:
                    self._reply(task, RayReply("retry", message=self._no_actor_message()))
                else:
                    still.append(task)
                continue
            task.attempt += 1
            task.tried.append(slot.name)
            slot.busy += 1
            self.running[slot.handle.run.remote(task.job_ref)] = (task, slot, slot.handle)
        self.waiting = still
        if not self.running:
            return
        done, _ = self.ray.wait(list(self.running), num_returns=1, timeout=timeout)
        for ref in done:
            self._finished(ref)

    def _finished(self, ref: Any) -> None:
        task, slot, handle = self.running.pop(ref)
        current = slot.handle is handle  # else the slot already holds a replacement
        if current:
            slot.busy = max(0, slot.busy - 1)
        try:
            reply: RayReply = self.ray.get(ref)
        except self.ray.exceptions.RayActorError as exc:
            self._actor_died(task, slot, exc, replace=current)
            return
        except self.ray.exceptions.RayError as exc:
            self._reply(task, RayReply("error", error_type=type(exc).__name__, message=str(exc)))
            return
        slot.warm = set(reply.warm)
        self._reply(task, reply)

    def _actor_died(self, task: _Task, slot: _Slot, exc: Exception, *, replace: bool) -> None:
        where = task.tried[-1] if task.tried else f"actor {slot.index}"
        if replace:
            logger.warning("actor %s died: %s; starting a replacement", where, type(exc).__name__)
            with contextlib.suppress(Exception):  # unreachable rather than dead: free its resources
                self.ray.kill(slot.handle, no_restart=True)
            self._start_actor(slot)
        note = f"Ray actor {where} died during attempt {task.attempt}"
        if task.attempt >= self.settings.max_actor_attempts:
            message = f"{note}; gave up after {task.attempt} attempt(s) on the cluster"
            self._reply(task, RayReply("error", error_type="ActorDiedError", message=message))
            return
        task.warnings.append(f"{note}; retried on another actor")
        task.queued_at = time.monotonic()  # the wait for a placed actor starts again
        self.waiting.append(task)

    def _reply(self, task: _Task, reply: RayReply) -> None:
        reply.warnings = [*task.warnings, *reply.warnings]
        reply.timings = {**reply.timings, "cluster_attempts": float(task.attempt)}
        self._send(("done", task.job_id, reply))

    def _no_actor_message(self) -> str:
        s = self.settings
        memory = f", {self._memory // MIB} MB memory" if self._memory else ""
        failed = f"; last start failure: {self.start_error}" if self.start_error else ""
        return (
            f"no predictor actor could be placed on the Ray cluster within "
            f"{s.actor_start_timeout_seconds:.0f} s (each needs {s.num_cpus_per_actor:g} CPU, "
            f"{s.num_gpus_per_actor:g} GPU{memory}){failed}"
        )


def _last_line(exc: BaseException) -> str:
    """The last line of an error Ray wraps with a traceback (the exception itself), shortened."""
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    return (lines[-1] if lines else repr(exc))[:300]


def _actor_class() -> type:
    from inference.ray_actor import PredictorActor

    return PredictorActor


def _actor_memory(settings: RaySettings) -> int:
    """Host memory declared per actor: the setting, else the spec's largest ``min_mem``."""
    if settings.memory_mb_per_actor is not None:
        return settings.memory_mb_per_actor * MIB
    from inference.spec import load_model_spec

    catalog = load_model_spec(settings.spec_path)
    return max((m.min_mem for m in catalog.models.values()), default=0) * MIB


def _with_bytes(job: RayJob) -> RayJob:
    """The job with its series read into memory (for the object store)."""
    inputs = [
        [SeriesFile(name=f.name, data=Path(f.path).read_bytes()) if f.path else f for f in series]
        for series in job.inputs
    ]
    return RayJob(inputs=inputs, request=job.request, output_dir=job.output_dir)


def _watch_cluster(host: str, port: int, settings: RaySettings, lost: threading.Event) -> None:
    failures = 0
    while not lost.is_set():
        time.sleep(settings.health_interval_seconds)
        failures = 0 if reachable(host, port) else failures + 1
        if failures >= settings.health_failures:
            lost.set()


def main(conn: Connection) -> None:
    """The bridge process: connect, then serve the node until it says stop or the cluster goes."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s ray-bridge %(levelname)s %(message)s")
    settings: RaySettings = conn.recv()
    send_lock = threading.Lock()

    def send(message: tuple[Any, ...]) -> None:
        with send_lock:
            conn.send(message)

    target = gcs_host_port(settings.address)
    if target is not None and not reachable(*target):
        send(("init_failed", f"Ray cluster at {settings.address} is unreachable"))
        return
    try:
        import ray

        ray.init(
            address=settings.address,
            namespace=settings.namespace,
            logging_level=logging.WARNING,
            log_to_driver=False,
        )
        if target is None:
            gcs = ray.get_runtime_context().gcs_address
            host, _, port = gcs.rpartition(":")
            target = (host, int(port))
        bridge = Bridge(ray, settings, send)
    except Exception as exc:
        why = f"cannot use the Ray cluster at {settings.address}: {type(exc).__name__}: {exc}"
        send(("init_failed", why))
        return
    lost = threading.Event()
    threading.Thread(target=_watch_cluster, args=(*target, settings, lost), daemon=True).start()
    send(("ready", f"{settings.address} ({ray.cluster_resources()})"))
    try:
        while not lost.is_set():
            while conn.poll(0 if bridge.running or bridge.waiting else 0.1):
                message = conn.recv()
                if message[0] == "stop":
                    return
                if message[0] == "expire":
                    bridge.expire()
                else:
                    bridge.submit(message[1], message[2])
            bridge.step(timeout=0.05)
        send(("lost", f"Ray cluster at {settings.address} became unreachable"))
    except (EOFError, OSError):
        pass  # the node went away
    finally:
        os._exit(0)  # skip ray's shutdown: it can hang when the cluster is gone


if __name__ == "__main__":
    main(Connection(int(sys.argv[1])))
