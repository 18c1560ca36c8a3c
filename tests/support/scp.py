"""An in-process SCP (:class:`dicom_node.net.scp_server.ScpServer` with spool and journal) on a free port,
recording the receiver's wake-up callbacks, for tests that need a real node to talk to."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path

from dicom_node.config import NodeSection
from dicom_node.net.receive import Receiver
from dicom_node.net.scp_server import ScpServer
from dicom_node.storage.filing import Spool
from dicom_node.storage.ingest import Ingestor
from dicom_node.storage.journal import Journal
from dicom_node.storage.quota import CallingAeQuotas

DEFAULT_OPTIONS: dict[str, object] = {
    "ae_title": ["NNUNET", "SECOND"],
    "host": "127.0.0.1",
    "port": 0,
    "min_free_disk_mb": 0,
    "max_pdu_bytes": 65536,
}


class Node:
    """A running receiver: ``port``, ``journal``, ``storage``, and the series / association ids its
    callbacks saw (``instances``: one series UID per filed instance; ``released``)."""

    def __init__(self, storage: Path, **node_options: object) -> None:
        options = {**DEFAULT_OPTIONS, "storage_dir": storage, **node_options}
        self.section = NodeSection.model_validate(options)
        self.storage = storage
        self.journal = Journal(storage / "journal.sqlite")
        self.instances: list[str] = []
        self.released: list[str] = []
        self._lock = threading.Lock()
        spool = Spool(
            storage, fsync=self.section.fsync, min_free_bytes=self.section.min_free_disk_mb * 1024 * 1024
        )
        receiver = Receiver(
            Ingestor(
                spool,
                self.journal,
                on_instance=self._on_instance,
                quotas=CallingAeQuotas(self.journal, self.section.calling_ae_quota_mb),
            ),
            ae_titles=self.section.ae_title,
            allowed_calling_aes=self.section.allowed_calling_aes,
            calling_ae_hosts=self.section.calling_ae_hosts,
            on_released=self._on_released,
        )
        self.server = ScpServer(self.section, receiver).start()

    def _on_instance(self, series_uid: str) -> None:
        with self._lock:
            self.instances.append(series_uid)

    def _on_released(self, association_id: str) -> None:
        with self._lock:
            self.released.append(association_id)

    @property
    def port(self) -> int:
        return self.server.port

    def spool_files(self) -> list[Path]:
        return sorted((self.storage / "spool").rglob("*.dcm"))

    def stop(self) -> None:
        self.server.stop(grace_seconds=2)
        self.journal.close()


def start_node(storage: Path, **node_options: object) -> Node:
    return Node(storage, **node_options)


@contextlib.contextmanager
def running_node(storage: Path, **node_options: object) -> Iterator[Node]:
    node = Node(storage, **node_options)
    try:
        yield node
    finally:
        node.stop()
