"""One extra receive process (``node.receive_processes`` > 1): ``python -m dicom_node.net.receive_child``.

Started by :class:`dicom_node.net.receive_processes.ReceiveProcesses`. It reads one JSON line on stdin
(the node section, the log level and format, the grace period, ``handoff_fd``: its end of a Unix
socket pair with the node), then runs the same receiver as the node's own
(:class:`~dicom_node.net.scp_server.ScpServer` with the connection gate, the PDU guard and the receive
fast path, an :class:`~dicom_node.storage.ingest.Ingestor` on the node's spool and journal), without
listening: a thread takes the connected sockets the node passes over the socket pair (``SCM_RIGHTS``,
one message each: the connection's id and peer address) and serves each as if it had accepted it. The
journal is the meeting point: every instance is journaled before it is acknowledged, as in the node's
process. What the node must hear at once goes to stdout as one JSON line each: ``ready``, ``instance``
(a series got an instance), ``released`` (an association released) and ``ended`` (a connection the node
handed has ended, by its id). End of stdin (the node stopping, or gone) stops it: running associations
get ``grace`` seconds, then it exits; the end of the socket pair (the node gone) ends the taking.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import socket
import sys
import threading
from pathlib import Path
from typing import Any

from dicom_node.config import NodeSection
from dicom_node.logs import configure_logging
from dicom_node.net.receive import Receiver
from dicom_node.net.scp_server import ScpServer
from dicom_node.process import configure_process
from dicom_node.storage.filing import Spool
from dicom_node.storage.ingest import Ingestor
from dicom_node.storage.journal import Journal
from dicom_node.storage.series_locks import SeriesLocks

logger = logging.getLogger(__name__)

MB = 1024 * 1024


def lock_dir(storage_dir: Path) -> Path:
    """Where the series lock files of a multi-process node live."""
    return storage_dir / "locks"


class _Events:
    """Event lines to the node (stdout), one writer at a time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def emit(self, **event: Any) -> None:
        line = json.dumps(event) + "\n"
        with self._lock:
            try:
                sys.stdout.write(line)
                sys.stdout.flush()
            except (OSError, ValueError):
                pass  # the node is gone: end of stdin stops us


def take_connections(channel: socket.socket, server: ScpServer, events: _Events) -> None:
    """Serve every connection the node passes over ``channel`` until it ends (the node gone) or is
    shut (this process stopping)."""
    while True:
        try:
            message, fds, _flags, _address = socket.recv_fds(channel, 4096, 1)
        except OSError:
            return
        if not message and not fds:
            return  # the node's end is closed
        if not fds:
            logger.warning("the node sent %r without a connection", message[:200])
            continue
        sock = socket.socket(fileno=fds[0])
        sock.setblocking(True)  # as accept() leaves it
        try:
            handed = json.loads(message)
            number = int(handed["id"])
            peer = (str(handed["peer"][0]), int(handed["peer"][1]))
        except (ValueError, KeyError, IndexError, TypeError):
            logger.warning("the node sent %r with a connection: closed", message[:200])
            sock.close()
            continue
        server.serve_connection(sock, peer, on_end=functools.partial(events.emit, ended=number))


def main() -> int:
    settings = json.loads(sys.stdin.readline())
    configure_logging(settings["log_level"], settings["log_format"])
    configure_process()
    node = NodeSection.model_validate(settings["node"])
    storage = Path(node.storage_dir)
    journal = Journal(storage / "journal.sqlite")
    spool = Spool(
        storage,
        fsync=node.fsync,
        min_free_bytes=node.min_free_disk_mb * MB,
        max_dataset_bytes=node.max_dataset_bytes,
    )
    events = _Events()
    ingestor = Ingestor(
        spool,
        journal,
        on_instance=lambda series: events.emit(instance=series),
        locks=SeriesLocks(lock_dir=lock_dir(storage)),
    )
    receiver = Receiver(
        ingestor,
        ae_titles=node.ae_title,
        allowed_calling_aes=node.allowed_calling_aes,
        calling_ae_hosts=node.calling_ae_hosts,
        on_released=lambda association: events.emit(released=association),
    )
    channel = socket.socket(fileno=int(settings["handoff_fd"]))
    server = ScpServer(node, receiver, listen=False).start()
    taker = threading.Thread(
        target=take_connections, args=(channel, server, events), name="take-connections", daemon=True
    )
    taker.start()
    events.emit(ready=os.getpid())
    try:
        sys.stdin.read()  # until the node closes it, or is gone
    finally:
        with contextlib.suppress(OSError):
            channel.shutdown(socket.SHUT_RDWR)  # no more connections: the node serves them
        taker.join(timeout=5)
        channel.close()
        server.stop(grace_seconds=float(settings["grace"]))
        journal.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
