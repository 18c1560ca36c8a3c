"""The send path's changes to pynetdicom 3.0.4's requestor: no lost responses, no polling delays.

**Lost responses** (the "storescp stall"). pynetdicom runs an association thread next to the thread that
calls ``send_c_store``; every 1 ms it takes any decoded DIMSE message off the association's message
queue and serves it as a request, logging "Received unexpected C-STORE service message" and dropping
it when it is a response. ``send_c_store`` pauses that thread around each message, but the pause is a
handshake with a race: the sender clears the checkpoint and proceeds as soon as ``_is_paused`` is
true, which it still is when the association thread has just been woken by the previous message's
un-pause and has not run yet. When that thread is then kept off the CPU (or the GIL) until the peer's
C-STORE-RSP has arrived (a few ms: a fast peer like dcmtk ``storescp`` on a loaded machine), it takes
the response and drops it. The sender waits for the DIMSE timeout and aborts; the peer has stored the
instance and waits for the next command (``ss``: both queues empty; storescp blocked in
``DIMSE_receiveCommand``). About one 100-instance send in 30 on two loaded cores.

:class:`ResponseKeepingAssociation` fixes it: its association thread takes a message off the queue only
when it is a request (pynetdicom serves those as before); responses stay for the thread that waits
for them. It also waits between turns without touching DIMSE while counted as paused, so a sender's
pause takes effect at once.

**Polling delays.** The DUL thread sleeps 1 ms whenever it finds nothing to do (each C-STORE waits for
it twice: command pickup, response) and reads PDUs in 4 KiB pieces. On plain TCP, the requestor gets
the receive fast path's DUL reactor and buffered socket (:mod:`dicom_node.net.fastpath`).

:class:`SendingAE` installs both from ``AE._create_socket``, the one step of ``AE.associate`` that runs
after the association is made and before its threads start; nothing else in pynetdicom changes.
Upstream, this would be a pause handshake without the race (or DIMSE responses routed to the waiting
caller only) and the event-driven DUL. ``tests/dicom_node/net/test_scu_fastpath.py`` guards it.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import select
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pynetdicom import AE, evt
from pynetdicom.association import Association
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.pdu_primitives import P_DATA
from pynetdicom.transport import AddressInformation, AssociationSocket

from dicom_node.net import fastpath

logger = logging.getLogger(__name__)

REACTOR_TICK = 0.005  # seconds between the requestor association thread's looks at its queue


def _take_request(msg_queue: queue.Queue[Any]) -> tuple[int | None, Any]:
    """The first message of the queue when it is a request (taken off), else (None, None): a
    response stays for the caller waiting for it."""
    with msg_queue.mutex:
        if not msg_queue.queue:
            return None, None
        _, msg = msg_queue.queue[0]
        if not getattr(msg, "is_valid_request", False):
            return None, None
        item = msg_queue.queue.popleft()
        msg_queue.not_full.notify()
    return item


class ResponseKeepingAssociation(fastpath.QueueWaitingAssociation):
    """pynetdicom's requestor association whose own thread never takes a DIMSE response."""

    def _run_reactor(self) -> None:
        self._is_paused = False
        while not self._kill:
            self._is_paused = True
            self._reactor_checkpoint.wait()
            time.sleep(REACTOR_TICK)  # still counted as paused: nothing here touches DIMSE
            if not self._reactor_checkpoint.is_set():
                continue  # a sender paused us meanwhile
            self._is_paused = False
            context_id, msg = _take_request(self.dimse.msg_queue)
            if msg is not None:
                self._serve_request(msg, int(context_id or 0))
            if self._after_message():
                return


class _WakingRequestorDUL(fastpath.WakingDUL):
    """The fast DUL reactor, not waiting on the socket before it is connected (an unconnected socket
    reads as ready)."""

    def _wait_for_work(self) -> None:
        if self.socket is not None and not self.socket._is_connected:
            if self.to_provider_queue.empty():
                self._wake_r_wait()
            return
        super()._wait_for_work()

    def _wake_r_wait(self) -> None:
        try:
            ready, _, _ = select.select([self._wake_r], [], [], fastpath.TIMER_TICK)
        except (OSError, ValueError):
            return
        if ready:
            with contextlib.suppress(OSError):
                self._wake_r.recv(4096)


