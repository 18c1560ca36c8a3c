"""One extra receive process (``node.receive_processes`` > 1): ``python -m dicom_node.net.receive_child``.

Started by :class:`dicom_node.net.receive_processes.ReceiveProcesses`. It reads one JSON line on stdin
(the node section, the port the node listens on, the log level and format), then runs the same
receiver as the node's own (:class:`~dicom_node.net.scp_server.ScpServer` with the PDU guard and the
receive fast path, an :class:`~dicom_node.storage.ingest.Ingestor` on the node's spool and journal)
on that port with ``SO_REUSEPORT``. The journal is the meeting point: every instance is journaled
before it is acknowledged, as in the node's process. What the node's completion loop must hear at once
(an instance filed, an association released) goes to stdout as one JSON line each. End of stdin (the
node stopping, or gone) stops it: running associations get ``grace`` seconds, then it exits.
"""

from __future__ import annotations

import json
import logging
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
    server = ScpServer(node, receiver, port=int(settings["port"]), reuse_port=True).start()
    events.emit(ready=server.port)
    try:
        sys.stdin.read()  # until the node closes it, or is gone
    finally:
        server.stop(grace_seconds=float(settings["grace"]))
        spool.close()
        journal.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
