"""A small storage SCP that writes every instance it receives to a folder and remembers when each was
accepted: the destination of ``dicom-node demo`` and of the latency benchmark.

It is deliberately simple (a PACS stand-in, not the node's receiver): each C-STORE is written as
``<out_dir>/<SOPInstanceUID>.dcm`` (file meta + raw bytes, pixel data not decoded) and answered
0x0000; ``wait_for`` blocks until instances that satisfy a condition have arrived.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.events import EventHandlerType
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from dicom_node.net.receive import received_path, require_streamed_receive
from dicom_node.uids import is_valid_uid
from inference.atomic import atomic_write

logger = logging.getLogger(__name__)

_SUCCESS = 0x0000
_CANNOT_UNDERSTAND = 0xC000


@dataclass(frozen=True)
class ReceivedInstance:
    """One accepted instance: where it was written and when (``time.time()``) it was accepted."""

    sop_instance_uid: str
    sop_class_uid: str
    path: Path
    accepted_at: float
    calling_ae: str


class StoreReceiver:
    """A storage SCP on ``host:port`` (port 0: any free port, see :attr:`port`) writing to ``out_dir``."""

    def __init__(self, out_dir: Path, *, ae_title: str = "DEMOPACS", host: str = "127.0.0.1", port: int = 0):
        self.out_dir = Path(out_dir)
        self.ae_title = ae_title
        self._host = host
        self._port = port
        self._received: list[ReceivedInstance] = []
        self._cond = threading.Condition()
        self._ae: AE | None = None
        self._server: Any = None

    @property
    def port(self) -> int:
        if self._server is not None:
            return int(self._server.server_address[1])
        return self._port

    @property
    def received(self) -> list[ReceivedInstance]:
        with self._cond:
            return list(self._received)

    def start(self) -> StoreReceiver:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        require_streamed_receive()  # the data set is read from pynetdicom's file
        ae = AE(ae_title=self.ae_title)
        ae.supported_contexts = AllStoragePresentationContexts
        ae.add_supported_context(Verification)
        ae.maximum_pdu_size = 0  # no limit: fewer, larger PDUs
        handlers: list[EventHandlerType] = [(evt.EVT_C_STORE, self._on_store)]
        self._ae = ae
        self._server = ae.start_server((self._host, self._port), block=False, evt_handlers=handlers)
        logger.info(
            "store receiver %s listening on %s:%d -> %s", self.ae_title, self._host, self.port, self.out_dir
        )
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None

    def __enter__(self) -> StoreReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _on_store(self, event: evt.Event) -> int:
        request = cast(Any, event.request)
        sop_uid = str(request.AffectedSOPInstanceUID)
        sop_class = str(request.AffectedSOPClassUID)
        if not is_valid_uid(sop_uid):
            logger.warning("store receiver: refusing instance with invalid UID %r", sop_uid)
            return _CANNOT_UNDERSTAND
        path = self.out_dir / f"{sop_uid}.dcm"
        with received_path(event).open("rb") as src, atomic_write(path) as out:
            shutil.copyfileobj(src, out)  # the data set as pynetdicom streamed it to disk
        item = ReceivedInstance(sop_uid, sop_class, path, time.time(), str(event.assoc.requestor.ae_title))
        with self._cond:
            self._received.append(item)
            self._cond.notify_all()
        logger.info("store receiver: accepted %s (%s) from %s", sop_uid, sop_class, item.calling_ae)
        return _SUCCESS

    def wait_for(
        self, condition: Callable[[list[ReceivedInstance]], bool], timeout: float
    ) -> list[ReceivedInstance] | None:
        """Block until ``condition(received)`` is true; return the instances, or None after
        ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not condition(self._received):
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)
            return list(self._received)
