"""The Ray executor: runs the node's inference requests on predictor actors of a Ray cluster.

Same protocol as the in-process executor (``run(request) -> result``), called by up to
``max_in_flight`` worker threads at once, each blocking on its job. Neither ray nor torch is
imported in the node's process: a child process (:mod:`inference.ray_bridge`) is the Ray driver,
started on the first job and again after the cluster was lost. What the node does with a result
(outputs folder, journal, deliveries) does not change: this module writes the SEG bytes that come
back into the request's ``output_dir`` (temp file, fsync, rename), as the in-process pipeline does.

Failures, as the node's worker sees them:
- the cluster is unreachable (at the first job, or later: the bridge reports it and exits):
  :class:`ClusterUnavailableError`, an :class:`~inference.api.RetryLater`: the job goes back to
  the queue with the reason and runs when the cluster is back;
- an actor died under the job: retried on another actor inside the bridge (bounded), reported in
  the result's warnings (journal events) and its ``cluster_attempts`` timing; past the bound the
  job fails like any failed job;
- the job itself failed on the actor (bad series, model error): :class:`RemoteInferenceError`
  with the actor's error type and message.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import socket
import subprocess
import sys
import tempfile
import threading
from concurrent.futures import Future
from multiprocessing.connection import Connection
from pathlib import Path

from inference.api import InferenceRequest, InferenceResult, OutputFile, RetryLater
from inference.errors import InferenceError
from inference.ray_jobs import OutputBlob, RayJob, RayReply, RaySettings, SeriesFile

__all__ = ["ClusterUnavailableError", "RayExecutor", "RaySettings", "RemoteInferenceError"]

logger = logging.getLogger(__name__)


class ClusterUnavailableError(RetryLater):
    """The Ray cluster cannot take the job now (unreachable, no actor placed): retry after
    ``retry_after`` seconds."""


class RemoteInferenceError(InferenceError):
    """The job failed on a Ray actor; the message names the actor's error type."""


class _BridgeClient:
    """One bridge process and the jobs waiting for its answers."""

    def __init__(self, settings: RaySettings) -> None:
        ours, theirs = socket.socketpair()
        # a fresh interpreter (not multiprocessing's spawn, which re-imports the caller's __main__)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "inference.ray_bridge", str(theirs.fileno())],
            pass_fds=(theirs.fileno(),),
            env=_bridge_env(),
        )
        theirs.close()
        self._conn = Connection(ours.detach())
        self._conn.send(settings)
        self._lock = threading.Lock()
        self._futures: dict[int, Future[RayReply]] = {}
        self._ids = itertools.count(1)
        self.lost: str | None = None
        self._closing = False
        self._address = settings.address
        self.where = self._handshake(settings)
        self._reader = threading.Thread(target=self._read, name="ray-bridge-reader", daemon=True)
        self._reader.start()

    def _handshake(self, settings: RaySettings) -> str:
        why = f"Ray cluster at {settings.address}: no answer within {settings.connect_timeout_seconds:.0f} s"
        try:
            if self._conn.poll(settings.connect_timeout_seconds):
                message = self._conn.recv()
                if message[0] == "ready":
                    return str(message[1])
                why = str(message[1])
        except (EOFError, OSError) as exc:
            why = f"the Ray bridge process ended while connecting ({exc or type(exc).__name__})"
        self.close()
        raise ClusterUnavailableError(why, retry_after=settings.retry_delay_seconds)

    def submit(self, job: RayJob) -> Future[RayReply]:
        future: Future[RayReply] = Future()
        with self._lock:
            if self.lost is not None:
                raise ConnectionError(self.lost)
            job_id = next(self._ids)
            self._futures[job_id] = future
            try:
                self._conn.send(("run", job_id, job))
            except (OSError, ValueError) as exc:
                self._futures.pop(job_id, None)
                raise ConnectionError(f"the Ray bridge process is gone: {exc}") from exc
        return future

    def expire(self) -> None:
        with self._lock, contextlib.suppress(OSError, ValueError):
            self._conn.send(("expire",))

    def _read(self) -> None:
        why = ""
        try:
            while True:
                message = self._conn.recv()
                if message[0] == "done":
                    with self._lock:
                        future = self._futures.pop(int(message[1]), None)
                    if future is not None:
                        future.set_result(message[2])
                elif message[0] == "lost":
                    why = str(message[1])
                    break
        except (EOFError, OSError):
            pass
        if not why:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(5)
            why = (
                f"the Ray driver process exited (code {self.process.returncode}): the cluster at "
                f"{self._address}, or the Ray node on this machine, is gone"
            )
        with self._lock:
            self.lost = why
            waiting, self._futures = list(self._futures.values()), {}
        for future in waiting:
            future.set_exception(ConnectionError(why))
        if not self._closing:
            logger.warning("Ray executor: %s; jobs wait until the cluster is back", why)

    def close(self, timeout: float = 10.0) -> None:
        self._closing = True
        with contextlib.suppress(OSError, ValueError):
            self._conn.send(("stop",))
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout)
        self._conn.close()


