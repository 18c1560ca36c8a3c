"""Receiving in several processes (``node.receive_processes``), the journal the meeting point.

One Python process receives at most about one core's worth: its associations share the interpreter
lock, so a second association in the same process adds no throughput (``benchmarks/bench_ingest.py``).
With ``receive_processes: N`` the node keeps its own receiver and starts N-1 more processes
(:mod:`dicom_node.net.receive_child`), all listening on the same port with ``SO_REUSEPORT``: the kernel
hands each new connection to one of them. Each files into the same spool and journal (SQLite WAL takes
writers from several processes; a purge locks a series in all of them through
:class:`~dicom_node.storage.series_locks.SeriesLocks` files) and answers only once the instance is
durable and journaled, exactly as the node's own receiver. Their "instance filed" and "association
released" events reach the node's completion loop through a pipe; were one lost, the completion loop's
own look at the journal still finds the series.

A child that ends unexpectedly is logged (its connections end with it; senders retry) and started
again, unless it ended within :attr:`ReceiveProcesses.restart_after` seconds of its start (then it
would only fail again: the log says why); the others go on meanwhile. Stopping the node closes the
children's stdin: each lets its running associations finish (up to the grace period) and exits;
should the node be killed, the same end of stdin stops them.
"""

from __future__ import annotations

import contextlib
import json
import logging
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from dicom_node.config import NodeSection
from dicom_node.errors import NodeError

logger = logging.getLogger(__name__)

START_SECONDS = 60.0  # a child's imports and start-up


class ReceiveProcesses:
    """The extra receive processes of a node listening on ``port`` (already bound by the node's own
    receiver, with ``SO_REUSEPORT``)."""

    def __init__(
        self,
        node: NodeSection,
        port: int,
        *,
        on_instance: Callable[[str], None],
        on_released: Callable[[str], None],
        log_format: str = "text",
    ) -> None:
        self.node = node
        self.port = port
        self.on_instance = on_instance
        self.on_released = on_released
        self.log_format = log_format
        self._children: list[subprocess.Popen[str]] = []
        self._readers: list[threading.Thread] = []
        self._stopping = False
        self._settings = ""
        self._ready: set[int] = set()
        self._lock = threading.Lock()
        self.restart_after = 10.0  # seconds a child must have run to be started again when it ends

    @property
    def pids(self) -> list[int]:
        return [child.pid for child in self._children]

    @property
    def listening(self) -> list[int]:
        """The pids of the children that listen (have reported ready and still run)."""
        return [child.pid for child in self._children if child.pid in self._ready and child.poll() is None]

    def start(self, grace_seconds: float) -> ReceiveProcesses:
        """Start ``receive_processes - 1`` children and wait until each listens. Raises NodeError
        (the children started so far are stopped) when one does not come up."""
        settings = {
            "node": json.loads(self.node.model_dump_json()),
            "port": self.port,
            "log_level": logging.getLevelName(logging.getLogger().getEffectiveLevel()),
            "log_format": self.log_format,
            "grace": grace_seconds,
        }
        self._settings = json.dumps(settings)
        try:
            for index in range(1, self.node.receive_processes):
                self._start_child(index)
        except BaseException:
            self.stop(timeout=5.0)
            raise
        logger.info(
            "%d more receive processes listening on port %d (pids %s)",
            len(self._children),
            self.port,
            ", ".join(map(str, self.pids)),
        )
        return self

    def _start_child(self, index: int) -> None:
        with self._lock:
            if self._stopping:
                return
            child = subprocess.Popen(
                [sys.executable, "-m", "dicom_node.net.receive_child"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                cwd=Path.cwd(),
            )
            self._children.append(child)
        assert child.stdin is not None and child.stdout is not None
        child.stdin.write(self._settings + "\n")
        child.stdin.flush()
        ready = threading.Event()
        reader = threading.Thread(
            target=self._read_events, args=(index, child, ready), name=f"receive-process-{index}", daemon=True
        )
        reader.start()
        self._readers.append(reader)
        if not ready.wait(START_SECONDS) or child.poll() is not None:
            raise NodeError(
                f"receive process {index} did not start listening on port {self.port}"
                f" (exit status {child.poll()}; its log lines above say why)"
            )

    def _read_events(self, index: int, child: subprocess.Popen[str], ready: threading.Event) -> None:
        started = time.monotonic()
        assert child.stdout is not None
        for line in child.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                logger.warning("receive process %d wrote %r", child.pid, line[:200])
                continue
            try:
                if "instance" in event:
                    self.on_instance(str(event["instance"]))
                elif "released" in event:
                    self.on_released(str(event["released"]))
                elif "ready" in event:
                    self._ready.add(child.pid)
                    ready.set()
            except Exception:
                logger.exception("handling an event of receive process %d failed", child.pid)
        status = child.wait()
        ready.set()  # an early end is seen by start() at once (it checks whether the child runs)
        if self._stopping:
            return
        lived = time.monotonic() - started
        if lived < self.restart_after:
            logger.error(
                "receive process %d ended (exit status %s) %.0f s after its start: not started again;"
                " the other receivers go on",
                child.pid,
                status,
                lived,
            )
            return
        logger.error("receive process %d ended (exit status %s): starting it again", child.pid, status)
        with self._lock:
            if child in self._children:
                self._children.remove(child)
        try:
            self._start_child(index)
        except NodeError as exc:
            logger.error("%s", exc)

    def request_stop(self) -> None:
        """Tell the children to stop (they finish their associations and exit); returns at once."""
        self._stopping = True
        for child in self._children:
            if child.stdin is not None and not child.stdin.closed:
                with contextlib.suppress(OSError):
                    child.stdin.close()

    def stop(self, timeout: float) -> None:
        """Close the children's stdin (they finish their associations and exit); kill those still
        running after ``timeout`` seconds."""
        self.request_stop()
        for child in self._children:
            try:
                child.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                logger.warning("receive process %d did not stop in %.0f s: killed", child.pid, timeout)
                child.kill()
                child.wait(timeout=10)
        for reader in self._readers:
            reader.join(timeout=5)
        self._children = []
        self._readers = []
