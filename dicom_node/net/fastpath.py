"""The receive path without polling delays or small reads: the one place where the node changes how
pynetdicom 3.0.4 runs an accepted association.

pynetdicom moves every message through two polling loops: the DUL thread sleeps 1 ms whenever it finds
nothing to do (so an answer put on its queue waits for the next turn), and the association thread
sleeps 1 ms per turn before looking for a decoded DIMSE message. Each C-STORE crosses both, and the
sleeps stretch to several ms on a loaded machine. It also reads each PDU in 4 KiB ``recv`` calls
(about 130 Python round trips per 512 x 512 CT image), each a fresh ``bytes`` appended to a growing
``bytearray``.

:func:`install` (called by the server for each accepted plain-TCP connection, before the association
thread starts) changes these things, by switching the classes of pynetdicom's own objects to the
subclasses below; no pynetdicom module is patched, nothing else differs:

- :class:`WakingDUL`: the DUL thread waits in ``select`` on the socket and on a wake-up socket that
  every primitive put on its outgoing queue writes to, so data from the peer and our answers are handled
  as they come; timers (ARTIM, idle) are still checked at least every :data:`TIMER_TICK` seconds.
- :class:`QueueWaitingAssociation`: the association thread blocks on the DIMSE message queue (up to
  :data:`TIMER_TICK`) instead of sleeping between looks; release, abort and idle checks are unchanged.
- :class:`BufferedAssociationSocket`: a PDU is read with ``recv_into`` into a buffer reused for the
  connection, as many bytes per call as the kernel has (the PDU guard accounts for ``recv_into`` as it
  does for ``recv``).
- :class:`ResponseEncodingDIMSE`: a C-STORE-RSP with status Success (and nothing else) is encoded
  directly, byte for byte what pynetdicom would send, instead of through a pydicom data set.
- With a store target (the server passes the :class:`~dicom_node.net.receive.Receiver`), each
  P-DATA-TF in the data transfer state is read by :class:`~dicom_node.net.direct_store.PDataReader`:
  C-STORE data sets go from the socket into their spool temp file and are answered at once; other
  messages are handed to pynetdicom's DIMSE provider as pynetdicom would have made them. While a
  message is half read and its next PDU has already arrived (nothing is queued for the peer), that
  PDU is read at once instead of after a turn of the reactor (two ``select`` calls fewer per PDU).

Upstream, this would be: an event-driven DUL reactor (the "TODO: try and make this event based" in
``dul.py``: wake on the provider queue and the socket instead of ``_run_loop_delay``), an association
reactor that blocks on ``DIMSEServiceProvider.msg_queue``, ``AssociationSocket.recv`` reading into a
preallocated buffer, and a fixed-layout encoder for the commonest command sets;
``tests/dicom_node/net/test_fastpath.py`` guards the behaviour this relies on.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import select
import socket
import struct
from typing import Any, cast

import pynetdicom
from pynetdicom import evt
from pynetdicom.association import Association
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dul import DULServiceProvider
from pynetdicom.pdu import A_ABORT_RQ
from pynetdicom.pdu_primitives import P_DATA
from pynetdicom.transport import AssociationSocket

from dicom_node.net import command_set
from dicom_node.net.direct_store import ConnectionEnded, MalformedPData, PDataReader, StoreTarget

logger = logging.getLogger(__name__)

TIMER_TICK = 0.02  # seconds: longest wait before timers, release and abort are looked at again
# the pynetdicom versions whose internals this module was written and tested against
SUPPORTED_VERSIONS = ("3.0.4",)


class _WakingQueue(queue.Queue[Any]):
    """The DUL's outgoing queue: a put also wakes the DUL thread."""

    def __init__(self, wake: socket.socket) -> None:
        super().__init__()
        self._wake = wake

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        super().put(item, block, timeout)
        with contextlib.suppress(OSError):  # full (already woken) or closed (thread ended)
            self._wake.send(b"\0")