class RayExecutor:
    """Runs requests on a Ray cluster (see the module docstring). Thread-safe; call :meth:`close`
    when done (the node does at stop)."""

    def __init__(self, settings: RaySettings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(settings.max_in_flight)
        self._bridge: _BridgeClient | None = None
        self._closed = False

    def run(self, request: InferenceRequest) -> InferenceResult:
        job = self._job(request)
        with self._slots:
            bridge = self._connected()
            try:
                reply = bridge.submit(job).result()
            except ConnectionError as exc:
                raise self._unavailable(str(exc)) from exc
        if reply.status == "retry":
            raise self._unavailable(reply.message)
        if reply.status == "error":
            raise RemoteInferenceError(f"{reply.error_type} on Ray actor {reply.actor}: {reply.message}")
        return self._result(request, reply)

    def expire(self) -> None:
        """Drop the warm predictors of every actor (the next jobs load their models again)."""
        with self._lock:
            bridge = self._bridge
        if bridge is not None and bridge.lost is None:
            bridge.expire()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            bridge, self._bridge = self._bridge, None
        if bridge is not None:
            bridge.close()

    # ------------------------------------------------------------------ helpers

    def _connected(self) -> _BridgeClient:
        with self._lock:
            if self._closed:
                raise self._unavailable("the executor is closed")
            if self._bridge is not None and self._bridge.lost is not None:
                self._bridge.close()
                self._bridge = None
            if self._bridge is None:
                self._bridge = _BridgeClient(self.settings)  # ClusterUnavailableError if not
                logger.info("Ray executor connected: %s", self._bridge.where)
            return self._bridge

    def _unavailable(self, why: str) -> ClusterUnavailableError:
        return ClusterUnavailableError(why, retry_after=self.settings.retry_delay_seconds)

    def _job(self, request: InferenceRequest) -> RayJob:
        fields = request.model_dump(exclude={"inputs", "output_dir"})
        inputs = [
            [SeriesFile(name=Path(p).name, path=str(Path(p).resolve())) for p in series]
            for series in request.inputs
        ]
        shared = self.settings.data == "shared_path"
        return RayJob(
            inputs=inputs,
            request=fields,
            output_dir=str(request.output_dir.resolve()) if shared else None,
        )

    def _result(self, request: InferenceRequest, reply: RayReply) -> InferenceResult:
        outputs = [self._place(request.output_dir, blob) for blob in reply.outputs]
        return InferenceResult(
            outputs=outputs, empty=reply.empty, timings=dict(reply.timings), warnings=list(reply.warnings)
        )

    @staticmethod
    def _place(output_dir: Path, blob: OutputBlob) -> OutputFile:
        target = (output_dir / blob.name).resolve()
        if not target.is_relative_to(output_dir.resolve()):
            raise RemoteInferenceError(f"an actor returned an output outside the job folder: {blob.name!r}")
        if blob.data is not None:
            _write_atomic(target, blob.data)
        return OutputFile(
            path=target,
            kind=blob.kind,
            sop_instance_uid=blob.sop_instance_uid,
            sop_class_uid=blob.sop_class_uid,
        )


def _bridge_env() -> dict[str, str]:
    """The node's environment, with this package importable (also when run from a checkout)."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[1])
    paths = env.get("PYTHONPATH", "").split(os.pathsep) if env.get("PYTHONPATH") else []
    env["PYTHONPATH"] = os.pathsep.join([root, *[p for p in paths if p != root]])
    env.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    return env


def _write_atomic(target: Path, data: bytes) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temp_name, target)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
