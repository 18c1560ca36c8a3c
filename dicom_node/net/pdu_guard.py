"""Guard the accepted connection: PDU sizes, read deadlines, PDV counts, connection limits.

pynetdicom 3.0.4 reads a PDU by trusting its 32-bit length field: one header announcing 64 MiB makes it
buffer 64 MiB, whatever maximum PDU length we announced. :class:`PduGuardSocket` is the accepted TCP
socket itself (a ``socket.socket`` subclass built on the same file descriptor), so pynetdicom uses it
unchanged; it follows the PDU framing of the incoming byte stream (6-byte header: type, reserved,
length; then ``length`` bytes) and checks each header's length against a per-type limit. A PDU over
its limit is never read: the guard sends an A-ABORT (service-provider, invalid PDU parameter value),
shuts the connection down and reports end-of-stream, which pynetdicom handles as a closed transport
connection (its association thread ends with EVT_ABORTED).

The same socket also bounds time and work (issue 8): the first PDU (the A-ASSOCIATE-RQ) must be
complete within the handshake deadline from accept, every later PDU within the PDU deadline from its
first byte (:class:`ReadDeadlines`; a read past its deadline closes the connection, logged with the peer
address); P-DATA bodies pass through a :class:`~dicom_node.net.pdv_meter.PdvMeter`, which cuts off a
message whose data set exceeds its size limit or that carries a flood of tiny fragments (A-ABORT).

:class:`dicom_node.net.guarded_server.GuardedAssociationServer` admits each accepted connection through a
:class:`~dicom_node.net.conn_limits.ConnectionGate` (pending connections have their own limits, in total
and per peer address; the association limit is checked when the A-ASSOCIATE-RQ starts), wraps it in the
guard, and runs pynetdicom's association for it with the receive fast path
(:mod:`dicom_node.net.fastpath`); the connection's thread waits for the association and then frees its
slot. It is the server class pynetdicom's ``AE.make_server(..., server_class=...)`` accepts; nothing in
pynetdicom is patched.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dicom_node.net.conn_limits import ConnectionGate, Ticket
from dicom_node.net.pdv_meter import MessageLimits, PdvMeter

logger = logging.getLogger(__name__)

PDU_HEADER_LENGTH = 6
# A-ABORT: type 7, reserved, length 4, reserved x2, source 2 (service provider), reason 6 (invalid
# PDU parameter value), PS3.8 9.3.8
A_ABORT_INVALID_PARAMETER = b"\x07\x00\x00\x00\x00\x04\x00\x00\x02\x06"
# A-ASSOCIATE-RJ: type 3, length 4, reserved, result 2 (transient), source 3 (service provider,
# presentation related), reason 2 (local limit exceeded), PS3.8 9.3.4
A_ASSOCIATE_RJ_LIMIT = b"\x03\x00\x00\x00\x00\x04\x00\x02\x03\x02"

_P_DATA_TF = 0x04
_ASSOCIATION_PDUS = (0x01, 0x02, 0x03)
_SHORT_PDUS = (0x05, 0x06, 0x07)  # release RQ/RP and abort: 4 bytes of body


@dataclass(frozen=True)
class PduLimits:
    """Largest PDU body (the header's length field) accepted per PDU type.

    ``max_pdu`` is the Maximum Length we announce for P-DATA-TF; ``allowance`` covers peers that
    count the PDU header (or PDV headers) against it. Association PDUs (many presentation contexts)
    may be larger than ``max_pdu`` and have their own bound. Unknown PDU types are passed through for
    pynetdicom to reject."""

    max_pdu: int
    allowance: int = 64
    association_pdu: int = 1024 * 1024
    short_pdu: int = 64

    def limit_for(self, pdu_type: int) -> int | None:
        if pdu_type == _P_DATA_TF:
            return self.max_pdu + self.allowance
        if pdu_type in _ASSOCIATION_PDUS:
            return self.association_pdu
        if pdu_type in _SHORT_PDUS:
            return self.short_pdu
        return None


_socket_recv = socket.socket.recv
_socket_recv_into = socket.socket.recv_into

# (peer "host:port", reason) for the journal; the guard has logged it already
RefusedCallback = Callable[[str, str], None]


@dataclass(frozen=True)
class ReadDeadlines:
    """``handshake_seconds``: from accept until the first PDU (the A-ASSOCIATE-RQ) is complete;
    ``pdu_seconds``: from a later PDU's first byte until it is complete. A stalled read ends the
    connection after at most twice its deadline (each read also waits at most that long)."""

    handshake_seconds: float
    pdu_seconds: float


class PduGuardSocket(socket.socket):
    """A connected TCP socket whose :meth:`recv` refuses oversized PDUs (see module docstring), ends
    reads that pass their deadline and meters the PDVs of P-DATA bodies.

    ``recv`` and ``recv_into`` are accounted (pynetdicom and the fast path use them); a ``MSG_PEEK``
    passes through."""

    _limits: PduLimits
    _on_refused: RefusedCallback | None
    _body_left: int
    _pending: bytes
    _refused: bool
    _deadlines: ReadDeadlines | None
    _deadline: float | None
    _first_pdu: bool
    _meter: PdvMeter | None
    _in_pdata: bool
    _gate: ConnectionGate | None
    _ticket: Ticket | None
    _pdu_type: int
    _pdu_length: int

    @classmethod
    def wrap(
        cls,
        sock: socket.socket,
        limits: PduLimits,
        on_refused: RefusedCallback | None = None,
        *,
        deadlines: ReadDeadlines | None = None,
        message_limits: MessageLimits | None = None,
        gate: ConnectionGate | None = None,
        ticket: Ticket | None = None,
    ) -> PduGuardSocket:
        """Take over ``sock``'s file descriptor (``sock`` is detached and must not be used). With a
        ``gate`` and its ``ticket``, the first A-ASSOCIATE-RQ moves the connection from pending to
        associating, or is rejected when the association limit is reached."""
        timeout = sock.gettimeout()
        guarded = cls(sock.family, sock.type, sock.proto, fileno=sock.detach())
        if guarded.family in (socket.AF_INET, socket.AF_INET6):
            # each PDU goes out at once: no Nagle delay (40 ms per message against delayed ACKs)
            guarded.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        guarded._limits = limits
        guarded._on_refused = on_refused
        guarded._body_left = 0
        guarded._pending = b""
        guarded._refused = False
        guarded._deadlines = deadlines
        guarded._first_pdu = True
        guarded._in_pdata = False
        guarded._meter = PdvMeter(message_limits) if message_limits is not None else None
        guarded._gate = gate
        guarded._ticket = ticket
        guarded._pdu_type = 0
        guarded._pdu_length = 0
        if deadlines is not None:
            guarded._deadline = time.monotonic() + deadlines.handshake_seconds
            guarded.settimeout(deadlines.handshake_seconds)
        else:
            guarded._deadline = None
            guarded.settimeout(timeout)
        if ticket is not None:
            ticket.sock = guarded
        return guarded

    @property
    def refused(self) -> bool:
        """True once this connection was cut off (oversized PDU, limit, deadline)."""
        return self._refused

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        left = self._body_left
        if left and not flags and not self._pending:  # inside a PDU body: the hot path
            try:
                data = _socket_recv(self, bufsize if bufsize < left else left)
            except TimeoutError:
                return self._expire()
            return self._body(data, left)
        if flags & socket.MSG_PEEK:
            return _socket_recv(self, bufsize, flags)
        if self._refused or bufsize <= 0:
            return b""
        if self._pending:
            out, self._pending = self._pending[:bufsize], self._pending[bufsize:]
            return out
        if left:
            try:
                data = _socket_recv(self, min(bufsize, left), flags)
            except TimeoutError:
                return self._expire()
            return self._body(data, left)
        return self._next_header(bufsize, flags)

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        view = memoryview(buffer)
        if not nbytes:
            nbytes = view.nbytes
        left = self._body_left
        if left and not flags and not self._pending:  # inside a PDU body: the hot path
            try:
                n = _socket_recv_into(self, view, nbytes if nbytes < left else left)
            except TimeoutError:
                self._expire()
                return 0
            return n if self._accounted(view[:n], left) else 0
        data = self.recv(nbytes, flags)
        view[: len(data)] = data
        return len(data)

    def _body(self, data: bytes, left: int) -> bytes:
        """Account for body bytes just read (``left`` were due before them)."""
        return data if self._accounted(data, left) else b""

    def _accounted(self, data: bytes | memoryview, left: int) -> bool:
        """Account for body bytes just read; False when the connection was cut off."""
        n = len(data)
        if not n:
            return True  # closed mid-PDU: pynetdicom sees a short read
        left -= n
        self._body_left = left
        if self._in_pdata:
            meter = self._meter
            if meter is not None:
                if meter.skip >= n:
                    meter.skip -= n  # inside a fragment value: nothing to parse
                else:
                    reason = meter.feed(data)
                    if reason is not None:
                        self._cut_off(reason)
                        return False
        deadline = self._deadline
        if deadline is not None and left and time.monotonic() > deadline:
            self._expire()
            return False
        if not left:
            self._pdu_done()
        return True

    def _pdu_done(self) -> None:
        if self._first_pdu:
            self._first_pdu = False
            if self._deadlines is not None:
                self.settimeout(self._deadlines.pdu_seconds)
        self._deadline = None

    def _next_header(self, bufsize: int, flags: int) -> bytes:
        if self._deadline is None and self._deadlines is not None:
            self._deadline = time.monotonic() + self._deadlines.pdu_seconds
        header = b""
        while len(header) < PDU_HEADER_LENGTH:
            try:
                chunk = _socket_recv(self, PDU_HEADER_LENGTH - len(header), flags)
            except TimeoutError:
                self._pdu_type, self._pdu_length = (header[0] if header else 0), -1
                return self._expire()
            if not chunk:
                return header  # closed mid-header: pynetdicom sees a short read
            header += chunk
            if len(header) < PDU_HEADER_LENGTH and self._deadline and time.monotonic() > self._deadline:
                return self._expire()
        pdu_type, _, length = struct.unpack(">BBL", header)
        self._pdu_type, self._pdu_length = pdu_type, length
        limit = self._limits.limit_for(pdu_type)
        if limit is not None and length > limit:
            self._refuse(pdu_type, length, limit)
            return b""
        gate, ticket = self._gate, self._ticket
        if (
            pdu_type == 0x01
            and gate is not None
            and ticket is not None
            and not gate.start_association(ticket)
        ):
            return self._reject_over_limit()
        self._in_pdata = pdu_type == _P_DATA_TF
        if self._in_pdata and self._meter is not None:
            self._meter.start_pdu()
        self._body_left = length
        if not length:
            self._pdu_done()
        out, self._pending = header[:bufsize], header[bufsize:]
        return out

    def _peer_text(self) -> str:
        try:
            peer = self.getpeername()
        except OSError:
            return "?"
        return ":".join(str(p) for p in peer[:2])

    def _refuse(self, pdu_type: int, length: int, limit: int) -> None:
        self._cut_off(f"PDU type 0x{pdu_type:02X} announces {length} bytes, more than the {limit} allowed")

    def _expire(self) -> bytes:
        seconds = (
            self._deadlines.handshake_seconds
            if self._first_pdu and self._deadlines is not None
            else (self._deadlines.pdu_seconds if self._deadlines is not None else 0.0)
        )
        got = (
            ""
            if self._pdu_length < 0
            else f" ({self._pdu_length - self._body_left} of {self._pdu_length} bytes)"
        )
        what = "association request" if self._first_pdu else f"PDU type 0x{self._pdu_type:02X}"
        return self._cut_off(f"{what} not received within {seconds:g} s{got}", abort=False)

    def _reject_over_limit(self) -> bytes:
        """A-ASSOCIATE-RJ (transient, local limit exceeded); the gate has logged it."""
        self._refused = True
        if self._on_refused is not None:
            try:
                self._on_refused(self._peer_text(), "association rejected: association limit reached")
            except Exception:
                logger.exception("PDU refusal callback failed")
        with contextlib.suppress(OSError):
            self.sendall(A_ASSOCIATE_RJ_LIMIT)
        with contextlib.suppress(OSError):
            self.shutdown(socket.SHUT_RDWR)
        return b""

    def _cut_off(self, reason: str, *, abort: bool = True) -> bytes:
        """End the connection (after an A-ABORT unless ``abort`` is False); log and report why."""
        self._refused = True
        self._body_left = 0
        peer = self._peer_text()
        logger.warning("closing connection from %s: %s", peer, reason)
        if self._on_refused is not None:
            try:
                self._on_refused(peer, reason)
            except Exception:
                logger.exception("PDU refusal callback failed")
        if abort:
            with contextlib.suppress(OSError):
                self.sendall(A_ABORT_INVALID_PARAMETER)
        with contextlib.suppress(OSError):
            self.shutdown(socket.SHUT_RDWR)
        return b""