class WakingDUL(DULServiceProvider):
    """pynetdicom's DUL provider with a reactor that waits for work instead of sleeping."""

    _wake_r: socket.socket
    _wake_w: socket.socket
    _pdata_reader: PDataReader | None = None

    def run(self) -> None:  # Thread.run: the target bound in __init__ is pynetdicom's reactor
        try:
            self.run_reactor()
        finally:
            self._wake_r.close()
            self._wake_w.close()
            if self._pdata_reader is not None:
                self._pdata_reader.close()

    def _read_pdu_data(self) -> None:
        """In the data transfer state, a P-DATA-TF goes to the :class:`PDataReader`; any other PDU
        (and every PDU in other states) to pynetdicom, as read. While a message is half read and
        its next PDU has already arrived, that PDU is read at once, without a turn of the reactor."""
        reader = self._pdata_reader
        sock = self.socket
        if reader is None or self.state_machine.current_state != "Sta6" or sock is None:
            super()._read_pdu_data()
            return
        while True:
            try:
                header = bytes(sock.recv(6))
            except (OSError, TimeoutError):
                header = b""
            if len(header) < 6:
                self.event_queue.put("Evt17")  # closed, as pynetdicom reports it
                return
            pdu_type, _, length = struct.unpack(">BBL", header)
            if pdu_type != 0x04:
                cast(BufferedAssociationSocket, sock).unread(header)
                super()._read_pdu_data()
                return
            try:
                reader.read_pdu(length)
            except (ConnectionEnded, OSError, TimeoutError):
                reader.close()
                logger.error("connection closed before the entire PDU was received")
                self.event_queue.put("Evt17")
                return
            except MalformedPData as exc:
                reader.close()
                logger.error("invalid P-DATA-TF PDU received: %s", exc)
                self.event_queue.put("Evt19")
                return
            if not reader.in_message or not self.to_provider_queue.empty() or not _readable_now(sock):
                return

    def run_reactor(self) -> None:
        self._idle_timer.start()
        while True:
            if not self.assoc._dul_ready.is_set():
                self.assoc._dul_ready.set()
            if self._kill_thread:
                break
            if self.artim_timer.expired:
                self.event_queue.put("Evt18")
            try:
                if self._process_recv_primitive():
                    pass
                elif self._is_transport_event():
                    self._idle_timer.restart()
            except Exception as exc:
                self._abort_on_error(exc)
                return
            try:
                event = self.event_queue.get(block=False)
            except queue.Empty:
                self._wait_for_work()
                continue
            self.state_machine.do_action(event)

    def _wait_for_work(self) -> None:
        """Until the peer sends, a primitive is queued, or a timer tick passes."""
        if not self.to_provider_queue.empty():
            return
        sock = self.socket.socket if self.socket is not None else None
        waits: list[Any] = [self._wake_r]
        if sock is not None and sock.fileno() >= 0 and not isinstance(sock, _SSL_SOCKET):
            waits.append(sock)
        try:
            ready, _, _ = select.select(waits, [], [], TIMER_TICK)
        except (OSError, ValueError):
            return  # the socket closed meanwhile: the next turn sees it
        if self._wake_r in ready:
            with contextlib.suppress(OSError):
                self._wake_r.recv(4096)

    def _abort_on_error(self, exc: Exception) -> None:
        # as pynetdicom's reactor does: bypass the state machine, send an A-ABORT, stop
        logger.error("exception in the DUL reactor, aborting the association: %s", exc, exc_info=exc)
        abort_pdu = A_ABORT_RQ()
        abort_pdu.source = 0x02
        abort_pdu.reason_diagnostic = 0x00
        if self.socket is not None:
            self.socket.send(abort_pdu.encode())
        self.assoc.is_aborted = True
        self.assoc.is_established = False
        self.assoc._kill = True
        self._kill_thread = True


def _readable_now(sock: Any) -> bool:
    """Whether the peer's next bytes are already waiting (never blocks)."""
    raw = sock.socket
    if raw is None or raw.fileno() < 0:
        return False
    try:
        ready, _, _ = select.select([raw], [], [], 0)
    except (OSError, ValueError):
        return False
    return bool(ready)


class QueueWaitingAssociation(Association):
    """pynetdicom's acceptor association with a reactor that waits on the DIMSE message queue."""

    def _run_reactor(self) -> None:
        self._is_paused = False
        while not self._kill:
            self._is_paused = True
            self._reactor_checkpoint.wait()
            self._is_paused = False
            try:
                context_id, msg = self.dimse.msg_queue.get(timeout=TIMER_TICK)
            except queue.Empty:
                context_id, msg = None, None
            if msg:
                self._serve_request(msg, int(context_id or 0))
            if self._after_message():
                return

    def _after_message(self) -> bool:
        """pynetdicom's per-turn checks (release, abort, DUL alive, idle); True when the association
        has ended."""
        if self.is_established and self.acse.is_release_requested():
            # EVT_RELEASED before the A-RELEASE-RP goes out (pynetdicom: after): with the DUL
            # answering at once, the peer's close (EVT_CONN_CLOSE) could otherwise come first
            self.is_released = True
            self.is_established = False
            _trigger(self, "EVT_RELEASED")
            self.acse.send_release(is_response=True)
            logger.debug("association released by the peer")
            self.kill()
            return True
        if self.acse.is_aborted():
            self.dul.receive_pdu(wait=False)  # so that EVT_ACSE_RECV fires, as pynetdicom does
            self.is_aborted = True
            self.is_established = False
            _trigger(self, "EVT_ABORTED")
            self.kill()
            return True
        if not self.dul.is_alive():
            self.kill()
            return True
        if self.dul.idle_timer_expired():
            logger.error("network timeout reached: aborting the association")
            self.abort()
            self.kill()
            return True
        return False


def _trigger(assoc: Association, name: str) -> None:
    evt.trigger(assoc, getattr(evt, name), {})