def _fragments(path: Path, offset: int, max_pdu: int) -> Iterator[tuple[int, bytes]]:
    """The data set of a file, from ``offset``, as (message control header, fragment) pairs cut as
    pynetdicom cuts them (PS3.8 E.2: 0x00 more fragments follow, 0x02 last)."""
    with path.open("rb") as fp:
        length = fp.seek(0, 2) - fp.seek(offset)
        size = length if max_pdu == 0 else max_pdu - 6
        count = max(1, -(-length // size)) if size else 1
        for k in range(count):
            yield (0x02 if k == count - 1 else 0x00), fp.read(size)


def encode_store_request(primitive: object) -> bytes | None:
    """The command set (implicit VR little endian, PS3.7 9.3.1.1) of a C-STORE-RQ whose data set
    pynetdicom streams from a file, or None for any other primitive (pynetdicom encodes those)."""
    if not isinstance(primitive, C_STORE) or primitive.MessageIDBeingRespondedTo is not None:
        return None
    if getattr(primitive, "_dataset_path", None) is None or primitive.DataSet is not None:
        return None
    if primitive.MoveOriginatorApplicationEntityTitle or primitive.MoveOriginatorMessageID is not None:
        return None
    elements = b"".join(
        [
            fastpath._element(0x0002, fastpath._uid(primitive.AffectedSOPClassUID)),
            fastpath._element(0x0100, struct.pack("<H", 0x0001)),  # Command Field: C-STORE-RQ
            fastpath._element(0x0110, struct.pack("<H", primitive.MessageID)),
            fastpath._element(0x0700, struct.pack("<H", primitive.Priority)),
            fastpath._element(0x0800, struct.pack("<H", 0x0001)),  # Command Data Set Type: present
            fastpath._element(0x1000, fastpath._uid(primitive.AffectedSOPInstanceUID)),
        ]
    )
    return fastpath._element(0x0000, struct.pack("<I", len(elements))) + elements


class RequestEncodingDIMSE(DIMSEServiceProvider):
    """pynetdicom's DIMSE provider; a C-STORE-RQ of a file is encoded directly (pynetdicom builds a
    pydicom data set for the command and writes it with pydicom: most of a small instance's cost)."""

    def send_msg(self, primitive: Any, context_id: int) -> None:
        pdus = store_request_pdus(primitive, context_id, self.maximum_pdu_size)
        if pdus is None or self.assoc.get_handlers(evt.EVT_DIMSE_SENT):  # someone wants pynetdicom's message
            super().send_msg(primitive, context_id)
            return
        for pdata in pdus:
            self.dul.send_pdu(pdata)


def store_request_pdus(primitive: object, context_id: int, max_pdu: int) -> Iterator[P_DATA] | None:
    """The P-DATA primitives of a C-STORE-RQ of a file, as pynetdicom would make them, or None when
    pynetdicom is to make them (another message, a command longer than one PDU)."""
    command = encode_store_request(primitive)
    if command is None or (max_pdu and len(command) + 6 > max_pdu):
        return None
    path, offset = primitive._dataset_path  # type: ignore[attr-defined]

    def pdus() -> Iterator[P_DATA]:
        yield _pdata(context_id, 0x03, command)  # command, last fragment
        for header, fragment in _fragments(Path(path), offset, max_pdu):
            yield _pdata(context_id, header, fragment)

    return pdus()


def _pdata(context_id: int, header: int, fragment: bytes) -> P_DATA:
    pdata = P_DATA()
    pdata.presentation_data_value_list.append((context_id, bytes([header]) + fragment))
    return pdata


def install(assoc: Association, sock: AssociationSocket, *, plain_tcp: bool) -> bool:
    """Switch a new requestor association (threads not started) to the fixes above; returns whether
    the DUL fast path was installed too (plain TCP and a known pynetdicom)."""
    if assoc.is_alive() or assoc.dul.is_alive():
        raise RuntimeError("the send fast path is installed before the association starts")
    if not fastpath.supported():
        return False
    assoc.__class__ = ResponseKeepingAssociation
    assoc.dimse.__class__ = RequestEncodingDIMSE
    if not plain_tcp:
        return False
    dul = assoc.dul
    dul._wake_r, dul._wake_w = socket.socketpair()  # type: ignore[attr-defined]
    dul._wake_r.setblocking(False)  # type: ignore[attr-defined]
    dul._wake_w.setblocking(False)  # type: ignore[attr-defined]
    dul.to_provider_queue = fastpath._WakingQueue(dul._wake_w)  # type: ignore[attr-defined]
    dul.__class__ = _WakingRequestorDUL
    sock.__class__ = fastpath.BufferedAssociationSocket
    sock._buffer = bytearray(64 * 1024)  # type: ignore[attr-defined]
    return True


class SendingAE(AE):
    """pynetdicom's AE whose requested associations run with :func:`install`."""

    def _create_socket(
        self,
        assoc: Association,
        address: AddressInformation,
        tls_args: Any,
    ) -> AssociationSocket:
        sock = super()._create_socket(assoc, address, tls_args)
        install(assoc, sock, plain_tcp=tls_args is None)
        return sock
