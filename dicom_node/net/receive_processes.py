"""Receiving in several processes (``node.receive_processes``), the journal the meeting point.

One Python process receives at most about one core's worth: its associations share the interpreter
lock, so a second association in the same process adds no throughput (``benchmarks/bench_ingest.py``).
With ``receive_processes: N`` the node keeps its own receiver and starts N-1 more processes
(:mod:`dicom_node.net.receive_child`). Only the node listens: it hands each connection it accepts to
the least busy process, itself included (the one with the fewest open connections it handed; ties go
to the node, then to the lowest child index), passing the connected socket over a Unix socket pair
(``SCM_RIGHTS``). The child serves it exactly as if it had accepted it (same connection gate, PDU
guard, fast path) and says when it has ended, so the counts stay true. Each process files into the
same spool and journal (SQLite WAL takes writers from several processes; a purge locks a series in all
of them through :class:`~dicom_node.storage.series_locks.SeriesLocks` files) and answers only once the
instance is durable and journaled, exactly as the node's own receiver. Their "instance filed" and
"association released" events reach the node's completion loop through a pipe; were one lost, the
completion loop's own look at the journal still finds the series.

A child that ends unexpectedly is logged (its connections end with it; senders retry), its count is
dropped and nothing is handed to it until it has been started again and is ready, unless it ended
within :attr:`ReceiveProcesses.restart_after` seconds of its start (then it would only fail again: the
log says why); the others go on meanwhile. A connection the node cannot hand over (the child has just
gone) is served by the node itself, never dropped. Stopping the node closes the children's stdin:
each lets its running associations finish (up to the grace period) and exits; should the node be
killed, the same end of stdin stops them.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dicom_node.config import NodeSection
from dicom_node.errors import NodeError
from dicom_node.net.guarded_server import Ended
from dicom_node.net.scp_server import ScpServer

logger = logging.getLogger(__name__)

START_SECONDS = 60.0  # a child's imports and start-up
SEND_SECONDS = 2.0  # a child that takes no connection for this long is passed over


class ReceiveProcesses:
    """The extra receive processes of a node whose own receiver is ``server`` (started, listening):
    from :meth:`start` on, that server hands connections to them (:meth:`hand_off`)."""

    def __init__(
        self,
        node: NodeSection,
        server: ScpServer,
        *,
        on_instance: Callable[[str], None],
        on_released: Callable[[str], None],
        log_format: str = "text",
    ) -> None:
        self.node = node
        self.server = server
        self.port = server.port
        self.on_instance = on_instance
        self.on_released = on_released
        self.log_format = log_format
        self._children: dict[int, _Child] = {}  # by index (1 .. receive_processes - 1)
        self._readers: list[threading.Thread] = []
        self._stopping = False
        self._settings: dict[str, Any] = {}
        self._server: ScpServer | None = None
        self._here = 0  # open connections the node kept for itself
        self._handed = 0  # connections handed so far (their ids)
        self._lock = threading.Lock()
        self.restart_after = 10.0  # seconds a child must have run to be started again when it ends

    @property
    def pids(self) -> list[int]:
        return [child.process.pid for child in self._children.values()]

    @property
    def serving(self) -> list[int]:
        """The pids of the children that take connections (have reported ready and still run)."""
        with self._lock:
            return [c.process.pid for c in self._children.values() if c.ready and c.process.poll() is None]

    def open_connections(self) -> dict[int, int]:
        """Open connections by process as the node counts them: 0 the node, then each child's index."""
        with self._lock:
            return {0: self._here, **{i: len(c.open) for i, c in sorted(self._children.items())}}

    def start(self, grace_seconds: float) -> ReceiveProcesses:
        """Start ``receive_processes - 1`` children and wait until each is ready, then let the node's
        server on :attr:`port` hand them connections. Raises NodeError (the children started so
        far are stopped) when one does not come up."""
        server = self.server
        self._settings = {
            "node": json.loads(self.node.model_dump_json()),
            "log_level": logging.getLevelName(logging.getLogger().getEffectiveLevel()),
            "log_format": self.log_format,
            "grace": grace_seconds,
        }
        try:
            for index in range(1, self.node.receive_processes):
                self._start_child(index)
        except BaseException:
            self.stop(timeout=5.0)
            raise
        self._server = server
        server.hand_off_to(self)
        logger.info(
            "%d more receive processes take connections from port %d (pids %s)",
            len(self._children),
            self.port,
            ", ".join(map(str, self.pids)),
        )
        return self

    def _start_child(self, index: int) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        settings = json.dumps({**self._settings, "handoff_fd": theirs.fileno()})
        try:
            with self._lock:
                if self._stopping:
                    ours.close()
                    return
                process = subprocess.Popen(
                    [sys.executable, "-m", "dicom_node.net.receive_child"],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                    cwd=Path.cwd(),
                    pass_fds=(theirs.fileno(),),
                )
                before = self._children.get(index)
                child = self._children[index] = _Child(index, process, ours)
            if before is not None:
                before.channel.close()
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        ours.settimeout(SEND_SECONDS)
        assert process.stdin is not None and process.stdout is not None
        process.stdin.write(settings + "\n")
        process.stdin.flush()
        ready = threading.Event()
        reader = threading.Thread(
            target=self._read_events, args=(child, ready), name=f"receive-process-{index}", daemon=True
        )
        reader.start()
        self._readers.append(reader)
        if not ready.wait(START_SECONDS) or process.poll() is not None:
            raise NodeError(
                f"receive process {index} did not start"
                f" (exit status {process.poll()}; its log lines above say why)"
            )

    def hand_off(self, sock: socket.socket, address: tuple[str, int]) -> Ended | None:
        """Pass an accepted connection to the least busy process: None when a child took it (our
        copy is closed), or, when the node serves it itself, the function to call at its end."""
        with self._lock:
            ready = [c for c in self._children.values() if c.ready] if not self._stopping else []
            child = min(ready, key=lambda c: (len(c.open), c.index), default=None)
            if child is not None and len(child.open) < self._here:
                self._handed += 1
                handed = self._handed
                child.open.add(handed)
            else:
                child = None
                self._here += 1
        if child is None:
            return self._ended_here
        message = json.dumps({"id": handed, "peer": [str(address[0]), int(address[1])]}).encode()
        try:
            socket.send_fds(child.channel, [message], [sock.fileno()])
        except OSError as exc:
            with self._lock:
                child.open.discard(handed)
                child.ready = False  # gone (its reader restarts it) or stuck: no more for it
                self._here += 1
            logger.warning(
                "cannot hand a connection from %s:%s to receive process %d (%s): serving it here",
                address[0],
                address[1],
                child.process.pid,
                exc,
            )
            return self._ended_here
        sock.close()
        return None

    def _ended_here(self) -> None:
        with self._lock:
            self._here -= 1

    def _read_events(self, child: _Child, ready: threading.Event) -> None:
        started = time.monotonic()
        process = child.process
        assert process.stdout is not None
        for line in process.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                logger.warning("receive process %d wrote %r", process.pid, line[:200])
                continue
            try:
                if "instance" in event:
                    self.on_instance(str(event["instance"]))
                elif "released" in event:
                    self.on_released(str(event["released"]))
                elif "ended" in event:
                    with self._lock:
                        child.open.discard(int(event["ended"]))
                elif "ready" in event:
                    with self._lock:
                        child.ready = True
                    ready.set()
            except Exception:
                logger.exception("handling an event of receive process %d failed", process.pid)
        status = process.wait()
        self._ended(child)
        ready.set()  # an early end is seen by start() at once (it checks whether the child runs)
        if self._stopping:
            return
        lived = time.monotonic() - started
        if lived < self.restart_after:
            logger.error(
                "receive process %d ended (exit status %s) %.0f s after its start: not started again;"
                " the other receivers go on",
                process.pid,
                status,
                lived,
            )
            return
        logger.error("receive process %d ended (exit status %s): starting it again", process.pid, status)
        try:
            self._start_child(child.index)
        except NodeError as exc:
            logger.error("%s", exc)

    def _ended(self, child: _Child) -> None:
        """A child has ended: its connections ended with it; nothing more is handed to it."""
        with self._lock:
            child.ready = False
            child.open.clear()

    def request_stop(self) -> None:
        """Tell the children to stop (they finish their associations and exit); returns at once.
        Connections accepted from now on are served by the node."""
        with self._lock:
            self._stopping = True
            children = list(self._children.values())
        for child in children:
            if child.process.stdin is not None and not child.process.stdin.closed:
                with contextlib.suppress(OSError):
                    child.process.stdin.close()

    def stop(self, timeout: float) -> None:
        """Close the children's stdin (they finish their associations and exit); kill those still
        running after ``timeout`` seconds."""
        self.request_stop()
        if self._server is not None:
            self._server.hand_off_to(None)
            self._server = None
        for child in list(self._children.values()):
            try:
                child.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                logger.warning(
                    "receive process %d did not stop in %.0f s: killed", child.process.pid, timeout
                )
                child.process.kill()
                child.process.wait(timeout=10)
        for reader in self._readers:
            reader.join(timeout=5)
        for child in self._children.values():
            child.channel.close()
        self._children = {}
        self._readers = []


@dataclass(eq=False)
class _Child:
    """One receive process: ``channel`` our end of its socket pair, ``open`` the ids of the
    connections handed to it that have not ended."""

    index: int
    process: subprocess.Popen[str]
    channel: socket.socket
    open: set[int] = field(default_factory=set)
    ready: bool = False