class BufferedAssociationSocket(AssociationSocket):
    """pynetdicom's association socket reading each PDU part into one reused buffer."""

    _buffer: bytearray
    _unread: bytes = b""

    def unread(self, data: bytes) -> None:
        """Give back bytes read: the next :meth:`recv` returns them first."""
        self._unread = data + self._unread

    def recv(self, nr_bytes: int) -> bytearray:
        if self._unread:
            out, self._unread = self._unread[:nr_bytes], self._unread[nr_bytes:]
            if len(out) < nr_bytes:
                out += bytes(self.recv(nr_bytes - len(out)))
            return bytearray(out)
        sock = self.socket
        assert sock is not None
        if len(self._buffer) < nr_bytes:
            self._buffer = bytearray(max(nr_bytes, 2 * len(self._buffer)))
        view = memoryview(self._buffer)
        got = 0
        while got < nr_bytes:
            n = sock.recv_into(view[got:nr_bytes], nr_bytes - got)
            if not n:
                break
            got += n
        # the caller appends these bytes to its own bytearray at once (dul._read_pdu_data)
        return view[:got]  # type: ignore[return-value]


def encode_store_success(primitive: object) -> bytes | None:
    """The command set (implicit VR little endian, PS3.7 9.3.1.2) of a C-STORE-RSP with status
    Success and nothing else to say, or None for any other primitive (pynetdicom encodes those)."""
    if not isinstance(primitive, C_STORE) or primitive.MessageIDBeingRespondedTo is None:
        return None
    if primitive.Status != 0x0000 or primitive.ErrorComment is not None:
        return None
    if primitive.OffendingElement is not None or primitive.DataSet is not None:
        return None
    return command_set.store_response(
        primitive.MessageIDBeingRespondedTo,
        str(primitive.AffectedSOPClassUID or ""),
        str(primitive.AffectedSOPInstanceUID or ""),
        0x0000,
    )


class ResponseEncodingDIMSE(DIMSEServiceProvider):
    """pynetdicom's DIMSE provider; a plain C-STORE Success response is encoded directly (pynetdicom
    builds a pydicom data set for it and writes it with pydicom: ~0.7 ms per instance)."""

    def send_msg(self, primitive: Any, context_id: int) -> None:
        command = encode_store_success(primitive)
        if (
            command is None
            or self.assoc.get_handlers(evt.EVT_DIMSE_SENT)  # someone wants pynetdicom's message object
            or (self.maximum_pdu_size and len(command) + 7 > self.maximum_pdu_size)
        ):
            super().send_msg(primitive, context_id)
            return
        pdata = P_DATA()
        # message control header 0x03: command, last fragment
        pdata.presentation_data_value_list.append((context_id, b"\x03" + command))
        self.dul.send_pdu(pdata)


_SSL_SOCKET: tuple[type, ...]
try:
    import ssl

    _SSL_SOCKET = (ssl.SSLSocket,)
except ImportError:  # pragma: no cover - Python without ssl
    _SSL_SOCKET = ()


def supported() -> bool:
    """Whether the installed pynetdicom is one this module knows (otherwise :func:`install` does
    nothing and pynetdicom runs as shipped)."""
    return pynetdicom.__version__ in SUPPORTED_VERSIONS


def install(assoc: Association, store_target: StoreTarget | None = None) -> bool:
    """Switch a new acceptor association (not started yet) on a plain TCP socket to the fast path;
    returns whether it was. With ``store_target``, C-STORE data sets are streamed to it by a
    :class:`~dicom_node.net.direct_store.PDataReader` instead of going through pynetdicom."""
    if assoc.is_alive() or assoc.dul.is_alive():
        raise RuntimeError("the fast path is installed before the association starts")
    if not supported():
        return False
    sock = assoc.dul.socket
    if sock is None or isinstance(sock.socket, _SSL_SOCKET):
        return False
    dul = assoc.dul
    dul._wake_r, dul._wake_w = socket.socketpair()  # type: ignore[attr-defined]
    dul._wake_r.setblocking(False)  # type: ignore[attr-defined]
    dul._wake_w.setblocking(False)  # type: ignore[attr-defined]
    dul.to_provider_queue = _WakingQueue(dul._wake_w)  # type: ignore[attr-defined]
    dul.__class__ = WakingDUL
    assoc.__class__ = QueueWaitingAssociation
    sock.__class__ = BufferedAssociationSocket
    assoc.dimse.__class__ = ResponseEncodingDIMSE
    sock._buffer = bytearray(64 * 1024)  # type: ignore[attr-defined]
    if store_target is not None and not _wants_pynetdicom_messages(assoc):
        dul._pdata_reader = PDataReader(dul, store_target)  # type: ignore[attr-defined]
    return True


def _wants_pynetdicom_messages(assoc: Association) -> bool:
    """Whether a handler is bound that expects pynetdicom's own PDU or message objects (which the
    P-DATA reader does not make); pynetdicom's own debug-logging handlers do not count."""
    for event in (evt.EVT_DATA_RECV, evt.EVT_PDU_RECV, evt.EVT_DIMSE_RECV, evt.EVT_DATA_SENT):
        for handler, _ in assoc.get_handlers(event):  # type: ignore[misc]
            if getattr(handler, "__module__", "") != "pynetdicom._handlers":
                return True
    return False
